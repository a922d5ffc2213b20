"""Multi-host start-up through JAX's own runtime (`jax.distributed.initialize`)."""

import logging
from typing import Optional

import jax


def initialize(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None, *, cpu_collectives: Optional[str] = None,
               local_device_ids: Optional[list[int]] = None) -> None:
  """Joins this process to the job.

  With no arguments JAX auto-detects the cluster (TPU pods, SLURM, Open MPI, ...); on a single
  host with nothing to detect it is a no-op. Explicit arguments (e.g. from --coordinator_address,
  --num_processes, --process_id flags) override the detection. `cpu_collectives='gloo'` enables
  cross-process collectives for CPU devices (tests on one machine).
  """
  if cpu_collectives:
    jax.config.update('jax_cpu_collectives_implementation', cpu_collectives)
  explicit = coordinator_address is not None or num_processes is not None
  if explicit:
    missing = [name for name, value in (('coordinator_address', coordinator_address),
                                        ('num_processes', num_processes),
                                        ('process_id', process_id)) if value is None]
    if missing:
      raise ValueError(f'Multi-host start-up needs coordinator_address, num_processes and '
                       f'process_id together; missing {missing}.')
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id,
                               local_device_ids=local_device_ids)
  else:
    try:
      jax.distributed.initialize()
    except (ValueError, RuntimeError) as e:  # nothing to auto-detect: a single-host run
      logging.info('Single-process run (no cluster detected: %s).', e)
      return
  logging.info('Process %d of %d, %d local / %d global devices.', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
