"""NaFlex inputs: images as sequences of flattened patches, several images per sequence.

A batch of `Sequences` is what SigLIP 2's NaFlex variant and NaViT (Dehghani et al. 2023) feed a
ViT: each image keeps its aspect ratio and its own patch grid; its patches are flattened
(row, column, channel), carry their (row, column) in that grid, and a segment id says which image
of the sequence they belong to (0: padding). Attention stays inside a segment (a block-diagonal
mask), pooling and the loss are per image. A square image is the special case of one segment
filling the sequence (`from_images`), with the same parameters and numerics.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vit_jax import errors


class Sequences(NamedTuple):
  """One batch of packed (or padded) NaFlex sequences; k = images a sequence can hold."""

  patches: jax.Array  # [b, t, ph * pw * channels], each patch flattened (row, column, channel)
  positions: jax.Array  # [b, t, 2] int32: the patch's (row, column) in its image's grid
  segments: jax.Array  # [b, t] int32: i + 1 for the sequence's i-th image, 0 for padding
  grids: jax.Array  # [b, k, 2] int32: (rows, columns) of image i's grid; (0, 0): no image

  @property
  def images_per_sequence(self) -> int:
    return self.grids.shape[1]


KEYS = tuple(Sequences._fields)  # the batch entries a NaFlex batch carries


def from_batch(batch) -> Sequences:
  """The `Sequences` of a batch dict holding KEYS."""
  return Sequences(*(batch[key] for key in KEYS))


def patchify(images: jax.Array, patch_size) -> tuple[jax.Array, tuple[int, int]]:
  """[b, h, w, c] -> ([b, gh * gw, ph * pw * c] row-major patches, (gh, gw))."""
  ph, pw = patch_size
  b, h, w, c = images.shape
  if h % ph or w % pw:
    raise errors.UserError(f'Image size {h}x{w} is not divisible by the patch size {ph}x{pw}.')
  x = images.reshape(b, h // ph, ph, w // pw, pw, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, (h // ph) * (w // pw), ph * pw * c), (h // ph, w // pw)


def from_images(images: jax.Array, patch_size) -> Sequences:
  """Square (or any fixed-size) images [b, h, w, c] as one-image sequences."""
  patches, (rows, columns) = patchify(images, patch_size)
  b = images.shape[0]
  grid = np.stack(np.meshgrid(np.arange(rows), np.arange(columns), indexing='ij'), -1)
  positions = jnp.broadcast_to(jnp.asarray(grid.reshape(1, -1, 2), jnp.int32), (b, rows * columns, 2))
  return Sequences(patches=patches, positions=positions,
                   segments=jnp.ones((b, rows * columns), jnp.int32),
                   grids=jnp.broadcast_to(jnp.asarray([[[rows, columns]]], jnp.int32), (b, 1, 2)))


def attention_mask(query_segments: jax.Array, key_segments: jax.Array) -> jax.Array:
  """[b, 1, q, k] bool: a query attends to the keys of its own segment (block-diagonal)."""
  return query_segments[:, None, :, None] == key_segments[:, None, None, :]


def slot_segments(images_per_sequence: int, batch: int) -> jax.Array:
  """[b, k] int32: the segment id of each image slot (1..k)."""
  return jnp.broadcast_to(jnp.arange(1, images_per_sequence + 1, dtype=jnp.int32),
                          (batch, images_per_sequence))


def valid_images(grids: jax.Array) -> jax.Array:
  """[b, k] bool: the slots that hold an image."""
  return grids[..., 0] > 0


def token_grids(seqs: Sequences) -> jax.Array:
  """[b, t, 2]: the patch grid of each token's image ((1, 1) on padding, never used)."""
  index = jnp.clip(seqs.segments - 1, 0, seqs.images_per_sequence - 1)
  grids = jnp.take_along_axis(seqs.grids, index[..., None], axis=1)
  return jnp.where(seqs.segments[..., None] > 0, grids, 1)


