"""Position embeddings: the sincos2d table and the learned AddPositionEmbs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax.models import posemb


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
