"""Dead-peer detection for multi-host runs: a process that dies (SIGKILL, OOM, a lost host)
leaves the others blocked in a collective; this turns that into a clear exit the scheduler acts on.

Every process bumps a counter in the distributed runtime's key-value store every few seconds and
watches everyone else's. A peer whose counter has not moved for `timeout_s` (measured on this
process's own clock) is declared lost: this process prints one line naming it and exits with
status 3, without waiting for the blocked collective. A coordinator that stops answering is
process 0 lost. Checkpoints are never touched: orbax finalizes a step atomically, so the newest
complete one stays intact for the restart. A process that finishes marks itself done first, so
peers that end a little later are not alarmed. When a collective fails first (gloo sees the
closed connection at once), the main thread waits for the watchdog's verdict before giving up.
"""

import logging
import os
import sys
import threading
import time
from typing import Callable, Optional

import jax

from vit_jax.parallel import runtime_api

PREFIX = 'vit_jax/heartbeat'
DONE = 'done'
EXIT_STATUS = 3


def _lost(who: str, silent_s: float, timeout_s: float) -> None:
  print(f'error: {who} stopped responding (no heartbeat for {silent_s:.0f} s, '
        f'config.distributed.heartbeat_timeout_s={timeout_s:g}): it died or its host was lost. '
        f'Exiting with status {EXIT_STATUS} so the job can be restarted; the newest complete '
        'checkpoint is intact.', file=sys.stderr, flush=True)
  os._exit(EXIT_STATUS)  # pylint: disable=protected-access  (the main thread is stuck in a collective)


class PeerWatchdog:
  """Watches every other process of the job from a daemon thread; `stop()` at a clean end."""

  def __init__(self, timeout_s: float, *, interval_s: Optional[float] = None,
               on_lost: Callable[[str, float, float], None] = _lost):
    self._store = runtime_api.KeyValueStore()
    self._me, self._count = jax.process_index(), jax.process_count()
    self._timeout = float(timeout_s)
    self._interval = interval_s or max(0.5, self._timeout / 5)
    self._on_lost = on_lost
    self._stopped = threading.Event()
    self._done = threading.Event()  # this process finished: no more beats, still watching
    self._thread = threading.Thread(target=self._watch, daemon=True, name='peer-watchdog')
    self._thread.start()

  def _watch(self) -> None:
    beat, start = 0, time.monotonic()
    seen = {pid: (None, start) for pid in range(self._count) if pid != self._me}
    reached = start
    while not self._stopped.wait(self._interval):
      now = time.monotonic()
      beat += 1
      try:
        if not self._done.is_set():
          self._store.set(f'{PREFIX}/{self._me}', str(beat))
        entries = self._store.entries(PREFIX)
        reached = now
      except Exception as e:  # pylint: disable=broad-except  (the coordinator is gone or busy)
        logging.debug('Heartbeat to the coordinator failed: %s', e)
        if now - reached > self._timeout and not self._stopped.is_set():
          self._on_lost('the coordinator (process 0)', now - reached, self._timeout)
        continue
      for pid, (value, since) in list(seen.items()):
        current = entries.get(f'{PREFIX}/{pid}')
        if current == DONE:
          del seen[pid]
        elif current != value:
          seen[pid] = (current, now)
        elif now - since > self._timeout and not self._stopped.is_set():
          self._on_lost(f'process {pid} of {self._count}', now - since, self._timeout)
          return
      if self._done.is_set() and not seen:  # every peer finished too
        return

  def await_verdict(self) -> None:
    """After a collective failed (gloo notices a closed connection at once): waits up to the
    timeout for the watchdog to name a lost peer, in which case it exits the process."""
    deadline = time.monotonic() + self._timeout + 2 * self._interval
    while time.monotonic() < deadline and self._thread.is_alive():
      time.sleep(min(self._interval, 1.0))

  def silence(self) -> None:
    """Stops beating without marking done: peers will report this process lost."""
    self._stopped.set()
    self._thread.join(timeout=5)

  def finish(self) -> None:
    """Marks this process done (peers stop watching it) and keeps watching the peers still
    running: one that dies while this process waits in JAX's shutdown barrier is named and
    exits this one with status 3, as during the run (JAX's own timeout would abort it)."""
    self._done.set()
    try:
      self._store.set(f'{PREFIX}/{self._me}', DONE)
    except Exception:  # pylint: disable=broad-except
      pass

  def stop(self) -> None:
    """Marks this process done (peers stop watching it) and ends the thread."""
    self._stopped.set()
    try:
      self._store.set(f'{PREFIX}/{self._me}', DONE)
    except Exception:  # pylint: disable=broad-except
      pass
    self._thread.join(timeout=5)
