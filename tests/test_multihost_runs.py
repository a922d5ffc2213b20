"""The main job as several real processes on localhost (gloo collectives): agreed stops on
SIGTERM, a dead peer detected, and the same run on any process count.

Every job shards the model with fsdp_tp over a (1, 2, 2) mesh of 4 CPU devices: on 2 processes
the fsdp axis crosses them, so parameters, optimizer state and the batch are split across
processes as on a real cluster."""

import importlib.util
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import runs
import tiny_recipe
from vit_jax import evaluators
from vit_jax.train import checkpointer
from vit_jax.train import setup as setup_lib
from vit_jax.train import options as options_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 16
pytestmark = pytest.mark.slow


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


class Job:
  """`processes` copies of `python -m vit_jax.main`, 4 CPU devices in all, logs in files."""

  def __init__(self, workdir, data_dir, processes, log_dir, extra=(), args=None):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
    env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={4 // processes}'
    env['JAX_PLATFORMS'] = 'cpu'
    self.logs = [os.path.join(log_dir, f'{os.path.basename(workdir)}_{i}_{time.time()}.log')
                 for i in range(processes)]
    args = list(args) if args else [sys.executable, '-m', 'vit_jax.main', f'--config={ROOT}/tests/tiny_recipe.py:{data_dir}',
            f'--workdir={workdir}', f'--config.total_steps={STEPS}', '--config.checkpoint_every=8',
            '--config.evals.eval.every=0',  # evaluated at the end only
            '--config.distributed.heartbeat_timeout_s=20',
            '--config.mesh=(1, 2, 2)', '--config.sharding=fsdp_tp', *extra]
    if processes > 1:
      args += [f'--coordinator_address=localhost:{port}', f'--num_processes={processes}']
    self.procs = []
    for i, log in enumerate(self.logs):
      with open(log, 'w') as out:
        # Plain interpreters, as real hosts start them (each with its own string-hash seed).
        self.procs.append(subprocess.Popen(
            args + ([f'--process_id={i}'] if processes > 1 else []), cwd=ROOT, env=env,
            stdout=out, stderr=subprocess.STDOUT, text=True))

  def log(self, i=0):
    with open(self.logs[i]) as f:
      return f.read()

  def diagnosis(self, i=0):
    """The log's error lines (a runtime abort prints them before its long module list), then
    its end."""
    text = self.log(i)
    errors = [l for l in text.splitlines() if l[:1] in 'EF' and l[1:2].isdigit() or
              l.startswith(('error', 'Fatal', 'Traceback'))]
    return '\n'.join(errors[:20]) + '\n...\n' + text[-1500:]

  def logged_step(self):
    steps = [int(l.split()[1].split('/')[0]) for l in self.log(0).splitlines()
             if l.startswith('step ') and '/' in l.split()[1]]
    return max(steps, default=0)

  def wait_for_step(self, step, timeout=240):
    deadline = time.time() + timeout
    while self.logged_step() < step:
      assert time.time() < deadline, self.log(0)[-3000:]
      assert all(p.poll() is None for p in self.procs), self.log(0)[-3000:]
      time.sleep(0.02)  # a tiny step takes tens of milliseconds: signals land near their step

  def wait(self, timeout=300):
    try:
      return [p.wait(timeout=timeout) for p in self.procs]
    finally:
      for p in self.procs:  # only the processes this test started, by their handle
        if p.poll() is None:
          p.kill()
          p.wait()


def _params_and_rows(workdir, data_dir):
  config = tiny_recipe.get_config(data_dir)
  config.total_steps, config.mesh, config.sharding = STEPS, (-1, 2, 2), 'fsdp_tp'
  restored = checkpointer.Checkpointer(workdir, async_save=False).restore(
      setup_lib.from_config(config).abstract_state)
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  return restored.step, jax.tree.map(np.asarray, jax.device_get(restored.state.params)), rows


def _assert_same_run(a, b, *, exact):
  """Equal metrics row for row, equal parameters. Across process counts the gradient sums are
  reduced in another order (gloo vs. in-process): losses and evaluations agree to 1e-5, but Adam
  turns last-bit differences of near-zero gradients into differences of up to ~lr in a few
  parameters, so those are compared at the learning rate's scale."""
  step_a, params_a, rows_a = a[:3]
  step_b, params_b, rows_b = b[:3]
  assert step_a == step_b == STEPS
  atol = 0.0 if exact else 1e-3  # lr 3e-3
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=0, atol=atol), params_a,
               params_b)
  assert [r['step'] for r in rows_a] == [r['step'] for r in rows_b]
  for row_a, row_b in zip(rows_a, rows_b):
    for key in row_a:
      tight = exact or key in ('train/loss', 'train/accuracy') or key.startswith('eval/')
      np.testing.assert_allclose(row_a[key], row_b[key], rtol=0 if exact else
                                 (1e-5 if tight else 1e-3), err_msg=f'{key} at {row_a["step"]}')


