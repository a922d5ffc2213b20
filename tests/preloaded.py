"""Processes the tests start, forked from an interpreter that has already imported TensorFlow,
JAX, Flax, optax and orbax.

A `python -m vit_jax.main ...` spends 5 to 7 s of CPU importing those libraries before it runs
a line of ours, and the suite starts about a hundred such processes. `Popen` and `run` here take
the arguments of their `subprocess` namesakes; a `python -m module`, `python script.py` or
`python -c code` command is forked from a server holding those imports (one per test worker)
and runs in a fresh process of its own: its own pid, signals, exit status, file descriptors,
working directory, environment, `sys.argv` and `sys.path`, as a new interpreter would have them.
Anything else, and a command whose environment differs in a variable those imports read
(`JAX_*`, `TF_*`, ...), starts as a plain subprocess.

What a forked command does not repeat is the import of those libraries, so the tests that must
see a fresh interpreter start up (`test_cli.py`) use `subprocess` itself.
"""

import atexit
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

PRELOAD = ('numpy', 'tensorflow', 'jax', 'jax.numpy', 'flax.linen', 'optax', 'orbax.checkpoint',
           'ml_collections', 'absl.app', 'absl.flags', 'absl.logging')
# Variables read while those modules import: a command whose values differ from the server's
# starts as a plain subprocess.
_READ_AT_IMPORT = re.compile(r'(JAX_|TF_|XLA_PYTHON_|PYTHON(?!PATH$)|OMP_|OPENBLAS_|MKL_|LD_)')
PIPE, STDOUT, DEVNULL = subprocess.PIPE, subprocess.STDOUT, subprocess.DEVNULL
CompletedProcess, TimeoutExpired = subprocess.CompletedProcess, subprocess.TimeoutExpired

_server = None  # (process, socket path, the environment it imported under)


