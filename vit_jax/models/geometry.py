"""The model's geometry, asked of one place: prefix tokens, patch stride and grid, position table.

Data, visualisation, exports, FLOP counts and checkpoint loading all need the same facts about a
model (`patches.size`, `classifier`, `resnet`, `posemb`, `hidden_size`), given as the model or its
config; they read them here (`model_of`: one reading, the model's own defaults) instead of
re-deriving them.
"""

import math
from typing import Any, Mapping, Optional

import jax
import numpy as np

from vit_jax import errors
from vit_jax.models import posemb as posemb_lib
from vit_jax.models import resnet
from vit_jax.models import vit



def model_of(model_or_config) -> vit.VisionTransformer:
  """The model a config describes (an official ConfigDict or plain dict), or the model itself:
  every field read from one place, with the model's own defaults."""
  if isinstance(model_or_config, vit.VisionTransformer):
    return model_or_config
  fields = (model_or_config.to_dict() if hasattr(model_or_config, 'to_dict')
            else dict(model_or_config))
  fields.pop('num_classes', None)
  for required in ('patches', 'transformer', 'hidden_size'):  # a geometry question may omit them
    fields.setdefault(required, None)
  return vit.VisionTransformer(num_classes=None, **fields)


def has_class_token(model_or_config) -> bool:
  return model_of(model_or_config).has_class_token


def num_posemb_prefix(model_or_config) -> int:
  """Tokens before the patches that have a row in the position table: cls, distillation."""
  model = model_of(model_or_config)
  return int(model.has_class_token) + int(model.distilled)


def num_prefix_tokens(model_or_config) -> int:
  """Tokens before the patch tokens: cls, distillation and register tokens."""
  return num_posemb_prefix(model_or_config) + model_of(model_or_config).num_registers


def patch_stride(model_or_config) -> tuple[int, int]:
  """Input pixels per patch token along (height, width): patch size x the ResNet stem's stride."""
  model = model_of(model_or_config)
  stem = resnet.stem_stride(model.resnet)
  patch = tuple(model.patches['size'])
  return patch[0] * stem, patch[1] * stem


def check_image_size(image_size, model_config) -> None:
  """ValueError unless an `image_size` (int or (h, w)) splits into the model's patches."""
  sides = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
  stride = patch_stride(model_config)
  if any(side <= 0 or side % s for side, s in zip(sides, stride)):
    stem = resnet.stem_stride(model_of(model_config).resnet)
    raise errors.UserError(
        f'image_size={image_size} is not a positive multiple of the effective patch size '
        f'{stride[0]} (patches.size={tuple(model_of(model_config).patches["size"])}'
        f'{f", ResNet stem stride {stem}" if stem > 1 else ""}).')


def patch_grid(model_config, image_size) -> tuple[int, int]:
  """(rows, columns) of patch tokens for an input of `image_size` (int or (h, w))."""
  check_image_size(image_size, model_config)
  sides = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
  stride = patch_stride(model_config)
  return sides[0] // stride[0], sides[1] // stride[1]


def num_tokens(model_config, image_size) -> int:
  """Sequence length through the encoder: prefix tokens plus patch tokens."""
  rows, columns = patch_grid(model_config, image_size)
  return num_prefix_tokens(model_config) + rows * columns


def native_image_size(params: Mapping[str, Any], model_config) -> Optional[int]:
  """The square resolution a learned position table was trained at (None: sincos or not square)."""
  encoder = params['Transformer']
  if 'posembed_input' not in encoder:
    return None
  tokens = (encoder['posembed_input']['pos_embedding'].shape[1]
            - int('cls' in params) - int('dist' in params))
  side = math.isqrt(tokens)
  if side * side != tokens:
    return None
  return side * patch_stride(model_config)[0]


def position_table(params: Mapping[str, Any], model_config, image_size) -> tuple[np.ndarray, int]:
  """(table [1, rows, width], prefix rows in it): the learned table as stored (prefix row
  included), or the fixed sincos table of the grid (no prefix row)."""
  encoder = params['Transformer']
  if 'posembed_input' in encoder:
    table = np.asarray(encoder['posembed_input']['pos_embedding'])
    return table, num_posemb_prefix(model_config)
  model = model_of(model_config)
  if model.posemb == 'rope':
    raise errors.UserError('posemb=rope: the model has no position table (positions rotate queries '
                           'and keys).')
  rows, columns = patch_grid(model_config, image_size)
  return posemb_lib.posemb_sincos_2d(rows, columns, model.hidden_size), 0


def abstract_params(model, image_size) -> Any:
  """The parameter tree as `jax.ShapeDtypeStruct`s for inputs of `image_size`: no memory used."""
  sides = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
  return jax.eval_shape(lambda: model.init(
      jax.random.key(0), np.zeros((1, *sides, 3), np.float32), train=False)['params'])
