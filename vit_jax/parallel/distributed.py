"""Multi-host start-up through JAX's own runtime (`jax.distributed.initialize`)."""

import dataclasses
import logging
from typing import Optional

import jax

from vit_jax import errors
from vit_jax.parallel import coordinator
from vit_jax.parallel import watchdog

BACKSTOP = 4
JAX_HEARTBEAT_TIMEOUT_S = 100  # jax.distributed.initialize's own default


@dataclasses.dataclass(frozen=True)
class Timeouts:
  """The multi-host runtime's timeouts in seconds (`config.distributed`; None keeps JAX's)."""

  heartbeat_timeout_s: Optional[int] = None  # a peer silent this long is declared dead
  initialization_timeout_s: Optional[int] = None
  shutdown_timeout_s: Optional[int] = None

  def runtime_args(self) -> dict[str, int]:
    """`jax.distributed.initialize`'s timeout arguments.

    JAX's own heartbeat timeout is set to `BACKSTOP` times `heartbeat_timeout_s`: our watchdog
    reports a lost peer first, by name; JAX's abort stays as the backstop. JAX's runtime declares
    a task dead between half and all of its timeout after the task's death (measured: 14.6 s
    with a 20 s timeout), so at twice ours it could abort (exit 134) before our watchdog spoke.
    """
    args = {'heartbeat_timeout_seconds': self.heartbeat_timeout_s and
                                         self.heartbeat_timeout_s * BACKSTOP,
            'initialization_timeout': self.initialization_timeout_s,
            'shutdown_timeout_seconds': self.shutdown_timeout_s}
    return {name: value for name, value in args.items() if value is not None}


def initialize(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None, *, cpu_collectives: Optional[str] = None,
               local_device_ids: Optional[list[int]] = None, **timeouts) -> None:
  """Joins this process to the job.

  With no arguments JAX auto-detects the cluster (TPU pods, SLURM, Open MPI, ...); on a single
  host with nothing to detect it is a no-op. Explicit arguments (e.g. from --coordinator_address,
  --num_processes, --process_id flags) override the detection. `cpu_collectives='gloo'` enables
  cross-process collectives for CPU devices (tests on one machine). `timeouts` are
  `heartbeat_timeout_seconds` (a peer silent this long is declared dead and every process
  exits non-zero, naming it), `initialization_timeout` and `shutdown_timeout_seconds`. On
  process 0 the coordination service runs in a process of its own (`coordinator`).
  """
  if cpu_collectives:
    jax.config.update('jax_cpu_collectives_implementation', cpu_collectives)
  # Process 0 runs the coordination service in a process of its own (`coordinator`), which
  # outlives it by half of JAX's heartbeat timeout: the survivors' watchdogs name it first.
  linger_s = timeouts.get('heartbeat_timeout_seconds', JAX_HEARTBEAT_TIMEOUT_S) / 2
  explicit = coordinator_address is not None or num_processes is not None
  if explicit:
    missing = [name for name, value in (('coordinator_address', coordinator_address),
                                        ('num_processes', num_processes),
                                        ('process_id', process_id)) if value is None]
    if missing:
      raise errors.UserError(f'Multi-host start-up needs coordinator_address, num_processes and '
                             f'process_id together; missing {missing}.')
    if num_processes < 1 or not 0 <= process_id < num_processes:
      raise errors.UserError(f'--process_id={process_id} with --num_processes={num_processes}: '
                             f'expected a process id in [0, {num_processes}).')
    with coordinator.own_process(linger_s):
      jax.distributed.initialize(coordinator_address=coordinator_address,
                                 num_processes=num_processes, process_id=process_id,
                                 local_device_ids=local_device_ids, **timeouts)
  else:
    try:
      with coordinator.own_process(linger_s):
        jax.distributed.initialize(**timeouts)
    except (ValueError, RuntimeError) as e:  # nothing to auto-detect: a single-host run
      logging.info('Single-process run (no cluster detected: %s).', e)
      return
  logging.info('Process %d of %d, %d local / %d global devices.', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())


def join(timeouts: Timeouts, coordinator_address: Optional[str] = None,
         num_processes: Optional[int] = None,
         process_id: Optional[int] = None) -> Optional[watchdog.PeerWatchdog]:
  """`initialize` with the run's timeouts, and a dead-peer watchdog when there are peers (silent
  for `heartbeat_timeout_s`, else for JAX's own heartbeat timeout)."""
  initialize(coordinator_address, num_processes, process_id, **timeouts.runtime_args())
  if jax.process_count() == 1:
    return None
  return watchdog.PeerWatchdog(timeouts.heartbeat_timeout_s or JAX_HEARTBEAT_TIMEOUT_S)


def leave(peer_watchdog: Optional[watchdog.PeerWatchdog]) -> None:
  """Leaves the job cleanly: marked done for the watchdogs, JAX's shutdown barrier (the peers
  still watched through it), then the watchdog stopped."""
  if peer_watchdog is not None:
    peer_watchdog.finish()
  if jax.process_count() > 1:
    jax.distributed.shutdown()
  if peer_watchdog is not None:
    peer_watchdog.stop()
