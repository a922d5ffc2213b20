"""Dense prediction on a ViT's patch maps: semantic segmentation and depth.

`DenseModel` is a backbone (any `VisionTransformer`) whose parameters stay where a classifier
keeps them (the top level, so every checkpoint `trained_model.load` reads initialises it) and
a head under `dense_head`:

  linear            the DINOv2 linear protocol: the chosen blocks' patch maps (through the final
                    LayerNorm) concatenated, one linear layer, no batch norm
  mask_transformer  Segmenter's decoder (Strudel et al. 2021): class embeddings and patch tokens
                    through transformer blocks; masks are their normalised dot products
  multilevel        a small convolutional decoder over several blocks (projected, summed, two
                    3x3 convolutions with one 2x upsampling between them)

The head's output, at the patch grid (or twice it), is upsampled bilinearly to the input's
size: class logits [b, h, w, classes], or depth [b, h, w] in (min_depth, max_depth).
"""

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_jax import errors
from vit_jax.models import intermediates
from vit_jax.models import vit

TASKS = ('segmentation', 'depth')
HEADS = ('linear', 'mask_transformer', 'multilevel')


def depth_valid(depth: jax.Array, min_depth: float, max_depth: float) -> jax.Array:
  """Pixels with a measurement in (min_depth, max_depth]: what a depth loss and metric count."""
  return (depth > min_depth) & (depth <= max_depth)


class LinearHead(nn.Module):
  outputs: int

  @nn.compact
  def __call__(self, maps: Sequence[jnp.ndarray], train: bool) -> jnp.ndarray:
    del train
    return nn.Dense(self.outputs, name='linear')(jnp.concatenate(maps, axis=-1))


class MaskTransformer(nn.Module):
  """Segmenter's mask transformer on the last chosen block's patch map."""

  outputs: int  # classes
  width: int = 256
  depth: int = 2
  num_heads: int = 4
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, maps: Sequence[jnp.ndarray], train: bool) -> jnp.ndarray:
    x = maps[-1]
    b, h, w, c = x.shape
    x = nn.Dense(self.width, name='proj_dec')(x.reshape(b, h * w, c))
    classes = self.param('cls_emb', nn.initializers.normal(0.02), (1, self.outputs, self.width))
    x = jnp.concatenate([x, jnp.tile(classes, [b, 1, 1])], axis=1)
    for i in range(self.depth):
      x, _ = vit.Encoder1DBlock(mlp_dim=4 * self.width, num_heads=self.num_heads,
                                dropout_rate=self.dropout_rate, activation='gelu',
                                name=f'block_{i}')(x, None, not train)
    x = nn.LayerNorm(name='decoder_norm')(x)
    init = nn.initializers.normal(self.width ** -0.5)
    patches = x[:, :h * w] @ self.param('proj_patch', init, (self.width, self.width))
    classes = x[:, h * w:] @ self.param('proj_classes', init, (self.width, self.width))
    unit = lambda t: t / jnp.linalg.norm(t, axis=-1, keepdims=True)  # pylint: disable=unnecessary-lambda-assignment
    masks = jnp.einsum('bpd,bnd->bpn', unit(patches), unit(classes))
    return nn.LayerNorm(name='mask_norm')(masks).reshape(b, h, w, self.outputs)


