"""Position embeddings: learned (the paper), fixed 2-D sin-cos (MoCo v3, big_vision), 2-D rotary
embeddings of queries and keys (RoPE, as DINOv3 uses them), and BEiT's relative position bias of
the attention logits."""

import math
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vit_jax import errors
from vit_jax.models import sequences as sequences_lib

Dtype = Any


def posemb_sincos_2d(height: int, width: int, hidden_size: int,
                     temperature: float = 10_000., mae: bool = False) -> np.ndarray:
  """Fixed embeddings of a [height, width] patch grid -> [1, height * width, hidden_size].

  A quarter of the channels each for sin(x), cos(x), sin(y), cos(y), with frequencies
  temperature^(-k / (hidden_size/4 - 1)) (big_vision), or temperature^(-k / (hidden_size/4))
  with `mae` (the MAE reference's table); rows in row-major patch order.
  """
  if hidden_size % 4:
    raise errors.UserError(f'posemb=sincos2d needs hidden_size divisible by 4, got {hidden_size}.')
  quarter = hidden_size // 4
  omega = 1.0 / temperature**(np.arange(quarter) / (quarter if mae else max(quarter - 1, 1)))
  y, x = np.mgrid[:height, :width]
  x = np.einsum('m,d->md', x.ravel(), omega)
  y = np.einsum('m,d->md', y.ravel(), omega)
  table = np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1)
  return table[None].astype(np.float32)


def rope_2d(height: int, width: int, head_dim: int, theta: float = 100.0
            ) -> tuple[np.ndarray, np.ndarray]:
  """(cos, sin), each [height * width, head_dim], of DINOv3's 2-D rotary embedding.

  Patch centres normalised to [-1, 1] on each axis (so any grid, square or not, spans the same
  range); head_dim / 4 frequencies theta^(-4k / head_dim); angles 2 pi coord * freq, the row
  angles then the column angles, repeated twice to pair with `rotate_half`.
  """
  if head_dim % 4:
    raise errors.UserError(f'posemb=rope needs a head dimension divisible by 4, got {head_dim}.')
  frequencies = 1.0 / theta ** np.arange(0, 1, 4 / head_dim, dtype=np.float32)
  rows = (np.arange(0.5, height, dtype=np.float32) / height) * 2 - 1
  columns = (np.arange(0.5, width, dtype=np.float32) / width) * 2 - 1
  coords = np.stack(np.meshgrid(rows, columns, indexing='ij'), axis=-1).reshape(-1, 2)
  angles = 2 * np.pi * coords[:, :, None] * frequencies[None, None, :]
  angles = np.tile(angles.reshape(len(coords), -1), 2)
  return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def rope_axial(height: int, width: int, head_dim: int, theta: float = 10_000.0,
               ref_grid: Optional[tuple[int, int]] = None, offset: float = 0.0,
               xy: bool = False) -> tuple[np.ndarray, np.ndarray]:
  """(cos, sin), each [height * width, head_dim], of EVA-02's axial rotary embedding (timm's
  RotaryEmbeddingCat on an index grid), in the interleaved layout.

  Coordinates are patch indices (+ `offset`), rescaled to `ref_grid` (the pretraining grid)
  when given; head_dim / 4 frequencies theta^(-k / (head_dim / 4)); angles coord * freq, the row
  angles then the column angles (the columns first with `xy`), each repeated twice for pairs.
  """
  if head_dim % 4:
    raise errors.UserError(f'rope needs a head dimension divisible by 4, got {head_dim}.')
  bands = head_dim // 4
  frequencies = 1.0 / theta ** (np.arange(bands, dtype=np.float32) / bands)
  axes = [np.arange(size, dtype=np.float32) + offset for size in (height, width)]
  if ref_grid is not None:
    axes = [a / size * ref for a, size, ref in zip(axes, (height, width), ref_grid)]
  rows, columns = np.meshgrid(*axes, indexing='ij')
  coords = np.stack([columns, rows] if xy else [rows, columns], axis=-1).reshape(-1, 2)
  angles = (coords[:, :, None] * frequencies[None, None, :]).reshape(len(coords), -1)
  angles = np.repeat(angles, 2, axis=-1)
  return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


# The rotary variants (`VisionTransformer.rope`): DINOv3's (half layout, patch centres in
# [-1, 1]) and EVA-02's axial one (interleaved pairs, patch indices).
ROPES = ('none', 'dinov3', 'axial')


def rope_tables(spec: tuple, grid: tuple[int, int], head_dim: int):
  """(cos, sin, interleaved) of a rotary `spec`: ('dinov3', theta) or ('axial', theta, ref_grid,
  offset, xy)."""
  if spec[0] == 'dinov3':
    return (*rope_2d(*grid, head_dim, spec[1]), False)
  _, theta, ref_grid, offset, xy = spec
  return (*rope_axial(*grid, head_dim, theta, ref_grid, offset, xy), True)


