"""The Vision Transformer (Dosovitskiy et al., arXiv:2010.11929), numerically as the official code.

image [b, h, w, 3] -> (ResNet stem) -> patch embedding [b, gh*gw, width] -> [cls] -> posemb
-> Encoder (pre-LayerNorm blocks: attention, MLP) -> encoder_norm -> pool -> [pre_logits] -> head

The parameter tree is the official Linen tree (`embedding`, `cls`, `Transformer/posembed_input`,
`Transformer/encoderblock_{i}/{LayerNorm_0,MultiHeadDotProductAttention_0,LayerNorm_1,
MlpBlock_0}`, `Transformer/encoder_norm`, `pre_logits`, `head`), big_vision's `MAPHead_0` for
MAP pooling, and `Transformer/encoderblock` (layers stacked on axis 0) when `scan=True`.
"""

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_jax import errors
from vit_jax.models import attention
from vit_jax.models import patch_embed
from vit_jax.models import posemb as posemb_lib
from vit_jax.models import resnet
from vit_jax.models import sequences as sequences_lib

Dtype = Any

# token: the class token; gap: the mean of the patch tokens; map: attention pooling over the patch
# tokens (prefix tokens are excluded from both, as timm does); token_gap: [class token, mean of
# patches] side by side (transformers' Dinov2ForImageClassification); unpooled / token_unpooled:
# every token.
CLASSIFIERS = ('token', 'gap', 'map', 'token_gap', 'unpooled', 'token_unpooled')
TOKEN_CLASSIFIERS = ('token', 'token_unpooled')  # read the class token
UNPOOLED_CLASSIFIERS = ('unpooled', 'token_unpooled')  # logits per token
# rope: 2-D rotary embeddings of q and k (DINOv3); none: no absolute position (BEiT, whose
# blocks see positions through their relative position bias).
POSEMBS = ('learn', 'sincos2d', 'rope', 'none')
# MLP activations: the official tanh GELU, the exact erf GELU (timm, DINOv2, DeiT, HF ViT) and
# CLIP's quick GELU x * sigmoid(1.702 x).
ACTIVATIONS = {
    'gelu_tanh': lambda x: nn.gelu(x, approximate=True),
    'gelu': lambda x: nn.gelu(x, approximate=False),
    'quick_gelu': lambda x: x * jax.nn.sigmoid(1.702 * x),
    'silu': jax.nn.silu,  # the gate of SwiGLU MLPs (DINOv2-g)
}
# A distilled model's two heads, (class head, distillation head), before they are averaged: sown
# when the collection is mutable (DeiT distillation trains them apart).
HEADS = 'heads'


def activation_name(activation: Optional[str], gelu_approximate: bool = True) -> str:
  """The MLP activation: `activation` when set, else the tanh or erf GELU per `gelu_approximate`."""
  if activation is None:
    return 'gelu_tanh' if gelu_approximate else 'gelu'
  if activation not in ACTIVATIONS:
    raise errors.UserError(f'activation={activation!r} is not supported; expected one of '
                           f'{tuple(ACTIVATIONS)}.')
  return activation


# The model's norms: LayerNorm (the paper), or RMSNorm (AIMv2: x / rms(x) * scale, no bias).
NORMS = ('layer', 'rms')


def make_norm(kind: str, epsilon: float, dtype: Dtype, name: str) -> nn.Module:
  if kind == 'rms':
    return nn.RMSNorm(epsilon=epsilon, dtype=dtype, name=name)
  return nn.LayerNorm(epsilon=epsilon, dtype=dtype, name=name)


REMAT_POLICIES = {
    'none': None,  # no rematerialisation
    'full': jax.checkpoint_policies.nothing_saveable,  # recompute the whole block
    'dots': jax.checkpoint_policies.checkpoint_dots,  # keep matmul outputs
    'dots_no_batch': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # keep weight matmuls
}


def drop_path(y: jnp.ndarray, rate, make_rng) -> jnp.ndarray:
  """Stochastic depth: zeroes a residual branch [b, ...] per example with probability `rate`.

  Kept examples are scaled by 1 / (1 - rate). `rate` may be None/0 (identity) or traced.
  """
  if rate is None or (isinstance(rate, (int, float)) and rate == 0):
    return y
  keep = 1.0 - rate
  mask = jax.random.bernoulli(make_rng('dropout'), keep, (y.shape[0],) + (1,) * (y.ndim - 1))
  return jnp.where(mask, y / keep, 0).astype(y.dtype)


