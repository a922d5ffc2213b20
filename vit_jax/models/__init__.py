"""The ViT model family: `VisionTransformer` and `get_model(name, **overrides)`."""

from vit_jax.configs import models as model_configs
from vit_jax.models.stacking import stack_encoder_blocks
from vit_jax.models.stacking import unstack_encoder_blocks
from vit_jax.models.vit import count_params
from vit_jax.models.vit import VisionTransformer


def get_model(name: str, **kwargs) -> VisionTransformer:
  """Builds a variant by name (`'ViT-B_16'`, `'B/16'`, ...); `kwargs` override its fields."""
  config = model_configs.get_config(name)
  return VisionTransformer(**{**config.to_dict(), **kwargs})


__all__ = ['VisionTransformer', 'get_model', 'count_params', 'stack_encoder_blocks',
           'unstack_encoder_blocks']
