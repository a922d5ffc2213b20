"""experiments/gpu_check.sh --dry-run: every row of the GPU table measured on CPU at tiny size,
one process per row, each appended as it finishes; and the harness's peak table."""

import json
import math
import os
import subprocess
import sys

import pytest


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'experiments', 'bench'))
import harness  # pylint: disable=g-import-not-at-top,wrong-import-position

NAMES = ['b16_256', 'b16_512', 'b16_256_dots', 'b16_512_dots', 'b16_256_xla', 'b16_256_dropout',
         'b16_256_randaug', 'l16_256', 'l16_512_dots']


@pytest.mark.slow
def test_the_dry_run_writes_every_row(tmp_path):
  env = {**os.environ, 'OUT': str(tmp_path), 'XLA_FLAGS': ''}
  result = subprocess.run(['bash', os.path.join(ROOT, 'experiments', 'gpu_check.sh'),
                           '--dry-run'], env=env, capture_output=True, text=True, timeout=600,
                          check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(tmp_path / 'gpu_check_dryrun.jsonl') as f:
    rows = [json.loads(line) for line in f]
  assert [r['name'] for r in rows] == NAMES
  assert not [r for r in rows if 'error' in r], [r.get('error') for r in rows]
  for row in rows:
    assert row['train_img_s'] > 0 and row['infer_img_s'] > 0 and math.isfinite(row['loss'])
    assert row['predicted_bytes_per_device'] > 0 and row['jax'] and row['device_kind'] == 'cpu'
    assert '--xla_gpu_enable_latency_hiding_scheduler=true' in row['xla_flags']
  by_name = {r['name']: r for r in rows}
  assert by_name['b16_512']['batch'] == 2 * by_name['b16_256']['batch']
  assert by_name['b16_256_xla']['attention_used'] == 'xla'
  for name in ('b16_256', 'l16_256'):  # checked against the plain-JAX reference
    assert abs(by_name[name]['loss'] - by_name[name]['reference_loss']) < 3e-2 * 7
  with open(tmp_path / 'gpu_check_dryrun.md') as f:
    table = f.read()
  assert table.count('| B/16 |') == 7 and table.count('| L/16 |') == 2
  assert 'device RandAugment share of the step' in table and 'memory planner' not in table


@pytest.mark.parametrize('kind, dtype, peak', [
    ('NVIDIA H100 80GB HBM3', 'bfloat16', 989e12), ('NVIDIA H100 PCIe', 'bfloat16', 756e12),
    ('NVIDIA H100 NVL', 'bfloat16', 835e12), ('NVIDIA H200', 'bfloat16', 989e12),
    ('TPU v5 lite', 'bfloat16', 197e12), ('TPU v5p', 'bfloat16', 459e12),
    ('TPU v6 lite', 'bfloat16', 918e12), ('cpu', 'bfloat16', None)])
def test_the_peak_table_tells_the_parts_apart(kind, dtype, peak):
  found = harness.peak_for(kind, dtype)
  assert (found and found[0]) == peak
