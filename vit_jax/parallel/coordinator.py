"""JAX's coordination service in a process of its own beside process 0, so that process 0 can die
like any other.

`jax.distributed.initialize` runs the service inside process 0. When that process dies, every
other process's runtime sees the service's socket close at once and aborts (SIGABRT, a C++ stack,
exit 134) before anything of ours can speak. With the service in a small process of its own, the
loss of process 0 is the loss of a peer: the key-value store stays up, the watchdogs
(`vit_jax.parallel.watchdog`) see process 0's heartbeat stop and exit 3 with one line naming it.

The service process reads one line from process 0: `done` when process 0 leaves the job (it then
stops at once); end-of-file without it when process 0 died, after which it stays up `linger_s`
(long enough for the survivors to report the loss) and stops. It runs in its own session, so a
Ctrl-C or a signal to process 0's group does not take it down before process 0 has left.

  python -m vit_jax.parallel.coordinator BIND_ADDRESS NUM_PROCESSES HEARTBEAT_S SHUTDOWN_S LINGER_S
"""

import contextlib
import os
import subprocess
import sys
import time
from typing import Iterator, Optional

from vit_jax.parallel import runtime_api

READY = 'ready'
DONE = 'done'


class ServiceProcess:
  """Stands in for the service object `jax.distributed` keeps (it calls only `shutdown()`)."""

  def __init__(self, bind_address: str, num_processes: int, *, heartbeat_timeout: Optional[int],
               shutdown_timeout: Optional[int], linger_s: float):
    args = [bind_address, num_processes, heartbeat_timeout or 100, shutdown_timeout or 300,
            linger_s]
    self._proc = subprocess.Popen(
        [sys.executable, '-m', __name__, *map(str, args)], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
    self._shutdown_s = shutdown_timeout or 300
    line = self._proc.stdout.readline().strip()  # bounded by the service's own bind error
    if line != READY:
      self._proc.kill()
      self._proc.wait()
      raise RuntimeError(f'The coordination service did not start on {bind_address} '
                         f'(exit status {self._proc.returncode}).')

  def shutdown(self) -> None:
    if self._proc.poll() is not None:
      return
    try:
      self._proc.stdin.write(DONE + '\n')
      self._proc.stdin.close()
      self._proc.wait(timeout=self._shutdown_s)
    except (BrokenPipeError, subprocess.TimeoutExpired):
      self._proc.kill()
      self._proc.wait()


@contextlib.contextmanager
def own_process(linger_s: float) -> Iterator[None]:
  """Inside the block, `jax.distributed.initialize` on process 0 starts the service as a
  `ServiceProcess` instead of in this process."""
  def start(bind_address, num_processes, *, heartbeat_timeout=None, shutdown_timeout=None,
            **unused):
    del unused  # recoverable: not offered by this service
    return ServiceProcess(bind_address, num_processes, heartbeat_timeout=heartbeat_timeout,
                          shutdown_timeout=shutdown_timeout, linger_s=linger_s)

  with runtime_api.service_started_by(start):
    yield


def _serve(bind_address: str, num_processes: int, heartbeat_s: int, shutdown_s: int,
           linger_s: float) -> None:
  service = runtime_api.start_service(bind_address, num_processes, heartbeat_s, shutdown_s)
  print(READY, flush=True)
  if sys.stdin.readline().strip() != DONE:  # process 0 died without leaving
    time.sleep(linger_s)
  service.shutdown()


if __name__ == '__main__':
  _serve(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
