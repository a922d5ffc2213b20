"""A linear probe's inference statistics (`model.linear_probe`; configs/mae_linprobe.py).

MAE's probe (after MoCo v3) puts a BatchNorm without affine before the head: PyTorch trains with
each batch's statistics and evaluates with their running average. The encoder is frozen and runs
in inference mode, so the features' distribution does not change during the run: the mean and
variance of the features of the first `probe_stats_batches` training batches (after the device
preprocessing) estimate what that running average converges to. They are measured once, before
the first step, and kept in the parameters (`head_norm/{mean,var}`): checkpoints, evaluators and
exports carry them with nothing beside the parameters.
"""

from typing import Any, Callable, Iterator, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vit_jax.models import vit

Augment = Callable[[jax.Array, Optional[jax.Array]], jax.Array]


def feature_moments(model: nn.Module, params: Any, batches: Iterator[dict], count: int,
                    augment: Optional[Augment] = None) -> tuple[np.ndarray, np.ndarray]:
  """(mean, variance) [d] of the head's input features over `count` batches of equal size."""

  @jax.jit
  def moments(params, batch):
    images = batch['image']
    if augment is not None:
      images = augment(images, batch.get('position'))
    features = vit.representations(model, params, images)['pre_logits'].astype(jnp.float32)
    return jnp.mean(features, axis=0), jnp.var(features, axis=0)

  means, variances = [], []
  for _ in range(count):
    mean, var = jax.device_get(moments(params, next(batches)))
    means.append(np.float64(mean))
    variances.append(np.float64(var))
  mean = np.mean(means, axis=0)
  # Equal batches: the pooled variance is the mean within-batch variance plus the spread of
  # the batch means (each computed about its own mean: no cancellation).
  var = np.mean(variances, axis=0) + np.mean(np.square(np.array(means) - mean), axis=0)
  return mean.astype(np.float32), var.astype(np.float32)


def with_statistics(model: nn.Module, params: Any, batches: Iterator[dict], count: int,
                    augment: Optional[Augment] = None) -> dict:
  """`params` (host arrays) with `head_norm/{mean,var}` measured on `batches`."""
  mean, var = feature_moments(model, params, batches, count, augment)
  params = dict(jax.device_get(params))
  params['head_norm'] = {'mean': mean, 'var': var}
  return params