def _start_server():
  global _server
  if _server is None or _server[0].poll() is not None:
    path = os.path.join(tempfile.mkdtemp(prefix='vit_jax_preloaded_'), 'socket')
    process = subprocess.Popen([sys.executable, os.path.abspath(__file__), path],
                               stdin=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not os.path.exists(path):
      if process.poll() is not None or time.time() > deadline:
        raise RuntimeError(f'the preloaded server did not start (exit {process.poll()})')
      time.sleep(0.05)
    _server = (process, path, dict(os.environ))
    atexit.register(_stop_server, process, os.path.dirname(path))
  return _server


def _stop_server(process, folder):
  if process.poll() is None:  # the server this process started, by its handle
    process.kill()
    process.wait()
  shutil.rmtree(folder, ignore_errors=True)


def _python_command(args):
  """('-m', module) / ('-c', code) / ('', script), and the rest of argv; None if not python."""
  if not args or args[0] not in (sys.executable, 'python', 'python3'):
    return None
  if len(args) >= 3 and args[1] in ('-m', '-c'):
    return args[1], args[2], list(args[3:])
  if len(args) >= 2 and not args[1].startswith('-'):
    return '', args[1], list(args[2:])
  return None


def _preloadable(env):
  base = _server[2] if _server else os.environ
  keys = {k for k in set(env) | set(base) if _READ_AT_IMPORT.match(k)}
  return all(env.get(k) == base.get(k) for k in keys)


class Popen:
  """`subprocess.Popen(args, cwd=, env=, stdin=, stdout=, stderr=, text=)` for the tests' uses:
  a plain `subprocess.Popen` unless the command can be forked from the preloaded server."""

  def __new__(cls, args, **kwargs):
    args = [os.fspath(a) for a in args]
    env = dict(kwargs.get('env') or os.environ)
    if _python_command(args) is None or not _preloadable(env):
      return subprocess.Popen(args, **kwargs)
    return super().__new__(cls)

  def __init__(self, args, *, cwd=None, env=None, stdin=None, stdout=None, stderr=None,
               text=False):
    args = [os.fspath(a) for a in args]
    self.args, self.returncode = args, None
    self.stdin = self.stdout = self.stderr = None
    _, path, _ = _start_server()
    sent, close_after = [], []  # the command's fds 0, 1, 2; what to close here once sent
    for name, spec, writes in (('stdin', stdin, False), ('stdout', stdout, True),
                               ('stderr', stderr, True)):
      if spec is None:
        sent.append(('stdin', 'stdout', 'stderr').index(name))
      elif spec == STDOUT:
        sent.append(sent[1])
      elif spec == DEVNULL:
        sent.append(os.open(os.devnull, os.O_RDWR))
        close_after.append(sent[-1])
      elif spec == PIPE:
        read, write = os.pipe()
        sent.append(write if writes else read)
        close_after.append(sent[-1])
        ours = read if writes else write
        setattr(self, name, open(ours, ('r' if writes else 'w') + ('' if text else 'b'),
                                 encoding='utf-8' if text else None))
      else:
        sent.append(spec if isinstance(spec, int) else spec.fileno())
    self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    self._socket.connect(path)
    request = {'args': args, 'cwd': os.fspath(cwd or os.getcwd()),
               'env': dict(env if env is not None else os.environ)}
    socket.send_fds(self._socket, [json.dumps(request).encode()], sent)
    for fd in close_after:
      os.close(fd)
    self.pid = int(self._socket.recv(64).decode().split()[1])

  def _status(self, timeout):
    if self.returncode is None:
      self._socket.settimeout(timeout)
      try:
        message = self._socket.recv(64).decode()
      except (socket.timeout, BlockingIOError):
        return None
      if not message.startswith('exit '):  # the monitor ended without a status
        raise RuntimeError(f'pid {self.pid}: the preloaded server sent no exit status')
      self.returncode = int(message.split()[1])
      self._socket.close()
    return self.returncode

  def poll(self):
    return self._status(0.0)

  def wait(self, timeout=None):
    if self._status(timeout) is None:
      raise TimeoutExpired(self.args, timeout)
    return self.returncode

  def send_signal(self, sig):
    if self.returncode is None:
      os.kill(self.pid, sig)

  def terminate(self):
    self.send_signal(signal.SIGTERM)

  def kill(self):
    self.send_signal(signal.SIGKILL)

  def communicate(self, timeout=None):
    """(stdout, stderr) read to their ends (None where not piped), then the exit status."""
    read = {}
    readers = [threading.Thread(target=lambda n=name, f=f: read.__setitem__(n, f.read()),
                                daemon=True)
               for name, f in (('stdout', self.stdout), ('stderr', self.stderr)) if f]
    for reader in readers:
      reader.start()
    deadline = None if timeout is None else time.time() + timeout
    for reader in readers:
      reader.join(None if deadline is None else max(deadline - time.time(), 0))
      if reader.is_alive():
        raise TimeoutExpired(self.args, timeout)
    self.wait(None if deadline is None else max(deadline - time.time(), 0))
    for f in (self.stdout, self.stderr):
      if f:
        f.close()
    return read.get('stdout'), read.get('stderr')


def run(args, *, capture_output=False, timeout=None, check=False, **kwargs):
  """`subprocess.run` over `Popen` above."""
  if capture_output:
    kwargs.update(stdout=PIPE, stderr=PIPE)
  process = Popen(args, **kwargs)
  try:
    out, err = process.communicate(timeout=timeout)
  except TimeoutExpired:
    process.kill()
    process.wait()
    raise
  finally:
    if process.poll() is None:  # only the process started here
      process.kill()
      process.wait()
  if check and process.returncode:
    raise subprocess.CalledProcessError(process.returncode, args, out, err)
  return CompletedProcess(args, process.returncode, out, err)


# ----------------------------------------------------------------------------- the server side


def _serve(path):
  import importlib  # pylint: disable=g-import-not-at-top
  for name in PRELOAD:
    importlib.import_module(name)
  base_path = sys.path[1:]  # without this file's folder
  listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
  listener.bind(path + '.tmp')
  os.rename(path + '.tmp', path)  # the client waits for the name: it appears once bound
  listener.listen(64)
  signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the monitors below are reaped by the kernel
  signal.signal(signal.SIGTERM, signal.SIG_DFL)
  while True:
    connection, _ = listener.accept()
    message, fds, _, _ = socket.recv_fds(connection, 1 << 20, 3)
    sys.stdout.flush()
    sys.stderr.flush()
    if os.fork() == 0:
      listener.close()
      _monitor(connection, json.loads(message), fds, base_path)
    connection.close()
    for fd in fds:
      os.close(fd)


def _monitor(connection, request, fds, base_path):
  """Forks the command, reports its pid, waits for it and reports its exit status."""
  signal.signal(signal.SIGCHLD, signal.SIG_DFL)
  pid = os.fork()
  if pid == 0:
    connection.close()
    _command(request, fds, base_path)
  for fd in fds:
    os.close(fd)
  try:
    connection.send(f'pid {pid}'.encode())
    _, status = os.waitpid(pid, 0)
    connection.send(f'exit {os.waitstatus_to_exitcode(status)}'.encode())
  except OSError:
    pass
  os._exit(0)


def _command(request, fds, base_path):
  """In the forked command: the descriptors, directory, environment, argv and path of a new
  interpreter, then the command run as `python` runs it, and Python's exit."""
  code = 1
  try:
    for target, fd in enumerate(fds):
      os.dup2(fd, target)
    for fd in set(fds):
      if fd > 2:
        os.close(fd)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
      signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.chdir(request['cwd'])
    os.environ.clear()
    os.environ.update(request['env'])
    import numpy as np  # pylint: disable=g-import-not-at-top
    np.random.seed()  # fresh entropy, as a new process would have (`random` reseeds itself)
    kind, what, rest = _python_command(request['args'])
    extra = [p for p in request['env'].get('PYTHONPATH', '').split(os.pathsep) if p]
    first = {'-m': os.getcwd(), '-c': ''}.get(kind, os.path.dirname(os.path.realpath(what)))
    sys.path[:] = [first, *extra, *base_path]
    sys.argv = [{'-m': what, '-c': '-c', '': what}[kind], *rest]
    import runpy  # pylint: disable=g-import-not-at-top
    try:
      if kind == '-m':
        runpy.run_module(what, run_name='__main__', alter_sys=True)
      elif kind == '-c':
        main = type(sys)('__main__')
        sys.modules['__main__'] = main
        exec(compile(what, '<string>', 'exec'), main.__dict__)  # pylint: disable=exec-used
      else:
        runpy.run_path(what, run_name='__main__')
      code = 0
    except SystemExit as e:
      if e.code is None or isinstance(e.code, int):
        code = e.code or 0
      else:
        print(e.code, file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
      sys.excepthook(*sys.exc_info())
      code = -signal.SIGINT
    except BaseException:  # pylint: disable=broad-except
      sys.excepthook(*sys.exc_info())
      code = 1
    threading._shutdown()  # pylint: disable=protected-access
    atexit._run_exitfuncs()  # pylint: disable=protected-access
  finally:
    for stream in (sys.stdout, sys.stderr):
      try:
        stream.flush()
      except Exception:  # pylint: disable=broad-except
        pass
    if code == -signal.SIGINT:  # an uncaught KeyboardInterrupt ends Python by the signal
      signal.signal(signal.SIGINT, signal.SIG_DFL)
      os.kill(os.getpid(), signal.SIGINT)
    os._exit(code)


if __name__ == '__main__':
  _serve(sys.argv[1])
