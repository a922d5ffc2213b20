"""Multi-head dot-product attention with the released parameter layout (query/key/value/out).

The kernels are `[width, heads, head_dim]` (and `[heads, head_dim, width]` for `out`) exactly as
in `flax.linen.MultiHeadDotProductAttention`, so the released checkpoints load unchanged, but the
attention itself runs through `jax.nn.dot_product_attention` (cuDNN flash kernels on GPU).
"""

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any
Initializer = Callable[..., jnp.ndarray]


def attention_weights(query: jnp.ndarray, key: jnp.ndarray) -> jnp.ndarray:
  """softmax(q k^T / sqrt(head_dim)): [b, q, h, d] x [b, k, h, d] -> [b, h, q, k] (softmax in f32)."""
  logits = jnp.einsum('bqhd,bkhd->bhqk', query, key) / jnp.sqrt(query.shape[-1]).astype(query.dtype)
  return jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(query.dtype)


class MultiHeadAttention(nn.Module):
  """Attention of `inputs_q` [b, q, width] over `inputs_kv` [b, k, width] -> [b, q, width].

  Three equivalent routes, one set of weights:
  - the fused `jax.nn.dot_product_attention` (default, inference and dropout-free training);
  - explicit weights when attention dropout is active (the fused call has no dropout);
  - explicit weights, also recorded with `sow('intermediates', 'attention_weights')`
    ([b, heads, q, k]), when the caller makes `intermediates` mutable (attention maps).
  """

  num_heads: int
  dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: Initializer = nn.initializers.xavier_uniform()

  @nn.compact
  def __call__(self, inputs_q: jnp.ndarray, inputs_kv: jnp.ndarray, *,
               deterministic: bool) -> jnp.ndarray:
    width = inputs_q.shape[-1]
    if width % self.num_heads:
      raise ValueError(f'hidden_size {width} is not divisible by num_heads {self.num_heads}.')
    project = functools.partial(
        nn.DenseGeneral, features=(self.num_heads, width // self.num_heads), axis=-1,
        dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=self.kernel_init)
    # Logical names: a no-op unless the trainer sets axis rules (tensor parallelism over heads).
    heads_axes = ('batch', 'length', 'act_heads', None)
    query = nn.with_logical_constraint(project(name='query')(inputs_q), heads_axes)
    key = nn.with_logical_constraint(project(name='key')(inputs_kv), heads_axes)
    value = nn.with_logical_constraint(project(name='value')(inputs_kv), heads_axes)

    dropout_active = not deterministic and self.dropout_rate > 0
    if dropout_active or self.is_mutable_collection('intermediates'):
      weights = attention_weights(query, key)
      self.sow('intermediates', 'attention_weights', weights)
      # Dropout per weight, not broadcast over queries, as the official model.
      weights = nn.Dropout(rate=self.dropout_rate)(weights, deterministic=not dropout_active)
      x = jnp.einsum('bhqk,bkhd->bqhd', weights, value)
    else:
      x = jax.nn.dot_product_attention(query, key, value)

    return nn.DenseGeneral(
        features=width, axis=(-2, -1), dtype=self.dtype, param_dtype=self.param_dtype,
        kernel_init=self.kernel_init, name='out')(x)
