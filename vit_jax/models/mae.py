"""The masked autoencoder (He et al., arXiv:2111.06377): a ViT encoder on the visible patches and a
light decoder that reconstructs the masked ones.

  images [b, h, w, 3] -> patch embedding + fixed sincos posemb [b, L, d] -> keep the (1 - ratio)
  lowest-noise patches -> [cls] -> encoder blocks -> encoder_norm -> decoder_embed -> mask
  tokens in the masked places -> [cls] + decoder sincos posemb -> decoder blocks -> norm ->
  decoder_pred [b, L, p * p * 3] (pixels of every patch; the loss reads the masked ones)

The encoder's parameters carry the ViT's own names (`embedding`, `cls`, `Transformer/
encoderblock_i`, `Transformer/encoder_norm`), so the encoder is a `VisionTransformer` once the
decoder is dropped and its fixed position table written out (`encoder_params`). The decoder is
`decoder_embed`, `mask_token`, `decoder/encoderblock_i`, `decoder/encoder_norm` and
`decoder_pred`: the same blocks, sharded by the same rules. Which patches are masked is the
caller's `noise` [b, L]: per example, the patches with the lowest noise stay visible (the
objective draws it from each example's stream position, so a resumed run masks the same).
"""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vit_jax import errors
from vit_jax.models import posemb as posemb_lib
from vit_jax.models import vit as vit_lib


