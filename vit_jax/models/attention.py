"""Multi-head dot-product attention with the released parameters (query/key/value/out).

The kernels are `[width, heads, head_dim]` (and `[heads, head_dim, width]` for `out`) exactly as
in `flax.linen.MultiHeadDotProductAttention`, so the released checkpoints load unchanged.
Self-attention projects q, k and v in one GEMM. The attention itself is one of IMPLEMENTATIONS:
`auto` (the default) picks per backend and dtype with `choose`: cuDNN's flash kernels on GPU in
bf16/fp16 where JAX accepts them, XLA's fused call elsewhere, explicit heads-major dots on CPU.
"""

from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_jax import errors
from vit_jax.models import posemb as posemb_lib

Dtype = Any
Initializer = Callable[..., jnp.ndarray]

# auto: `choose` decides; xla: jax.nn.dot_product_attention's XLA version (the logits are
# materialised); cudnn: cuDNN flash attention (GPU, bf16/fp16; an error elsewhere); explicit: the
# weights as two einsums (what attention dropout and attention maps need).
IMPLEMENTATIONS = ('auto', 'xla', 'cudnn', 'explicit')


def platform() -> str:
  """The backend the program is built for ('cpu', 'gpu', 'tpu'): `choose`'s one input that is
  not a shape (tests that lower for CUDA on a CPU machine replace it)."""
  return jax.default_backend()


def choose(implementation: str, dtype: Dtype, head_dim: int) -> str:
  """The implementation `auto` stands for: explicit dots on CPU (no transposes around them;
  experiments/results/cpu_levers.md), cuDNN on GPU where JAX's conditions for its flash kernels
  hold (bf16/fp16, head_dim a multiple of 8 up to 128; odd token counts are padded to even by
  the caller, see `_cudnn`), XLA otherwise. An explicit choice is kept as it is."""
  if implementation != 'auto':
    return implementation
  backend = platform()
  if backend == 'cpu':
    return 'explicit'
  if (backend == 'gpu' and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16)
      and head_dim % 8 == 0 and head_dim <= 128):
    return 'cudnn'
  return 'xla'


