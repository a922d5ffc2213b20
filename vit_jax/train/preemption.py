"""Stops that every process agrees on: a SIGTERM/SIGINT (or JAX's preemption notice) on any host
becomes a stop at the same step on all hosts.

Each process feeds its local request into the train step as a per-example `stop` flag of its
slice of the global batch; the step reduces it with a max over the whole batch (so over every
process) and returns it as a metric. After dispatching step s + 1 every process reads step s's
reduced flag: all of them see the same value at the same point, so all of them stop after the
same step, save it and exit 0. The one step of lag keeps a step in flight on the devices.
"""

import logging
import signal
import threading
from typing import Callable, Optional

import jax
import numpy as np

STOP_KEY = 'stop'


class StopRequest:
  """Turns SIGTERM/SIGINT into a local request; `flags` ships it with each batch."""

  def __init__(self, signals=(signal.SIGTERM, signal.SIGINT),
               cluster_notice: Optional[Callable[[int], bool]] = None):
    self._event = threading.Event()
    self.reason: Optional[str] = None
    self._cluster_notice = cluster_notice
    self._previous = {}
    if threading.current_thread() is threading.main_thread():
      for sig in signals:
        self._previous[sig] = signal.signal(sig, self._handle)

  def _handle(self, signum, frame):
    del frame
    self.reason = signal.Signals(signum).name
    logging.warning('%s received: every process stops and saves after the next step.',
                    self.reason)
    self._event.set()

  def requested_here(self, step: int) -> bool:
    """This process's own request: a signal, or the cluster's preemption notice at `step`."""
    if not self._event.is_set() and self._cluster_notice is not None:
      try:
        if self._cluster_notice(step):
          self.reason = 'cluster preemption notice'
          self._event.set()
      except Exception:  # pylint: disable=broad-except  (no preemption service: single host)
        self._cluster_notice = None
    return self._event.is_set()

  def flags(self, step: int, local_batch: int, sharding: jax.sharding.Sharding) -> jax.Array:
    """[global batch] float32: this process's request on its rows of the batch."""
    local = np.full([local_batch], float(self.requested_here(step)), np.float32)
    return jax.make_array_from_process_local_data(sharding, local)

  def restore_handlers(self) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}


def agreed(step_metrics: dict) -> bool:
  """The reduced flag of a finished step: True on every process or on none."""
  return bool(jax.device_get(step_metrics[STOP_KEY]) > 0)
