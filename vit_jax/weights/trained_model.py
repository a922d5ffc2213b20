"""What every tool's `--checkpoint` accepts: a workdir, an `.npz`, a timm or Hugging Face checkpoint.

A workdir brings its config (`config.json`) and the parameters of its newest restorable
checkpoint (EMA parameters when the run kept them); only the model is built: no optimizer, no
data, nothing from training. A released or big_vision `.npz` brings only parameters: its
architecture (width, depth, heads, MLP size, patch size, pooling, representation layer, hybrid
stem, class count) is read off their shapes unless a variant name is given. timm and Hugging Face
files bring the fields their configs fix beyond the shapes (`vit_jax.weights.foreign`).
"""

import dataclasses
import json
from typing import Any, Optional

from absl import logging
import jax
import ml_collections
import numpy as np

from vit_jax import errors
from vit_jax import objectives
from vit_jax import storage
from vit_jax.configs import models as model_configs
from vit_jax.models import build
from vit_jax.models import geometry
from vit_jax.models import vit
from vit_jax.models.vit import VisionTransformer
from vit_jax.weights import adapt
from vit_jax.weights import architecture
from vit_jax.weights import foreign
from vit_jax.weights import npz
from vit_jax.weights import transforms
from vit_jax.weights import workdir_params


@dataclasses.dataclass
class TrainedModel:
  model: VisionTransformer
  params: Any  # canonical (per-layer) tree of numpy arrays
  model_config: ml_collections.ConfigDict
  num_classes: Optional[int]
  image_size: int  # the resolution the parameters are laid out for (posemb grid x patch stride)
  labels: Optional[list[str]] = None  # class names: a workdir's labels.txt, a HF id2label
  # The eval input transform it was trained with (image ops of our pp grammar, uint8 in): a
  # workdir's evaluator, a HF preprocessor_config.json, timm's pretrained_cfg, the official
  # [-1, 1] resize for a released .npz. `vit_jax.data.images.load` runs it on the host.
  pp: str = ''
  read: list[str] = dataclasses.field(default_factory=list)  # what a foreign file's configs gave
  # Whether the parameters are an average of the trained ones (EMA / Polyak): a workdir knows
  # (its ema_decay); a file does not say (None: as released).
  averaged: Optional[bool] = None


def read_run_config(workdir: str) -> ml_collections.ConfigDict:
  """A workdir's `config.json`; a clear error when the run never wrote it."""
  path = storage.path(workdir) / 'config.json'
  if not path.exists():
    raise errors.MissingFile(f'{workdir} is not a run directory: it has no config.json (a run '
                             'writes it before its first step; did this one start?).')
  try:
    return ml_collections.ConfigDict(json.loads(path.read_text(encoding='utf-8')))
  except json.JSONDecodeError as e:
    raise errors.UserError(f'{path} is not valid JSON ({e}).') from e


def _from_workdir(workdir: str
                  ) -> tuple[Any, ml_collections.ConfigDict, Optional[int], int, str, bool]:
  """(params, model config, classes, resolution, input transform, whether the parameters are
  the run's EMA) of a workdir."""
  config = read_run_config(workdir)
  _, model_config = build.from_run_config(config)
  _, params = workdir_params.read(workdir)
  pp = transforms.of_run(config)
  params, model_config, keeps_head = objectives.saved_backbone(
      config.get('objective') or 'classification', params, model_config, config.image_size)
  num_classes = config.num_classes if keeps_head else None
  if model_config.get('linear_probe'):
    params, model_config = fold_head_norm(params, model_config)
  return (npz.canonicalize(params), model_config, num_classes, config.image_size, pp,
          config.get('ema_decay') is not None)


