"""ResNetV2 stem of the hybrid R+ViT models: weight-standardised convolutions and GroupNorm.

The parameter names (`conv_root`, `gn_root`, `block1/unit1/conv1`, ...) are those of the
released hybrid checkpoints (Kolesnikov et al., "Big Transfer", arXiv:1912.11370).
"""

from typing import Any, Mapping, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

Dtype = Any


def weight_standardize(kernel: jnp.ndarray, axis: Sequence[int], eps: float) -> jnp.ndarray:
  """Normalises a kernel to zero mean and unit variance over `axis` (the fan-in axes)."""
  kernel = kernel - jnp.mean(kernel, axis=axis)
  return kernel / (jnp.std(kernel, axis=axis) + eps)


class StdConv(nn.Conv):
  """A convolution whose kernel [kh, kw, in, out] is standardised per output channel."""

  def param(self, name, init_fn, *init_args, **init_kwargs):
    value = super().param(name, init_fn, *init_args, **init_kwargs)
    if name == 'kernel':
      value = weight_standardize(value, axis=(0, 1, 2), eps=1e-5)
    return value


class ResidualUnit(nn.Module):
  """Bottleneck unit: 1x1 -> 3x3 (strided) -> 1x1 with 4x expansion, GroupNorm after each conv."""

  features: int
  strides: tuple[int, int] = (1, 1)
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    conv = lambda features, kernel, strides, name: StdConv(  # pylint: disable=g-long-lambda
        features=features, kernel_size=kernel, strides=strides, use_bias=False,
        dtype=self.dtype, name=name)
    norm = lambda name, **kw: nn.GroupNorm(dtype=self.dtype, name=name, **kw)

    residual = x
    if x.shape[-1] != self.features * 4 or tuple(self.strides) != (1, 1):
      residual = conv(self.features * 4, (1, 1), self.strides, 'conv_proj')(residual)
      residual = norm('gn_proj')(residual)

    y = nn.relu(norm('gn1')(conv(self.features, (1, 1), (1, 1), 'conv1')(x)))
    y = nn.relu(norm('gn2')(conv(self.features, (3, 3), self.strides, 'conv2')(y)))
    # Zero-initialised last scale: each unit starts as the identity of its projection.
    y = norm('gn3', scale_init=nn.initializers.zeros)(
        conv(self.features * 4, (1, 1), (1, 1), 'conv3')(y))
    return nn.relu(residual + y)


class ResNetStage(nn.Module):
  """`block_size` bottleneck units; the first one may downsample."""

  block_size: int
  nout: int
  first_stride: tuple[int, int]
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    for i in range(self.block_size):
      strides = self.first_stride if i == 0 else (1, 1)
      x = ResidualUnit(self.nout, strides=strides, dtype=self.dtype, name=f'unit{i + 1}')(x)
    return x


def stem_stride(resnet: Optional[Mapping[str, Any]]) -> int:
  """Input pixels per feature-map step before the patch embedding (`resnet`: the model's
  `resnet` field): 1 without a ResNet stem, 4 for the root (stride-2 conv, stride-2 pool) and
  x2 for every stage after the first."""
  return 1 if resnet is None else 4 * 2**max(len(resnet['num_layers']) - 1, 0)


def resnet_stem(x: jnp.ndarray, *, num_layers: Sequence[int], width_factor: float = 1,
                dtype: Dtype = jnp.float32) -> jnp.ndarray:
  """Root (7x7/2 conv, GroupNorm, ReLU, 3x3/2 max-pool) and stages: [b, h, w, 3] -> feature map.

  A function, not a module, so that when called inside the ViT's compact `__call__` its layers
  sit at the top of the parameter tree (`conv_root`, `gn_root`, `block1`, ...) as in the
  released files.
  """
  width = int(64 * width_factor)
  x = StdConv(features=width, kernel_size=(7, 7), strides=(2, 2), use_bias=False,
              dtype=dtype, name='conv_root')(x)
  x = nn.relu(nn.GroupNorm(dtype=dtype, name='gn_root')(x))
  x = nn.max_pool(x, window_shape=(3, 3), strides=(2, 2), padding='SAME')
  for i, block_size in enumerate(num_layers):
    x = ResNetStage(block_size=block_size, nout=width * 2**i,
                    first_stride=(1, 1) if i == 0 else (2, 2), dtype=dtype,
                    name=f'block{i + 1}')(x)
  return x
