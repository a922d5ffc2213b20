"""The outputs of chosen encoder blocks: tokens for probes, NHWC feature maps for dense tasks.

Every block sows its output (before the final norm) into the `block_outputs` collection; asking
for it costs nothing when the collection is not mutable. Works for per-layer and scanned models.
"""

from typing import Any, Optional, Sequence

import flax
import flax.linen as nn
import jax.numpy as jnp

from vit_jax import errors
from vit_jax.models import geometry
from vit_jax.models import vit


def _per_block(collected: Any) -> list[jnp.ndarray]:
  encoder = flax.core.unfreeze(collected)[vit.BLOCK_OUTPUTS]['Transformer']
  if 'encoderblock' in encoder:  # scanned: one stacked [layers, b, t, w] entry
    stacked = encoder['encoderblock']['tokens'][0]
    return [stacked[i] for i in range(stacked.shape[0])]
  return [encoder[f'encoderblock_{i}']['tokens'][0] for i in range(len(encoder))]


def forward_intermediates(model: vit.VisionTransformer, params: Any, images: jnp.ndarray,
                          indices: Optional[Sequence[int]] = None, *, output: str = 'tokens',
                          norm: bool = False) -> tuple[jnp.ndarray, list[jnp.ndarray]]:
  """(model output, [block outputs]) for the blocks `indices` (default: all; negative counts
  from the end). `output='tokens'`: [b, tokens, width] with the prefix tokens (cls,
  distillation, registers) first; `'nhwc'`: the patch tokens as [b, rows, columns, width].
  `norm=True` applies the encoder's final LayerNorm to each, as the last block's output gets."""
  if output not in ('tokens', 'nhwc'):
    raise errors.UserError(f"output must be 'tokens' or 'nhwc', got {output!r}.")
  result, state = model.apply({'params': params}, images, train=False,
                              mutable=[vit.BLOCK_OUTPUTS])
  blocks = _per_block(state)
  chosen = range(len(blocks)) if indices is None else indices
  try:
    selected = [blocks[i] for i in chosen]
  except IndexError as e:
    raise errors.UserError(f'indices {list(chosen)} out of range for {len(blocks)} blocks.') from e
  if norm:  # the model's own final LayerNorm, with its parameters
    final_norm = nn.LayerNorm(epsilon=model.layer_norm_eps, dtype=model.dtype)
    variables = {'params': params['Transformer']['encoder_norm']}
    selected = [final_norm.apply(variables, x) for x in selected]
  if output == 'nhwc':
    prefix = geometry.num_prefix_tokens(model)
    rows, columns = geometry.patch_grid(model, tuple(images.shape[1:3]))
    selected = [x[:, prefix:].reshape(x.shape[0], rows, columns, x.shape[-1]) for x in selected]
  return result, selected
