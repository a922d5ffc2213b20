"""Position embeddings: learned (the paper) and fixed 2-D sin-cos (MoCo v3, big_vision)."""

import math
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any


def posemb_sincos_2d(height: int, width: int, hidden_size: int,
                     temperature: float = 10_000.) -> np.ndarray:
  """Fixed embeddings of a [height, width] patch grid -> [1, height * width, hidden_size].

  A quarter of the channels each for sin(x), cos(x), sin(y), cos(y), with frequencies
  temperature^(-k / (hidden_size/4 - 1)), rows in row-major patch order.
  """
  if hidden_size % 4:
    raise ValueError(f'posemb=sincos2d needs hidden_size divisible by 4, got {hidden_size}.')
  quarter = hidden_size // 4
  omega = 1.0 / temperature**(np.arange(quarter) / max(quarter - 1, 1))
  y, x = np.mgrid[:height, :width]
  x = np.einsum('m,d->md', x.ravel(), omega)
  y = np.einsum('m,d->md', y.ravel(), omega)
  table = np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1)
  return table[None].astype(np.float32)


def resize_grid(posemb: jnp.ndarray, new_grid: tuple[int, int], num_prefix_tokens: int,
                old_grid: Optional[tuple[int, int]] = None) -> jnp.ndarray:
  """[1, prefix + gh*gw, D] -> [1, prefix + new_h*new_w, D] inside a traced computation.

  Bilinear (`jax.image.resize`, half-pixel centres, antialiased when shrinking), prefix rows
  kept; the old grid is square unless given. Used for run-time resolution changes; checkpoints
  are resampled offline by `checkpoint.resample_posemb` as the official code does.
  """
  prefix, grid = posemb[:, :num_prefix_tokens], posemb[:, num_prefix_tokens:]
  tokens = grid.shape[1]
  if old_grid is None:
    side = math.isqrt(tokens)
    if side * side != tokens:
      raise ValueError(f'A position table of {tokens} patch rows is not a square grid.')
    old_grid = (side, side)
  if tuple(old_grid) == tuple(new_grid):
    return posemb
  grid = grid.reshape(1, *old_grid, -1)
  grid = jax.image.resize(grid.astype(jnp.float32), (1, *new_grid, grid.shape[-1]), 'bilinear')
  grid = grid.reshape(1, new_grid[0] * new_grid[1], -1).astype(posemb.dtype)
  return jnp.concatenate([prefix, grid], axis=1)


class AddPositionEmbs(nn.Module):
  """Adds a learned embedding [1, tokens, width] (`pos_embedding`) to inputs [b, tokens, width].

  With `grid_shape` set (run-time resolution), a stored table of another square grid is
  resampled to `grid_shape` (`resize_grid`); its first `num_prefix_tokens` rows are kept.
  """

  posemb_init: Callable[..., jnp.ndarray] = nn.initializers.normal(stddev=0.02)  # as BERT
  param_dtype: Dtype = jnp.float32
  grid_shape: Optional[tuple[int, int]] = None
  num_prefix_tokens: int = 0

  @nn.compact
  def __call__(self, inputs: jnp.ndarray) -> jnp.ndarray:
    if inputs.ndim != 3:
      raise ValueError(f'AddPositionEmbs expects [batch, tokens, width], got {inputs.shape}.')
    if self.has_variable('params', 'pos_embedding'):
      # The stored table keeps its own shape (flax's shape check is for creating it).
      posemb = self.get_variable('params', 'pos_embedding')
      if self.grid_shape is not None:
        posemb = resize_grid(posemb, self.grid_shape, self.num_prefix_tokens)
    else:
      posemb = self.param('pos_embedding', self.posemb_init, (1, *inputs.shape[1:]),
                          self.param_dtype)
    if posemb.shape[1] != inputs.shape[1]:
      raise ValueError(f'The position table has {posemb.shape[1]} rows for {inputs.shape[1]} '
                       'tokens: resample it (checkpoint.adapt_params) or set '
                       'dynamic_image_size=True.')
    return inputs + posemb.astype(inputs.dtype)
