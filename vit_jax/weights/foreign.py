"""Weights from the PyTorch ecosystem in: timm and Hugging Face files -> canonical tree + config.

Accepted: a Hugging Face model directory (`config.json` with its `model_type`, then
`model.safetensors`, sharded `model.safetensors.index.json`, or `pytorch_model.bin`), a
`.safetensors` file (timm or transformers names; a `config.json` or our `timm_model.json`
beside it is read when present), and `.bin`/`.pt`/`.pth` files, read only through
`torch.load(weights_only=True)`: a file that needs more (pickled code or objects) is refused.
What the file's configs say decides the fields they fix (timm's `config.json`: architecture,
model_args, global_pool, pretrained_cfg; transformers' `config.json` and
`preprocessor_config.json`); the shapes (`vit_jax.weights.architecture`) fill only what no config says.
"""

import dataclasses
import json
import os
import pickle
import re
from typing import Any, Optional

import ml_collections
import numpy as np

from vit_jax import errors
from vit_jax.weights import architecture
from vit_jax.configs import models as model_configs
from vit_jax.weights import hf_names
from vit_jax.weights import transforms
from vit_jax.weights import timm_archs
from vit_jax.weights import timm_config as timm_config_lib
from vit_jax.weights import timm_names

SAFETENSORS = ('.safetensors',)
PICKLED = ('.bin', '.pt', '.pth')
_WEIGHT_FILES = ('model.safetensors', 'model.safetensors.index.json', 'pytorch_model.bin')
TIMM_SPEC = 'timm_model.json'  # written by our timm export


def _config_says_foreign(path: str) -> bool:
  """A config.json of transformers (`model_type`) or of timm (`architecture`)."""
  config = os.path.join(path, 'config.json')
  if not os.path.isfile(config):
    return False
  try:
    with open(config, encoding='utf-8') as f:
      config = json.load(f)
  except (OSError, json.JSONDecodeError):
    return False
  return isinstance(config, dict) and ('model_type' in config or 'architecture' in config)


def handles(path: str) -> bool:
  """Whether `path` is a file or directory this module reads (not a workdir or an .npz)."""
  if os.path.isdir(path):
    if os.path.isdir(os.path.join(path, 'checkpoints')):
      return False
    return _config_says_foreign(path) or any(
        os.path.isfile(os.path.join(path, name)) for name in _WEIGHT_FILES)
  return path.endswith(SAFETENSORS + PICKLED)


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
  # safetensors and torch come with the export extra: imported when a file needs them.
  from safetensors import numpy as safetensors_numpy  # pylint: disable=g-import-not-at-top
  try:
    return dict(safetensors_numpy.load_file(path))
  except TypeError:  # bfloat16 and other dtypes numpy lacks: read through torch
    from safetensors import torch as safetensors_torch  # pylint: disable=g-import-not-at-top
    return {k: v.float().numpy() for k, v in safetensors_torch.load_file(path).items()}
  except Exception as e:  # safetensors raises its own error types for a bad header
    raise errors.UserError(
        f'{path} is not a readable safetensors file ({type(e).__name__}: {e}).') from e


def _read_pickled(path: str) -> dict[str, np.ndarray]:
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise errors.UserError(
        f'{path}: reading a PyTorch .bin needs torch (pip install -e ".[export]"), '
        'or convert it to safetensors.') from e
  try:
    state = torch.load(path, map_location='cpu', weights_only=True)
  except pickle.UnpicklingError as e:
    raise errors.UserError(
        f'{path} holds pickled code or objects beyond tensors; it is refused (only '
        'torch.load(weights_only=True) is used). Convert it to safetensors.') from e
  except Exception as e:  # truncated files, not a torch archive
    raise errors.UserError(f'{path} is not a readable PyTorch weights file ({type(e).__name__}: '
                           f'{str(e).splitlines()[0]}).') from e
  if isinstance(state, dict) and isinstance(state.get('state_dict'), dict):
    state = state['state_dict']
  if not isinstance(state, dict):
    raise errors.UserError(f'{path} holds a {type(state).__name__}, not a state dict of tensors.')
  return {k: v.float().numpy() for k, v in state.items() if hasattr(v, 'numpy')}


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """{name: float32 array} of a weights file or a Hugging Face directory."""
  if os.path.isdir(path):
    for name in _WEIGHT_FILES:
      candidate = os.path.join(path, name)
      if os.path.isfile(candidate):
        if name.endswith('.index.json'):
          with open(candidate, encoding='utf-8') as f:
            shards = sorted(set(json.load(f)['weight_map'].values()))
          state = {}
          for shard in shards:
            shard_path = os.path.join(path, shard)
            if not os.path.isfile(shard_path):
              raise errors.MissingFile(f'{shard_path}: a shard that {candidate} names is missing.')
            state.update(_read_safetensors(shard_path))
          return {k: np.asarray(v, np.float32) for k, v in state.items()}
        return read_state_dict(candidate)
    raise errors.MissingFile(f'{path} holds none of {", ".join(_WEIGHT_FILES)}.')
  if not os.path.isfile(path):
    raise errors.MissingFile(f'Checkpoint not found: {path}')
  if path.endswith(SAFETENSORS):
    state = _read_safetensors(path)
  else:
    state = _read_pickled(path)
  return {k: np.asarray(v, np.float32) for k, v in state.items()}


