"""Mixup / CutMix: label mass kept, and per-shard mixing never crosses shards."""

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

from vit_jax.data import mixup


def _batch():
  """32 examples on 8 shards of 4; every pixel of an example holds its shard id."""
  shard_of_example = np.repeat(np.arange(8), 4)
  images = np.broadcast_to(shard_of_example[:, None, None, None], (32, 8, 8, 3)).astype(np.float32)
  labels = np.eye(32, dtype=np.float32)
  return images, labels


def test_mixup_and_cutmix_keep_label_mass():
  images, labels = _batch()
  for mixer in (mixup.mixup, mixup.cutmix):
    mixed_images, mixed_labels = mixer(jax.random.key(0), jnp.asarray(images), jnp.asarray(labels))
    np.testing.assert_allclose(mixed_labels.sum(-1), np.ones(32), rtol=1e-6)
    assert mixed_images.shape == images.shape
    # Example i mixes only with its mirror 31 - i.
    weights = np.asarray(mixed_labels)
    assert np.all((weights > 0) <= (np.eye(32) + np.eye(32)[::-1] > 0))


def test_cutmix_label_weight_equals_pasted_area():
  images = jnp.zeros((2, 16, 16, 1)).at[1].set(1.0)
  labels = jnp.eye(2)
  pasted, mixed = mixup.cutmix(jax.random.key(3), images, labels, alpha=1.0)
  area = float(pasted[0].mean())  # ones pasted from example 1 into example 0
  np.testing.assert_allclose(mixed[0], [1 - area, area], rtol=1e-6)


def test_per_shard_mixing_stays_within_each_shard():
  mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ('data', 'fsdp'))
  sharding = NamedSharding(mesh, P(('data', 'fsdp')))
  images, labels = (jax.device_put(x, sharding) for x in _batch())
  mix = jax.jit(mixup.per_shard(mixup.mixup, mesh, ('data', 'fsdp')))
  mixed_images, mixed_labels = mix(jax.random.key(0), images, labels)
  assert mixed_images.sharding.is_equivalent_to(sharding, 4)
  np.testing.assert_allclose(np.asarray(mixed_images), np.asarray(images), atol=1e-6)  # no cross
  weights = np.asarray(mixed_labels)
  for shard in range(8):
    block = weights[4 * shard:4 * shard + 4]
    assert np.all(block[:, :4 * shard] == 0) and np.all(block[:, 4 * shard + 4:] == 0)
  own_weights = {round(float(weights[4 * s, 4 * s]), 6) for s in range(8)}
  assert len(own_weights) > 4  # a different lambda on each shard
