"""Multi-head dot-product attention with the released parameters (query/key/value/out).

The kernels are `[width, heads, head_dim]` (and `[heads, head_dim, width]` for `out`) exactly as
in `flax.linen.MultiHeadDotProductAttention`, so the released checkpoints load unchanged. The
attention itself runs through `jax.nn.dot_product_attention` on accelerators (cuDNN flash kernels
on GPU) and as explicit heads-major dots on CPU; self-attention projects q, k and v in one GEMM.
"""

from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_jax import errors
from vit_jax.models import posemb as posemb_lib

Dtype = Any
Initializer = Callable[..., jnp.ndarray]


class _HeadsProjection(nn.Module):
  """The kernel [width, heads, head_dim] and bias [heads, head_dim] of a q/k/v projection.

  Same names, shapes, dtypes and initialisation as `nn.DenseGeneral(features=(heads, head_dim))`
  (the kernel initialiser sees the flattened [width, heads * head_dim] shape), so checkpoints and
  seeds carry over; the attention applies them itself, fused when it can.
  """

  shape: tuple[int, int, int]
  dtype: Dtype
  param_dtype: Dtype
  kernel_init: Initializer

  @nn.compact
  def __call__(self) -> tuple[jnp.ndarray, jnp.ndarray]:
    width, heads, head_dim = self.shape
    init = lambda rng, shape, dtype: self.kernel_init(  # pylint: disable=unnecessary-lambda-assignment
        rng, (width, heads * head_dim), dtype).reshape(shape)
    kernel = self.param('kernel', init, self.shape, self.param_dtype)
    bias = self.param('bias', nn.initializers.zeros_init(), (heads, head_dim), self.param_dtype)
    return kernel.astype(self.dtype), bias.astype(self.dtype)


class MultiHeadAttention(nn.Module):
  """Attention of `inputs_q` [b, q, width] over `inputs_kv` [b, k, width] -> [b, q, width].

  Equivalent routes, one set of weights:
  - the fused `jax.nn.dot_product_attention` (accelerators, without attention dropout);
  - explicit heads-major weights on CPU, when attention dropout is active (the fused call has
    no dropout), and when the caller makes `intermediates` mutable: then the weights
    ([b, heads, q, k]) are also recorded with `sow('intermediates', 'attention_weights')`.
  For self-attention (`inputs_q is inputs_kv`) the three projections run as one GEMM.
  """

  num_heads: int
  dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: Initializer = nn.initializers.xavier_uniform()
  # None picks per backend (explicit on CPU, fused elsewhere); 'fused' or 'explicit' forces one.
  implementation: Optional[str] = None
  # LayerNorm of queries and keys over head_dim (`query_norm`, `key_norm`; ViT-22B, timm qk_norm).
  qk_norm: bool = False
  layer_norm_eps: float = 1e-6
  # 2-D RoPE on the patch tokens of self-attention: ((rows, columns), theta, prefix tokens).
  rope: Optional[tuple[tuple[int, int], float, int]] = None

  @nn.compact
  def __call__(self, inputs_q: jnp.ndarray, inputs_kv: jnp.ndarray, *,
               deterministic: bool) -> jnp.ndarray:
    width = inputs_q.shape[-1]
    if width % self.num_heads:
      raise errors.UserError(f'hidden_size {width} is not divisible by num_heads {self.num_heads}.')
    if self.implementation not in (None, 'fused', 'explicit'):
      raise errors.UserError(f"implementation must be None, 'fused' or 'explicit', got "
                             f'{self.implementation!r}.')
    num_heads, head_dim = self.num_heads, width // self.num_heads
    # One (kernel, bias) per projection, exactly `nn.DenseGeneral`'s parameters.
    projections = [_HeadsProjection(shape=(width, num_heads, head_dim), dtype=self.dtype,
                                param_dtype=self.param_dtype, kernel_init=self.kernel_init,
                                name=name)() for name in ('query', 'key', 'value')]

    dropout_active = not deterministic and self.dropout_rate > 0
    # On CPU XLA runs the fused call as the same two batched dots; computing them heads-major
    # ([b, h, t, d]) saves the transposes around them (with the fused q/k/v GEMM, +4-10% on a
    # ViT-S/16 CPU train step, experiments/results/cpu_levers.md). Elsewhere the fused call can
    # take cuDNN kernels.
    preferred = self.implementation or ('explicit' if jax.default_backend() == 'cpu' else 'fused')
    explicit = (dropout_active or self.is_mutable_collection('intermediates')
                or preferred == 'explicit')
    axes = 'bhtd' if explicit else 'bthd'  # the einsum's output order
    # Logical names: a no-op unless the trainer sets axis rules (tensor parallelism over heads).
    heads_axes = (('batch', 'act_heads', 'length', None) if explicit else
                  ('batch', 'length', 'act_heads', None))
    bias_shape = (num_heads, 1, head_dim) if explicit else (1, num_heads, head_dim)
    if inputs_q is inputs_kv:  # self-attention: q, k and v from one [width, 3 * width] GEMM
      kernel = jnp.stack([k for k, _ in projections])
      bias = jnp.stack([b.reshape(bias_shape) for _, b in projections])[:, None]
      qkv = jnp.einsum(f'btc,schd->s{axes}', inputs_q.astype(self.dtype), kernel) + bias
      query, key, value = qkv[0], qkv[1], qkv[2]
    else:
      query, key, value = (
          jnp.einsum(f'btc,chd->{axes}', inputs.astype(self.dtype), k) + b.reshape(bias_shape)
          for inputs, (k, b) in zip((inputs_q, inputs_kv, inputs_kv), projections))
    if self.qk_norm:
      query, key = (nn.LayerNorm(epsilon=self.layer_norm_eps, dtype=self.dtype, name=name)(t)
                    for name, t in (('query_norm', query), ('key_norm', key)))
    if self.rope is not None:
      (rows, columns), theta, prefix = self.rope
      cos, sin = posemb_lib.rope_2d(rows, columns, head_dim, theta)
      token_axis = 2 if explicit else 1
      query, key = (posemb_lib.apply_rope(t, cos, sin, token_axis, prefix) for t in (query, key))
    query, key, value = (nn.with_logical_constraint(t, heads_axes) for t in (query, key, value))

    if explicit:
      logits = jnp.einsum('bhqd,bhkd->bhqk', query, key) / jnp.sqrt(head_dim).astype(query.dtype)
      weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(query.dtype)
      self.sow('intermediates', 'attention_weights', weights)
      # Dropout per weight, not broadcast over queries, as the official model.
      weights = nn.Dropout(rate=self.dropout_rate)(weights, deterministic=not dropout_active)
      x = jnp.einsum('bhqk,bhkd->bqhd', weights, value)
    else:
      x = jax.nn.dot_product_attention(query, key, value)

    return nn.DenseGeneral(
        features=width, axis=(-2, -1), dtype=self.dtype, param_dtype=self.param_dtype,
        kernel_init=self.kernel_init, name='out')(x)
