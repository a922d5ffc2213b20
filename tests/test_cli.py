"""Every command line prints a user's mistake as one line and exits 2, without a traceback."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args, timeout=240):
  result = subprocess.run([sys.executable, '-m', *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)
  errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
  return result, errors


@pytest.mark.parametrize('args,expected', [
    (('vit_jax.main', '--config=configs/digits.py', '--workdir=WORKDIR', '--config.totl_steps=1'),
     "error: --config.totl_steps: config has no field 'totl_steps'; nearest: total_steps"),
    (('vit_jax.main', '--config=configs/digits.py', '--workdir=WORKDIR', '--config.lr.bse=1'),
     "error: --config.lr.bse: config.lr has no field 'bse'; nearest: base."),
    (('vit_jax.main', '--config=configs/digits.py', '--workdir=WORKDIR', '--config.total_steps=-3'),
     'error: config.total_steps must be positive, found -3.'),
    (('vit_jax.main', '--config=configs/no_such_recipe.py', '--workdir=WORKDIR'),
     'error: --config=configs/no_such_recipe.py: no recipe file configs/no_such_recipe.py'),
    (('vit_jax.main', '--config=configs/digits.py', '--mode=eval'),
     'error: --mode=eval needs --checkpoint=<workdir or .npz>.'),
    (('vit_jax.export', '--checkpoint=no_such_run', '--format=npz', '--out=x.npz'),
     'error: Checkpoint not found: no_such_run'),
    (('vit_jax.export', '--checkpoint=no_such_run', '--format=tflite', '--out=x'),
     'error: flag --format=tflite: value should be one of'),
    (('vit_jax.infer', '--model=ViT-Q_16'), "error: Unknown model name 'ViT-Q_16'"),
    (('vit_jax.main', '--config=configs/digits.py', '--workdir=WORKDIR',
      '--coordinator_address=localhost:1', '--num_processes=2', '--process_id=2'),
     'error: --process_id=2 with --num_processes=2: expected a process id in [0, 2).'),
    (('vit_jax.infer', '--model=ViT-Ti_16', '--naflex=0', '--image=x.png'),
     'error: --naflex=0: expected a positive number of patches'),
    (('vit_jax.main', '--config=configs/finetune.py:mnist', '--workdir=WORKDIR'),
     "error: configs/finetune.py:mnist: unknown dataset 'mnist'; expected one of"),
    (('vit_jax.main', '--config=configs/dense.py:nowhere', '--workdir=WORKDIR'),
     "error: configs/dense.py: unknown variant 'nowhere'"),
    (('vit_jax.main', '--config=configs/digits.py', '--workdir=WORKDIR',
      '--config.wd_decoupled=True'),
     "error: --config.wd_decoupled: config.wd_decoupled no longer exists: use "
     "config.wd_style='schedule_scaled'"),
    (('vit_jax.main', '--config=configs/digits.py', '--workdir=WORKDIR', '--config.mesh=(1,8,1)',
      '--config.sharding=fsdp', '--config.replicated_max_mb=0.0001'),
     "error: config.sharding='fsdp' would copy whole onto every device: "
     'Transformer/encoderblock_0/MlpBlock_0/Dense_0/bias'),
    (('vit_jax.main', '--config=configs/digits.py', '--workdir=WORKDIR',
      '--config.evals.eval.data.name=folder'),
     'error: config.evals.eval.data: data.name="folder" needs data.root='),
    (('vit_jax.main', '--config=configs/digits.py', '--workdir=s3://vit-runs/run'),
     'error: s3://vit-runs/run: checkpoints cannot be written to s3:// (orbax'),
    (('vit_jax.viz', '--checkpoint=no_such_run', '--image=no_such.png', '--out=o'),
     'error: Image not found: no_such.png'),
])
def test_user_errors_are_one_line(args, expected, tmp_path):
  result, errors = _run(*[a.replace('WORKDIR', str(tmp_path / 'w')) for a in args])
  assert result.returncode == 2, result.stderr[-3000:]
  assert len(errors) == 1 and errors[0].startswith(expected), result.stderr[-3000:]
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  assert not os.path.exists(tmp_path / 'w'), 'a run refused at startup leaves no workdir'


def test_the_traceback_flag_shows_it():
  result, _ = _run('vit_jax.infer', '--model=ViT-Q_16', '--traceback')
  assert result.returncode != 0 and 'Traceback' in result.stderr
  assert "Unknown model name 'ViT-Q_16'" in result.stderr


def test_a_bug_keeps_its_traceback():
  """A ValueError that is not ours (here from numpy, inside a command) is not folded to one line:
  only `errors.UserError` is a user's mistake."""
  from vit_jax import cli  # pylint: disable=g-import-not-at-top
  from vit_jax import errors  # pylint: disable=g-import-not-at-top
  assert cli.USER_ERRORS == (errors.UserError, cli.app.UsageError)
  script = ('import numpy as np\nfrom vit_jax import cli\n'
            'def main(argv):\n  np.zeros(3).reshape(2, 2)\n'
            'cli.run(main)\n')
  result = subprocess.run([sys.executable, '-c', script], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
  assert result.returncode != 0 and 'Traceback' in result.stderr
  assert 'cannot reshape array' in result.stderr
  assert not any(line.startswith('error: ') for line in result.stderr.splitlines())