class MultiLevelHead(nn.Module):
  """Every chosen block projected to `width` and summed, then conv, 2x upsampling, conv."""

  outputs: int
  width: int = 256

  @nn.compact
  def __call__(self, maps: Sequence[jnp.ndarray], train: bool) -> jnp.ndarray:
    del train
    x = sum(nn.Dense(self.width, name=f'project_{i}')(m) for i, m in enumerate(maps))
    x = nn.gelu(nn.Conv(self.width, (3, 3), padding='SAME', name='fuse')(x))
    b, h, w, c = x.shape
    x = jax.image.resize(x, (b, 2 * h, 2 * w, c), 'bilinear')
    x = nn.gelu(nn.Conv(self.width // 2, (3, 3), padding='SAME', name='refine')(x))
    return nn.Dense(self.outputs, name='predict')(x)


class DenseModel(nn.Module):
  """A backbone and a dense head: [b, h, w, 3] -> logits [b, h, w, classes] | depth [b, h, w].

  `blocks` are the backbone blocks the head reads (negative: from the end). With
  `frozen_backbone` the backbone runs in inference mode and no gradient reaches it (a probe).
  """

  backbone: vit.VisionTransformer  # num_classes=None
  task: str
  outputs: int  # classes (segmentation); 1 (depth)
  head: str = 'linear'
  blocks: tuple[int, ...] = (-1,)
  frozen_backbone: bool = False
  min_depth: float = 1e-3
  max_depth: float = 10.0
  decoder_width: int = 256
  decoder_depth: int = 2
  decoder_heads: int = 4

  def setup(self):
    nn.share_scope(self, self.backbone)  # the backbone's parameters at the top level
    if self.head == 'linear':
      self.dense_head = LinearHead(self.outputs)
    elif self.head == 'mask_transformer':
      self.dense_head = MaskTransformer(self.outputs, self.decoder_width, self.decoder_depth,
                                        self.decoder_heads)
    else:
      self.dense_head = MultiLevelHead(self.outputs, self.decoder_width)

  def features(self, images: jnp.ndarray, train: bool) -> list[jnp.ndarray]:
    """The chosen blocks' patch maps [b, rows, columns, width], final-normed."""
    _, tokens = self.backbone(images, train=train and not self.frozen_backbone,
                              blocks=self.blocks, norm_blocks=True)
    maps = [intermediates.patch_maps(self.backbone, t, images.shape[1:3]) for t in tokens]
    return [jax.lax.stop_gradient(m) for m in maps] if self.frozen_backbone else maps

  def __call__(self, images: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    out = self.dense_head(self.features(images, train), train).astype(jnp.float32)
    b, h, w = images.shape[:3]
    out = jax.image.resize(out, (b, h, w, out.shape[-1]), 'bilinear')
    if self.task == 'depth':
      return self.min_depth + (self.max_depth - self.min_depth) * jax.nn.sigmoid(out[..., 0])
    return out


def check(task: str, head: str, blocks: Sequence[int], num_layers: int) -> None:
  """One line for a task, head or block list the model cannot take."""
  if task not in TASKS:
    raise errors.UserError(f'config.dense.task={task!r}; expected one of {", ".join(TASKS)}.')
  if head not in HEADS:
    raise errors.UserError(f'config.dense.head={head!r}; expected one of {", ".join(HEADS)}.')
  if head == 'mask_transformer' and task != 'segmentation':
    raise errors.UserError('config.dense.head=mask_transformer predicts class masks; '
                           f'task={task!r} needs head=linear or multilevel.')
  if not blocks or any(not -num_layers <= int(i) < num_layers for i in blocks):
    raise errors.UserError(f'config.dense.blocks={tuple(blocks)}: expected indices of the '
                           f'backbone\'s {num_layers} blocks (negative: from the end).')


def windows(size: int, crop: int, stride: int) -> list[int]:
  """Start offsets of sliding windows of `crop` over `size` (mmseg's: the last one flush)."""
  if size <= crop:
    return [0]
  count = (size - crop + stride - 1) // stride + 1
  return sorted({min(i * stride, size - crop) for i in range(count)})


def slide(predict: Callable[[jnp.ndarray], jnp.ndarray], images: jnp.ndarray,
          crop: tuple[int, int], stride: tuple[int, int]) -> jnp.ndarray:
  """Sliding-window inference: `predict` on every `crop` window (stride apart, the last flush
  with the edge), summed where windows overlap and divided by the count. Images smaller than
  the window along a side are predicted whole along it."""
  height, width = images.shape[1:3]
  total, count, squeeze = None, jnp.zeros((1, height, width, 1), jnp.float32), False
  for top in windows(height, crop[0], stride[0]):
    for left in windows(width, crop[1], stride[1]):
      window = images[:, top:top + crop[0], left:left + crop[1]]
      out = predict(window)
      squeeze = out.ndim == 3  # depth [b, h, w]
      out = out[..., None] if squeeze else out
      pad = [(0, 0), (top, height - top - out.shape[1]), (left, width - left - out.shape[2]),
             (0, 0)]
      padded = jnp.pad(out, pad)
      total = padded if total is None else total + padded
      count = count + jnp.pad(jnp.ones((1, *out.shape[1:3], 1)), pad)
  result = total / count
  return result[..., 0] if squeeze else result
