"""A loaded parameter tree mapped onto a model's freshly initialised one, to fine-tune: the head
reset, position tables resampled to the model's grid (prefix rows by name), patch kernels and
relative position tables resized, `dont_load` entries kept from the init; anything else that
does not fit is one error naming every entry."""

import logging
import math
from typing import Any, Mapping, Optional, Sequence

import flax
import numpy as np

from vit_jax import errors
from vit_jax import param_names
from vit_jax.models import patch_embed
from vit_jax.models import posemb as posemb_lib
from vit_jax.models import stacking
from vit_jax.weights import npz


def _adapt_posemb(restored_flat, init_flat, from_init, grid_shape, pretrained_grid_shape):
  """The position table onto the model's, in place: prefix rows (cls, distillation) by name,
  then the grid resampled."""
  posemb_key = '/'.join(npz.POSEMB_PATH)
  if posemb_key not in restored_flat or posemb_key not in init_flat or from_init(posemb_key):
    return
  old_names = [n for n in npz.POSEMB_PREFIX if n in restored_flat]
  new_names = [n for n in npz.POSEMB_PREFIX if n in init_flat]
  posemb = restored_flat[posemb_key]
  rows = {n: posemb[:, i:i + 1] for i, n in enumerate(old_names)}
  zero = np.zeros_like(posemb[:, :1])
  posemb = np.concatenate([rows.get(n, zero) for n in new_names]
                          + [posemb[:, len(old_names):]], axis=1)
  new_tokens = init_flat[posemb_key].shape[1] - len(new_names)
  restored_flat[posemb_key] = npz.resample_posemb(
      posemb, npz.grid_of(new_tokens, grid_shape, 'Model'), num_prefix_tokens=len(new_names),
      old_grid=pretrained_grid_shape)


def _adapt_patch_kernel(restored_flat, init_flat, from_init):
  """Another patch size (FlexiViT's PI-resize, e.g. B/16 weights into a B/8 model), in place."""
  key = 'embedding/kernel'
  if key not in restored_flat or key not in init_flat or from_init(key):
    return
  old_shape, new_shape = restored_flat[key].shape, init_flat[key].shape
  if len(old_shape) == 4 and old_shape[2:] == new_shape[2:] and old_shape[:2] != new_shape[:2]:
    logging.info('Resampling the patch embedding from %s to %s.', old_shape[:2], new_shape[:2])
    restored_flat[key] = patch_embed.resample_patch_embed(restored_flat[key], new_shape[:2])


def _adapt_relative_tables(restored_flat, init_flat, from_init, grid_shape):
  """BEiT's relative position tables of a square grid resampled to the model's, in place."""
  for key, init_value in init_flat.items():
    value = restored_flat.get(key)
    if (not key.endswith('relative_position_bias') or value is None or from_init(key)
        or value.shape == init_value.shape):
      continue
    rows = init_value.shape[0] - 3
    grid = tuple(grid_shape) if grid_shape is not None else ((math.isqrt(rows) + 1) // 2,) * 2
    logging.info('Resampling %s from %d to %d rows.', key, value.shape[0], init_value.shape[0])
    restored_flat[key] = np.asarray(posemb_lib.resample_relative_table(value, grid))


def adapt_params(restored: Mapping[str, Any], init_params: Mapping[str, Any], *,
                 source: str = 'checkpoint', dont_load: Sequence[str] = (),
                 reset_head: bool = True, grid_shape: Optional[Sequence[int]] = None,
                 pretrained_grid_shape: Optional[Sequence[int]] = None) -> Any:
  """`load_pretrained` for a tree already in memory (any supported layout), named `source`."""
  restored = npz.canonicalize(flax.core.unfreeze(restored))
  init_is_frozen = isinstance(init_params, flax.core.FrozenDict)
  init_tree = flax.core.unfreeze(init_params)
  init_scanned = 'encoderblock' in init_tree.get('Transformer', {})
  init_flat = param_names.flatten(stacking.unstack_encoder_blocks(init_tree))

  take_from_init = list(dont_load) + ([r'head(_dist)?/.*'] if reset_head else [])
  from_init = lambda key: param_names.matches(take_from_init, key)  # pylint: disable=unnecessary-lambda-assignment

  restored_flat = param_names.flatten(restored)
  _adapt_posemb(restored_flat, init_flat, from_init, grid_shape, pretrained_grid_shape)
  _adapt_patch_kernel(restored_flat, init_flat, from_init)
  _adapt_relative_tables(restored_flat, init_flat, from_init, grid_shape)

  if 'pre_logits/kernel' not in init_flat:
    restored_flat = {k: v for k, v in restored_flat.items() if not k.startswith('pre_logits/')}
  if 'fc_norm/scale' in init_flat and 'Transformer/encoder_norm/scale' not in init_flat:
    # A model normalising after pooling (MAE, BEiT fine-tuning) drops the encoder's final norm.
    restored_flat = {k: v for k, v in restored_flat.items()
                     if not k.startswith('Transformer/encoder_norm/')}

  missing = [k for k in init_flat if k not in restored_flat and not from_init(k)]
  unexpected = [k for k in restored_flat if k not in init_flat and not from_init(k)]
  misshaped = [f'{k}: checkpoint {tuple(restored_flat[k].shape)} vs model '
               f'{tuple(init_flat[k].shape)}' for k in init_flat
               if k in restored_flat and not from_init(k)
               and tuple(restored_flat[k].shape) != tuple(init_flat[k].shape)]
  if missing or unexpected or misshaped:
    show = lambda keys: '\n'.join(f'    {k}' for k in keys) or '    (none)'  # pylint: disable=unnecessary-lambda-assignment
    raise errors.UserError(
        f'Checkpoint {source} does not fit the model.\n'
        f'  missing from the checkpoint:\n{show(missing)}\n'
        f'  unexpected in the checkpoint:\n{show(unexpected)}\n'
        f'  mis-shaped:\n{show(misshaped)}\n'
        'Pass dont_load=[regex, ...] to take such entries from the initial parameters.')

  merged = {}
  for key, init_value in init_flat.items():
    value = init_value if from_init(key) else restored_flat[key]
    merged[tuple(key.split('/'))] = np.asarray(value).astype(init_value.dtype)
  tree = flax.traverse_util.unflatten_dict(merged)
  if init_scanned:
    tree = stacking.stack_encoder_blocks(tree)
  return flax.core.freeze(tree) if init_is_frozen else tree
