"""The eval step as a pure function, and its jitted, sharded form.

`eval_step(params, batch) -> sums`: masked loss and correct counts summed per shard under
`shard_map` and reduced with `psum`, exact over padded batches.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from vit_jax import losses
from vit_jax.models import sequences
from vit_jax.parallel import mesh as mesh_lib

Batch = dict[str, jax.Array]


def make_eval_step(model: nn.Module, mesh: jax.sharding.Mesh, *, loss: str = 'softmax_xent',
                   multi_label: bool = False):
  """eval_step(params, batch) -> {'loss_sum', 'correct', 'count'} over the global batch.

  With `multi_label` (ImageNet-ReaL) the labels are multi-hot: a prediction is correct when its
  top-1 class is one of the example's labels, examples without any label are not counted, and
  no loss is summed.
  """
  loss_fn = losses.get_loss(loss)
  batch_spec = P(mesh_lib.BATCH_AXES)

  @functools.partial(jax.shard_map, mesh=mesh, in_specs=(batch_spec, batch_spec, batch_spec),
                     out_specs=P())
  def masked_sums(logits, labels, mask):
    if multi_label:
      top1 = jnp.argmax(logits, -1)[:, None]
      hit = jnp.take_along_axis(labels, top1, axis=-1)[:, 0] > 0
      mask = mask * (jnp.sum(labels, -1) > 0)
      local = {'correct': jnp.sum(hit * mask), 'count': jnp.sum(mask)}
    else:
      local = {'loss_sum': jnp.sum(loss_fn(logits, labels) * mask),
               'correct': jnp.sum(losses.correct(logits, labels) * mask),
               'count': jnp.sum(mask)}
    return jax.lax.psum(local, mesh_lib.BATCH_AXES)

  def eval_step(params, batch: Batch):
    if 'image' in batch:
      logits = model.apply({'params': params}, batch['image'], train=False)
    else:  # one-image NaFlex sequences (the naflex op): [b, 1, classes]
      logits = model.apply({'params': params}, sequences.from_batch(batch), train=False)[:, 0]
    return masked_sums(logits, batch['labels'], batch['mask'].astype(jnp.float32))

  return eval_step


def jit_eval_step(eval_step, mesh: jax.sharding.Mesh, param_shardings: Any):
  """`eval_step` under jit: parameters on their shardings, the batch split over the batch axes.
  Traced under the run's `partitioning.use` (the mesh and the axis rules)."""
  return jax.jit(eval_step, in_shardings=(param_shardings, mesh_lib.batch_sharding(mesh)),
                 out_shardings=mesh_lib.replicated(mesh))