@pytest.fixture(scope='module')
def reference(digits_data_dir, tmp_path_factory):
  """An uninterrupted run on 2 processes x 2 devices: (step, params, metric rows, workdir)."""
  base = tmp_path_factory.mktemp('reference')
  two = Job(str(base / 'two'), digits_data_dir, 2, str(base))
  assert two.wait() == [0, 0], two.log(0)[-3000:] + two.log(1)[-3000:]
  return (*_params_and_rows(str(base / 'two'), digits_data_dir), str(base / 'two'))


def _preempted_step(job, i):
  lines = [l for l in job.log(i).splitlines() if 'preempted at step' in l]
  assert len(lines) == 1, job.log(i)[-3000:]
  return int(lines[0].split('preempted at step ')[1].split()[0])


def test_stops_agreed_by_every_process_then_the_run_finishes_on_one(reference, digits_data_dir,
                                                                   tmp_path):
  """One run, three launches. (1) SIGTERM to one of 2 processes: both stop at the same step.
  (2) Restarted on 2 processes, SIGTERM to both a step apart: both stop at the same step, and
  every metric row so far equals the uninterrupted 2-process run's exactly. (3) Resumed on
  1 process x 4 devices, it trains the rest like the 2-process run (host-count independence)."""
  workdir = str(tmp_path / 'run')
  draw = random.Random(time.time())
  first = Job(workdir, digits_data_dir, 2, str(tmp_path))
  first.wait_for_step(draw.randint(1, 3))
  first.procs[1].send_signal(signal.SIGTERM)
  assert first.wait() == [0, 0], first.log(0)[-3000:] + first.log(1)[-3000:]
  stop_1 = _preempted_step(first, 0)
  assert _preempted_step(first, 1) == stop_1 and stop_1 < STEPS - 6, (
      stop_1, first.log(0)[-3000:], first.log(1)[-3000:])
  assert max(int(d) for d in os.listdir(os.path.join(workdir, 'checkpoints'))
             if d.isdigit()) == stop_1

  second = Job(workdir, digits_data_dir, 2, str(tmp_path))
  signal_at = stop_1 + draw.randint(1, 2)
  second.wait_for_step(signal_at)
  second.procs[0].send_signal(signal.SIGTERM)
  second.wait_for_step(signal_at + 1)
  second.procs[1].send_signal(signal.SIGTERM)
  assert second.wait() == [0, 0], second.log(0)[-3000:] + second.log(1)[-3000:]
  assert f'Resumed from the checkpoint at step {stop_1}' in second.log(0)
  stop_2 = _preempted_step(second, 0)
  assert _preempted_step(second, 1) == stop_2 and stop_1 < stop_2 < STEPS
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  assert rows == [r for r in reference[2] if r['step'] <= stop_2]  # exact, row for row

  last = Job(workdir, digits_data_dir, 1, str(tmp_path))
  assert last.wait() == [0], last.log(0)[-3000:]
  assert f'Resumed from the checkpoint at step {stop_2}' in last.log(0)
  _assert_same_run(_params_and_rows(workdir, digits_data_dir), reference, exact=False)