def patchify(images: jax.Array, patch: int) -> jax.Array:
  """[b, h, w, c] -> [b, (h/p)(w/p), p * p * c], each patch's pixels in (row, column, channel)
  order, patches row-major (the MAE reference's order)."""
  b, h, w, c = images.shape
  x = images.reshape(b, h // patch, patch, w // patch, patch, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, (h // patch) * (w // patch), patch * patch * c)


def unpatchify(patches: jax.Array, patch: int, grid: tuple[int, int]) -> jax.Array:
  """The inverse of `patchify`: [b, gh * gw, p * p * c] -> [b, gh * p, gw * p, c]."""
  b, _, d = patches.shape
  c = d // (patch * patch)
  x = patches.reshape(b, grid[0], grid[1], patch, patch, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, grid[0] * patch, grid[1] * patch, c)


def table(grid: tuple[int, int], width: int, with_cls: bool = True) -> np.ndarray:
  """The reference's fixed table [1, (1 +) L, width]; the class token's row is zero."""
  table = posemb_lib.posemb_sincos_2d(*grid, width, mae=True)
  if with_cls:
    table = np.concatenate([np.zeros((1, 1, width), np.float32), table], axis=1)
  return table


class MaskedAutoencoder(nn.Module):
  """`__call__(images, noise, train) -> (predicted pixels [b, L, p*p*3], mask [b, L])`; mask 1
  marks a patch the encoder did not see. `encoder` holds the ViT's fields (a model config)."""

  encoder: Any  # the ViT's model config fields (patches, hidden_size, transformer, ...)
  mask_ratio: float = 0.75
  decoder_width: int = 512
  decoder_depth: int = 8
  decoder_heads: int = 16
  decoder_mlp_dim: int = 2048
  dtype: Any = jnp.float32

  def num_visible(self, num_patches: int) -> int:
    return int(num_patches * (1 - self.mask_ratio))

  @nn.compact
  def __call__(self, images: jax.Array, noise: Optional[jax.Array] = None, *,
               train: bool) -> tuple[jax.Array, jax.Array]:
    fields = dict(self.encoder)
    transformer = dict(fields['transformer'])
    activation = vit_lib.activation_name(fields.get('activation'),
                                         fields.get('gelu_approximate', True))
    eps = fields.get('layer_norm_eps', 1e-6)
    dtype = self.dtype
    patch = tuple(fields['patches']['size'])[0]
    x = nn.Conv(features=fields['hidden_size'], kernel_size=(patch, patch), strides=(patch, patch),
                padding='VALID', dtype=dtype, name='embedding')(images.astype(dtype))
    b, gh, gw, width = x.shape
    length = gh * gw
    x = x.reshape(b, length, width) + jnp.asarray(table((gh, gw), width, False), x.dtype)

    # Per example, the patches of lowest noise stay visible, in the order of their noise.
    if noise is None:  # initialisation: the first patches
      noise = jnp.broadcast_to(jnp.arange(length, dtype=jnp.float32), (b, length))
    shuffle = jnp.argsort(noise, axis=1)
    restore = jnp.argsort(shuffle, axis=1)
    keep = self.num_visible(length)
    visible = jnp.take_along_axis(x, shuffle[:, :keep, None], axis=1)
    mask = jnp.ones((b, length), jnp.float32).at[:, :keep].set(0.0)
    mask = jnp.take_along_axis(mask, restore, axis=1)

    cls = self.param('cls', nn.initializers.normal(stddev=0.02), (1, 1, width))
    x = jnp.concatenate([jnp.tile(cls.astype(x.dtype), [b, 1, 1]), visible], axis=1)
    encoder_kwargs = dict(
        activation=activation, layer_norm_eps=eps, scan=bool(fields.get('scan', False)),
        remat=fields.get('remat') or 'none', attention_impl=fields.get('attention_impl', 'auto'),
        add_position_embedding=False, dtype=dtype)
    x = vit_lib.Encoder(name='Transformer', **{**transformer, 'dropout_rate': 0.0,
                                               'attention_dropout_rate': 0.0},
                        stochastic_depth=fields.get('stochastic_depth') or 0.0,
                        layerscale=fields.get('layerscale'), qk_norm=bool(fields.get('qk_norm')),
                        gated_mlp=bool(fields.get('gated_mlp')), **encoder_kwargs)(x, train=train)

    # Decoder: mask tokens where patches were dropped, back in image order, its own table.
    x = nn.Dense(self.decoder_width, dtype=dtype, kernel_init=nn.initializers.xavier_uniform(),
                 name='decoder_embed')(x)
    mask_token = self.param('mask_token', nn.initializers.normal(stddev=0.02),
                            (1, 1, self.decoder_width))
    tokens = jnp.concatenate(
        [x[:, 1:], jnp.tile(mask_token.astype(x.dtype), [b, length - keep, 1])], axis=1)
    tokens = jnp.take_along_axis(tokens, restore[:, :, None], axis=1)
    x = jnp.concatenate([x[:, :1], tokens], axis=1)
    x = x + jnp.asarray(table((gh, gw), self.decoder_width, True), x.dtype)
    x = vit_lib.Encoder(name='decoder', num_layers=self.decoder_depth,
                        mlp_dim=self.decoder_mlp_dim, num_heads=self.decoder_heads,
                        dropout_rate=0.0, attention_dropout_rate=0.0,
                        **encoder_kwargs)(x, train=train)
    pred = nn.Dense(patch * patch * images.shape[-1], kernel_init=nn.initializers.xavier_uniform(),
                    name='decoder_pred')(x[:, 1:].astype(jnp.float32))
    return pred, mask


def reconstruction_loss(pred: jax.Array, images: jax.Array, mask: jax.Array, patch: int,
                        norm_pix: bool = True) -> jax.Array:
  """Mean squared error over the masked patches, each patch's target normalised by its own
  mean and (unbiased) variance with `norm_pix` (the reference's default)."""
  target = patchify(images.astype(jnp.float32), patch)
  if norm_pix:
    mean = target.mean(-1, keepdims=True)
    var = target.var(-1, keepdims=True, ddof=1)
    target = (target - mean) / jnp.sqrt(var + 1e-6)
  per_patch = jnp.mean((pred - target) ** 2, axis=-1)
  return jnp.sum(per_patch * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def check(encoder: ml_collections.ConfigDict, mask_ratio: float, decoder_width: int,
          decoder_heads: int, image_size: int) -> None:
  """One line per field that cannot make a masked autoencoder, before anything builds."""
  if not 0.0 < mask_ratio < 1.0:
    raise errors.UserError(f'config.mae.mask_ratio must be in (0, 1), found {mask_ratio}.')
  size = tuple(encoder.patches.size)
  if size[0] != size[1]:
    raise errors.UserError(f'config.objective=mae needs square patches, found {size}.')
  if encoder.get('resnet') is not None:
    raise errors.UserError('config.objective=mae needs a plain ViT; the model has a ResNet stem.')
  if decoder_width % decoder_heads or decoder_width % 4:
    raise errors.UserError(
        f'config.mae.decoder_width={decoder_width} must split into '
        f'config.mae.decoder_heads={decoder_heads} heads and be divisible by 4 (its sincos '
        'table).')
  if image_size % size[0]:
    raise errors.UserError(f'config.image_size={image_size} is not a multiple of the patch size '
                           f'{size[0]}; the decoder predicts whole patches.')
  visible = int((image_size // size[0]) ** 2 * (1 - mask_ratio))
  if visible < 1:
    raise errors.UserError(f'config.mae.mask_ratio={mask_ratio} leaves no patch of '
                           f'{(image_size // size[0]) ** 2} visible.')


def encoder_params(params: Any, encoder: ml_collections.ConfigDict, image_size: int
                   ) -> tuple[dict, ml_collections.ConfigDict]:
  """(ViT parameters, its model config) of an MAE tree: the decoder dropped, the fixed table
  written out as `Transformer/posembed_input/pos_embedding` (a learned table from then on, as
  the reference fine-tunes it), no head. Its features are the class token's, or with
  `classifier='gap'` the mean of the patch tokens (the class token kept)."""
  params = {k: v for k, v in dict(params).items()
            if not k.startswith('decoder') and k != 'mask_token'}
  transformer = dict(params['Transformer'])
  grid = image_size // tuple(encoder.patches.size)[0]
  transformer['posembed_input'] = {
      'pos_embedding': table((grid, grid), encoder.hidden_size, True)}
  params['Transformer'] = transformer
  config = ml_collections.ConfigDict(encoder.to_dict())
  config.posemb = 'learn'
  if config.get('classifier') != 'gap':  # nothing else pools without parameters of its own
    config.classifier = 'token'
  config.class_token = True
  config.representation_size = None
  return params, config
