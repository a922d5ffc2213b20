"""A digits run started as a user starts it (`python -m vit_jax.main` on the tiny recipe, a process
of its own), stopped by a signal at a chosen step, and read back: final state, metric rows,
files. Used by the chaos and object-store tests. Workdirs may be local paths or object-store
URLs."""

import json
import os
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from vit_jax import storage
from vit_jax.train import checkpointer
from vit_jax.train import loop
from vit_jax.train import run as run_lib
from vit_jax.train import setup as setup_lib
from vit_jax.weights import workdir_params

import tiny_recipe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Rows every 3 steps, checkpoints every 4, evaluations every 6: a stop rarely falls on a row.
FIELDS = dict(total_steps=20, log_every=3, checkpoint_every=4)


def config(data_dir, fields=None):
  config_ = tiny_recipe.get_config(data_dir)
  config_.update(fields or FIELDS)
  return config_


def launch(workdir, data_dir, *extra, fields=None):
  flags = [f'--config.{k}={v}' for k, v in (fields or FIELDS).items()]
  return subprocess.Popen(
      [sys.executable, '-m', 'vit_jax.main', f'--config={ROOT}/tests/tiny_recipe.py:{data_dir}',
       f'--workdir={workdir}', *flags, *extra], cwd=ROOT, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True)


def interrupt(workdir, data_dir, at_step, sig, fields=None, committed=None):
  """Starts the run and sends `sig` once it has printed step `at_step` (or finishes first) and,
  with `committed`, once the checkpoint of that step is final in the workdir."""
  proc = launch(workdir, data_dir, fields=fields)
  lines = []
  try:
    for line in proc.stdout:
      lines.append(line)
      words = line.split()
      if line.startswith('step ') and '/' in words[1] and int(words[1].split('/')[0]) >= at_step:
        if committed is not None:
          _await_checkpoint(workdir, committed, proc)
        proc.send_signal(sig)
        break
    out = proc.communicate(timeout=300)[0]
  finally:
    if proc.poll() is None:  # only the process this test started
      proc.kill()
      proc.wait()
  return proc.returncode, ''.join(lines) + out


def _await_checkpoint(workdir, step, proc, timeout=120):
  """Waits until checkpoint `step` of the running `proc` is final: renamed from its temporary
  name on a local disk, holding orbax's `commit_success.txt` on an object store."""
  folder = storage.path(workdir) / 'checkpoints' / str(step)
  marker = folder / 'commit_success.txt' if storage.is_remote(workdir) else folder
  deadline = time.time() + timeout
  while not marker.exists():
    assert proc.poll() is None and time.time() < deadline, f'no checkpoint {step} in {workdir}'
    time.sleep(0.1)


def checkpoint_steps(workdir):
  """The steps whose checkpoint is final in a local workdir, oldest first."""
  folder = os.path.join(workdir, 'checkpoints')
  names = os.listdir(folder) if os.path.isdir(folder) else []
  return sorted(int(name) for name in names if name.isdigit())


def damage(workdir, step):
  """A damaged OCDBT manifest in each item of a step, as a partial copy or a storage fault."""
  for item in ('params', 'train_state'):
    with open(os.path.join(workdir, 'checkpoints', str(step), item, 'manifest.ocdbt'), 'wb') as f:
      f.write(b'cut short')


def state(workdir, data_dir, fields=None):
  """(step, parameters as numpy) of the newest checkpoint."""
  setup = setup_lib.from_config(config(data_dir, fields))
  ckpt = checkpointer.Checkpointer(workdir)
  restored = ckpt.restore(setup.abstract_state)
  ckpt.close()
  return restored.step, jax.tree.map(np.asarray, jax.device_get(restored.state.params))


def rows(workdir):
  text = storage.read_text(storage.path(workdir) / 'metrics.jsonl')
  return [json.loads(line) for line in text.splitlines()]


def files(workdir):
  """{relative path: bytes} of everything in a local workdir."""
  found = {}
  for folder, _, names in os.walk(workdir):
    for name in names:
      path = os.path.join(folder, name)
      with open(path, 'rb') as f:
        found[os.path.relpath(path, workdir)] = f.read()
  return found


def assert_same_run(workdir, reference, data_dir, context=(), fields=None):
  """The final parameters bit-identical, `metrics.jsonl` the same rows with the same values."""
  step, params = state(workdir, data_dir, fields)
  ref_step, ref_params = state(reference, data_dir, fields)
  assert step == ref_step == (fields or FIELDS)['total_steps']
  jax.tree.map(np.testing.assert_array_equal, params, ref_params)
  got, expected = rows(workdir), rows(reference)
  assert [sorted(r) for r in got] == [sorted(r) for r in expected], (
      context, [(r['step'], sorted(r)) for r in got][-4:],
      [(r['step'], sorted(r)) for r in expected][-4:])  # every row once
  differ = [(row, ref) for row, ref in zip(got, expected) if row != ref]
  assert not differ, (context, differ)  # the same values


def kill_and_resume(config, workdir, finished, monkeypatch, *, after, restored_step):
  """Runs `config` in-process until `after` batches were served, then fails as a kill would
  (no saving on the way out); checks that the newest checkpoint is `restored_step`, resumes
  to the end, and compares the final parameters bit for bit with the workdir `finished` (the
  same config, never interrupted)."""
  served, original = [], run_lib.Run.next_batch

  def killed(self, step):
    if len(served) == after:
      raise KeyboardInterrupt('simulated kill')
    served.append(step)
    return original(self, step)
  monkeypatch.setattr(run_lib.Run, 'next_batch', killed)
  with pytest.raises(KeyboardInterrupt):
    loop.train_and_evaluate(config, workdir)
  monkeypatch.setattr(run_lib.Run, 'next_batch', original)
  assert workdir_params.read(workdir)[0] == restored_step
  assert loop.train_and_evaluate(config, workdir)['step'] == config.total_steps
  (_, resumed), (_, uninterrupted) = workdir_params.read(workdir), workdir_params.read(finished)
  jax.tree.map(np.testing.assert_array_equal, resumed, uninterrupted)