def apply_rope(x: jnp.ndarray, cos: jnp.ndarray, sin: jnp.ndarray, token_axis: int,
               num_prefix_tokens: int, interleaved: bool = False) -> jnp.ndarray:
  """Rotates the patch tokens of queries or keys ([..., tokens, ..., head_dim]; the prefix tokens
  stay as they are): x cos + rot(x) sin, with rot(x) = [-x2, x1] of the two halves, or with
  `interleaved` [-x1, x0, -x3, x2, ...] of consecutive pairs."""
  prefix, patches = jnp.split(x, [num_prefix_tokens], axis=token_axis)
  shape = [1] * x.ndim
  shape[token_axis], shape[-1] = cos.shape
  cos, sin = cos.reshape(shape).astype(x.dtype), sin.reshape(shape).astype(x.dtype)
  if interleaved:
    pairs = patches.reshape(*patches.shape[:-1], -1, 2)
    turned = jnp.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(patches.shape)
  else:
    first, second = jnp.split(patches, 2, axis=-1)
    turned = jnp.concatenate([-second, first], axis=-1)
  rotated = patches * cos + turned * sin
  return jnp.concatenate([prefix, rotated], axis=token_axis)


def relative_position_index(height: int, width: int) -> np.ndarray:
  """BEiT's [t, t] index (t = 1 + height * width: the class token, then the patches in row-major
  order) into a relative position table of (2 height - 1)(2 width - 1) + 3 rows: one row per
  offset (dy, dx) between two patches, then three rows for class -> patch, patch -> class and
  class -> class."""
  y, x = np.meshgrid(np.arange(height), np.arange(width), indexing='ij')
  y, x = y.ravel(), x.ravel()
  offsets = ((y[:, None] - y[None, :] + height - 1) * (2 * width - 1)
             + (x[:, None] - x[None, :] + width - 1))
  rows = (2 * height - 1) * (2 * width - 1)
  index = np.empty((height * width + 1,) * 2, np.int32)
  index[1:, 1:] = offsets
  index[0, :] = rows
  index[:, 0] = rows + 1
  index[0, 0] = rows + 2
  return index


def relative_position_table(module: nn.Module, grid: tuple[int, int], heads: int) -> jnp.ndarray:
  """`module`'s `relative_position_bias` table: the stored one as it is (it may be for another
  grid: `relative_position_bias` resamples it), else a new zero table for `grid`."""
  if module.has_variable('params', 'relative_position_bias'):
    return module.get_variable('params', 'relative_position_bias')
  rows, columns = grid
  return module.param('relative_position_bias', nn.initializers.zeros,
                      ((2 * rows - 1) * (2 * columns - 1) + 3, heads), jnp.float32)


def resample_relative_table(table, grid: tuple[int, int]):
  """A relative position table [(2h-1)(2w-1) + 3, heads] for the (h, w) patch grid, from one of
  that grid (unchanged) or of a square grid, as transformers' BEiT resamples it with
  `interpolate_pos_encoding`: the offset rows, a (2s-1) x (2s-1) grid, bilinearly (half-pixel
  centres, no antialiasing) to (2h-1) x (2w-1); the three class-token rows kept."""
  height, width = grid
  rows = (2 * height - 1) * (2 * width - 1)
  if table.shape[0] == rows + 3:
    return table
  side = math.isqrt(table.shape[0] - 3)
  if side * side != table.shape[0] - 3 or side % 2 == 0:
    raise errors.UserError(
        f'A relative position table of {table.shape[0]} rows is neither for the {height}x'
        f'{width} patch grid ({rows + 3} rows) nor for a square grid to resample.')
  offsets = jnp.asarray(table[:-3], jnp.float32).reshape(side, side, -1)
  offsets = jax.image.resize(offsets, (2 * height - 1, 2 * width - 1, offsets.shape[-1]),
                             'bilinear', antialias=False)
  return jnp.concatenate([offsets.reshape(rows, -1).astype(table.dtype), table[-3:]], axis=0)


def relative_position_bias(table: jnp.ndarray, grid: tuple[int, int]) -> jnp.ndarray:
  """A relative position table [rows, heads] -> the attention bias [1, heads, t, t] of a class
  token and an h x w patch grid (BEiT, Data2Vec-vision); a table of another (square) grid is
  resampled on the fly (`resample_relative_table`)."""
  table = resample_relative_table(table, grid)
  bias = table[relative_position_index(*grid)]  # [t, t, heads]
  return jnp.transpose(bias, (2, 0, 1))[None]


