"""The run directory: one config per workdir, and metrics trimmed to the restored step."""

import json
import os

import pytest
import tensorflow as tf

from vit_jax.train import metric_writer
from vit_jax.train import workdir as workdir_lib


def test_claim_writes_refuses_and_overwrites(tmp_path):
  workdir = str(tmp_path / 'run')
  workdir_lib.claim(workdir, {'lr': {'base': 1.0}, 'seed': 0}, overwrite=False)
  assert json.load(open(os.path.join(workdir, 'config.json'))) == {'lr': {'base': 1.0}, 'seed': 0}
  workdir_lib.claim(workdir, {'lr': {'base': 1.0}, 'seed': 0}, overwrite=False)  # same: fine
  # A run that saved no step (stopped at startup) has nothing to lose: another config takes it.
  workdir_lib.claim(workdir, {'lr': {'base': 3.0}, 'seed': 0}, overwrite=False)
  assert json.load(open(os.path.join(workdir, 'config.json')))['lr']['base'] == 3.0
  workdir_lib.claim(workdir, {'lr': {'base': 1.0}, 'seed': 0}, overwrite=False)
  os.makedirs(os.path.join(workdir, 'checkpoints', '4'))  # one saved step: now it is a run
  with pytest.raises(ValueError, match=r"different config \(fields: \['lr.base'\]\)"):
    workdir_lib.claim(workdir, {'lr': {'base': 2.0}, 'seed': 0}, overwrite=False)
  open(os.path.join(workdir, 'metrics.jsonl'), 'w').write('{"step": 1}\n')
  workdir_lib.claim(workdir, {'lr': {'base': 2.0}, 'seed': 0}, overwrite=True)
  assert not os.path.exists(os.path.join(workdir, 'metrics.jsonl'))
  assert json.load(open(os.path.join(workdir, 'config.json')))['lr']['base'] == 2.0


def test_a_workdir_from_before_a_new_config_field_still_resumes(tmp_path):
  """Fields added to the code since a run began (e.g. `evals`, empty by default, or
  `nonfinite_guard` at its default 'auto') are no change; setting one is."""
  workdir = str(tmp_path / 'run')
  workdir_lib.claim(workdir, {'seed': 0}, overwrite=False)
  workdir_lib.claim(workdir, {'seed': 0, 'evals': {}, 'keep_period': None,
                              'nonfinite_guard': 'auto'}, overwrite=False)
  workdir_lib.claim(str(tmp_path / 'other'), {'seed': 0}, overwrite=False)
  os.makedirs(tmp_path / 'other' / 'checkpoints' / '2')
  with pytest.raises(ValueError, match=r"\(fields: \['evals.fewshot.kind', 'nonfinite_guard'\]\)"):
    workdir_lib.claim(str(tmp_path / 'other'), {'seed': 0, 'nonfinite_guard': 'select', 'evals': {
        'fewshot': {'kind': 'fewshot'}}}, overwrite=False)


def _event_steps(folder):
  steps = []
  for name in sorted(os.listdir(folder)):
    for record in tf.data.TFRecordDataset(os.path.join(folder, name)).as_numpy_iterator():
      event = tf.compat.v1.Event.FromString(record)
      if event.summary.value:
        steps.append(event.step)
  return steps


def test_rows_and_events_past_the_restored_step_are_dropped(tmp_path):
  workdir = str(tmp_path)
  writer = metric_writer.MetricWriter(workdir)
  for step in range(1, 8):
    writer.write(step, {'train/loss': 1.0 / step})
  with open(os.path.join(workdir, 'metrics.jsonl'), 'a') as f:
    f.write('{"step": 8, "train/lo')  # a row cut short by a kill
  workdir_lib.drop_metrics_after(workdir, 4)
  rows = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  assert [r['step'] for r in rows] == [1, 2, 3, 4] and rows[1]['train/loss'] == 0.5
  assert _event_steps(os.path.join(workdir, 'tensorboard')) == [1, 2, 3, 4]
