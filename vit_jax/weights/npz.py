"""Released `.npz` checkpoints: read, resample, write back (`vit_jax.checkpoint` is the official
API in front of them; `weights/adapt.py` maps a read tree onto a model to fine-tune).

Every file is read with `allow_pickle=False`. `read` returns the *canonical* tree: the official
Linen layout of `VisionTransformer(scan=False)`. It accepts
- the files released with the paper (pre-Linen names: `MultiHeadDotProductAttention_1`,
  `LayerNorm_2`, `MlpBlock_3`; GroupNorm scales shaped [1, 1, 1, C]; cls+posemb combined),
- big_vision NaFlex files (`naflex_vit.py`: a Dense `embedding` on flattened patches, a
  [n, n, width] `pos_embedding` grid): the convolution's kernel and the square table;
- big_vision files (`params/` prefix, top-level `pos_embedding` without the cls row, layers
  stacked in `Transformer/encoderblock`, MAP heads, inlined MAP probes).
"""

import collections
import logging
import math
import re
from typing import Any, Iterable, Mapping, Optional, Sequence

from etils import epath
import flax
import numpy as np
import scipy.ndimage

from vit_jax import errors
from vit_jax import param_names
from vit_jax.models import stacking

POSEMB_PATH = ('Transformer', 'posembed_input', 'pos_embedding')
POSEMB_PREFIX = ('cls', 'dist')  # tokens with a position-table row, in sequence order

# Pre-Linen (released) names of the encoder block's children, by Linen name.
_RELEASED_BLOCK_NAMES = {
    'LayerNorm_0': 'LayerNorm_0',
    'MultiHeadDotProductAttention_0': 'MultiHeadDotProductAttention_1',
    'LayerNorm_1': 'LayerNorm_2',
    'MlpBlock_0': 'MlpBlock_3',
}
_GROUPNORM = re.compile(r'^gn(\d+|_root|_proj)$')
_NUMBERED = re.compile(r'^(.*)_(\d+)$')


flatten = param_names.flatten  # the official module's names for them


def recover_tree(keys: Iterable[str], values: Iterable[Any]) -> dict[str, Any]:
  """{'a/b': x} style flat names and leaves -> nested dict (the official API)."""
  return param_names.unflatten(dict(zip(keys, values)))


def read_npz(path: str) -> dict[str, np.ndarray]:
  """The flat name -> array contents of an `.npz` file; never unpickles."""
  path = epath.Path(path)
  if not path.exists():
    raise errors.MissingFile(f'Checkpoint file not found: {path}')
  try:
    with path.open('rb') as f, np.load(f, allow_pickle=False) as archive:
      return {name: archive[name] for name in archive.files}
  except ValueError as e:  # object arrays need pickle: not a parameter file we read
    raise errors.UserError(f'{path} holds pickled objects, which are never loaded: {e}') from e
  except Exception as e:  # zipfile.BadZipFile, OSError, EOFError: truncated or not an npz
    raise errors.UserError(
        f'{path} is not a readable .npz checkpoint ({type(e).__name__}: {e}).') from e


def convert_pre_linen(tree: Mapping[str, Any]) -> dict[str, Any]:
  """Renumbers `Type_N` children per type, in order of N (pre-Linen numbered across types).

  `{LayerNorm_0, MultiHeadDotProductAttention_1, LayerNorm_2, MlpBlock_3}` becomes
  `{LayerNorm_0, MultiHeadDotProductAttention_0, LayerNorm_1, MlpBlock_0}`. Idempotent on Linen
  trees. (flax.training.checkpoints has the same function, but importing it loads TensorFlow
  through flax.io: seconds of start-up for every tool that reads an .npz.)
  """
  if not isinstance(tree, Mapping):
    return tree
  by_type = collections.defaultdict(list)
  for name in tree:
    match = _NUMBERED.match(name)
    if match:
      by_type[match.group(1)].append((int(match.group(2)), name))
  renamed = {}
  for prefix, numbered in by_type.items():
    for new_index, (_, name) in enumerate(sorted(numbered)):
      renamed[name] = f'{prefix}_{new_index}'
  return {renamed.get(name, name): convert_pre_linen(child) for name, child in tree.items()}


def _fix_groupnorm(tree: Mapping[str, Any]) -> dict[str, Any]:
  """GroupNorm scale/bias [1, 1, 1, C] (pre-Linen) -> [C]."""
  flat = flax.traverse_util.flatten_dict(tree)
  for path, value in flat.items():
    if (len(path) > 1 and _GROUPNORM.match(path[-2]) and path[-1] in ('scale', 'bias')
        and len(value.shape) > 1):
      flat[path] = value.reshape(-1)
  return flax.traverse_util.unflatten_dict(flat)


def _is_square(n: int) -> bool:
  return n > 0 and math.isqrt(n)**2 == n


