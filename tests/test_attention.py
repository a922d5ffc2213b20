"""MultiHeadAttention: same parameters and outputs as flax's MultiHeadDotProductAttention."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from support import randomize
from vit_jax.models import attention


def _inputs():
  rng = np.random.default_rng(0)
  return (rng.standard_normal((2, 5, 16)).astype(np.float32),
          rng.standard_normal((2, 7, 16)).astype(np.float32))


@pytest.mark.parametrize('implementation', ['auto', 'xla', 'explicit'])
@pytest.mark.parametrize('cross', [False, True])
def test_matches_flax_multi_head_dot_product_attention(implementation, cross):
  """The official model uses flax's module; ours must be a drop-in: same initial values from the
  same seed, same outputs and gradients on the same weights, for self- (fused q/k/v GEMM) and
  cross-attention, whichever implementation runs."""
  xq, xkv = _inputs()
  xkv = xkv if cross else xq
  ours = attention.MultiHeadAttention(num_heads=4, implementation=implementation)
  theirs = nn.MultiHeadDotProductAttention(num_heads=4, kernel_init=nn.initializers.xavier_uniform())
  initial = ours.init(jax.random.key(0), xq, xkv, deterministic=True)['params']
  reference = theirs.init(jax.random.key(0), xq, xkv, deterministic=True)['params']
  jax.tree.map(np.testing.assert_array_equal, initial, reference)
  params = randomize(initial)
  ours_fn = lambda p: ours.apply({'params': p}, xq, xkv, deterministic=True)  # pylint: disable=unnecessary-lambda-assignment
  theirs_fn = lambda p: theirs.apply({'params': p}, xq, xkv, deterministic=True)  # pylint: disable=unnecessary-lambda-assignment
  np.testing.assert_allclose(ours_fn(params), theirs_fn(params), rtol=1e-5, atol=1e-5)
  grads = [jax.grad(lambda p, f=f: (f(p)**2).sum())(params) for f in (ours_fn, theirs_fn)]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4), *grads)


def test_weights_route_equals_fused_route_and_is_recorded():
  xq, xkv = _inputs()
  module = attention.MultiHeadAttention(num_heads=4, implementation='xla')
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


def test_unknown_implementation_is_refused():
  xq, _ = _inputs()
  with pytest.raises(ValueError, match="attention_impl must be one of .'auto', 'xla', 'cudnn', "
                                       "'explicit'., got 'fused'"):
    attention.MultiHeadAttention(num_heads=4, implementation='fused').init(
        jax.random.key(0), xq, xq, deterministic=True)


def test_width_must_split_over_heads():
  xq, _ = _inputs()
  with pytest.raises(ValueError, match='hidden_size 16 is not divisible by num_heads 3'):
    attention.MultiHeadAttention(num_heads=3).init(jax.random.key(0), xq, xq, deterministic=True)
