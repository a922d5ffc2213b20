"""The ViT variant table: official vit_jax names and fields, plus big_vision's larger sizes.

Every entry is an `ml_collections.ConfigDict` whose fields are the keyword arguments of
`vit_jax.models.VisionTransformer` (all but `num_classes`), so
`VisionTransformer(num_classes=10, **get_b16_config())` builds a ViT-B/16.

Names follow the released checkpoint files (`ViT-B_16`, `R50+ViT-B_16`, ...); short big_vision
style aliases (`B/16`, `R50+B/16`, `g/14`) resolve through `get_config`.
"""

import re
from typing import Callable

import ml_collections

from vit_jax import errors

MODEL_CONFIGS: dict[str, ml_collections.ConfigDict] = {}
"""Official name -> locked config. Filled by `_register` below."""

# Width, depth, MLP size and heads per size name (Table 2 of Zhai et al. "Scaling Vision
# Transformers", arXiv:2106.04560; So400m from arXiv:2305.13035).
SIZES = {
    'Ti': dict(hidden_size=192, num_layers=12, mlp_dim=768, num_heads=3),
    'S': dict(hidden_size=384, num_layers=12, mlp_dim=1536, num_heads=6),
    'M': dict(hidden_size=512, num_layers=12, mlp_dim=2048, num_heads=8),
    'B': dict(hidden_size=768, num_layers=12, mlp_dim=3072, num_heads=12),
    'L': dict(hidden_size=1024, num_layers=24, mlp_dim=4096, num_heads=16),
    'So400m': dict(hidden_size=1152, num_layers=27, mlp_dim=4304, num_heads=16),
    'H': dict(hidden_size=1280, num_layers=32, mlp_dim=5120, num_heads=16),
    'g': dict(hidden_size=1408, num_layers=40, mlp_dim=6144, num_heads=16),
    'G': dict(hidden_size=1664, num_layers=48, mlp_dim=8192, num_heads=16),
}


def _register(get_config: Callable[[], ml_collections.ConfigDict]):
  """Adds the config returned by `get_config` to MODEL_CONFIGS under its model_name."""
  config = get_config().lock()
  MODEL_CONFIGS[config.model_name] = config
  return get_config


def vit_config(size: str, patch: int, *, model_name: str | None = None,
               dropout_rate: float = 0.0, classifier: str = 'token') -> ml_collections.ConfigDict:
  """A plain ViT config of a named size (`'B'`) and square patch size (`16`)."""
  if size not in SIZES:
    raise errors.UserError(f'Unknown ViT size {size!r}; expected one of {sorted(SIZES)}.')
  dims = SIZES[size]
  config = ml_collections.ConfigDict()
  config.model_name = model_name or f'ViT-{size}_{patch}'
  config.patches = ml_collections.ConfigDict({'size': (patch, patch)})
  config.hidden_size = dims['hidden_size']
  config.transformer = ml_collections.ConfigDict()
  config.transformer.mlp_dim = dims['mlp_dim']
  config.transformer.num_heads = dims['num_heads']
  config.transformer.num_layers = dims['num_layers']
  config.transformer.attention_dropout_rate = 0.0
  config.transformer.dropout_rate = dropout_rate
  config.classifier = classifier
  config.representation_size = None
  return config


def _hybrid(config: ml_collections.ConfigDict, name: str, patch: int,
            num_layers: tuple[int, ...]) -> ml_collections.ConfigDict:
  """Puts a ResNetV2 stem with `num_layers` bottleneck units per stage in front of `config`."""
  config.model_name = name
  config.patches.size = (patch, patch)
  config.resnet = ml_collections.ConfigDict()
  config.resnet.num_layers = num_layers
  config.resnet.width_factor = 1
  return config


@_register
def get_testing_config():
  """A tiny model for tests (21,390 parameters with 1000 classes)."""
  config = ml_collections.ConfigDict()
  config.model_name = 'testing'
  config.patches = ml_collections.ConfigDict({'size': (16, 16)})
  config.hidden_size = 10
  config.transformer = ml_collections.ConfigDict()
  config.transformer.mlp_dim = 10
  config.transformer.num_heads = 2
  config.transformer.num_layers = 1
  config.transformer.attention_dropout_rate = 0.0
  config.transformer.dropout_rate = 0.1
  config.classifier = 'token'
  config.representation_size = None
  return config


@_register
def get_testing_unpooled_config():
  """The testing model without pooling: one logit vector per patch."""
  config = get_testing_config()
  config.model_name = 'testing-unpooled'
  config.classifier = 'unpooled'
  return config


# ViT-X/16 and ViT-H/14, the paper's Table 1.
@_register
def get_ti16_config():
  """ViT-Ti/16."""
  return vit_config('Ti', 16)


@_register
def get_s16_config():
  """ViT-S/16."""
  return vit_config('S', 16)