@pytest.mark.parametrize('victim', [1, 0])  # 0 hosts the coordination service's process
def test_a_killed_peer_is_reported_within_the_bound(victim, digits_data_dir, tmp_path):
  survivor = 1 - victim
  workdir = str(tmp_path / 'run')
  job = Job(workdir, digits_data_dir, 2, str(tmp_path), extra=(
      '--config.total_steps=2000', '--config.checkpoint_every=2',
      '--config.distributed.heartbeat_timeout_s=6'))
  job.wait_for_step(3)
  # A multi-process checkpoint is final once every process has written its part: wait for it.
  deadline = time.time() + 120
  while not os.path.isdir(os.path.join(workdir, 'checkpoints', '2')):
    assert time.time() < deadline and job.procs[victim].poll() is None, job.log(0)[-3000:]
    time.sleep(0.2)
  job.procs[victim].send_signal(signal.SIGKILL)
  killed_at = time.time()
  codes = job.wait(timeout=120)
  elapsed = time.time() - killed_at
  assert codes[survivor] == 3 and elapsed < 30, (codes, elapsed, job.diagnosis(survivor))
  last = job.log(survivor).strip().splitlines()[-1]
  assert last.startswith(f'error: process {victim} of 2 stopped responding'), last
  steps = sorted(int(d) for d in os.listdir(os.path.join(workdir, 'checkpoints')) if d.isdigit())
  assert steps and steps[0] >= 2
  shutil.rmtree(workdir)


def test_evaluators_on_two_processes_give_the_one_process_numbers(reference, digits_data_dir,
                                                                  tmp_path):
  """--mode=eval with the digits recipe's evaluators (top-1 and few-shot probes) on the reference
  run, on 2 processes (the fsdp axis across them), equals the same evaluation in this process."""
  workdir = reference[3]
  data_flags = [f'--config.evals.eval.data.data_dir={digits_data_dir}',
                f'--config.evals.fewshot.datasets.digits.data_dir={digits_data_dir}']
  job = Job(workdir, digits_data_dir, 2, str(tmp_path), args=[
      sys.executable, '-m', 'vit_jax.main', '--mode=eval', f'--config={ROOT}/configs/digits.py',
      f'--checkpoint={workdir}', '--config.mesh=(1, 2, 2)', '--config.sharding=fsdp_tp',
      *data_flags])
  assert job.wait() == [0, 0], job.log(0)[-3000:] + job.log(1)[-3000:]
  printed = {}
  for line in job.log(0).splitlines():
    if line.startswith(f'{workdir}: '):
      key, value = line[len(workdir) + 2:].split()
      printed[key] = float(value)

  spec = importlib.util.spec_from_file_location('digits_recipe', f'{ROOT}/configs/digits.py')
  recipe = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(recipe)
  config = recipe.get_config()
  config.evals.eval.data.data_dir = digits_data_dir
  config.evals.fewshot.datasets.digits.data_dir = digits_data_dir
  config.mesh, config.sharding = (-1, 2, 2), 'fsdp_tp'
  here = evaluators.evaluate_checkpoint(options_lib.read_evals(config), workdir)
  assert sorted(printed) == sorted(here) and 'fewshot/digits_10shot' in printed
  for key, value in here.items():
    assert printed[key] == pytest.approx(value, rel=1e-5), key


FAKE_SRUN = '''#!/usr/bin/env bash
# srun on one machine: FAKE_NTASKS copies of the command, each with its SLURM task variables.
set -uo pipefail
pids=()
for ((i = 0; i < FAKE_NTASKS; i++)); do
  SLURM_PROCID=$i SLURM_LOCALID=$i SLURM_NTASKS=$FAKE_NTASKS SLURM_STEP_NODELIST=localhost \\
    SLURM_STEP_NUM_NODES=1 "$@" > "$FAKE_LOG_DIR/task_$i.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
'''


def _slurm_job_id():
  """A job id whose port (JAX: id % 4096 + 61440) is free here."""
  for _ in range(100):
    job_id = random.randrange(10_000, 1_000_000)
    try:
      with socket.socket() as s:
        s.bind(('localhost', job_id % 4096 + 61440))
      return job_id
    except OSError:
      continue
  raise AssertionError('no free port in the SLURM range')