def resize_grid(posemb: jnp.ndarray, new_grid: tuple[int, int], num_prefix_tokens: int,
                old_grid: Optional[tuple[int, int]] = None, method: str = 'bilinear',
                square: bool = False) -> jnp.ndarray:
  """[1, prefix + gh*gw, D] -> [1, prefix + new_h*new_w, D] inside a traced computation.

  `method` of `jax.image.resize` (half-pixel centres, antialiased when shrinking: PyTorch's
  `interpolate(..., antialias=True)`), prefix rows kept; the old grid is square unless given.
  `square`: resized to a square of the longer side, then its top-left corner kept (timm's
  `pos_embed_ar_preserving`). Used for run-time resolution changes; checkpoints are resampled
  offline by `weights.npz.resample_posemb` as the official code does.
  """
  prefix, grid = posemb[:, :num_prefix_tokens], posemb[:, num_prefix_tokens:]
  tokens = grid.shape[1]
  if old_grid is None:
    side = math.isqrt(tokens)
    if side * side != tokens:
      raise errors.UserError(f'A position table of {tokens} patch rows is not a square grid.')
    old_grid = (side, side)
  if tuple(old_grid) == tuple(new_grid):
    return posemb
  if method not in sequences_lib.RESIZE_METHODS:
    raise errors.UserError(f'posemb_resize={method!r}: expected one of '
                           f'{sequences_lib.RESIZE_METHODS}.')
  grid = grid.reshape(1, *old_grid, -1)
  size = (max(new_grid),) * 2 if square else tuple(new_grid)
  grid = jax.image.resize(grid.astype(jnp.float32), (1, *size, grid.shape[-1]), method)
  grid = grid[:, :new_grid[0], :new_grid[1]]
  grid = grid.reshape(1, new_grid[0] * new_grid[1], -1).astype(posemb.dtype)
  return jnp.concatenate([prefix, grid], axis=1)


class AddPositionEmbs(nn.Module):
  """Adds a learned embedding [1, tokens, width] (`pos_embedding`) to inputs [b, tokens, width].

  With `grid_shape` set (run-time resolution), a stored table of another square grid is
  resampled to `grid_shape` (`resize_grid` with `resize_method`, `resize_square`); its first
  `num_prefix_tokens` rows are kept. NaFlex sequences resize it to each image's grid alike.
  """

  posemb_init: Callable[..., jnp.ndarray] = nn.initializers.normal(stddev=0.02)  # as BERT
  param_dtype: Dtype = jnp.float32
  grid_shape: Optional[tuple[int, int]] = None
  num_prefix_tokens: int = 0
  resize_method: str = 'bilinear'
  resize_square: bool = False

  @nn.compact
  def __call__(self, inputs: jnp.ndarray, sequences=None) -> jnp.ndarray:
    if inputs.ndim != 3:
      raise errors.UserError(f'AddPositionEmbs expects [batch, tokens, width], got {inputs.shape}.')
    if sequences is not None:
      return inputs + self._at_sequences(inputs, sequences).astype(inputs.dtype)
    if self.has_variable('params', 'pos_embedding'):
      # The stored table keeps its own shape (flax's shape check is for creating it).
      posemb = self.get_variable('params', 'pos_embedding')
      if self.grid_shape is not None:
        posemb = resize_grid(posemb, self.grid_shape, self.num_prefix_tokens,
                             method=self.resize_method, square=self.resize_square)
    else:
      posemb = self.param('pos_embedding', self.posemb_init, (1, *inputs.shape[1:]),
                          self.param_dtype)
    if posemb.shape[1] != inputs.shape[1]:
      raise errors.UserError(f'The position table has {posemb.shape[1]} rows for {inputs.shape[1]} '
                             'tokens: resample it (weights.adapt.adapt_params) or set '
                             'dynamic_image_size=True.')
    return inputs + posemb.astype(inputs.dtype)

  def _at_sequences(self, inputs: jnp.ndarray, seqs) -> jnp.ndarray:
    """NaFlex tokens [b, t + slots * prefix, w]: each patch's row of the (square) table resized
    to its image's grid; each slot's prefix tokens get the prefix rows."""
    if not self.has_variable('params', 'pos_embedding'):
      raise errors.UserError('A NaFlex model is initialised on square images (the position '
                             'table takes their grid); apply it to sequences afterwards.')
    posemb = self.get_variable('params', 'pos_embedding')[0]
    prefix, grid = posemb[:self.num_prefix_tokens], posemb[self.num_prefix_tokens:]
    side = math.isqrt(grid.shape[0])
    if side * side != grid.shape[0]:
      raise errors.UserError(f'A position table of {grid.shape[0]} patch rows is not a square '
                             'grid; NaFlex resizes square tables.')
    patches = sequences_lib.resized_table_at(
        grid.reshape(side, side, -1), seqs.positions, sequences_lib.token_grids(seqs),
        self.resize_method, self.resize_square)
    prefix = jnp.tile(prefix[None].astype(jnp.float32),
                      [inputs.shape[0], seqs.images_per_sequence, 1])
    return jnp.concatenate([patches, prefix], axis=1)
