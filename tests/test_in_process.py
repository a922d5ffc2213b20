"""tests/support/in_process.py: a command run in the test's interpreter ends as the same command
started by `subprocess`, and leaves the interpreter as it found it."""

import os
import signal
import subprocess
import sys

from absl import flags

from support import in_process

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A user's mistake (exit 2, one line), a bad flag value, a script's exception (exit 1, its
# traceback), `sys.exit` with a message, and a command that succeeds and prints.
COMMANDS = (
    ['-m', 'vit_jax.main', '--config=configs/digits.py', '--workdir=w', '--config.lr.bse=1'],
    ['-m', 'vit_jax.main', '--config=configs/digits.py', '--workdir=w',
     '--config.total_steps=-3'],
    ['-m', 'vit_jax.main', '--config=configs/digits.py', '--mode=serve'],
    ['-c', 'import sys; print(sys.argv); raise KeyError("missing")'],
    ['-c', 'import sys; sys.exit("stopped: a message")'],
    ['-m', 'vit_jax.parallel.xla_flags'],
)


def _state():
  return (dict(os.environ), os.getcwd(), list(sys.argv), list(sys.path),
          signal.getsignal(signal.SIGTERM), flags.FLAGS.is_parsed())


def test_commands_end_as_in_a_new_interpreter():
  env = dict(os.environ, PYTHONPATH=ROOT, LIBTPU_INIT_ARGS='--given_here=1')
  before = _state()
  for command in COMMANDS:
    args = [sys.executable, *command]
    ours = in_process.run(args, cwd=ROOT, env=env)
    theirs = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
                            check=False)
    assert ours.returncode == theirs.returncode, (command, ours.stderr, theirs.stderr)
    assert ours.stdout == theirs.stdout, command
    if ours.returncode == 1:  # an exception's traceback: the same last line
      assert ours.stderr.splitlines()[-1] == theirs.stderr.splitlines()[-1], command
    else:  # what Python printed; a new interpreter's TensorFlow adds its C++ start-up lines first
      assert theirs.stderr.endswith(ours.stderr), (command, ours.stderr, theirs.stderr)
      assert ours.stderr.count('\n') == (ours.returncode != 0), (command, ours.stderr)
    assert _state() == before, command  # environment, directory, argv, path, signals
    # The command's flags are gone (a library's, such as absl's --help, stay with its import).
    assert not {'config', 'workdir', 'mode', 'config.total_steps'} & set(flags.FLAGS), command
  assert '--given_here=1' in ours.stdout  # it ran under the environment it was given


def test_a_flag_given_to_one_command_is_not_seen_by_the_next(tmp_path):
  script = tmp_path / 'show.py'
  script.write_text('from absl import app, flags\n'
                    "_N = flags.DEFINE_integer('n', 1, 'A number.')\n"
                    'app.run(lambda argv: print(_N.value, argv[1:]))\n')
  first = in_process.run([sys.executable, str(script), '--n=7', 'extra'], cwd=tmp_path)
  second = in_process.run([sys.executable, 'show.py'], cwd=tmp_path)
  assert (first.returncode, first.stdout) == (0, "7 ['extra']\n")
  assert (second.returncode, second.stdout) == (0, '1 []\n')
