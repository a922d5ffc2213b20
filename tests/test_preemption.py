"""The stop request on its own: a signal becomes this process's flag in the batch; the reduced
flag is what every process reads."""

import os
import signal

import jax
import jax.numpy as jnp
import numpy as np

from vit_jax.parallel import mesh as mesh_lib
from vit_jax.train import preemption


def test_sigterm_sets_the_flag_on_this_process_rows():
  sharding = mesh_lib.batch_sharding(mesh_lib.make_mesh((-1, 1, 1)))
  stops = preemption.StopRequest()
  try:
    flags = stops.flags(0, 16, sharding)
    assert flags.shape == (16,) and not np.asarray(flags).any() and stops.reason is None
    os.kill(os.getpid(), signal.SIGTERM)
    flags = stops.flags(1, 16, sharding)
    assert np.asarray(flags).all() and stops.reason == 'SIGTERM'
    assert flags.sharding == sharding
  finally:
    stops.restore_handlers()
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_cluster_notice_counts_as_a_request_and_its_absence_is_harmless():
  sharding = mesh_lib.batch_sharding(mesh_lib.make_mesh((-1, 1, 1)))
  notices = preemption.StopRequest(signals=(), cluster_notice=lambda step: step >= 3)
  assert not notices.requested_here(2) and notices.requested_here(3)
  assert notices.reason == 'cluster preemption notice'

  def unavailable(step):
    raise RuntimeError('preemption service disabled')
  quiet = preemption.StopRequest(signals=(), cluster_notice=unavailable)
  assert not np.asarray(quiet.flags(0, 8, sharding)).any()


def test_agreed_reads_the_reduced_flag_of_a_finished_step():
  mesh = mesh_lib.make_mesh((-1, 1, 1))
  sharding = mesh_lib.batch_sharding(mesh)
  one_row = jax.device_put(jnp.zeros(8).at[5].set(1.0), sharding)  # one shard asked to stop
  reduced = jax.jit(jnp.max, out_shardings=mesh_lib.replicated(mesh))(one_row)
  assert preemption.agreed({preemption.STOP_KEY: reduced})
  assert not preemption.agreed({preemption.STOP_KEY: jnp.zeros([])})
