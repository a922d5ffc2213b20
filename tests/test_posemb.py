"""Position embeddings: the sincos2d table and the learned AddPositionEmbs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax.models import posemb
from vit_jax.models.vit import VisionTransformer

from support import tiny_vit_config


def test_sincos2d_values_at_known_positions():
  table = posemb.posemb_sincos_2d(3, 5, 8)[0]  # quarter = 2 channels, omega = [1, 1e-4]
  assert table.shape == (15, 8)
  row, col = 2, 4  # token 14
  omega = np.array([1.0, 1e-4])
  expected = np.concatenate([np.sin(col * omega), np.cos(col * omega),
                             np.sin(row * omega), np.cos(row * omega)])
  np.testing.assert_allclose(table[row * 5 + col], expected, rtol=1e-6)
  np.testing.assert_allclose(table[0], [0, 0, 1, 1, 0, 0, 1, 1])


def test_sincos2d_similarity_peaks_on_the_diagonal():
  table = posemb.posemb_sincos_2d(6, 6, 64)[0]
  unit = table / np.linalg.norm(table, axis=-1, keepdims=True)
  similarity = unit @ unit.T
  np.testing.assert_allclose(similarity, similarity.T, atol=1e-6)
  assert np.all(similarity.argmax(-1) == np.arange(36))


def test_sincos2d_needs_width_divisible_by_four():
  with pytest.raises(ValueError, match='divisible by 4, got 10'):
    posemb.posemb_sincos_2d(2, 2, 10)


def test_learned_posemb_is_added_and_initialised_normal():
  module = posemb.AddPositionEmbs()
  x = jnp.zeros((2, 50, 64))
  params = module.init(jax.random.key(0), x)['params']
  assert params['pos_embedding'].shape == (1, 50, 64)
  assert abs(float(params['pos_embedding'].std()) - 0.02) < 0.002
  out = module.apply({'params': params}, x + 1.0)
  np.testing.assert_allclose(out, 1.0 + np.broadcast_to(params['pos_embedding'], (2, 50, 64)))


def test_dynamic_image_size_resamples_the_table_on_the_fly():
  """A model initialised at 16x16 runs on 32x32 and 16x24 inputs; the same as resampling first."""
  rng = np.random.default_rng(0)
  model = VisionTransformer(num_classes=3, **tiny_vit_config(dynamic_image_size=True))
  params = model.init(jax.random.key(0), np.zeros((1, 16, 16, 3), np.float32), train=False)['params']
  params = jax.tree.map(lambda x: x + rng.normal(0, 0.1, x.shape).astype(np.float32), params)
  static = VisionTransformer(num_classes=3, **tiny_vit_config())
  for size in ((32, 32), (16, 24)):
    images = rng.uniform(-1, 1, (2, *size, 3)).astype(np.float32)
    grid = (size[0] // 4, size[1] // 4)
    table = params['Transformer']['posembed_input']['pos_embedding']
    resampled = {**params, 'Transformer': {**params['Transformer'], 'posembed_input': {
        'pos_embedding': posemb.resize_grid(table, grid, num_prefix_tokens=1)}}}
    np.testing.assert_allclose(model.apply({'params': params}, images, train=False),
                               static.apply({'params': resampled}, images, train=False),
                               rtol=1e-5, atol=1e-6)
  # The stored table keeps its shape and trains: gradients reach it through the resampling.
  grads = jax.grad(lambda p: model.apply({'params': p}, images, train=False).sum())(params)
  assert grads['Transformer']['posembed_input']['pos_embedding'].shape == (1, 17, 16)
  assert np.abs(grads['Transformer']['posembed_input']['pos_embedding']).sum() > 0
  with pytest.raises(ValueError, match='dynamic_image_size=True'):
    static.apply({'params': params}, images, train=False)