class MlpBlock(nn.Module):
  """Dense(mlp_dim) -> GELU -> dropout -> Dense(width) -> dropout, on [b, tokens, width].

  `gated` (SwiGLU, DINOv2-g): Dense_0 gives [gate, value] of mlp_dim each (one packed kernel, as
  timm's `SwiGLUPacked` and transformers' DINOv2 `weights_in`), and act(gate) * value goes on.
  """

  mlp_dim: int
  dropout_rate: float = 0.0
  activation: str = 'gelu_tanh'  # an ACTIVATIONS name; the tanh form is the official model's
  gated: bool = False
  dtype: Dtype = jnp.float32
  # A norm of the hidden activations before Dense_1 (`inner_norm`: timm's scale_mlp_norm,
  # BEiT-3, EVA-02's SwiGLU): (kind, epsilon), or None.
  inner_norm: Optional[tuple[str, float]] = None

  @nn.compact
  def __call__(self, inputs: jnp.ndarray, *, deterministic: bool) -> jnp.ndarray:
    dense = lambda features, name: nn.Dense(  # pylint: disable=g-long-lambda
        features, dtype=self.dtype, kernel_init=nn.initializers.xavier_uniform(),
        bias_init=nn.initializers.normal(stddev=1e-6), name=name)
    x = dense(self.mlp_dim * (2 if self.gated else 1), 'Dense_0')(inputs)
    x = nn.with_logical_constraint(x, ('batch', 'length', 'act_mlp'))
    if self.gated:
      gate, x = jnp.split(x, 2, axis=-1)
      x = ACTIVATIONS[self.activation](gate) * x
    else:
      x = ACTIVATIONS[self.activation](x)
    x = nn.Dropout(rate=self.dropout_rate)(x, deterministic=deterministic)
    if self.inner_norm is not None:
      x = make_norm(*self.inner_norm, self.dtype, 'inner_norm')(x)
    x = dense(inputs.shape[-1], 'Dense_1')(x)
    return nn.Dropout(rate=self.dropout_rate)(x, deterministic=deterministic)


class LayerScale(nn.Module):
  """Per-channel scale of a residual branch (CaiT, DeiT-III, DINOv2): [..., width] * `scale`."""

  init_value: float

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    scale = self.param('scale', nn.initializers.constant(self.init_value), (x.shape[-1],))
    return x * scale.astype(x.dtype)


class Encoder1DBlock(nn.Module):
  """Pre-LN transformer block: x + Attn(LN(x)), then x + MLP(LN(x)), on [b, tokens, width].

  `drop_path_rate` (stochastic depth, per example) may be None, a float, or a traced scalar
  (one per layer when scanned). `mask` ([b, 1, t, t] bool) keeps attention inside each image of
  a NaFlex sequence; `bias` ([1, heads, t, t]) is added to the attention logits (BEiT's shared
  relative position bias). `layerscale` (an initial value) scales both branches
  (`LayerScale_0/1`); `qk_norm` normalises queries and keys per head. Returns `(x, None)`, or
  `(x, x)` with `emit` (scanned blocks stack their outputs), so the same block serves `nn.scan`.
  """

  mlp_dim: int
  num_heads: int
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  activation: str = 'gelu_tanh'
  layer_norm_eps: float = 1e-6
  layerscale: Optional[float] = None
  qk_norm: bool = False
  gated_mlp: bool = False
  rope: Optional[tuple[tuple[int, int], int, tuple]] = None  # see attention.MultiHeadAttention
  rel_pos_grid: Optional[tuple[int, int]] = None  # see attention.MultiHeadAttention
  norm: str = 'layer'  # a NORMS name
  attn_inner_norm: bool = False  # a norm of the merged heads before `out` (BEiT-3)
  mlp_inner_norm: bool = False  # a norm before the MLP's Dense_1 (BEiT-3, EVA-02)
  attention_impl: str = 'auto'  # an attention.IMPLEMENTATIONS name
  dtype: Dtype = jnp.float32
  emit: bool = False  # also return the output as the scan's per-layer output

  @nn.compact
  def __call__(self, inputs: jnp.ndarray, drop_path_rate, deterministic: bool, mask=None,
               bias=None):
    if inputs.ndim != 3:
      raise errors.UserError(f'Encoder1DBlock expects [batch, tokens, width], got {inputs.shape}.')
    inputs = nn.with_logical_constraint(inputs, ('batch', 'length', 'act_embed'))
    norm = lambda name: make_norm(self.norm, self.layer_norm_eps, self.dtype, name)  # pylint: disable=unnecessary-lambda-assignment
    scale = lambda y, name: (  # pylint: disable=unnecessary-lambda-assignment
        y if self.layerscale is None else LayerScale(self.layerscale, name=name)(y))
    y = norm('LayerNorm_0')(inputs)
    y = attention.MultiHeadAttention(
        num_heads=self.num_heads, dropout_rate=self.attention_dropout_rate, dtype=self.dtype,
        qk_norm=self.qk_norm, layer_norm_eps=self.layer_norm_eps, rope=self.rope,
        rel_pos_grid=self.rel_pos_grid, inner_norm=self.attn_inner_norm,
        implementation=self.attention_impl, name='MultiHeadDotProductAttention_0')(y, y, deterministic=deterministic, mask=mask,
                                               bias=bias)
    y = nn.Dropout(rate=self.dropout_rate)(y, deterministic=deterministic)
    drop = lambda y: y if deterministic else drop_path(y, drop_path_rate, self.make_rng)  # pylint: disable=unnecessary-lambda-assignment
    x = inputs + drop(scale(y, 'LayerScale_0'))

    y = norm('LayerNorm_1')(x)
    y = MlpBlock(mlp_dim=self.mlp_dim, dropout_rate=self.dropout_rate,
                 activation=self.activation, gated=self.gated_mlp, dtype=self.dtype,
                 inner_norm=(self.norm, self.layer_norm_eps) if self.mlp_inner_norm else None,
                 name='MlpBlock_0')(y, deterministic=deterministic)
    x = x + drop(scale(y, 'LayerScale_1'))
    return x, (x if self.emit else None)