def test_the_slurm_launcher_runs_the_same_job(reference, digits_data_dir, tmp_path):
  """experiments/launch/slurm.sbatch with srun standing in (2 tasks on localhost): JAX detects
  the job from the SLURM variables alone, and the run equals the 2-process reference exactly."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  (bin_dir / 'srun').write_text(FAKE_SRUN)
  (bin_dir / 'srun').chmod(0o755)
  workdir = str(tmp_path / 'slurm')
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env.update(PATH=f'{bin_dir}:{env["PATH"]}', FAKE_NTASKS='2', FAKE_LOG_DIR=str(tmp_path),
             SLURM_JOB_ID=str(_slurm_job_id()), JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=2',
             CONFIG=f'{ROOT}/tests/tiny_recipe.py:{digits_data_dir}', WORKDIR=workdir,
             REPO_DIR=ROOT, PYTHON=sys.executable)
  result = subprocess.run(
      ['bash', os.path.join(ROOT, 'experiments', 'launch', 'slurm.sbatch'),
       f'--config.total_steps={STEPS}', '--config.checkpoint_every=8', '--config.evals.eval.every=0',
       '--config.distributed.heartbeat_timeout_s=20', '--config.mesh=(1, 2, 2)',
       '--config.sharding=fsdp_tp'], env=env, capture_output=True, text=True, timeout=300)
  logs = ''.join((tmp_path / f'task_{i}.log').read_text()[-2000:] for i in range(2))
  assert result.returncode == 0, result.stderr[-2000:] + logs
  _assert_same_run(_params_and_rows(workdir, digits_data_dir), reference, exact=True)


CHAOS_TRIALS = int(os.environ.get('VIT_JAX_CHAOS_TRIALS', '1'))


@pytest.mark.parametrize('trial', range(CHAOS_TRIALS))
def test_a_random_process_stopped_by_a_random_signal_then_restarted_ends_as_the_reference(
    trial, reference, digits_data_dir, tmp_path):
  """Chaos on 2 processes: a random process gets a random signal at a random moment (a random
  step and up to 1.5 s after it: inside a checkpoint save at step 8, inside the final
  evaluation), and half the time its newest checkpoint is then damaged (a storage fault; the one
  before it restores); the job is started again until it completes. The end equals the
  uninterrupted 2-process run bit for bit, every metric row once. A SIGKILL makes the survivor
  exit 3."""
  seed = int(os.environ.get('VIT_JAX_CHAOS_SEED', int(time.time() * 1000) % 2**31)) + trial
  draw = random.Random(seed)
  workdir = str(tmp_path / 'run')
  fast = ('--config.distributed.heartbeat_timeout_s=6',)
  victim, sig = draw.randrange(2), draw.choice((signal.SIGTERM, signal.SIGINT, signal.SIGKILL))
  at_step, delay = draw.randint(2, STEPS), draw.uniform(0, 1.5)
  events = (victim, signal.Signals(sig).name, at_step, round(delay, 2))
  job = Job(workdir, digits_data_dir, 2, str(tmp_path), extra=fast)
  job.wait_for_step(at_step)
  time.sleep(delay)
  if job.procs[victim].poll() is None:
    job.procs[victim].send_signal(sig)
  codes = job.wait()
  survivor = 1 - victim
  if sig == signal.SIGKILL and codes[victim] == -signal.SIGKILL:
    assert codes[survivor] in (3, 0), (seed, events, codes, job.diagnosis(survivor))
    if codes[survivor] == 3:
      last = job.log(survivor).strip().splitlines()[-1]
      assert last.startswith(f'error: process {victim} of 2 stopped responding'), (seed, last)
  else:
    assert codes == [0, 0], (seed, events, codes, job.diagnosis(0), job.diagnosis(1))
  steps = runs.checkpoint_steps(workdir)
  if draw.random() < 0.5 and len(steps) >= 2:
    runs.damage(workdir, steps[-1])
    events += ('damaged', steps[-1])
  again = Job(workdir, digits_data_dir, 2, str(tmp_path), extra=fast)
  assert again.wait() == [0, 0], (seed, events, again.diagnosis(0), again.diagnosis(1))
  assert f'Run completed at step {STEPS}' in again.log(0), again.log(0)[-3000:]
  _assert_same_run(_params_and_rows(workdir, digits_data_dir), reference, exact=True)
  print(f'2-process chaos trial {trial}: seed {seed}, {events}, exits {codes}: equal')
