"""The outputs of chosen encoder blocks: tokens for probes, NHWC feature maps for dense tasks.

The model returns them when asked (`VisionTransformer.__call__(..., blocks=...)`); per-layer
and scanned models alike.
"""

from typing import Any, Optional, Sequence

import jax.numpy as jnp

from vit_jax import errors
from vit_jax.models import geometry
from vit_jax.models import vit


def patch_maps(model: vit.VisionTransformer, tokens: jnp.ndarray,
               image_shape: Sequence[int]) -> jnp.ndarray:
  """Block tokens [b, t, w] of images of `image_shape` (h, w) -> the patch tokens as
  [b, rows, columns, w] (prefix tokens dropped); refused when the count does not fit the grid."""
  prefix = geometry.num_prefix_tokens(model)
  rows, columns = geometry.patch_grid(model, tuple(image_shape))
  if tokens.shape[1] - prefix != rows * columns:
    raise errors.UserError(
        f'The model gives {tokens.shape[1] - prefix} patch tokens for a {tuple(image_shape)} '
        f'input, not the {rows}x{columns} grid its patch stride implies: the patch grid cannot '
        'be recovered for a dense task.')
  return tokens[:, prefix:].reshape(tokens.shape[0], rows, columns, tokens.shape[-1])


def forward_intermediates(model: vit.VisionTransformer, params: Any, images: jnp.ndarray,
                          indices: Optional[Sequence[int]] = None, *, output: str = 'tokens',
                          norm: bool = False) -> tuple[jnp.ndarray, list[jnp.ndarray]]:
  """(model output, [block outputs]) for the blocks `indices` (default: all; negative counts
  from the end). `output='tokens'`: [b, tokens, width] with the prefix tokens (cls,
  distillation, registers) first; `'nhwc'`: the patch tokens as [b, rows, columns, width].
  `norm=True` applies the encoder's final LayerNorm to each, as the last block's output gets."""
  if output not in ('tokens', 'nhwc'):
    raise errors.UserError(f"output must be 'tokens' or 'nhwc', got {output!r}.")
  num_layers = int(model.transformer['num_layers'])
  chosen = range(num_layers) if indices is None else indices
  result, selected = model.apply({'params': params}, images, train=False, blocks=tuple(chosen),
                                 norm_blocks=norm)
  if output == 'nhwc':
    selected = [patch_maps(model, x, images.shape[1:3]) for x in selected]
  return result, list(selected)
