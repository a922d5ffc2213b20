"""MultiHeadAttention: same parameters and outputs as flax's MultiHeadDotProductAttention."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from conftest import randomize
from vit_jax.models import attention


def _inputs():
  rng = np.random.default_rng(0)
  return (rng.standard_normal((2, 5, 16)).astype(np.float32),
          rng.standard_normal((2, 7, 16)).astype(np.float32))


def test_matches_flax_multi_head_dot_product_attention():
  """The official model uses flax's module; ours must be a drop-in on the same weights."""
  xq, xkv = _inputs()
  ours = attention.MultiHeadAttention(num_heads=4)
  theirs = nn.MultiHeadDotProductAttention(num_heads=4, kernel_init=nn.initializers.xavier_uniform())
  params = randomize(ours.init(jax.random.key(0), xq, xkv, deterministic=True)['params'])
  reference_shapes = theirs.init(jax.random.key(0), xq, xkv, deterministic=True)['params']
  assert jax.tree.map(np.shape, params) == jax.tree.map(np.shape, reference_shapes)
  np.testing.assert_allclose(
      ours.apply({'params': params}, xq, xkv, deterministic=True),
      theirs.apply({'params': params}, xq, xkv, deterministic=True), rtol=1e-5, atol=1e-5)


def test_weights_route_equals_fused_route_and_is_recorded():
  xq, xkv = _inputs()
  module = attention.MultiHeadAttention(num_heads=4)
  params = randomize(module.init(jax.random.key(0), xq, xkv, deterministic=True)['params'])
  fused = module.apply({'params': params}, xq, xkv, deterministic=True)
  explicit, state = module.apply({'params': params}, xq, xkv, deterministic=True,
                                 mutable=['intermediates'])
  np.testing.assert_allclose(explicit, fused, rtol=1e-5, atol=1e-5)
  (weights,) = state['intermediates']['attention_weights']
  assert weights.shape == (2, 4, 5, 7)
  np.testing.assert_allclose(weights.sum(-1), np.ones((2, 4, 5)), rtol=1e-5)


def test_attention_dropout_only_when_training():
  xq, xkv = _inputs()
  module = attention.MultiHeadAttention(num_heads=4, dropout_rate=0.5)
  params = randomize(module.init(jax.random.key(0), xq, xkv, deterministic=True)['params'])
  run = lambda deterministic, seed: module.apply(  # pylint: disable=g-long-lambda
      {'params': params}, xq, xkv, deterministic=deterministic,
      rngs={'dropout': jax.random.key(seed)})
  np.testing.assert_array_equal(run(True, 0), run(True, 1))
  assert not np.allclose(run(False, 0), run(False, 1))


def test_width_must_split_over_heads():
  xq, _ = _inputs()
  with pytest.raises(ValueError, match='hidden_size 16 is not divisible by num_heads 3'):
    attention.MultiHeadAttention(num_heads=3).init(jax.random.key(0), xq, xq, deterministic=True)