def canonicalize(tree: Mapping[str, Any]) -> dict[str, Any]:
  """Any supported file layout -> the canonical (official Linen, per-layer) tree."""
  tree = dict(tree)
  for wrapper in (('params',), ('opt', 'target')):  # big_vision / old trainer checkpoints
    node = tree
    for key in wrapper:
      node = node.get(key, {}) if isinstance(node, Mapping) else {}
    if node and 'Transformer' in node:
      tree = dict(node)
  tree = _fix_groupnorm(convert_pre_linen(tree))
  if 'Transformer' not in tree:
    raise errors.UserError(f'Not a ViT checkpoint: no "Transformer" entry among {sorted(tree)}.')
  tree = stacking.unstack_encoder_blocks(tree)
  encoder = dict(tree['Transformer'])

  # big_vision adds the posemb to the patches, then prepends cls: the same as a zero posemb row
  # for cls in the official layout. Older big_vision kept it under Transformer/pos_embedding.
  posemb = tree.pop('pos_embedding', None)
  if posemb is None:
    posemb = encoder.pop('pos_embedding', None)
  if posemb is not None and posemb.ndim == 3 and posemb.shape[0] == posemb.shape[1] != 1:
    posemb = posemb.reshape(1, -1, posemb.shape[-1])  # big_vision NaFlex: a [n, n, width] grid
  kernel = tree.get('embedding', {}).get('kernel')
  if kernel is not None and kernel.ndim == 2:  # big_vision NaFlex: Dense on flattened patches
    side = math.isqrt(kernel.shape[0] // 3)
    if side * side * 3 != kernel.shape[0]:
      raise errors.UserError(f'A linear patch embedding of {kernel.shape[0]} inputs is not '
                             'square patches of 3 channels.')
    tree['embedding'] = {**tree['embedding'], 'kernel': kernel.reshape(side, side, 3, -1)}
  if posemb is not None:
    if 'cls' in tree and not _is_square(posemb.shape[1] - 1):
      posemb = np.concatenate([np.zeros_like(posemb[:, :1]), posemb], axis=1)
    encoder['posembed_input'] = {'pos_embedding': posemb}

  # MAP heads inlined at the top during big_vision's ViT-G work.
  if 'probe' in tree:
    tree['MAPHead_0'] = {name: tree.pop(name) for name in
                         ('probe', 'MultiHeadDotProductAttention_0', 'LayerNorm_0', 'MlpBlock_0')}
  tree['Transformer'] = encoder
  # The official drop-head variant stores an empty `pre_logits`.
  if 'pre_logits' in tree and not tree['pre_logits']:
    del tree['pre_logits']
  return tree


def read(path: str) -> dict[str, Any]:
  """Reads a released or big_vision `.npz` into the canonical parameter tree (numpy leaves)."""
  flat = read_npz(path)
  if not flat:
    raise errors.UserError(f'{path} holds no arrays.')
  return canonicalize(recover_tree(flat.keys(), flat.values()))


def to_released_layout(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Canonical or scanned tree -> flat {name: array} with the paper's released (pre-Linen) names."""
  tree = stacking.unstack_encoder_blocks(flax.core.unfreeze(params))
  flat = {}
  for path, value in flax.traverse_util.flatten_dict(tree).items():
    path = list(path)
    if len(path) > 2 and path[0] == 'Transformer' and path[1].startswith('encoderblock_'):
      path[2] = _RELEASED_BLOCK_NAMES.get(path[2], path[2])
    value = np.asarray(value)
    if len(path) > 1 and _GROUPNORM.match(path[-2]) and path[-1] in ('scale', 'bias'):
      value = value.reshape(1, 1, 1, -1)
    flat['/'.join(path)] = value
  return flat


def save(params: Mapping[str, Any], path: str) -> None:
  """Writes params as an `.npz` in the released layout (readable by the official `load`)."""
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open('wb') as f:
    np.savez(f, **to_released_layout(params))


def inspect_params(*, params, expected, fail_if_extra=True, fail_if_missing=True):
  """Checks `params` has the keys of `expected` (the official API); returns `params`."""
  missing = sorted(set(flatten(expected)) - set(flatten(params)))
  extra = sorted(set(flatten(params)) - set(flatten(expected)))
  if (missing and fail_if_missing) or (extra and fail_if_extra):
    raise errors.UserError(f'Parameters do not match the model.\n  missing: {missing}\n'
                           f'  unexpected: {extra}')
  return params


def grid_of(num_tokens: int, grid: Optional[Sequence[int]], what: str) -> tuple[int, int]:
  if grid is not None:
    if grid[0] * grid[1] != num_tokens:
      raise errors.UserError(
          f'{what} grid {tuple(grid)} does not hold {num_tokens} position embeddings.')
    return int(grid[0]), int(grid[1])
  if not _is_square(num_tokens):
    raise errors.UserError(
        f'{what} posemb has {num_tokens} patch positions, which is not a square grid; '
        f'pass its (height, width) grid explicitly.')
  side = math.isqrt(num_tokens)
  return side, side


def resample_posemb(posemb: np.ndarray, new_grid: Sequence[int], *, num_prefix_tokens: int,
                    old_grid: Optional[Sequence[int]] = None) -> np.ndarray:
  """[1, prefix + gh*gw, D] -> [1, prefix + new_h*new_w, D]: bilinear on the grid, prefix kept.

  The grid is resampled as the official code does (`scipy.ndimage.zoom`, order 1, corners
  aligned); the old grid defaults to a square and may be given for non-square grids.
  """
  prefix, grid = posemb[:, :num_prefix_tokens], posemb[0, num_prefix_tokens:]
  old_h, old_w = grid_of(grid.shape[0], old_grid, 'Checkpoint')
  new_h, new_w = int(new_grid[0]), int(new_grid[1])
  if (old_h, old_w) != (new_h, new_w):
    logging.info('Resampling position embeddings from %dx%d to %dx%d.', old_h, old_w, new_h, new_w)
    grid = scipy.ndimage.zoom(grid.reshape(old_h, old_w, -1),
                              (new_h / old_h, new_w / old_w, 1), order=1)
  return np.concatenate([prefix, grid.reshape(1, new_h * new_w, -1)], axis=1)


def interpolate_posembed(posemb, num_tokens: int, has_class_token: bool) -> np.ndarray:
  """The official signature: resample to `num_tokens` (cls included) on a square grid."""
  prefix = int(has_class_token)
  new_grid = grid_of(num_tokens - prefix, None, 'Requested')
  return resample_posemb(np.asarray(posemb), new_grid, num_prefix_tokens=prefix)
