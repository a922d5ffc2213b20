"""Mixup and CutMix on device, after batching, each shard mixing only its own examples.

Per-shard mixing (as big_vision does per device) needs no cross-device traffic; `per_shard`
wraps a mixing function in `jax.shard_map` over the mesh's batch axes, with a different random
draw on every shard.
"""

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P


Mixer = Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


def mixup(rng: jax.Array, images: jax.Array, labels: jax.Array, alpha: float = 0.2):
  """lam * x + (1 - lam) * x[::-1] for images [b, h, w, c] and soft labels [b, classes]."""
  lam = jax.random.beta(rng, alpha, alpha)
  mix = lambda x: lam * x + (1 - lam) * x[::-1]  # pylint: disable=unnecessary-lambda-assignment
  return mix(images), mix(labels)


def cutmix(rng: jax.Array, images: jax.Array, labels: jax.Array, alpha: float = 1.0):
  """Pastes a box of area (1 - lam) from x[::-1]; labels mixed by the pasted area."""
  lam_rng, y_rng, x_rng = jax.random.split(rng, 3)
  lam = jax.random.beta(lam_rng, alpha, alpha)
  height, width = images.shape[1:3]
  box_h = jnp.round(height * jnp.sqrt(1 - lam)).astype(jnp.int32)
  box_w = jnp.round(width * jnp.sqrt(1 - lam)).astype(jnp.int32)
  centre_y = jax.random.randint(y_rng, [], 0, height)
  centre_x = jax.random.randint(x_rng, [], 0, width)
  top, bottom = jnp.clip(centre_y - box_h // 2, 0, height), jnp.clip(centre_y + box_h // 2, 0, height)
  left, right = jnp.clip(centre_x - box_w // 2, 0, width), jnp.clip(centre_x + box_w // 2, 0, width)
  rows, cols = jnp.arange(height)[:, None], jnp.arange(width)[None, :]
  inside = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
  pasted = jnp.where(inside[None, :, :, None], images[::-1], images)
  area = jnp.mean(inside.astype(labels.dtype))
  return pasted, (1 - area) * labels + area * labels[::-1]


def per_shard(mixer: Mixer, mesh: jax.sharding.Mesh, batch_axes: Sequence[str]) -> Mixer:
  """`mixer` applied independently on every shard of the batch (shard_map over `batch_axes`)."""
  batch_axes = tuple(batch_axes)
  spec = P(batch_axes)

  def local(rng, images, labels):
    shard = jax.lax.axis_index(batch_axes)
    return mixer(jax.random.fold_in(rng, shard), images, labels)

  return jax.shard_map(local, mesh=mesh, in_specs=(P(), spec, spec), out_specs=(spec, spec))


def mixup_or_cutmix(rng: jax.Array, images: jax.Array, labels: jax.Array, alpha: float = 0.8,
                    cutmix_alpha: float = 1.0):
  """Mixup (with `alpha`) or CutMix (with `cutmix_alpha`), one of the two per batch with equal
  odds: timm's Mixup(mixup_alpha, cutmix_alpha, switch_prob=0.5), DeiT's and MAE's setting."""
  choose, draw = jax.random.split(rng)
  return jax.lax.cond(jax.random.bernoulli(choose),
                      lambda: cutmix(draw, images, labels, cutmix_alpha),
                      lambda: mixup(draw, images, labels, alpha))


KINDS = {'mixup': mixup, 'cutmix': cutmix, 'mixup_cutmix': mixup_or_cutmix}


def per_shard_mixer(kind: str, alpha: float, mesh: jax.sharding.Mesh,
                    batch_axes: Sequence[str], cutmix_alpha: float = 1.0) -> Mixer:
  """The per-shard mixer of `config.mixup` (kind 'mixup' | 'cutmix' | 'mixup_cutmix';
  options.read checks them)."""
  if kind == 'mixup_cutmix':
    return per_shard(lambda rng, x, y: mixup_or_cutmix(rng, x, y, alpha, cutmix_alpha), mesh,
                     batch_axes)
  base = KINDS[kind]
  return per_shard(lambda rng, x, y: base(rng, x, y, alpha), mesh, batch_axes)
