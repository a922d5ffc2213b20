"""Our single-process commands (`python -m vit_jax.main ...`, `python experiments/x.py ...`,
`python -c ...`) run inside the test's own interpreter, as Python would run them.

`run` takes the arguments of `subprocess.run` that the tests use and returns a
`subprocess.CompletedProcess`: the exit status (0, `sys.exit`'s code, 1 for an exception that
escaped, with its traceback on stderr) and what the command printed. The command runs in
`cwd`, under `env`, with `sys.argv` and `sys.path[0]` as `python` sets them; all of it is put
back afterwards, with the absl flags the command defined removed and the rest reset to their
defaults, so the next command parses its own. It sees the test process's devices.

A command that must be a process of its own (it is killed or signalled, or it starts
`jax.distributed`) is started with `subprocess` by its test.
"""

import contextlib
import io
import logging
import os
import runpy
import signal
import subprocess
import sys
import traceback
import warnings

from absl import flags
from absl import logging as absl_logging

PYTHONS = (sys.executable, 'python', 'python3')
SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _split(args):
  """('-m', module) / ('-c', code) / ('', script), and the arguments after it."""
  args = [os.fspath(a) for a in args]
  if len(args) >= 3 and args[0] in PYTHONS and args[1] in ('-m', '-c'):
    return args[1], args[2], args[3:]
  if len(args) >= 2 and args[0] in PYTHONS and not args[1].startswith('-'):
    return '', args[1], args[2:]
  raise ValueError(f'not a python command: {args}')


def _exit_status(error: SystemExit) -> int:
  if error.code is None or isinstance(error.code, int):
    return error.code or 0
  print(error.code, file=sys.stderr)  # as Python does for sys.exit('message')
  return 1


def _execute(kind: str, what: str) -> int:
  try:
    if kind == '-m':
      with warnings.catch_warnings():  # the test imported the module; a new interpreter has not
        warnings.filterwarnings('ignore', '.* found in sys.modules after import of package',
                                RuntimeWarning)
        runpy.run_module(what, run_name='__main__', alter_sys=True)
    elif kind == '-c':
      exec(compile(what, '<string>', 'exec'), {'__name__': '__main__'})  # pylint: disable=exec-used
    else:
      runpy.run_path(what, run_name='__main__')
  except SystemExit as e:
    return _exit_status(e)
  except BaseException:  # pylint: disable=broad-except  (as the interpreter reports it)
    traceback.print_exc()
    return 1
  return 0


def _own_flags(defined_before) -> set[str]:
  """The flags the command defined: those of its `__main__` (which absl files under the script's
  path, no module's name) and their `--config.x` overrides. A library the command imported
  keeps its flags, as it stays imported."""
  new = set(flags.FLAGS) - defined_before
  own = {flag.name for module, defined in flags.FLAGS.flags_by_module_dict().items()
         if module not in sys.modules for flag in defined} & new
  return own | {name for name in new if name.split('.')[0] in own}


@contextlib.contextmanager
def _restored(cwd, env, argv, first_path):
  """The process state a command may change, put back when it ends."""
  saved_env, saved_cwd = dict(os.environ), os.getcwd()
  saved_argv, saved_path = sys.argv, list(sys.path)
  saved_signals = {sig: signal.getsignal(sig) for sig in SIGNALS}
  root = logging.getLogger()
  saved_handlers, saved_level = list(root.handlers), root.level
  saved_verbosity = absl_logging.get_verbosity()
  handler = absl_logging.get_absl_handler().python_handler
  saved_stream = handler.stream
  defined_before = set(flags.FLAGS)
  try:
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    sys.argv = argv
    extra = [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p]
    sys.path[:] = [first_path, *extra, *saved_path[1:]]
    handler.stream = sys.stderr
    yield
  finally:
    for name in _own_flags(defined_before):
      delattr(flags.FLAGS, name)
    flags.FLAGS.unparse_flags()
    absl_logging.set_verbosity(saved_verbosity)
    handler.stream = saved_stream
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    for sig, handler_ in saved_signals.items():
      signal.signal(sig, handler_)
    sys.argv, sys.path[:] = saved_argv, saved_path
    os.chdir(saved_cwd)
    os.environ.clear()
    os.environ.update(saved_env)


def run(args, *, cwd=None, env=None) -> subprocess.CompletedProcess:
  """Runs the python command `args` here; its exit status and what it printed."""
  kind, what, rest = _split(args)
  cwd = os.fspath(cwd or os.getcwd())
  env = dict(os.environ if env is None else env)
  if kind == '-m':  # sys.path[0] and sys.argv[0] as `python` sets them (runpy fills in the file)
    first_path, argv = cwd, [what, *rest]
  elif kind == '-c':
    first_path, argv = '', ['-c', *rest]
  else:
    first_path, argv = os.path.dirname(os.path.realpath(os.path.join(cwd, what))), [what, *rest]
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    with _restored(cwd, env, argv, first_path):
      code = _execute(kind, what)
  return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())
