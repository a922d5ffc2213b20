"""Analytic model FLOPs of a ViT forward pass (multiply-adds x 2), for throughput and MFU.

Counts the matmuls (patch embedding, q/k/v/out projections, attention scores and mixing, MLP,
MAP head, pre-logits, head) and the ResNet stem's convolutions; elementwise work (LayerNorm,
GELU, softmax) is left out, as is customary for MFU. Training = 3 x forward.
"""

from typing import Optional

from vit_jax.models import geometry
from vit_jax.models import vit


def _conv_macs(height: int, width: int, kernel: int, c_in: int, c_out: int, stride: int):
  out_h, out_w = -(-height // stride), -(-width // stride)
  return out_h * out_w * kernel * kernel * c_in * c_out, out_h, out_w


def resnet_stem_macs(image_size: int, num_layers, width_factor: float = 1) -> tuple[int, int, int]:
  """(MACs, output side, output channels) of the BiT stem (root + bottleneck stages)."""
  width = int(64 * width_factor)
  macs, side, _ = _conv_macs(image_size, image_size, 7, 3, width, 2)
  side = -(-side // 2)  # max-pool
  channels = width
  for stage, units in enumerate(num_layers):
    features = width * 2**stage
    for unit in range(units):
      stride = 2 if (stage > 0 and unit == 0) else 1
      if unit == 0:
        m, _, _ = _conv_macs(side, side, 1, channels, features * 4, stride)
        macs += m
      m1, _, _ = _conv_macs(side, side, 1, channels, features, 1)
      m2, new_side, _ = _conv_macs(side, side, 3, features, features, stride)
      m3, _, _ = _conv_macs(new_side, new_side, 1, features, features * 4, 1)
      macs += m1 + m2 + m3
      side, channels = new_side, features * 4
  return macs, side, channels


def forward_flops(model_config, image_size: int, num_classes: Optional[int] = 1000) -> int:
  """FLOPs (2 x MACs) of one image's forward pass through `model_config` at `image_size`."""
  width = model_config.hidden_size
  mlp = model_config.transformer.mlp_dim
  layers = model_config.transformer.num_layers
  patch_h, patch_w = model_config.patches.size
  macs, side, channels = 0, image_size, 3
  if model_config.get('resnet') is not None:
    macs, side, channels = resnet_stem_macs(image_size, model_config.resnet.num_layers,
                                            model_config.resnet.width_factor)
  patches = (side // patch_h) * (side // patch_w)
  macs += patches * patch_h * patch_w * channels * width
  tokens = patches + geometry.num_prefix_tokens(model_config)
  per_layer = tokens * (4 * width * width + 2 * width * mlp) + 2 * tokens * tokens * width
  macs += layers * per_layer
  if model_config.get('classifier') == 'map':
    macs += width * width + 2 * tokens * width * width + 2 * tokens * width + width * width \
        + 2 * width * mlp
  head_in = width
  if model_config.get('representation_size'):
    macs += width * model_config.representation_size
    head_in = model_config.representation_size
  if num_classes:
    outputs = tokens if geometry.model_of(model_config).classifier in vit.UNPOOLED_CLASSIFIERS else 1
    macs += outputs * head_in * num_classes
  return 2 * macs


def train_flops(model_config, image_size: int, num_classes: Optional[int] = 1000) -> int:
  """Forward + backward (twice the forward's matmuls) per image."""
  return 3 * forward_flops(model_config, image_size, num_classes)