class Encoder(nn.Module):
  """Position embedding, `num_layers` blocks and the final LayerNorm: [b, t, w] -> [b, t, w].

  `grid_shape` is the patch grid (for sincos2d); `num_prefix_tokens` counts the tokens in front
  that have a position (cls, distillation; their learned posemb rows come first, as the official
  model; their sincos posemb is zero). `registers` [1, r, w] are inserted after them once the
  position embedding is added (DINOv2 with registers: registers have no position). `pre_norm`
  adds a LayerNorm before the first block (CLIP). With `dynamic_image_size` a learned table of
  another grid is resampled to this one on the fly.
  """

  num_layers: int
  mlp_dim: int
  num_heads: int
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.1
  add_position_embedding: bool = True
  posemb: str = 'learn'
  grid_shape: Optional[tuple[int, int]] = None
  num_prefix_tokens: int = 0
  stochastic_depth: float = 0.0
  scan: bool = False
  remat: str = 'none'
  activation: str = 'gelu_tanh'
  layer_norm_eps: float = 1e-6
  layerscale: Optional[float] = None
  qk_norm: bool = False
  pre_norm: bool = False
  gated_mlp: bool = False
  final_norm: bool = True  # False when the norm comes after pooling (`fc_norm`)
  rope_theta: float = 100.0
  rope: str = 'none'  # a posemb.ROPES name, beside the position embedding
  rope_grid: Optional[tuple[int, int]] = None  # axial: coordinates rescaled to this grid
  rope_offset: float = 0.0  # axial: added to the patch indices
  rope_xy: bool = False  # axial: the column angles first
  rel_pos_bias: bool = False  # a relative position bias table per block (BEiT)
  shared_rel_pos_bias: bool = False  # one table for every block (`relative_position_bias`)
  norm: str = 'layer'  # a NORMS name, for every norm of the encoder
  attn_inner_norm: bool = False
  mlp_inner_norm: bool = False
  dynamic_image_size: bool = False
  posemb_resize: str = 'bilinear'
  posemb_resize_square: bool = False
  attention_impl: str = 'auto'
  dtype: Dtype = jnp.float32

  def _rope(self, registers):
    """The blocks' rotary embedding: (grid, prefix tokens, spec), or None."""
    kind = 'dinov3' if self.posemb == 'rope' else self.rope
    if kind == 'none':
      return None
    if kind not in posemb_lib.ROPES:
      raise errors.UserError(f'rope={kind!r} is not supported; expected one of {posemb_lib.ROPES}.')
    spec = ((kind, float(self.rope_theta)) if kind == 'dinov3' else
            (kind, float(self.rope_theta),
             None if self.rope_grid is None else tuple(self.rope_grid),
             float(self.rope_offset), bool(self.rope_xy)))
    prefix = self.num_prefix_tokens + (0 if registers is None else registers.shape[1])
    return tuple(self.grid_shape), prefix, spec

  def _add_position(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    """Square inputs: the position embedding of the grid (prefix rows first), then dropout."""
    if not self.add_position_embedding or self.posemb in ('rope', 'none'):
      return x
    if self.posemb == 'learn':
      x = posemb_lib.AddPositionEmbs(
          grid_shape=self.grid_shape if self.dynamic_image_size else None,
          num_prefix_tokens=self.num_prefix_tokens, resize_method=self.posemb_resize,
          resize_square=self.posemb_resize_square, name='posembed_input')(x)
    else:
      grid = posemb_lib.posemb_sincos_2d(*self.grid_shape, x.shape[-1])
      prefix = jnp.zeros((1, self.num_prefix_tokens, x.shape[-1]), jnp.float32)
      x = x + jnp.concatenate([prefix, grid], axis=1).astype(x.dtype)
    return nn.Dropout(rate=self.dropout_rate)(x, deterministic=not train)

  def _sequence_tokens(self, x, seqs, registers, train):
    """NaFlex inputs: x is [b, t + k * prefix, w], the patch tokens then each image slot's
    prefix tokens. Adds each patch's position (the table resized to its image's grid), appends
    each slot's registers, and returns the tokens with the attention mask of their segments."""
    tokens, slots = seqs.patches.shape[1], seqs.images_per_sequence
    if self.posemb == 'rope' or self.rope != 'none':
      raise errors.UserError('Rotary embeddings are square-only here; NaFlex sequences need a '
                             'learned or sincos2d position embedding.')
    if self.add_position_embedding and self.posemb != 'none':
      if self.posemb == 'learn':
        x = posemb_lib.AddPositionEmbs(num_prefix_tokens=self.num_prefix_tokens,
                                       resize_method=self.posemb_resize,
                                       resize_square=self.posemb_resize_square,
                                       name='posembed_input')(x, sequences=seqs)
      else:
        grid = sequences_lib.sincos_at(seqs.positions, x.shape[-1])
        prefix = jnp.zeros((x.shape[0], x.shape[1] - tokens, x.shape[-1]), jnp.float32)
        x = x + jnp.concatenate([grid, prefix], axis=1).astype(x.dtype)
      x = nn.Dropout(rate=self.dropout_rate)(x, deterministic=not train)
    slot_ids = jnp.where(sequences_lib.valid_images(seqs.grids),
                         sequences_lib.slot_segments(slots, x.shape[0]), 0)
    segments = [seqs.segments, jnp.repeat(slot_ids, self.num_prefix_tokens, axis=1)]
    if registers is not None:
      count = registers.shape[1]
      x = jnp.concatenate([x, jnp.tile(registers.astype(x.dtype), [x.shape[0], slots, 1])], 1)
      segments.append(jnp.repeat(slot_ids, count, axis=1))
    segments = jnp.concatenate(segments, axis=1)
    return x, sequences_lib.attention_mask(segments, segments)

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool,
               registers: Optional[jnp.ndarray] = None,
               sequences: Optional[sequences_lib.Sequences] = None,
               blocks: Optional[Sequence[int]] = None, norm_blocks: bool = False):
    """[b, t, w] -> [b, t, w]; with `blocks` (indices, negative from the end) also the outputs
    of those blocks, each through the final LayerNorm when `norm_blocks`."""
    if x.ndim != 3:
      raise errors.UserError(f'Encoder expects [batch, tokens, width], got {x.shape}.')
    mask = shared_bias = None
    relative = self.rel_pos_bias or self.shared_rel_pos_bias
    if relative and (sequences is not None or registers is not None
                     or self.num_prefix_tokens != 1):
      raise errors.UserError('A relative position bias (BEiT) needs square images with one class '
                             'token and no registers; NaFlex sequences are not supported.')
    if self.shared_rel_pos_bias:
      table = posemb_lib.relative_position_table(self, self.grid_shape, self.num_heads)
      shared_bias = posemb_lib.relative_position_bias(table, self.grid_shape)
    if sequences is not None:
      x, mask = self._sequence_tokens(x, sequences, registers, train)
    else:
      x = self._add_position(x, train)
      if registers is not None:
        registers = jnp.tile(registers.astype(x.dtype), [x.shape[0], 1, 1])
        x = jnp.concatenate(
            [x[:, :self.num_prefix_tokens], registers, x[:, self.num_prefix_tokens:]], axis=1)
    if self.pre_norm:
      x = make_norm(self.norm, self.layer_norm_eps, self.dtype, 'pre_norm')(x)
    block_kwargs = dict(
        mlp_dim=self.mlp_dim, num_heads=self.num_heads, dropout_rate=self.dropout_rate,
        attention_dropout_rate=self.attention_dropout_rate, activation=self.activation,
        layer_norm_eps=self.layer_norm_eps, layerscale=self.layerscale, qk_norm=self.qk_norm,
        gated_mlp=self.gated_mlp, attention_impl=self.attention_impl, dtype=self.dtype,
        rel_pos_grid=tuple(self.grid_shape) if self.rel_pos_bias else None, norm=self.norm,
        attn_inner_norm=self.attn_inner_norm, mlp_inner_norm=self.mlp_inner_norm,
        rope=self._rope(registers))
    block = Encoder1DBlock
    if self.remat != 'none':
      # Arguments: (self, inputs, drop_path_rate, deterministic, mask, bias); `deterministic` is
      # static.
      block = nn.remat(block, policy=REMAT_POLICIES[self.remat], prevent_cse=not self.scan,
                       static_argnums=(3,))

    # Stochastic depth grows linearly from 0 at the first block to the rate at the last.
    rates = None
    if self.stochastic_depth > 0:
      rates = [self.stochastic_depth * i / max(self.num_layers - 1, 1)
               for i in range(self.num_layers)]
    chosen = None if blocks is None else _block_indices(blocks, self.num_layers)
    if self.scan:
      stack = nn.scan(
          block, variable_axes={'params': 0, 'intermediates': 0},
          split_rngs={'params': True, 'dropout': True},
          in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast),
          length=self.num_layers)
      x, stacked = stack(name='encoderblock', emit=chosen is not None, **block_kwargs)(
          x, None if rates is None else jnp.asarray(rates), not train, mask, shared_bias)
      outputs = None if chosen is None else [stacked[i] for i in chosen]
    else:
      every = []
      for layer in range(self.num_layers):
        x, _ = block(name=f'encoderblock_{layer}', **block_kwargs)(
            x, None if rates is None else rates[layer], not train, mask, shared_bias)
        every.append(x)
      outputs = None if chosen is None else [every[i] for i in chosen]
    if self.final_norm:
      final = make_norm(self.norm, self.layer_norm_eps, self.dtype, 'encoder_norm')
      x = final(x)
      if outputs is not None and norm_blocks:
        outputs = [final(y) for y in outputs]
    return x if outputs is None else (x, outputs)