def _cudnn(query: jnp.ndarray, key: jnp.ndarray, value: jnp.ndarray,
           mask: Optional[jnp.ndarray] = None) -> jnp.ndarray:
  """cuDNN flash attention on [b, t, h, d]. JAX's cuDNN path refuses odd token counts when
  training (it checks them as if a bias were given), and a ViT has 197 tokens: odd lengths are
  padded by one token that a padding mask hides, and the output is cut back. A `mask`
  ([b, 1, q, k] bool: NaFlex padding and packed segments) is padded alike."""
  queries, keys = query.shape[1], key.shape[1]
  if queries % 2 == 0 and keys % 2 == 0:
    return jax.nn.dot_product_attention(query, key, value, mask=mask, implementation='cudnn')
  pad = lambda t: jnp.pad(t, ((0, 0), (0, t.shape[1] % 2), (0, 0), (0, 0)))  # pylint: disable=unnecessary-lambda-assignment
  lengths = lambda n: jnp.full((query.shape[0],), n, jnp.int32)  # pylint: disable=unnecessary-lambda-assignment
  if mask is not None:
    mask = jnp.pad(mask, ((0, 0), (0, 0), (0, queries % 2), (0, keys % 2)))
  out = jax.nn.dot_product_attention(
      pad(query), pad(key), pad(value), mask=mask, implementation='cudnn',
      query_seq_lengths=lengths(queries), key_value_seq_lengths=lengths(keys))
  return out[:, :queries]


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

  Equivalent routes, one set of weights (`implementation`, see IMPLEMENTATIONS and `choose`):
  - the fused `jax.nn.dot_product_attention`, as cuDNN flash attention or XLA's version;
  - explicit heads-major weights: on CPU, when attention dropout is active (the fused call has
    no dropout), and when the caller makes `intermediates` mutable: then the weights
    ([b, heads, q, k]) are also recorded with `sow('intermediates', 'attention_weights')`.
  For self-attention (`inputs_q is inputs_kv`) the three projections run as one GEMM.
  `mask` ([b, 1, q, k] bool, True: attend) hides keys: NaFlex padding and other images of a
  packed sequence (`sequences.attention_mask`); every route takes it, cuDNN included. `bias`
  ([1, heads, q, k]) is added to the logits (a shared relative position bias), as is this
  layer's own relative position bias with `rel_pos_grid`; with either, cuDNN gives way to XLA.
  """

  num_heads: int
  dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: Initializer = nn.initializers.xavier_uniform()
  implementation: str = 'auto'  # one of IMPLEMENTATIONS
  # LayerNorm of queries and keys over head_dim (`query_norm`, `key_norm`; ViT-22B, timm qk_norm).
  qk_norm: bool = False
  layer_norm_eps: float = 1e-6
  # 2-D RoPE on the patch tokens of self-attention: ((rows, columns), prefix tokens, spec), the
  # spec as `posemb.rope_tables` takes it.
  rope: Optional[tuple[tuple[int, int], int, tuple]] = None
  # BEiT's relative position bias of this layer's own (`relative_position_bias`, a table
  # [(2 rows - 1)(2 columns - 1) + 3, heads]) on [cls, patches] of a (rows, columns) grid.
  rel_pos_grid: Optional[tuple[int, int]] = None
  # A LayerNorm of the heads' merged output before `out` (`inner_norm`; timm's scale_attn_norm,
  # BEiT-3, EVA's scale_attn_inner).
  inner_norm: bool = False

  @nn.compact
  def __call__(self, inputs_q: jnp.ndarray, inputs_kv: jnp.ndarray, *,
               deterministic: bool, mask: Optional[jnp.ndarray] = None,
               bias: Optional[jnp.ndarray] = None) -> jnp.ndarray:
    width = inputs_q.shape[-1]
    if width % self.num_heads:
      raise errors.UserError(f'hidden_size {width} is not divisible by num_heads {self.num_heads}.')
    if self.implementation not in IMPLEMENTATIONS:
      raise errors.UserError(f'attention_impl must be one of {IMPLEMENTATIONS}, got '
                             f'{self.implementation!r}.')
    num_heads, head_dim = self.num_heads, width // self.num_heads
    # One (kernel, bias) per projection, exactly `nn.DenseGeneral`'s parameters.
    projections = [_HeadsProjection(shape=(width, num_heads, head_dim), dtype=self.dtype,
                                param_dtype=self.param_dtype, kernel_init=self.kernel_init,
                                name=name)() for name in ('query', 'key', 'value')]

    if self.rel_pos_grid is not None:
      table = posemb_lib.relative_position_table(self, self.rel_pos_grid, num_heads)
      own = posemb_lib.relative_position_bias(table, self.rel_pos_grid)
      bias = own if bias is None else bias + own
    dropout_active = not deterministic and self.dropout_rate > 0
    chosen = choose(self.implementation, self.dtype, head_dim)
    if bias is not None and chosen == 'cudnn':
      chosen = 'xla'
    explicit = (dropout_active or self.is_mutable_collection('intermediates')
                or chosen == 'explicit')
    axes = 'bhtd' if explicit else 'bthd'  # the einsum's output order
    # Logical names: a no-op unless the trainer sets axis rules (tensor parallelism over heads).
    heads_axes = (('batch', 'act_heads', 'length', None) if explicit else
                  ('batch', 'length', 'act_heads', None))
    bias_shape = (num_heads, 1, head_dim) if explicit else (1, num_heads, head_dim)
    if inputs_q is inputs_kv:  # self-attention: q, k and v from one [width, 3 * width] GEMM
      kernel = jnp.stack([k for k, _ in projections])
      qkv_bias = jnp.stack([b.reshape(bias_shape) for _, b in projections])[:, None]
      qkv = jnp.einsum(f'btc,schd->s{axes}', inputs_q.astype(self.dtype), kernel) + qkv_bias
      query, key, value = qkv[0], qkv[1], qkv[2]
    else:
      query, key, value = (
          jnp.einsum(f'btc,chd->{axes}', inputs.astype(self.dtype), k) + b.reshape(bias_shape)
          for inputs, (k, b) in zip((inputs_q, inputs_kv, inputs_kv), projections))
    if self.qk_norm:
      query, key = (nn.LayerNorm(epsilon=self.layer_norm_eps, dtype=self.dtype, name=name)(t)
                    for name, t in (('query_norm', query), ('key_norm', key)))
    if self.rope is not None:
      grid, prefix, spec = self.rope
      cos, sin, interleaved = posemb_lib.rope_tables(spec, grid, head_dim)
      token_axis = 2 if explicit else 1
      query, key = (posemb_lib.apply_rope(t, cos, sin, token_axis, prefix, interleaved)
                    for t in (query, key))
    query, key, value = (nn.with_logical_constraint(t, heads_axes) for t in (query, key, value))

    if explicit:
      logits = jnp.einsum('bhqd,bhkd->bhqk', query, key) / jnp.sqrt(head_dim).astype(query.dtype)
      logits = logits.astype(jnp.float32)
      if bias is not None:
        logits = logits + bias.astype(jnp.float32)
      if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
      weights = jax.nn.softmax(logits, axis=-1).astype(query.dtype)
      self.sow('intermediates', 'attention_weights', weights)
      # Dropout per weight, not broadcast over queries, as the official model.
      weights = nn.Dropout(rate=self.dropout_rate)(weights, deterministic=not dropout_active)
      x = jnp.einsum('bhqk,bhkd->bqhd', weights, value)
    elif chosen == 'cudnn':
      x = _cudnn(query, key, value, mask)
    else:
      x = jax.nn.dot_product_attention(
          query, key, value, mask=mask, implementation='xla',
          bias=None if bias is None else bias.astype(query.dtype))
    if self.inner_norm:  # over the merged heads [b, q, heads * head_dim]
      merged = nn.LayerNorm(epsilon=self.layer_norm_eps, dtype=self.dtype, name='inner_norm')(
          x.reshape(*x.shape[:2], width))
      x = merged.reshape(x.shape)

    return nn.DenseGeneral(
        features=width, axis=(-2, -1), dtype=self.dtype, param_dtype=self.param_dtype,
        kernel_init=self.kernel_init, name='out')(x)