def fold_head_norm(params: Any, model_config: ml_collections.ConfigDict
                   ) -> tuple[Any, ml_collections.ConfigDict]:
  """A linear probe as a plain classifier with the same inference logits: its head_norm
  (x - mean) / sqrt(var + eps) folded into the head's kernel and bias. What exports, `infer`
  and `init_from` read."""
  norm, head = params['head_norm'], params['head']
  scale = 1.0 / np.sqrt(np.asarray(norm['var'], np.float64) + vit.HeadNorm.epsilon)
  kernel = np.asarray(head['kernel'], np.float64)
  folded = {'kernel': (kernel * scale[:, None]).astype(np.float32),
            'bias': (np.asarray(head['bias'], np.float64)
                     - (np.asarray(norm['mean'], np.float64) * scale) @ kernel).astype(np.float32)}
  params = {**{k: v for k, v in params.items() if k != 'head_norm'}, 'head': folded}
  model_config = model_config.copy_and_resolve_references()
  model_config.linear_probe = False
  return params, model_config


def input_transform(path: str) -> str:
  """The input transform of a checkpoint without loading its weights: a timm/HF file's side
  files, a workdir's evaluator, the official [-1, 1] for an .npz."""
  if foreign.handles(path):
    return foreign.input_transform(path) or transforms.released(224)
  if storage.path(path).is_dir():
    config = read_run_config(path)
    return transforms.of_run(config)
  return transforms.released(224)


def load(path: str, model_name: Optional[str] = None, *,
         image_size: Optional[int] = None) -> TrainedModel:
  """Model and canonical parameters of a workdir or `.npz`, at `image_size` if given."""
  read, averaged = [], None
  if foreign.handles(path):
    imported = foreign.load(path, model_name)
    params, model_config, num_classes = (imported.params, imported.model_config,
                                         imported.num_classes)
    native = geometry.native_image_size(params, model_config) or 224
    pp = imported.pp or transforms.released(native)
    for line in imported.read:
      if line.startswith('no config.json'):  # what was guessed is said, in one line
        logging.warning('%s: %s', path, line)
    read = imported.read
  elif storage.path(path).is_dir():
    if model_name:
      raise errors.UserError(f'{path} is a workdir: its model comes from its config; drop --model.')
    params, model_config, num_classes, native, pp, averaged = _from_workdir(path)
  elif storage.path(path).exists():
    params = npz.read(path)
    model_config, num_classes = architecture.infer(params)
    if model_name:
      model_config = model_configs.get_config(model_name)
    native = geometry.native_image_size(params, model_config) or 224
    pp = transforms.released(native)
  else:
    raise errors.MissingFile(f'Checkpoint not found: {path} (expected a workdir, an .npz, or a '
                            'timm / Hugging Face file or directory).')
  model = VisionTransformer(num_classes=num_classes, **model_config)
  if image_size and image_size != native:
    geometry.check_image_size(image_size, model_config)
    shapes = geometry.abstract_params(model, image_size)
    params = adapt.adapt_params(params, shapes, source=path, reset_head=False)
    pp = transforms.resized(pp, native, image_size)
    native = image_size
  params = jax.tree.map(np.asarray, params)
  return TrainedModel(model, params, model_config, num_classes, native,
                      labels=read_labels(path, num_classes), pp=pp, read=read,
                      averaged=averaged)


def read_labels(path: str, num_classes: Optional[int]) -> Optional[list[str]]:
  """Class names stored with a checkpoint: a workdir's labels.txt or a Hugging Face config's
  id2label (ignored unless there is one name per class)."""
  location = storage.path(path)
  folder = location if location.is_dir() else location.parent
  names = None
  labels_path, config_path = folder / workdir_params.LABELS_FILE, folder / 'config.json'
  if labels_path.is_file():
    names = [line for line in labels_path.read_text(encoding='utf-8').splitlines() if line.strip()]
  elif foreign.handles(path) and config_path.is_file():
    id2label = json.loads(config_path.read_text(encoding='utf-8')).get('id2label') or {}
    names = [id2label.get(str(i), '') for i in range(len(id2label))]
  return names if names and num_classes and len(names) == num_classes else None