@_register
def get_b16_config():
  """ViT-B/16."""
  return vit_config('B', 16)


@_register
def get_l16_config():
  """ViT-L/16 (dropout 0.1 as released)."""
  return vit_config('L', 16, dropout_rate=0.1)


@_register
def get_h14_config():
  """ViT-H/14 (dropout 0.1 as released)."""
  return vit_config('H', 14, dropout_rate=0.1)


# Patch sizes 8 and 32.
@_register
def get_b8_config():
  """ViT-B/8."""
  return vit_config('B', 8)


@_register
def get_s32_config():
  """ViT-S/32."""
  return vit_config('S', 32)


@_register
def get_b32_config():
  """ViT-B/32."""
  return vit_config('B', 32)


@_register
def get_l32_config():
  """ViT-L/32."""
  return vit_config('L', 32)


# Global-average-pooled variants without cls token or representation layer.
def _gap_norep(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  config.model_name += '-gap-norep'
  config.classifier = 'gap'
  config.representation_size = None
  return config


@_register
def get_s16_gap_norep_config():
  """ViT-S/16, classifier=gap, no representation layer."""
  return _gap_norep(get_s16_config())


@_register
def get_b16_gap_norep_config():
  """ViT-B/16, classifier=gap, no representation layer."""
  return _gap_norep(get_b16_config())


@_register
def get_s32_gap_norep_config():
  """ViT-S/32, classifier=gap, no representation layer."""
  return _gap_norep(get_s32_config())


@_register
def get_b32_gap_norep_config():
  """ViT-B/32, classifier=gap, no representation layer."""
  return _gap_norep(get_b32_config())


# Hybrids: a ResNetV2 stem (root: /4, each later stage: /2) feeds the transformer.
@_register
def get_r_ti16_config():
  """ResNet root only + ViT-Ti with 8x8 patches on the /4 feature map."""
  return _hybrid(get_ti16_config(), 'R+ViT-Ti_16', 8, ())


@_register
def get_r50_b16_config():
  """ResNet50 stages (3, 4, 9): /16 feature map, 1x1 patches, ViT-B (dropout 0.1)."""
  config = _hybrid(get_b16_config(), 'R50+ViT-B_16', 1, (3, 4, 9))
  config.transformer.dropout_rate = 0.1
  return config


@_register
def get_r26_b32_config():
  """ResNet26 stages (2, 2, 2, 2): /32 feature map, 1x1 patches, ViT-B."""
  return _hybrid(get_b32_config(), 'R26+ViT-B_32', 1, (2, 2, 2, 2))


@_register
def get_r26_s32_config():
  """ResNet26 stages (2, 2, 2, 2): /32 feature map, 1x1 patches, ViT-S."""
  return _hybrid(get_s16_config(), 'R26+ViT-S_32', 1, (2, 2, 2, 2))


@_register
def get_r50_l32_config():
  """ResNet50 stages (3, 4, 6, 3): /32 feature map, 1x1 patches, ViT-L (dropout 0.1)."""
  return _hybrid(get_l16_config(), 'R50+ViT-L_32', 1, (3, 4, 6, 3))


# big_vision's larger sizes, pooled with a MAP head as in "Scaling Vision Transformers".
@_register
def get_so400m14_config():
  """ViT-So400m/14 (shape-optimised, 27 layers) with MAP pooling."""
  return vit_config('So400m', 14, classifier='map')


@_register
def get_giant14_config():
  """ViT-g/14 (giant, 40 layers) with MAP pooling."""
  return vit_config('g', 14, classifier='map')


@_register
def get_gigantic14_config():
  """ViT-G/14 (gigantic, 48 layers) with MAP pooling."""
  return vit_config('G', 14, classifier='map')


_SHORT_NAME = re.compile(r'^(?:(R\d*)\+)?([A-Za-z0-9]+)/(\d+)$')


def get_config(name: str) -> ml_collections.ConfigDict:
  """An unlocked copy of a variant's config, by official name or short alias.

  Accepts `'ViT-B_16'`, `'R50+ViT-B_16'`, `'testing'`, and big_vision style `'B/16'`,
  `'R50+B/16'`, `'g/14'`; a short name outside the table (`'L/14'`) is built from `SIZES`.
  """
  if name in MODEL_CONFIGS:
    return ml_collections.ConfigDict(MODEL_CONFIGS[name].to_dict())
  match = _SHORT_NAME.match(name)
  if match:
    resnet, size, patch = match.groups()
    official = f'{resnet + "+" if resnet else ""}ViT-{size}_{patch}'
    if official in MODEL_CONFIGS:
      return get_config(official)
    if not resnet and size in SIZES:
      return vit_config(size, int(patch))
  raise errors.UserError(
      f'Unknown model name {name!r}: expected one of {sorted(MODEL_CONFIGS)} or a short name '
      f'such as "B/16" with a size in {sorted(SIZES)}.')
