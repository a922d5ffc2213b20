"""Chaos: a run stopped at random moments by random signals (SIGTERM and SIGINT: agreed stops;
SIGKILL: no warning) and restarted each time ends as the uninterrupted run: the same final
parameters, and the same `metrics.jsonl`, every row once with the same values. Running the
finished command again changes no file. One process; a few interruptions in CI, more with
VIT_JAX_CHAOS_TRIALS=N (the docs report a longer series)."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import tiny_recipe
from vit_jax.train import checkpointer
from vit_jax.train import loop
from vit_jax.train import setup as setup_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRIALS = int(os.environ.get('VIT_JAX_CHAOS_TRIALS', '1'))
STOPS_PER_TRIAL = 2
# Rows every 3 steps, checkpoints every 4, evaluations every 6: a stop rarely falls on a row.
FIELDS = dict(total_steps=20, log_every=3, checkpoint_every=4)
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGKILL)
pytestmark = pytest.mark.slow


def _config(data_dir):
  config = tiny_recipe.get_config(data_dir)
  config.update(FIELDS)
  return config


def _launch(workdir, data_dir):
  flags = [f'--config.{k}={v}' for k, v in FIELDS.items()]
  return subprocess.Popen(
      [sys.executable, '-m', 'vit_jax.main', f'--config={ROOT}/tests/tiny_recipe.py:{data_dir}',
       f'--workdir={workdir}', *flags], cwd=ROOT, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True)


def _interrupt(workdir, data_dir, at_step, sig):
  """Starts the run and sends `sig` once it has printed step `at_step` (or finishes first)."""
  proc = _launch(workdir, data_dir)
  lines = []
  try:
    for line in proc.stdout:
      lines.append(line)
      words = line.split()
      if line.startswith('step ') and '/' in words[1] and int(words[1].split('/')[0]) >= at_step:
        proc.send_signal(sig)
        break
    out = proc.communicate(timeout=300)[0]
  finally:
    if proc.poll() is None:  # only the process this test started
      proc.kill()
      proc.wait()
  return proc.returncode, ''.join(lines) + out


def _state(workdir, data_dir):
  config = _config(data_dir)
  setup = setup_lib.from_config(config)
  ckpt = checkpointer.Checkpointer(workdir)
  restored = ckpt.restore(setup.abstract_state)
  ckpt.close()
  return restored.step, jax.tree.map(np.asarray, jax.device_get(restored.state.params))


def _rows(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    return [json.loads(line) for line in f]


def _files(workdir):
  """{relative path: bytes} of everything in the workdir."""
  found = {}
  for folder, _, names in os.walk(workdir):
    for name in names:
      path = os.path.join(folder, name)
      with open(path, 'rb') as f:
        found[os.path.relpath(path, workdir)] = f.read()
  return found


@pytest.fixture(scope='module')
def uninterrupted(digits_data_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('uninterrupted'))
  assert loop.train_and_evaluate(_config(digits_data_dir), workdir)['outcome'] == 'completed'
  return workdir


@pytest.mark.parametrize('trial', range(TRIALS))
def test_random_stops_and_restarts_end_as_the_uninterrupted_run(trial, uninterrupted,
                                                                 digits_data_dir, tmp_path):
  seed = int(os.environ.get('VIT_JAX_CHAOS_SEED', int(time.time() * 1000) % 2**31)) + trial
  chooser = random.Random(seed)
  workdir = str(tmp_path / 'chaos')
  events = []
  for _ in range(STOPS_PER_TRIAL):
    sig, at_step = chooser.choice(SIGNALS), chooser.randint(1, FIELDS['total_steps'] - 1)
    code, out = _interrupt(workdir, digits_data_dir, at_step, sig)
    events.append((signal.Signals(sig).name, at_step, code))
    expected = (-signal.SIGKILL,) if sig == signal.SIGKILL else (0,)
    assert code in expected + (0,), (seed, events, out[-3000:])  # or it finished first
  final = _launch(workdir, digits_data_dir)
  out = final.communicate(timeout=300)[0]
  assert final.returncode == 0 and 'Run completed at step 20' in out, (seed, events, out[-3000:])

  step, params = _state(workdir, digits_data_dir)
  ref_step, ref_params = _state(uninterrupted, digits_data_dir)
  assert step == ref_step == FIELDS['total_steps']
  jax.tree.map(np.testing.assert_array_equal, params, ref_params)
  rows, ref_rows = _rows(workdir), _rows(uninterrupted)
  assert [sorted(r) for r in rows] == [sorted(r) for r in ref_rows], (
      seed, events, [(r['step'], sorted(r)) for r in rows][-4:],
      [(r['step'], sorted(r)) for r in ref_rows][-4:])  # every row once
  differ = [(row, ref) for row, ref in zip(rows, ref_rows) if row != ref]
  assert not differ, (seed, events, differ)  # the same values

  # The finished command again: nothing to do, and no file changes.
  before = _files(workdir)
  again = _launch(workdir, digits_data_dir)
  out = again.communicate(timeout=300)[0]
  assert again.returncode == 0 and 'Run completed at step 20' in out, out[-3000:]
  after = _files(workdir)
  assert sorted(after.keys() ^ before.keys()) == []
  assert [name for name in after if after[name] != before[name]] == []
  print(f'chaos trial {trial}: seed {seed}, {events}: equal')