def _block_indices(blocks: Sequence[int], num_layers: int) -> list[int]:
  """`blocks` as indices in [0, num_layers) (negative ones count from the end)."""
  chosen = [int(i) + num_layers if int(i) < 0 else int(i) for i in blocks]
  if any(not 0 <= i < num_layers for i in chosen):
    raise errors.UserError(f'blocks {list(blocks)} out of range for {num_layers} blocks.')
  return chosen


class MAPHead(nn.Module):
  """Multihead attention pooling (big_vision): a learned probe attends over [b, t, w] -> [b, w].

  With `segments` ([b, t]; NaFlex) one probe per image slot attends to its own segment's tokens:
  [b, t, w] -> [b, slots, w].
  """

  num_heads: int
  mlp_dim: int
  activation: str = 'gelu_tanh'
  layer_norm_eps: float = 1e-6
  attention_impl: str = 'auto'
  dtype: Dtype = jnp.float32
  mlp: bool = True  # False: the attention alone (AIMv2's pooling head)
  norm: str = 'layer'

  @nn.compact
  def __call__(self, x: jnp.ndarray, segments: Optional[jnp.ndarray] = None,
               slots: int = 1) -> jnp.ndarray:
    probe = self.param('probe', nn.initializers.xavier_uniform(), (1, 1, x.shape[-1]))
    probe = jnp.tile(probe.astype(x.dtype), [x.shape[0], slots, 1])
    mask = None
    if segments is not None:
      mask = sequences_lib.attention_mask(sequences_lib.slot_segments(slots, x.shape[0]),
                                          segments)
    x = attention.MultiHeadAttention(
        num_heads=self.num_heads, dtype=self.dtype, implementation=self.attention_impl,
        name='MultiHeadDotProductAttention_0')(probe, x, deterministic=True, mask=mask)
    if self.mlp:
      y = make_norm(self.norm, self.layer_norm_eps, self.dtype, 'LayerNorm_0')(x)
      x = x + MlpBlock(mlp_dim=self.mlp_dim, activation=self.activation,
                       dtype=self.dtype, name='MlpBlock_0')(y, deterministic=True)
    return x if segments is not None else x[:, 0]


