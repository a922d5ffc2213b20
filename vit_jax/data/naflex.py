"""NaFlex input on the host: resize to a patch budget keeping the aspect ratio, patchify, pack.

`budget_grid` picks an image's patch grid: the largest scale (at most 1 unless `upscale`, as
NaViT keeps small images at their size; SigLIP 2's processor upscales) whose grid
ceil(h s / p) x ceil(w s / p) holds at most `max_patches` patches and whose longer side is at most
`max_side` pixels. `patchify` resizes (antialiased bilinear) and flattens the patches (row,
column, channel). `pack` fills sequences of `seq_len` tokens first-fit, in stream order: an image
goes to the first sequence with room for its tokens and a free image slot; an image that fits in
none is dropped and counted. The packing is a pure function of the examples, so a run's batches
stay a pure function of (seed, stream position) and resume exactly.
"""

import math
from typing import Any, Optional, Sequence

import numpy as np

from vit_jax import errors
from vit_jax.models import sequences


def budget_grid(height: int, width: int, patch_size: int, max_patches: int,
                max_side: Optional[int] = None, upscale: bool = False) -> tuple[int, int]:
  """(rows, columns) of the patch grid an image of height x width gets under the budget."""
  if max_patches < 1:
    raise errors.UserError(f'naflex.max_patches must be >= 1, got {max_patches}.')
  if max_side is not None and max_side < patch_size:
    raise errors.UserError(f'naflex.max_side={max_side} is below one patch ({patch_size} pixels).')
  if height < 1 or width < 1:
    raise errors.UserError(f'An image of {height}x{width} pixels has nothing to patchify.')

  def grid(scale):
    return (max(1, math.ceil(height * scale / patch_size)),
            max(1, math.ceil(width * scale / patch_size)))

  def fits(scale):
    rows, columns = grid(scale)
    side_ok = max_side is None or max(rows, columns) * patch_size <= max_side
    return rows * columns <= max_patches and side_ok

  if not upscale and fits(1.0):
    return grid(1.0)
  # Bisection on the scale as transformers' Siglip2ImageProcessor does it (from 1e-6 to 100,
  # until the bounds are 1e-5 apart): the same grid at the budget's edge, where the rows' and
  # columns' rounding decide (fits(low) always holds: 1 x 1 patches).
  low, high = 1e-6, 100.0
  while high - low >= 1e-5:
    middle = (low + high) / 2
    low, high = (middle, high) if fits(middle) else (low, middle)
  return grid(low)


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """uint8 [h, w, c] -> uint8 [height, width, c], antialiased bilinear (PIL)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if image.shape[:2] == (height, width):
    return image
  channels = [np.asarray(Image.fromarray(image[..., c]).resize((width, height),
                                                             Image.Resampling.BILINEAR))
              for c in range(image.shape[-1])]
  return np.stack(channels, axis=-1)


def patchify(image: np.ndarray, patch_size: int, grid: tuple[int, int]
             ) -> tuple[np.ndarray, np.ndarray]:
  """uint8 [h, w, c] -> (patches [rows * columns, p * p * c], positions [rows * columns, 2]),
  the image resized to the grid first; patches flattened (row, column, channel), row-major."""
  rows, columns = grid
  image = resize(image, rows * patch_size, columns * patch_size)
  channels = image.shape[-1]
  patches = image.reshape(rows, patch_size, columns, patch_size, channels).transpose(0, 2, 1, 3, 4)
  positions = np.stack(np.meshgrid(np.arange(rows), np.arange(columns), indexing='ij'), -1)
  return (patches.reshape(rows * columns, patch_size * patch_size * channels),
          positions.reshape(-1, 2).astype(np.int32))


def pack(tokens: Sequence[np.ndarray], positions: Sequence[np.ndarray],
         grids: Sequence[Sequence[int]], *, num_sequences: int, seq_len: int,
         images_per_sequence: int, extras: Optional[dict[str, Sequence[Any]]] = None
         ) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """Packs images (their `tokens` [n_i, d], `positions` [n_i, 2] and `grids` (rows, columns))
  into `num_sequences` sequences: (batch, placed), the batch holding `sequences.KEYS` plus each
  `extras` entry per image slot ([num_sequences, images_per_sequence, ...], zeros where no
  image), `placed` [images] the (sequence, slot) of each image, (-1, -1) when dropped."""
  if not tokens:
    raise errors.UserError('pack needs at least one image.')
  width = tokens[0].shape[-1]
  batch = {'patches': np.zeros((num_sequences, seq_len, width), tokens[0].dtype),
           'positions': np.zeros((num_sequences, seq_len, 2), np.int32),
           'segments': np.zeros((num_sequences, seq_len), np.int32),
           'grids': np.zeros((num_sequences, images_per_sequence, 2), np.int32)}
  for key, values in (extras or {}).items():
    first = np.asarray(values[0])
    batch[key] = np.zeros((num_sequences, images_per_sequence, *first.shape), first.dtype)
  used = np.zeros(num_sequences, np.int64)  # tokens filled per sequence
  count = np.zeros(num_sequences, np.int64)  # images per sequence
  placed = np.full((len(tokens), 2), -1, np.int64)
  for i, (image_tokens, image_positions, grid) in enumerate(zip(tokens, positions, grids)):
    size = len(image_tokens)
    room = (used + size <= seq_len) & (count < images_per_sequence)
    if not room.any():
      continue
    s = int(np.argmax(room))
    slot, start = int(count[s]), int(used[s])
    batch['patches'][s, start:start + size] = image_tokens
    batch['positions'][s, start:start + size] = image_positions
    batch['segments'][s, start:start + size] = slot + 1
    batch['grids'][s, slot] = grid
    for key, values in (extras or {}).items():
      batch[key][s, slot] = values[i]
    used[s] += size
    count[s] += 1
    placed[i] = (s, slot)
  return batch, placed


def pack_batch(batch: dict[str, np.ndarray], num_sequences: int,
               images_per_sequence: int) -> dict[str, np.ndarray]:
  """A batch of one-image sequences (the `naflex` op's output, batched) packed into
  `num_sequences` sequences of the same length: `sequences.KEYS`, and every other entry (labels)
  per image slot [num_sequences, images_per_sequence, ...]. Images that find no room are left
  out (the step's sequences are full)."""
  counts = batch['segments'].astype(bool).sum(axis=1)
  tokens = [patches[:n] for patches, n in zip(batch['patches'], counts)]
  positions = [p[:n] for p, n in zip(batch['positions'], counts)]
  grids = [tuple(g[0]) for g in batch['grids']]
  extras = {k: list(v) for k, v in batch.items() if k not in sequences.KEYS}
  packed, _ = pack(tokens, positions, grids, num_sequences=num_sequences,
                   seq_len=batch['patches'].shape[1], images_per_sequence=images_per_sequence,
                   extras=extras)
  return packed


def image_files(paths: Sequence[str], value: str, patch_size: int,
                max_patches: int) -> sequences.Sequences:
  """One-image NaFlex sequences of image files (`infer --naflex`, `viz --naflex`): each resized
  (bilinear) to its grid under the budget, aspect ratio kept, mapped by the `value` op
  (value_range / normalize), patchified and padded to `max_patches`."""
  tokens, positions, grids = [], [], []
  for path in paths:
    pixels = image_file(path, value, patch_size, max_patches)
    grid = (pixels.shape[0] // patch_size, pixels.shape[1] // patch_size)
    patches, where = patchify(pixels, patch_size, grid)
    tokens.append(patches)
    positions.append(where)
    grids.append(grid)
  batch, _ = pack(tokens, positions, grids, num_sequences=len(tokens), seq_len=max_patches,
                  images_per_sequence=1)
  return sequences.from_batch(batch)


def image_file(path: str, value: str, patch_size: int, max_patches: int) -> np.ndarray:
  """An image file resized to its NaFlex grid (bilinear), then mapped by the `value` op."""
  from vit_jax.data import images  # pylint: disable=g-import-not-at-top  (PIL: files only)
  image = images.open_rgb(path)
  rows, columns = budget_grid(image.height, image.width, patch_size, max_patches)
  return images.apply(image, f'resize(({rows * patch_size}, {columns * patch_size}))|{value}')

