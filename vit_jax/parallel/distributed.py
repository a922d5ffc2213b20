"""Multi-host start-up through JAX's own runtime (`jax.distributed.initialize`)."""

import logging
from typing import Optional

import jax

from vit_jax import errors
from vit_jax.parallel import coordinator
from vit_jax.parallel import watchdog

BACKSTOP = 4


def timeouts_from_config(config) -> dict[str, int]:
  """`config.distributed` -> the runtime's timeouts, in seconds (absent fields keep JAX's).

  JAX's own heartbeat timeout is set to `BACKSTOP` times `heartbeat_timeout_s`: our watchdog
  reports a lost peer first, by name; JAX's abort stays as the backstop. JAX's runtime declares
  a task dead between half and all of its timeout after the task's death (measured: 14.6 s
  with a 20 s timeout), so at twice ours it could abort (exit 134) before our watchdog spoke.
  """
  fields = {'heartbeat_timeout_s': 'heartbeat_timeout_seconds',
            'initialization_timeout_s': 'initialization_timeout',
            'shutdown_timeout_s': 'shutdown_timeout_seconds'}
  given = config.get('distributed') or {}
  unknown = sorted(set(given) - set(fields))
  if unknown:
    raise errors.UserError(
        f'Unknown field(s) config.distributed.{unknown}; known: {sorted(fields)}.')
  out = {}
  for field, argument in fields.items():
    value = given.get(field)
    if value is not None:
      if int(value) <= 0:
        raise errors.UserError(f'config.distributed.{field} must be a positive number of seconds, '
                               f'found {value}.')
      out[argument] = int(value) * (BACKSTOP if field == 'heartbeat_timeout_s' else 1)
  return out


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
  linger_s = timeouts.get('heartbeat_timeout_seconds', 100) / 2
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


def join(config, coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
         process_id: Optional[int] = None) -> Optional[watchdog.PeerWatchdog]:
  """`initialize` with the config's timeouts, and a dead-peer watchdog when there are peers."""
  initialize(coordinator_address, num_processes, process_id, **timeouts_from_config(config))
  if jax.process_count() == 1:
    return None
  timeout = (config.get('distributed') or {}).get('heartbeat_timeout_s') or 40
  return watchdog.PeerWatchdog(timeout)


def leave(peer_watchdog: Optional[watchdog.PeerWatchdog]) -> None:
  """Leaves the job cleanly: marked done for the watchdogs, JAX's shutdown barrier (the peers
  still watched through it), then the watchdog stopped."""
  if peer_watchdog is not None:
    peer_watchdog.finish()
  if jax.process_count() > 1:
    jax.distributed.shutdown()
  if peer_watchdog is not None:
    peer_watchdog.stop()