def segment_mean(x: jax.Array, segments: jax.Array, images_per_sequence: int) -> jax.Array:
  """[b, t, d] -> [b, k, d]: the mean of each segment's tokens (0 for an empty slot)."""
  onehot = (segments[..., None] == jnp.arange(1, images_per_sequence + 1)).astype(x.dtype)
  sums = jnp.einsum('btk,btd->bkd', onehot, x)
  counts = jnp.sum(onehot, axis=1)[..., None]
  return sums / jnp.maximum(counts, 1).astype(x.dtype)


RESIZE_METHODS = ('bilinear', 'bicubic')


def _cubic(x: jax.Array) -> jax.Array:
  """Keys' cubic kernel with a = -0.5 (PIL's, PyTorch's antialiased bicubic, jax.image's)."""
  return jnp.where(x < 1.0, ((1.5 * x - 2.5) * x) * x + 1.0,
                   jnp.where(x < 2.0, ((-0.5 * x + 2.5) * x - 4.0) * x + 2.0, 0.0))


def resize_weights(out_index: jax.Array, out_size: jax.Array, in_size: int,
                   method: str = 'bilinear') -> jax.Array:
  """[..., in_size] weights of a 1-D resize (a RESIZE_METHODS name) from `in_size` to
  `out_size` samples, evaluated at output sample `out_index` (both traced, any shape).

  Half-pixel centres; when shrinking, the filter widens by the scale (antialiasing), as
  PyTorch's `interpolate(..., antialias=True)`, PIL and `jax.image.resize` do; weights are
  normalised over the samples inside the input, so edges clamp. Equal sizes give the identity.
  """
  if method not in RESIZE_METHODS:
    raise errors.UserError(f'posemb_resize={method!r}: expected one of {RESIZE_METHODS}.')
  scale = in_size / jnp.maximum(out_size, 1).astype(jnp.float32)
  support = jnp.maximum(scale, 1.0)
  centre = (out_index.astype(jnp.float32) + 0.5) * scale
  inputs = jnp.arange(in_size, dtype=jnp.float32) + 0.5
  distance = jnp.abs(inputs - centre[..., None]) / support[..., None]
  weights = jnp.maximum(0.0, 1.0 - distance) if method == 'bilinear' else _cubic(distance)
  return weights / jnp.sum(weights, axis=-1, keepdims=True)


def resized_table_at(table: jax.Array, positions: jax.Array, grids: jax.Array,
                     method: str = 'bilinear', square: bool = False) -> jax.Array:
  """A position table [rows, columns, d] resized to each token's image grid, read at the token's
  position: [b, t, d] (SigLIP 2's per-image antialiased bilinear resize, one token at a time).
  `square`: resized to a square of the grid's longer side, of which the grid is the top-left
  corner (timm's `pos_embed_ar_preserving`)."""
  if square:
    grids = jnp.broadcast_to(jnp.max(grids, axis=-1, keepdims=True), grids.shape)
  row_weights = resize_weights(positions[..., 0], grids[..., 0], table.shape[0], method)
  column_weights = resize_weights(positions[..., 1], grids[..., 1], table.shape[1], method)
  table = table.astype(jnp.float32)
  return jnp.einsum('bti,btj,ijd->btd', row_weights, column_weights, table,
                    precision=jax.lax.Precision.HIGHEST)


def sincos_at(positions: jax.Array, hidden_size: int, temperature: float = 10_000.,
              mae: bool = False) -> jax.Array:
  """The fixed 2-D sin-cos embedding (`posemb.posemb_sincos_2d`) of positions [b, t, 2]."""
  if hidden_size % 4:
    raise errors.UserError(f'posemb=sincos2d needs hidden_size divisible by 4, got {hidden_size}.')
  quarter = hidden_size // 4
  omega = 1.0 / temperature**(np.arange(quarter) / (quarter if mae else max(quarter - 1, 1)))
  omega = jnp.asarray(omega, jnp.float32)
  y = positions[..., 0:1].astype(jnp.float32) * omega
  x = positions[..., 1:2].astype(jnp.float32) * omega
  return jnp.concatenate([jnp.sin(x), jnp.cos(x), jnp.sin(y), jnp.cos(y)], axis=-1)