class HeadNorm(nn.Module):
  """BatchNorm without scale or offset over features [..., d] (MAE's linear probe, after MoCo
  v3): in training each feature is standardised with the batch's mean and variance, at inference
  with the stored `mean` and `var` (a linear probe's run sets them from its training batches
  before the first step: train/run.py)."""

  epsilon: float = 1e-6

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    mean = self.param('mean', nn.initializers.zeros, (x.shape[-1],))
    var = self.param('var', nn.initializers.ones, (x.shape[-1],))
    if train:
      axes = tuple(range(x.ndim - 1))
      mean, var = jnp.mean(x, axis=axes), jnp.var(x, axis=axes)
    return (x - mean) * jax.lax.rsqrt(var + self.epsilon)


# The outputs a frozen-feature evaluation may read: `pooled` (the encoder output after pooling)
# and `pre_logits` (after the representation layer when the model has one; else `pooled`). They
# change neither parameters nor logits.
REPRESENTATIONS = 'representations'


def representations(model: nn.Module, params: Any, images: jnp.ndarray) -> dict[str, jnp.ndarray]:
  """{'pooled': [b, d], 'pre_logits': [b, d']} of `images` (inference mode)."""
  _, state = model.apply({'params': params}, images, train=False, mutable=[REPRESENTATIONS])
  return state[REPRESENTATIONS]['features'][0]


