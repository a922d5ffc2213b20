"""What every tool's `--checkpoint` accepts: one of our workdirs or a bare `.npz`.

A workdir brings its config (`config.json`) and its newest valid checkpoint (EMA parameters when
the run kept them). A released or big_vision `.npz` brings only parameters: its architecture
(width, depth, heads, MLP size, patch size, pooling, representation layer, hybrid stem, class
count) is read off their shapes unless a variant name is given.
"""

import dataclasses
import json
import math
import os
from typing import Any, Optional

import jax
import ml_collections
import numpy as np
from PIL import Image

from vit_jax import checkpoint
from vit_jax import models
from vit_jax.configs import models as model_configs
from vit_jax.models import resnet


@dataclasses.dataclass
class Loaded:
  model: models.VisionTransformer
  params: Any  # canonical (per-layer) tree of numpy arrays
  model_config: ml_collections.ConfigDict
  num_classes: Optional[int]
  image_size: int  # the resolution the parameters were trained at (posemb grid x patch stride)


def native_image_size(params, model_config) -> Optional[int]:
  """The square resolution a learned posemb was trained at (None for sincos or non-square)."""
  encoder = params['Transformer']
  if 'posembed_input' not in encoder:
    return None
  tokens = encoder['posembed_input']['pos_embedding'].shape[1] - int('cls' in params)
  side = math.isqrt(tokens)
  if side * side != tokens:
    return None
  return side * model_config.patches.size[0] * resnet.stem_stride(model_config)


def _from_workdir(workdir: str) -> tuple[Any, ml_collections.ConfigDict, int, int]:
  from vit_jax import checkpointing  # pylint: disable=g-import-not-at-top
  from vit_jax.train import loop  # pylint: disable=g-import-not-at-top
  with open(os.path.join(workdir, 'config.json'), encoding='utf-8') as f:
    config = ml_collections.ConfigDict(json.load(f))
  config.mesh = (1, 1, 1)
  setup = loop.build_setup(config, with_train_data=False, devices=jax.local_devices()[:1])
  # One device is enough to read parameters: restore onto a single-device mesh.
  params, _ = checkpointing.latest_params_from_workdir(workdir, setup.abstract_state)
  params = jax.tree.map(np.asarray, params)
  return checkpoint.canonicalize(params), setup.model_config, config.num_classes, config.image_size


def load_model(path: str, model_name: Optional[str] = None, *,
               image_size: Optional[int] = None) -> Loaded:
  """Model and canonical parameters of a workdir or `.npz`, at `image_size` if given."""
  if os.path.isdir(path):
    params, model_config, num_classes, native = _from_workdir(path)
    if model_name:
      raise ValueError(f'{path} is a workdir: its model comes from its config; drop --model.')
  elif os.path.exists(path):
    params = checkpoint.load(path)
    model_config, num_classes = checkpoint.infer_model_config(params)
    if model_name:
      model_config = model_configs.get_config(model_name)
    native = native_image_size(params, model_config) or 224
  else:
    raise FileNotFoundError(f'Checkpoint not found: {path} (expected a workdir or an .npz file).')
  model = models.VisionTransformer(num_classes=num_classes, **model_config)
  if image_size and image_size != native:
    shapes = jax.eval_shape(lambda: model.init(
        jax.random.key(0), np.zeros((1, image_size, image_size, 3), np.float32),
        train=False)['params'])
    params = checkpoint.adapt_params(params, shapes, source=path, reset_head=False)
    native = image_size
  return Loaded(model, params, model_config, num_classes, native)


def load_image(path: str, image_size: int) -> np.ndarray:
  """RGB image resized to [image_size, image_size, 3] with values in [-1, 1]."""
  if not os.path.exists(path):
    raise FileNotFoundError(f'Image not found: {path}')
  try:
    with Image.open(path) as image:
      image = image.convert('RGB').resize((image_size, image_size), Image.BILINEAR)
  except OSError as e:
    raise ValueError(f'Cannot decode image {path}: {e}') from e
  return np.asarray(image, np.float32) / 127.5 - 1.0
