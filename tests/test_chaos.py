"""Chaos: a run stopped at random moments by random signals (SIGTERM and SIGINT: agreed stops;
SIGKILL: no warning), its newest checkpoint sometimes damaged after a stop (a storage fault), and
restarted each time ends as the uninterrupted run: the same final parameters, and the same
`metrics.jsonl`, every row once with the same values. Running the finished command again changes
no file; with every checkpoint damaged it refuses in one line and still changes no file. One
process; a few interruptions in CI, more with VIT_JAX_CHAOS_TRIALS=N (the docs report a longer
series)."""

import os
import random
import signal
import time

import pytest

import runs
from vit_jax.train import loop

TRIALS = int(os.environ.get('VIT_JAX_CHAOS_TRIALS', '1'))
STOPS_PER_TRIAL = 2
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGKILL)
FAULT = 0.5  # the chance that a stop is followed by a damaged newest checkpoint
pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def uninterrupted(digits_data_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('uninterrupted'))
  assert loop.train_and_evaluate(runs.config(digits_data_dir), workdir)['outcome'] == 'completed'
  return workdir


@pytest.mark.parametrize('trial', range(TRIALS))
def test_random_stops_and_restarts_end_as_the_uninterrupted_run(trial, uninterrupted,
                                                                 digits_data_dir, tmp_path):
  seed = int(os.environ.get('VIT_JAX_CHAOS_SEED', int(time.time() * 1000) % 2**31)) + trial
  chooser = random.Random(seed)
  workdir = str(tmp_path / 'chaos')
  events = []
  for _ in range(STOPS_PER_TRIAL):
    sig, at_step = chooser.choice(SIGNALS), chooser.randint(1, runs.FIELDS['total_steps'] - 1)
    code, out = runs.interrupt(workdir, digits_data_dir, at_step, sig)
    events.append((signal.Signals(sig).name, at_step, code))
    expected = (-signal.SIGKILL,) if sig == signal.SIGKILL else (0,)
    assert code in expected + (0,), (seed, events, out[-3000:])  # or it finished first
    steps = runs.checkpoint_steps(workdir)
    if chooser.random() < FAULT and len(steps) >= 2:  # the one before it restores
      runs.damage(workdir, steps[-1])
      events.append(('damaged', steps[-1]))
  final = runs.launch(workdir, digits_data_dir)
  out = final.communicate(timeout=300)[0]
  assert final.returncode == 0 and 'Run completed at step 20' in out, (seed, events, out[-3000:])

  runs.assert_same_run(workdir, uninterrupted, digits_data_dir, (seed, events))

  # The finished command again (in this process: it compiles nothing): no file changes.
  before = runs.files(workdir)
  assert loop.train_and_evaluate(runs.config(digits_data_dir), workdir)['outcome'] == 'completed'
  after = runs.files(workdir)
  assert sorted(after.keys() ^ before.keys()) == []
  assert [name for name in after if after[name] != before[name]] == []

  # A storage fault on every checkpoint: the command refuses in one line, and changes no file.
  steps = runs.checkpoint_steps(workdir)
  for step in steps:
    runs.damage(workdir, step)
  before = runs.files(workdir)
  refused = runs.launch(workdir, digits_data_dir)
  out = refused.communicate(timeout=300)[0]
  lines = [line for line in out.splitlines() if line.startswith('error: ')]
  assert refused.returncode == 2 and len(lines) == 1, (seed, events, out[-3000:])
  assert 'none of them restores' in lines[0] and 'Traceback' not in out, out[-3000:]
  assert all(f'step {step}: ' in lines[0] for step in steps), lines[0]
  assert runs.files(workdir) == before
  print(f'chaos trial {trial}: seed {seed}, {events}: equal')
