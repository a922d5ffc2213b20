"""The XLA/libtpu flags: appended to the user's own, idempotent, and known to the installed XLA."""

import os
import subprocess
import sys

from vit_jax.parallel import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_flags_are_appended_once_and_the_users_value_wins():
  environ = {'XLA_FLAGS': '--xla_force_host_platform_device_count=8 '
                          '--xla_gpu_enable_pipelined_all_gather=false'}
  first = xla_flags.apply(environ)
  assert environ['XLA_FLAGS'].startswith('--xla_force_host_platform_device_count=8 '
                                         '--xla_gpu_enable_pipelined_all_gather=false ')
  assert '--xla_gpu_enable_pipelined_all_gather=true' not in environ['XLA_FLAGS']
  assert '--xla_gpu_enable_latency_hiding_scheduler=true' in environ['XLA_FLAGS']
  assert environ['LIBTPU_INIT_ARGS'] == ' '.join(xla_flags.TPU_FLAGS)
  assert xla_flags.apply(environ) == first  # idempotent


def test_every_gpu_flag_is_known_to_the_installed_xla():
  """XLA parses every backend's flags at start-up and aborts on an unknown one: a CPU process
  with all of them set starts and computes."""
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'XLA_FLAGS': ' '.join(xla_flags.GPU_FLAGS)}
  program = 'import jax.numpy as jnp; print(jnp.arange(3).sum())'
  out = subprocess.run([sys.executable, '-c', program], env=env, capture_output=True, text=True,
                       timeout=120, check=False)
  assert out.returncode == 0 and out.stdout.strip() == '3', out.stderr[-2000:]
  env['XLA_FLAGS'] += ' --xla_gpu_no_such_flag=true'  # the control: an unknown flag aborts
  out = subprocess.run([sys.executable, '-c', 'import jax.numpy as jnp; jnp.arange(3).sum()'],
                       env=env, capture_output=True, text=True, timeout=120, check=False)
  assert out.returncode != 0 and 'xla_gpu_no_such_flag' in out.stderr


def test_the_launcher_export_lines():
  env = {**os.environ, 'XLA_FLAGS': '--xla_dump_to=/tmp/x'}
  env.pop('LIBTPU_INIT_ARGS', None)
  out = subprocess.run([sys.executable, '-m', 'vit_jax.parallel.xla_flags'], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=120, check=True)
  lines = out.stdout.splitlines()
  assert lines[0] == "export XLA_FLAGS='--xla_dump_to=/tmp/x " + ' '.join(xla_flags.GPU_FLAGS) + "'"
  assert lines[1] == "export LIBTPU_INIT_ARGS='" + ' '.join(xla_flags.TPU_FLAGS) + "'"