def _side_file(path: str, name: str) -> Optional[dict]:
  folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
  candidate = os.path.join(folder, name)
  if not os.path.isfile(candidate):
    return None
  with open(candidate, encoding='utf-8') as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as e:
      raise errors.UserError(f'{candidate} is not valid JSON ({e}).') from e


# A bare transformers file without its config.json: the family from its entries, and the
# defaults of that family's config class.
_HF_GUESSES = (('distillation_token', 'deit', 'gelu', 1e-12),
               ('layer_scale1', 'dinov2', 'gelu', 1e-6),
               ('pre_layrnorm', 'clip_vision_model', 'quick_gelu', 1e-5),
               ('position_embedding.weight', 'siglip_vision_model', 'gelu_pytorch_tanh', 1e-6),
               ('patch_embeddings.projection', 'vit', 'gelu', 1e-12))


def _guess_hf_config(state: dict[str, Any]) -> dict[str, Any]:
  for marker, model_type, act, eps in _HF_GUESSES:
    if any(marker in key for key in state):
      return {'model_type': model_type, 'hidden_act': act, 'layer_norm_eps': eps}
  return {}


# timm's size words -> ours (`vit_base_patch16_224`, `deit_small_distilled_patch16_224`, ...).
_TIMM_SIZE_WORDS = {'tiny': 'Ti', 'small': 'S', 'medium': 'M', 'base': 'B', 'large': 'L',
                    'so400m': 'So400m', 'huge': 'H', 'giant': 'g', 'gigantic': 'G'}
_TIMM_NAME = re.compile(r'^(?:vit|deit|deit3)_([a-z0-9]+)_(?:distilled_)?patch(\d+)')


def variant_of_timm_name(name: Optional[str]) -> Optional[str]:
  """Our short variant name (`B/16`) for a timm model name, or None when it names none."""
  match = _TIMM_NAME.match((name or '').lower())
  if not match or match.group(1) not in _TIMM_SIZE_WORDS:
    return None
  return f'{_TIMM_SIZE_WORDS[match.group(1)]}/{match.group(2)}'


@dataclasses.dataclass
class Imported:
  """A foreign checkpoint in our terms."""
  params: dict[str, Any]  # canonical tree
  model_config: ml_collections.ConfigDict
  num_classes: Optional[int]
  pp: Optional[str]  # the input transform it was trained with (a pp string), when the file says
  read: list[str]  # one line per thing taken from a config or assumed: what `convert` prints


def _from_hf(path, state, hf_config, model_name, read) -> tuple[dict, dict, Optional[str]]:
  """Params, fields and transform of a transformers file; `hf_config` is its config.json."""
  if hf_config is None or 'model_type' not in hf_names.vision_config(hf_config):
    guess = _guess_hf_config(state)
    if model_name in hf_names.FAMILIES:
      guess['model_type'] = model_name
    read.append(f'no config.json: assumed transformers {guess.get("model_type")!r} defaults '
                f'(hidden_act={guess.get("hidden_act")!r}, layer_norm_eps='
                f'{guess.get("layer_norm_eps")})')
    hf_config = {**guess, **(hf_config or {})}
  vision = hf_names.vision_config(hf_config)
  family = hf_names.family_of(vision, path)
  fields = hf_names.model_fields(vision, path)
  heads = vision.get('num_attention_heads')
  if not heads:
    raise errors.UserError(f'{path}: config.json has no num_attention_heads.')
  width = vision.get('hidden_size')
  if width and int(width) % int(heads):
    raise errors.UserError(f'{path}: config.json num_attention_heads={heads} does not divide '
                           f'hidden_size={width}.')
  params = hf_names.to_params(state, family, int(heads), path,
                              channels=int(vision.get('num_channels', 3)))
  fields.update(hf_names.pooling(params))
  read.append(f'config.json: model_type={vision.get("model_type")!r}, '
              + ', '.join(f'{k}={v!r}' for k, v in fields.items()) + f', num_heads={heads}')
  pp = input_transform(path)
  if pp is not None:
    read.append(f'preprocessor_config.json: {pp}')
  return params, {**fields, 'num_heads': int(heads)}, pp