class VisionTransformer(nn.Module):
  """ViT taking the official config fields; returns logits [b, classes] ([b, t, classes] unpooled).

  Official fields: `patches.size`, `hidden_size`, `transformer.{mlp_dim, num_heads, num_layers,
  dropout_rate, attention_dropout_rate}`, `classifier`, `representation_size`,
  `resnet.{num_layers, width_factor}`, `head_bias_init`, `model_name`. Our fields default to the
  official behaviour: `posemb` ('learn' | 'sincos2d'), `stochastic_depth` (max drop-path rate),
  `dtype` (compute dtype, or 'auto': bfloat16 on accelerators, float32 on CPU; parameters,
  softmax statistics, the head and the loss stay float32), `attention_impl` (an
  attention.IMPLEMENTATIONS name), `scan`, `remat` (a REMAT_POLICIES name), `gelu_approximate`.
  Fields for other families (docs/models.md, "Model fields"): `activation`,
  `layer_norm_eps`, `layerscale`, `qk_norm`, `pre_norm`, `num_registers`, `distilled`,
  `distillation_head`, `dynamic_image_size`, `class_token`, `fc_norm`, `gated_mlp`,
  `rope_theta` (with posemb='rope' or `rope`), `rope`, `rope_grid`, `rope_offset`, `rope_xy`,
  `rel_pos_bias`, `shared_rel_pos_bias`, `norm`, `patch_norm`, `map_mlp`, `map_include_prefix`,
  `map_heads`, `map_mlp_dim`, `attn_inner_norm`, `posemb_resize`, `posemb_resize_square`,
  `mlp_inner_norm`, `linear_probe`, `head_init_std`. Images are NHWC in [-1, 1] for the official
  checkpoints; imported ones carry their own input transform (`trained_model.TrainedModel.pp`).
  """

  num_classes: Optional[int]
  patches: Any
  transformer: Any
  hidden_size: int
  resnet: Optional[Any] = None
  representation_size: Optional[int] = None
  classifier: str = 'token'
  head_bias_init: float = 0.
  encoder: type[nn.Module] = Encoder
  model_name: Optional[str] = None
  posemb: str = 'learn'
  stochastic_depth: float = 0.0
  dtype: Dtype = jnp.float32
  scan: bool = False
  remat: str = 'none'
  gelu_approximate: bool = True
  activation: Optional[str] = None  # an ACTIVATIONS name; None: the GELU `gelu_approximate` picks
  layer_norm_eps: float = 1e-6
  layerscale: Optional[float] = None  # LayerScale's initial value; None: no LayerScale
  qk_norm: bool = False
  pre_norm: bool = False  # a LayerNorm before the first block (CLIP)
  num_registers: int = 0  # register tokens after the prefix tokens (DINOv2 with registers)
  distilled: bool = False  # DeiT's distillation token and second head, averaged at inference
  distillation_head: bool = True  # False: a distillation token but logits from the cls head only
  dynamic_image_size: bool = False  # resample a learned posemb to any input grid on the fly
  # How a learned table is resized on the fly (dynamic_image_size, NaFlex): 'bilinear' or
  # 'bicubic', antialiased; `posemb_resize_square`: to a square of the longer side, top-left kept.
  posemb_resize: str = 'bilinear'
  posemb_resize_square: bool = False
  class_token: Optional[bool] = None  # None: a class token exactly for the token classifiers
  fc_norm: bool = False  # the final LayerNorm after pooling instead of before (timm, MAE, BEiT)
  gated_mlp: bool = False  # SwiGLU MLPs: act(gate) * value (activation='silu'; DINOv2-g)
  rope_theta: float = 100.0  # the RoPE base with posemb='rope' (DINOv3: 100) or `rope`
  # Rotary embeddings beside the position embedding: 'dinov3' (posemb='rope' is this alone) or
  # 'axial' (EVA-02, timm's RotaryEmbeddingCat: patch indices + `rope_offset`, rescaled to
  # `rope_grid`, the column angles first with `rope_xy`).
  rope: str = 'none'
  rope_grid: Optional[tuple[int, int]] = None
  rope_offset: float = 0.0
  rope_xy: bool = False
  # BEiT's relative position bias (usually with posemb='none'): a table per block, and/or one
  # table shared by every block (`Transformer/relative_position_bias`).
  rel_pos_bias: bool = False
  shared_rel_pos_bias: bool = False
  norm: str = 'layer'  # 'layer' or 'rms': every norm of the model (AIMv2: RMSNorm)
  patch_norm: bool = False  # a norm of the patch tokens before the position (AIMv2)
  map_mlp: bool = True  # False: a MAP head without its MLP (AIMv2's attention pooling)
  map_include_prefix: bool = False  # the MAP head also attends to the prefix tokens (timm Eva)
  map_heads: Optional[int] = None  # the MAP head's heads (None: the blocks'; PE: 8)
  map_mlp_dim: Optional[int] = None  # the MAP head's MLP width (None: the blocks')
  attn_inner_norm: bool = False  # a LayerNorm of the merged heads before `out` (BEiT-3)
  mlp_inner_norm: bool = False  # a norm before the MLP's second dense layer (BEiT-3, EVA-02)
  attention_impl: str = 'auto'  # an attention.IMPLEMENTATIONS name
  # MAE's linear probe: the encoder runs in inference mode and no gradient reaches it; the
  # features pass a BatchNorm without affine (`head_norm`: HeadNorm) before the head.
  linear_probe: bool = False
  head_init_std: float = 0.0  # the head kernel's normal init (0: zeros, the official head)

  @property
  def compute_dtype(self):
    """`dtype`, with 'auto' resolved: bfloat16 on accelerators, float32 on CPU."""
    if isinstance(self.dtype, str) and self.dtype == 'auto':
      return jnp.float32 if attention.platform() == 'cpu' else jnp.bfloat16
    return jnp.dtype(self.dtype)

  @property
  def has_class_token(self) -> bool:
    """`class_token` when set, else whether the classifier reads a class token."""
    if self.class_token is not None:
      return self.class_token
    return self.classifier in TOKEN_CLASSIFIERS + ('token_gap',)

  def _check_fields(self):
    for field, value, allowed in (('classifier', self.classifier, CLASSIFIERS),
                                  ('posemb', self.posemb, POSEMBS),
                                  ('remat', self.remat, tuple(REMAT_POLICIES)),
                                  ('norm', self.norm, NORMS),
                                  ('attention_impl', self.attention_impl,
                                   attention.IMPLEMENTATIONS)):
      if value not in allowed:
        raise errors.UserError(f'{field}={value!r} is not supported; expected one of {allowed}.')
    try:
      dtype = self.compute_dtype
    except TypeError:
      dtype = None
    if dtype not in (jnp.float32, jnp.bfloat16, jnp.float16):
      raise errors.UserError(f"dtype={self.dtype!r} is not supported; expected 'auto', "
                             "'float32', 'bfloat16' or 'float16'.")
    if not 0.0 <= self.stochastic_depth < 1.0:
      raise errors.UserError(f'stochastic_depth must be in [0, 1), got {self.stochastic_depth}.')
    if self.distilled and self.classifier != 'token':
      raise errors.UserError(f'distilled=True needs classifier="token", got {self.classifier!r}.')
    if self.class_token is False and self.classifier in TOKEN_CLASSIFIERS:
      raise errors.UserError(
          f'classifier={self.classifier!r} needs the class token; class_token=False.')
    if self.fc_norm and self.classifier in UNPOOLED_CLASSIFIERS:
      raise errors.UserError(
          f'fc_norm=True normalises a pooled output; classifier={self.classifier!r} '
          'pools nothing.')
    if self.map_include_prefix and self.classifier != 'map':
      raise errors.UserError(f'map_include_prefix=True needs classifier="map", got '
                             f'{self.classifier!r}.')
    if self.num_registers < 0:
      raise errors.UserError(f'num_registers must be >= 0, got {self.num_registers}.')

  def _embed(self, x: jnp.ndarray) -> tuple[jnp.ndarray, tuple[int, int]]:
    """Images [b, h, w, 3] -> patch tokens [b, gh*gw, width] and the grid (gh, gw)."""
    if self.resnet is not None:
      x = resnet.resnet_stem(x, num_layers=tuple(self.resnet['num_layers']),
                             width_factor=self.resnet['width_factor'], dtype=self.compute_dtype)
    patch_size = tuple(self.patches['size'])
    height, width = x.shape[1:3]
    if height % patch_size[0] or width % patch_size[1]:
      stem = 'the ResNet stem output' if self.resnet is not None else 'the image'
      raise errors.UserError(
          f'{stem} size {height}x{width} is not divisible by patches.size={patch_size}; '
          f'use an image size that is a multiple of the (effective) patch size.')
    # A strided convolution is the paper's "linear projection of flattened patches".
    x = nn.Conv(features=self.hidden_size, kernel_size=patch_size, strides=patch_size,
                padding='VALID', dtype=self.compute_dtype, name='embedding')(x)
    n, gh, gw, c = x.shape
    x = jnp.reshape(x, [n, gh * gw, c])
    if self.patch_norm:
      x = make_norm(self.norm, self.layer_norm_eps, self.compute_dtype, 'patch_norm')(x)
    return x, (gh, gw)

  def _embed_sequences(self, seqs: sequences_lib.Sequences) -> jnp.ndarray:
    """NaFlex patches [b, t, ph*pw*c] -> tokens [b, t, width] with the same `embedding`."""
    square_only = {'resnet (a hybrid stem)': self.resnet is not None,
                   'rotary embeddings': self.posemb == 'rope' or self.rope != 'none',
                   'a relative position bias': self.rel_pos_bias or self.shared_rel_pos_bias}
    for feature, asked in square_only.items():
      if asked:
        verb = 'are' if feature.endswith('embeddings') else 'is'
        raise errors.UserError(f'{feature} {verb} square-only; NaFlex sequences take plain patch '
                               'embeddings with a learned or sincos2d position table.')
    if self.classifier in UNPOOLED_CLASSIFIERS:
      raise errors.UserError(f'classifier={self.classifier!r} is square-only; NaFlex sequences '
                             "pool per image ('token', 'gap', 'map', 'token_gap').")
    x = patch_embed.FlattenedPatchEmbedding(
        patch_size=tuple(self.patches['size']), features=self.hidden_size,
        dtype=self.compute_dtype, name='embedding')(seqs.patches.astype(self.compute_dtype))
    if self.patch_norm:
      x = make_norm(self.norm, self.layer_norm_eps, self.compute_dtype, 'patch_norm')(x)
    return x

  @nn.compact
  def __call__(self, inputs, *, train: bool, blocks: Optional[Sequence[int]] = None,
               norm_blocks: bool = False):
    """Logits [b, classes] of images [b, h, w, c]; [b, k, classes] of NaFlex `Sequences`
    (one row per image slot; empty slots give values to be masked). With `blocks` (indices,
    negative from the end): `(logits, [the tokens [b, t, w] after each of those blocks])`, each
    through the final LayerNorm when `norm_blocks` (models/intermediates.py)."""
    self._check_fields()
    seqs = inputs if isinstance(inputs, sequences_lib.Sequences) else None
    if seqs is not None:
      x, grid = self._embed_sequences(seqs), None
    elif inputs.ndim != 4:
      raise errors.UserError(f'VisionTransformer expects images [batch, height, width, channels], '
                             f'got shape {inputs.shape}.')
    else:
      x, grid = self._embed(inputs.astype(self.compute_dtype))
    n, tokens, c = x.shape
    slots = 1 if seqs is None else seqs.images_per_sequence

    prefix_names = (('cls',) if self.has_class_token else ()) + (
        ('dist',) if self.distilled else ())
    if self.transformer is not None:
      prefix = [self.param(name, nn.initializers.zeros, (1, 1, c)) for name in prefix_names]
      if prefix and seqs is None:  # in front of the patches
        x = jnp.concatenate([jnp.tile(t.astype(x.dtype), [n, 1, 1]) for t in prefix] + [x], 1)
      elif prefix:  # after the patches, once per image slot: (slot 0: cls, dist), (slot 1: ...)
        prefix = jnp.concatenate(prefix, axis=1).astype(x.dtype)
        x = jnp.concatenate([x, jnp.tile(prefix, [n, slots, 1])], axis=1)
      registers = None
      if self.num_registers:
        registers = self.param('registers', nn.initializers.normal(stddev=0.02),
                               (1, self.num_registers, c))
      x = self.encoder(
          name='Transformer', **self.transformer, posemb=self.posemb, grid_shape=grid,
          num_prefix_tokens=len(prefix_names), stochastic_depth=self.stochastic_depth,
          scan=self.scan, remat=self.remat,
          activation=activation_name(self.activation, self.gelu_approximate),
          layer_norm_eps=self.layer_norm_eps, layerscale=self.layerscale, qk_norm=self.qk_norm,
          pre_norm=self.pre_norm, gated_mlp=self.gated_mlp, final_norm=not self.fc_norm,
          rope_theta=self.rope_theta, rope=self.rope, rope_grid=self.rope_grid,
          rope_offset=self.rope_offset, rope_xy=self.rope_xy, rel_pos_bias=self.rel_pos_bias,
          shared_rel_pos_bias=self.shared_rel_pos_bias, norm=self.norm,
          attn_inner_norm=self.attn_inner_norm, mlp_inner_norm=self.mlp_inner_norm,
          dynamic_image_size=self.dynamic_image_size, posemb_resize=self.posemb_resize,
          posemb_resize_square=self.posemb_resize_square, attention_impl=self.attention_impl,
          dtype=self.compute_dtype)(x, train=train and not self.linear_probe,
                                    registers=registers, sequences=seqs,
                                    blocks=blocks, norm_blocks=norm_blocks)
      if blocks is not None:
        x, block_outputs = x
    elif blocks is not None:
      raise errors.UserError('blocks: this model has no transformer blocks (transformer=None).')

    if seqs is None:
      first = 0  # the class token; the distillation token follows it
      patches, segments = x[:, len(prefix_names) + self.num_registers:], None
      mean = lambda t: jnp.mean(t, axis=1)  # pylint: disable=unnecessary-lambda-assignment
    else:
      first = tokens + jnp.arange(slots) * len(prefix_names)  # each slot's class token
      patches, segments = x[:, :tokens], seqs.segments
      mean = lambda t: sequences_lib.segment_mean(t, segments, slots)  # pylint: disable=unnecessary-lambda-assignment
    distillation = x[:, first + 1] if self.distilled else None
    if self.classifier == 'token':
      x = x[:, first]
    elif self.classifier == 'gap':
      x = mean(patches)
    elif self.classifier == 'token_gap':
      x = jnp.concatenate([x[:, first], mean(patches)], axis=-1)
    elif self.classifier == 'map':
      x = MAPHead(num_heads=self.map_heads or self.transformer['num_heads'],
                  mlp_dim=self.map_mlp_dim or self.transformer['mlp_dim'],
                  activation=activation_name(self.activation, self.gelu_approximate),
                  layer_norm_eps=self.layer_norm_eps, attention_impl=self.attention_impl,
                  dtype=self.compute_dtype, mlp=self.map_mlp, norm=self.norm)(
                      x if self.map_include_prefix and seqs is None else patches, segments,
                      slots)
    if self.fc_norm:
      x = make_norm(self.norm, self.layer_norm_eps, self.compute_dtype, 'fc_norm')(x)

    # The head runs in float32 whatever the compute dtype: logits feed the loss.
    x = x.astype(jnp.float32)
    pooled = x
    if self.representation_size is not None:
      x = jnp.tanh(nn.Dense(self.representation_size, name='pre_logits')(x))
    if not self.is_initializing():
      self.sow(REPRESENTATIONS, 'features', {'pooled': pooled, 'pre_logits': x})
    if self.linear_probe:
      x = HeadNorm(name='head_norm')(jax.lax.stop_gradient(x), train=train)
    if self.num_classes:
      kernel_init = (nn.initializers.normal(self.head_init_std) if self.head_init_std
                     else nn.initializers.zeros)
      head = lambda name: nn.Dense(  # pylint: disable=unnecessary-lambda-assignment
          self.num_classes, kernel_init=kernel_init,
          bias_init=nn.initializers.constant(self.head_bias_init), name=name)
      logits = head('head')(x)
      if self.distilled and self.distillation_head:  # DeiT: both heads, averaged
        dist_logits = head('head_dist')(distillation.astype(jnp.float32))
        if not self.is_initializing():
          self.sow(HEADS, 'logits', (logits, dist_logits))
        logits = (logits + dist_logits) / 2
      x = logits
    return x if blocks is None else (x, block_outputs)


def count_params(params: Any) -> int:
  """Number of scalars in a parameter tree (works on `jax.eval_shape` outputs too)."""
  return sum(int(leaf.size) for leaf in jax.tree_util.tree_leaves(params))
