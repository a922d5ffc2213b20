"""Weights from the PyTorch ecosystem in: timm and Hugging Face files -> canonical tree + config.

Accepted: a Hugging Face model directory (`config.json` with its `model_type`, then
`model.safetensors`, sharded `model.safetensors.index.json`, or `pytorch_model.bin`), a
`.safetensors` file (timm or transformers names; a `config.json` or our `timm_model.json`
beside it is read when present), and `.bin`/`.pt`/`.pth` files, read only through
`torch.load(weights_only=True)`: a file that needs more (pickled code or objects) is refused.
The architecture comes from the shapes (`vit_jax.architecture`) plus what the file's config says
and the shapes cannot (activation, LayerNorm epsilon).
"""

import json
import os
import pickle
import re
from typing import Any, Optional

import ml_collections
import numpy as np

from vit_jax import architecture
from vit_jax.configs import models as model_configs
from vit_jax.formats import hf_layout
from vit_jax.formats import timm_layout

SAFETENSORS = ('.safetensors',)
PICKLED = ('.bin', '.pt', '.pth')
_WEIGHT_FILES = ('model.safetensors', 'model.safetensors.index.json', 'pytorch_model.bin')
TIMM_SPEC = 'timm_model.json'  # written by our timm export


def _is_hf_dir(path: str) -> bool:
  config = os.path.join(path, 'config.json')
  if not os.path.isfile(config):
    return False
  try:
    with open(config, encoding='utf-8') as f:
      return 'model_type' in json.load(f)
  except (OSError, json.JSONDecodeError):
    return False


def handles(path: str) -> bool:
  """Whether `path` is a file or directory this module reads (not a workdir or an .npz)."""
  if os.path.isdir(path):
    return _is_hf_dir(path) or (os.path.isfile(os.path.join(path, 'model.safetensors'))
                                and not os.path.isdir(os.path.join(path, 'checkpoints')))
  return path.endswith(SAFETENSORS + PICKLED)


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
  from safetensors import numpy as safetensors_numpy  # pylint: disable=g-import-not-at-top
  try:
    return dict(safetensors_numpy.load_file(path))
  except TypeError:  # bfloat16 and other dtypes numpy lacks: read through torch
    from safetensors import torch as safetensors_torch  # pylint: disable=g-import-not-at-top
    return {k: v.float().numpy() for k, v in safetensors_torch.load_file(path).items()}
  except Exception as e:  # safetensors raises its own error types for a bad header
    raise ValueError(f'{path} is not a readable safetensors file ({type(e).__name__}: {e}).') from e


def _read_pickled(path: str) -> dict[str, np.ndarray]:
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ValueError(f'{path}: reading a PyTorch .bin needs torch (pip install -e ".[export]"), '
                     'or convert it to safetensors.') from e
  try:
    state = torch.load(path, map_location='cpu', weights_only=True)
  except pickle.UnpicklingError as e:
    raise ValueError(f'{path} holds pickled code or objects beyond tensors; it is refused (only '
                     'torch.load(weights_only=True) is used). Convert it to safetensors.') from e
  except Exception as e:  # truncated files, not a torch archive
    raise ValueError(f'{path} is not a readable PyTorch weights file ({type(e).__name__}: '
                     f'{str(e).splitlines()[0]}).') from e
  if isinstance(state, dict) and isinstance(state.get('state_dict'), dict):
    state = state['state_dict']
  if not isinstance(state, dict):
    raise ValueError(f'{path} holds a {type(state).__name__}, not a state dict of tensors.')
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
            state.update(_read_safetensors(os.path.join(path, shard)))
          return state
        return read_state_dict(candidate)
    raise FileNotFoundError(f'{path} holds none of {", ".join(_WEIGHT_FILES)}.')
  if not os.path.isfile(path):
    raise FileNotFoundError(f'Checkpoint not found: {path}')
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
      raise ValueError(f'{candidate} is not valid JSON ({e}).') from e


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


def _timm_fields(spec: Optional[dict], model_name: Optional[str]) -> dict[str, Any]:
  """Activation and epsilon of a timm file: from our timm_model.json, else timm's defaults (erf
  GELU, eps 1e-6) with the name's hints (`quickgelu`, `siglip`)."""
  if spec:
    act = spec.get('args', {}).get('act_layer', 'gelu')
    return {'activation': {'gelu_tanh': 'gelu_tanh', 'quick_gelu': 'quick_gelu'}.get(act, 'gelu'),
            'layer_norm_eps': float(spec.get('layer_norm_eps', 1e-6))}
  name = (model_name or '').lower()
  act = 'quick_gelu' if 'quickgelu' in name else 'gelu_tanh' if 'siglip' in name else 'gelu'
  return {'activation': act, 'layer_norm_eps': 1e-6}


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


def load(path: str, model_name: Optional[str] = None
         ) -> tuple[dict[str, Any], ml_collections.ConfigDict, Optional[int]]:
  """(canonical params, model config, class count) of a timm or Hugging Face checkpoint.

  `model_name` may be one of our variant names or a timm model name (`vit_base_patch16_224`:
  its sizes replace the inferred ones, its activation hints are used), or a transformers
  `model_type` for a bare file without its config.json.
  """
  state = read_state_dict(path)
  hf_config = _side_file(path, 'config.json')
  if hf_layout.looks_like(state):
    if hf_config is None or 'model_type' not in hf_layout.vision_config(hf_config):
      guess = _guess_hf_config(state)
      if model_name in hf_layout.FAMILIES:
        guess['model_type'] = model_name
      hf_config = {**guess, **(hf_config or {})}
    vision = hf_layout.vision_config(hf_config)
    family = hf_layout.family_of(vision, path)
    fields = hf_layout.model_fields(vision, path)
    heads = vision.get('num_attention_heads')
    if not heads:
      raise ValueError(f'{path}: its config.json has no num_attention_heads.')
    params = hf_layout.to_params(state, family, int(heads), path)
  elif 'patch_embed.proj.weight' in state:
    spec = _side_file(path, TIMM_SPEC)
    heads = (spec or {}).get('args', {}).get('num_heads')
    params, heads = timm_layout.to_params(state, path, heads)
    fields = _timm_fields(spec, model_name)
  else:
    raise ValueError(f'{path}: neither timm (patch_embed.proj.weight) nor Hugging Face ViT-family '
                     f'entries; first entries: {", ".join(sorted(state)[:8])}.')
  model_config, num_classes = architecture.infer(params)
  model_config.transformer.num_heads = int(heads)
  variant = model_name if model_name in model_configs.MODEL_CONFIGS else variant_of_timm_name(
      model_name)
  if variant:
    named = model_configs.get_config(variant)
    named.update({k: v for k, v in model_config.items()
                  if k not in named or k in ('classifier', 'representation_size')})
    model_config = named
  model_config.update(fields)
  return params, model_config, num_classes