def _from_timm(path, state, timm_config, model_name, read,
               naflex=False) -> tuple[dict, dict, Optional[str]]:
  """Params, fields and transform of a timm file; `timm_config` is its config.json; `naflex`:
  a NaFlexViT's state, renamed (`timm_names.from_naflex`)."""
  spec = _side_file(path, TIMM_SPEC)
  config_file = os.path.join(_folder(path), 'config.json')
  if spec:  # our own timm export: every field written out
    act = spec.get('args', {}).get('act_layer', 'gelu')
    fields = {'activation': timm_config_lib.ACTIVATIONS.get(act, 'gelu'),
              'layer_norm_eps': float(spec.get('layer_norm_eps', 1e-6)),
              'num_heads': spec.get('args', {}).get('num_heads'),
              'global_pool': spec.get('args', {}).get('global_pool')}
    read.append(f'{TIMM_SPEC}: ' + ', '.join(f'{k}={v!r}' for k, v in fields.items()))
  elif timm_config is not None and 'architecture' in timm_config:
    fields = timm_config_lib.fields(timm_config, config_file)
    read.append(f'config.json: architecture={timm_config["architecture"]!r}, '
                + ', '.join(f'{k}={v!r}' for k, v in fields.items()))
  else:
    name = (model_name or '').split('.')[0]
    if name in timm_archs.ARCHITECTURES:
      fields = timm_config_lib.fields({'architecture': name}, f'{path} (--model)')
    else:
      fields = {'activation': 'gelu', 'layer_norm_eps': 1e-6, 'num_heads': None,
                'global_pool': None}
    if naflex and name not in timm_archs.ARCHITECTURES:  # NaFlexVitCfg's defaults
      fields.update(dynamic_image_size=True, posemb_resize='bicubic')
    read.append(f'no config.json: assumed {fields["activation"]} MLPs, LayerNorm eps '
                f'{fields["layer_norm_eps"]:g}, timm\'s pooling default for these weights'
                + ('' if fields['num_heads'] else ' and heads by width')
                + (', a position table resized bicubically (NaFlexViT)' if naflex else ''))
  params, heads = timm_names.to_params(state, path, fields.pop('num_heads'),
                                       fields.get('map_heads'),
                                       posemb_prefix_rows=False if naflex else None)
  pool = timm_config_lib.classifier(fields.pop('global_pool'), 'cls' in params,
                                    'MAPHead_0' in params)
  fields.update(pool)
  pp = input_transform(path)
  if pp:
    read.append(f'pretrained_cfg: {pp}')
  return params, {**fields, 'num_heads': heads}, pp


def input_transform(path: str) -> Optional[str]:
  """The input transform a timm or Hugging Face checkpoint says it was trained with (a pp
  string), read from its side files alone: `preprocessor_config.json`, timm's `config.json`
  `pretrained_cfg`, or our `timm_model.json`; None when none says."""
  processor = _side_file(path, 'preprocessor_config.json')
  if processor is not None:
    return transforms.from_hf(processor, os.path.join(_folder(path), 'preprocessor_config.json'))
  for name in (TIMM_SPEC, 'config.json'):
    config = _side_file(path, name)
    if config and config.get('pretrained_cfg') and (name == TIMM_SPEC or 'architecture' in config):
      return transforms.from_timm(config['pretrained_cfg'], os.path.join(_folder(path), name))
  return None


def _folder(path: str) -> str:
  return path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))


def load(path: str, model_name: Optional[str] = None) -> Imported:
  """A timm or Hugging Face checkpoint in our terms: params, model config, classes, transform.

  What the file's configs say wins over the shapes. `model_name` may be one of our variant
  names or a timm model name (`vit_base_patch16_224`: its sizes replace the inferred ones), or
  a transformers `model_type` for a bare file without its config.json.
  """
  config = _side_file(path, 'config.json')
  if config and 'model_type' in config:  # a family we lack is refused before any weight is read
    hf_names.family_of(config, os.path.join(_folder(path), 'config.json'))
  state = read_state_dict(path)
  read = []
  if hf_names.looks_like(state):
    params, fields, pp = _from_hf(path, state, config, model_name, read)
  elif 'patch_embed.proj.weight' in state:
    params, fields, pp = _from_timm(path, state, config, model_name, read)
  elif 'embeds.proj.weight' in state:  # timm's NaFlexViT (naflexvit_*)
    params, fields, pp = _from_timm(path, timm_names.from_naflex(state, path), config,
                                    model_name, read, naflex=True)
  else:
    raise errors.UserError(
        f'{path}: neither timm (patch_embed.proj.weight) nor Hugging Face ViT-family '
        f'entries; first entries: {", ".join(sorted(state)[:8])}.')
  model_config, num_classes = architecture.infer(params)
  model_config.transformer.num_heads = int(fields.pop('num_heads'))
  variant = model_name if model_name in model_configs.MODEL_CONFIGS else variant_of_timm_name(
      model_name)
  if variant:
    named = model_configs.get_config(variant)
    named.update({k: v for k, v in model_config.items()
                  if k not in named or k in ('classifier', 'representation_size')})
    model_config = named
  model_config.update(fields)
  _check_classes(path, config or {}, num_classes)
  return Imported(params, model_config, num_classes, pp, read)


def _check_classes(path: str, config: dict, num_classes: Optional[int]) -> None:
  """A config's class count (timm num_classes, transformers id2label) must match the head."""
  said = config.get('num_classes')
  if said is None and isinstance(config.get('id2label'), dict) and 'ForImageClassification' in (
      ''.join(config.get('architectures') or [])):
    said = len(config['id2label'])
  if said is not None and said != (num_classes or 0):
    raise errors.UserError(f'{os.path.join(_folder(path), "config.json")}: num_classes={said} '
                           f'disagrees with the weights\' head ({num_classes or 0} classes).')
