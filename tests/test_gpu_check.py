"""experiments/gpu_check.sh first|second --dry-run: every row of the GPU table measured on CPU at
tiny size, one process per row, each appended as it finishes, inside its budget; a failing or
skipped row fails the command naming it; the benchmark path imports only what the device image
holds; and the harness's peak table."""

import json
import math
import os
import subprocess
import sys

import pytest


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'experiments', 'bench'))
import harness  # pylint: disable=g-import-not-at-top,wrong-import-position

PARTS = {'first': ['b16_256', 'l16_256_dots', 'b16_256_dots'],
         'second': ['b16_256', 'b16_256_xla', 'b16_512', 'b16_256_randaug', 'b16_256_dropout',
                    'l16_512_dots', 'b16_512_dots']}


def _gpu_check(part, out, **env):
  return subprocess.run(['bash', os.path.join(ROOT, 'experiments', 'gpu_check.sh'), part,
                         '--dry-run'], env={**os.environ, 'OUT': str(out), 'XLA_FLAGS': '', **env},
                        capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.slow
@pytest.mark.parametrize('part', ['first', 'second'])
def test_each_command_writes_every_row_inside_its_budget(part, tmp_path):
  result = _gpu_check(part, tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(tmp_path / f'gpu_check_{part}_dryrun.jsonl') as f:
    rows = [json.loads(line) for line in f]
  assert [r['name'] for r in rows] == PARTS[part]
  assert not [r for r in rows if 'error' in r], [r.get('error') for r in rows]
  assert len(result.stdout.strip().splitlines()) == len(rows)  # one streamed line per row
  for row in rows:
    assert row['train_img_s'] > 0 and row['infer_img_s'] > 0 and math.isfinite(row['loss'])
    assert row['predicted_bytes_per_device'] > 0 and row['jax'] and row['device_kind'] == 'cpu'
    assert '--xla_gpu_enable_latency_hiding_scheduler=true' in row['xla_flags']
  by_name = {r['name']: r for r in rows}
  with open(tmp_path / f'gpu_check_{part}_dryrun.md') as f:
    table = f.read()
  if part == 'first':  # checked against the plain-JAX reference
    for name in ('b16_256', 'l16_256_dots'):
      assert abs(by_name[name]['loss'] - by_name[name]['reference_loss']) < 3e-2 * 7
    assert table.count('| B/16 |') == 2 and table.count('| L/16 |') == 1
  else:
    assert by_name['b16_512']['batch'] == 2 * by_name['b16_256']['batch']
    assert by_name['b16_256_xla']['attention_used'] == 'xla'
    assert 'device RandAugment share of the step' in table and 'cuDNN over XLA' in table
  assert 'memory planner' not in table  # no measured peak on CPU


def _sweep(tmp_path, rows, *args):
  rows_file = tmp_path / 'rows.json'
  rows_file.write_text(json.dumps(rows))
  return subprocess.run(
      [sys.executable, os.path.join(ROOT, 'experiments', 'bench', 'harness.py'),
       f'--rows={rows_file}', '--tiny', '--iters=1', f'--out={tmp_path}', '--tag=t', *args],
      env={**os.environ, 'JAX_PLATFORMS': 'cpu', 'XLA_FLAGS': ''}, capture_output=True,
      text=True, timeout=300, check=False)


def test_a_failed_row_makes_the_command_fail_naming_it(tmp_path):
  """The sweep goes on past a failing row, then exits non-zero naming it and its error."""
  result = _sweep(tmp_path, [
      {'name': 'broken', 'variant': 'B/99', 'batch_per_device': 2, 'image_size': 32},
      {'name': 'fine', 'variant': 'B/16', 'batch_per_device': 2, 'image_size': 32,
       'check': False}])
  assert result.returncode == 1, result.stderr[-2000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('row broken failed: ') and 'ViT-B_99' in last, last
  with open(tmp_path / 't.jsonl') as f:
    rows = [json.loads(line) for line in f]
  assert [('error' in r) for r in rows] == [True, False]


def test_a_row_that_does_not_fit_the_budget_is_not_started(tmp_path):
  result = _sweep(tmp_path, [
      {'name': 'long', 'variant': 'B/16', 'batch_per_device': 2, 'image_size': 32,
       'estimate_s': 500}], '--budget=400')
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      'row long failed: skipped: estimated 500 s, 400 s of the 400 s budget left')


def test_the_benchmark_path_imports_only_what_the_device_image_holds():
  """The import half of experiments/device/rehearse.sh: with TensorFlow, tfds and everything
  the image lacks blocked (the carried wheels allowed), one tiny row measures."""
  result = subprocess.run([sys.executable, os.path.join(ROOT, 'experiments', 'device',
                                                        'image_only.py')],
                          env={**os.environ, 'XLA_FLAGS': ''}, capture_output=True, text=True,
                          timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip().splitlines()[-1].startswith('import check: ok (jax ')


def test_the_import_check_can_fail():
  """Without the carried wheels the path fails as the first dry run did (ml_collections)."""
  code = ('import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]; import image_only; '
          'image_only.carried = set; image_only.install(); import vit_jax.configs.common')
  result = subprocess.run([sys.executable, '-c', code, ROOT,
                           os.path.join(ROOT, 'experiments', 'device')],
                          capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      "ModuleNotFoundError: No module named 'ml_collections' on the device image (distribution "
      'ml_collections is neither in experiments/device/image_packages.txt nor carried by '
      'carried.txt)')
  for module in ('tensorflow', 'tensorflow_datasets'):
    blocked = subprocess.run([sys.executable, '-c', code.replace('vit_jax.configs.common',
                                                                 module),
                              ROOT, os.path.join(ROOT, 'experiments', 'device')],
                             capture_output=True, text=True, timeout=120, check=False)
    assert f"No module named '{module}' on the device image" in blocked.stderr


@pytest.mark.parametrize('kind, dtype, peak', [
    ('NVIDIA H100 80GB HBM3', 'bfloat16', 989e12), ('NVIDIA H100 PCIe', 'bfloat16', 756e12),
    ('NVIDIA H100 NVL', 'bfloat16', 835e12), ('NVIDIA H200', 'bfloat16', 989e12),
    ('TPU v5 lite', 'bfloat16', 197e12), ('TPU v5p', 'bfloat16', 459e12),
    ('TPU v6 lite', 'bfloat16', 918e12), ('cpu', 'bfloat16', None)])
def test_the_peak_table_tells_the_parts_apart(kind, dtype, peak):
  found = harness.peak_for(kind, dtype)
  assert (found and found[0]) == peak
