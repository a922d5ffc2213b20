"""tests/preloaded.py: a forked command behaves as the same command started by `subprocess`."""

import os
import signal
import subprocess
import sys
import time

import preloaded

PROGRAM = r'''
import os, sys, atexit
atexit.register(lambda: print("atexit ran"))
print(sys.argv, os.getcwd(), os.environ.get("PRELOADED_TEST"), sys.path[:2], flush=True)
print("to stderr", file=sys.stderr)
import jax
print(jax.device_count())
sys.exit(int(sys.argv[1]))
'''


def test_a_command_prints_and_exits_as_a_new_interpreter(tmp_path):
  env = dict(os.environ, PRELOADED_TEST='yes', PYTHONPATH=str(tmp_path),
             XLA_FLAGS='--xla_force_host_platform_device_count=3')
  args = [sys.executable, '-c', PROGRAM, '7', 'x y']
  ours = preloaded.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
  plain = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
  assert (ours.returncode, ours.stdout) == (plain.returncode, plain.stdout) == (7, (
      f"['-c', '7', 'x y'] {tmp_path} yes {['', str(tmp_path)]}\n3\natexit ran\n"))
  assert ours.stderr.splitlines()[-1] == plain.stderr.splitlines()[-1] == 'to stderr'


def test_signals_reach_the_command_and_its_exit_reads_as_subprocess_reads_it(tmp_path):
  program = 'import time; print("ready", flush=True); time.sleep(60)'
  codes = []
  for popen in (preloaded.Popen, subprocess.Popen):
    for sig in (signal.SIGINT, signal.SIGTERM):
      process = popen([sys.executable, '-c', program], stdout=subprocess.PIPE, text=True)
      try:
        assert process.stdout.readline() == 'ready\n'
        assert process.poll() is None
        process.send_signal(sig)
        codes.append(process.wait(timeout=30))
      finally:
        if process.poll() is None:  # only the process this test started
          process.kill()
          process.wait()
  assert codes == [-signal.SIGINT, -signal.SIGTERM] * 2


def test_a_module_runs_as_main_and_a_timeout_ends_it(tmp_path):
  (tmp_path / 'mod.py').write_text('import sys\nif __name__ == "__main__":\n'
                                   '  print(sys.argv[1:], __file__)\n')
  done = preloaded.run([sys.executable, '-m', 'mod', '--flag=1'], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
  assert done.stdout == f"['--flag=1'] {tmp_path / 'mod.py'}\n"
  started = time.time()
  try:
    preloaded.run([sys.executable, '-c', 'import time; time.sleep(60)'], timeout=1)
    raise AssertionError('no timeout')
  except subprocess.TimeoutExpired:
    assert time.time() - started < 20


def test_an_environment_read_at_import_starts_a_plain_process():
  env = dict(os.environ, JAX_ENABLE_X64='1')
  process = preloaded.Popen([sys.executable, '-c', 'pass'], env=env)
  assert isinstance(process, subprocess.Popen) and process.wait(timeout=60) == 0
  process = preloaded.Popen([sys.executable, '-c', 'pass'])
  assert isinstance(process, preloaded.Popen) and process.wait(timeout=60) == 0
