"""timm: a safetensors state dict with timm's ViT names, timm's own `config.json`, and our JSON.

`config.json` is what timm's `save_for_hf` writes (architecture, model_args, pretrained_cfg),
so `timm.create_model('local-dir:<dir>', pretrained=True)` builds and loads the model; it is
left out when no timm architecture has the model's LayerNorm epsilon. `timm_model.json` carries
everything `timm.create_model(architecture, pretrained=False, **args)` needs plus the epsilon,
the activation included: our default GELU is the tanh form, so `act_layer` is `gelu_tanh`
(timm's own default is the exact erf GELU).
"""

import json
import os
from typing import Any, Optional

from safetensors import numpy as safetensors_numpy

from vit_jax.weights import preprocessing
from vit_jax.weights import timm_archs
from vit_jax.weights import timm_names
from vit_jax.weights import torch_names
from vit_jax.models import geometry
from vit_jax.models.vit import activation_name

SPEC_FILE = 'timm_model.json'

# (width, depth, heads) -> timm's size word.
_TIMM_SIZES = {(192, 12, 3): 'tiny', (384, 12, 6): 'small', (768, 12, 12): 'base',
               (1024, 24, 16): 'large', (1280, 32, 16): 'huge', (1408, 40, 16): 'giant',
               (1664, 48, 16): 'gigantic'}


_TIMM_ACT = {'gelu_tanh': 'gelu_tanh', 'gelu': 'gelu', 'quick_gelu': 'quick_gelu', 'silu': 'silu'}


def timm_model_spec(model_config, num_classes: int, image_size: int,
                    pp: Optional[str] = None) -> dict[str, Any]:
  """The `timm.create_model` name and args that build the model our state dict fills, and
  timm's `pretrained_cfg` input fields for the model's input transform `pp`."""
  model = geometry.model_of(model_config)  # every field, with the model's defaults
  width, depth = model.hidden_size, model.transformer['num_layers']
  heads, patch = model.transformer['num_heads'], model.patches['size'][0]
  size = _TIMM_SIZES.get((width, depth, heads))
  distilled = model.distilled
  family = 'deit' if distilled else 'vit'
  architecture = (f'{family}_{size}_{"distilled_" if distilled else ""}patch{patch}_{image_size}'
                  if size else f'{family}_custom')
  pool = {'gap': 'avg', 'map': 'map'}.get(model.classifier, 'token')
  registers = model.num_registers
  args = {
      'img_size': image_size, 'patch_size': patch, 'embed_dim': width, 'depth': depth,
      'num_heads': heads, 'mlp_ratio': model.transformer['mlp_dim'] / width,
      'qkv_bias': True, 'num_classes': num_classes, 'class_token': model.has_class_token,
      'global_pool': pool, 'fc_norm': model.fc_norm,
      'act_layer': _TIMM_ACT[activation_name(model.activation, model.gelu_approximate)],
      'reg_tokens': registers, 'no_embed_class': bool(registers),
      'init_values': model.layerscale, 'qk_norm': model.qk_norm, 'pre_norm': model.pre_norm,
  }
  return {
      'architecture': architecture,
      'args': args,
      'pretrained_cfg': preprocessing.to_timm(pp or preprocessing.released(image_size),
                                              image_size),
      'layer_norm_eps': model.layer_norm_eps,
      'notes': ('Inputs are NCHW in [-1, 1] (mean 0.5, std 0.5). timm builds LayerNorm with '
                'eps 1e-6; pass norm_layer=partial(nn.LayerNorm, eps=layer_norm_eps) for another.'
                + (' Distilled: build with timm.models.deit.VisionTransformerDistilled.'
                   if distilled else '')),
  }


def _base_architecture(model_config, preferred: str) -> Optional[str]:
  """A timm architecture whose fixed choices (LayerNorm eps, MLP kind, distillation) are ours:
  `model_args` then set everything else. None when timm has none."""
  model = geometry.model_of(model_config)
  eps, gated, distilled = float(model.layer_norm_eps), model.gated_mlp, model.distilled

  def fits(name):
    entry = timm_archs.ARCHITECTURES.get(name)
    return (isinstance(entry, tuple) and len(entry) == 4  # no other fields (RoPE, RMSNorm)
            and entry[2] == eps and entry[3] == gated
            and ('distilled' in name) == distilled and name.startswith(('vit_', 'deit_')))
  if fits(preferred):
    return preferred
  return next((name for name in sorted(timm_archs.ARCHITECTURES) if fits(name)), None)


def timm_hf_config(model_config, num_classes: int, image_size: int,
                   pp: Optional[str] = None) -> Optional[dict[str, Any]]:
  """timm's own `config.json` (what `save_for_hf` writes: architecture, num_classes,
  global_pool, model_args, pretrained_cfg), so `timm.create_model('local-dir:<dir>',
  pretrained=True)` or the Hub builds the model; None when no timm architecture has our LayerNorm
  epsilon and MLP kind (model_args cannot set those)."""
  spec = timm_model_spec(model_config, num_classes, image_size, pp)
  architecture = _base_architecture(model_config, spec['architecture'])
  if architecture is None:
    return None
  args = dict(spec['args'])
  hidden = model_config.transformer.mlp_dim * (2 if model_config.get('gated_mlp') else 1)
  ratio = hidden / args['embed_dim']
  if int(args['embed_dim'] * ratio) != hidden:  # timm takes int(embed_dim * mlp_ratio)
    ratio = (hidden + 1e-6) / args['embed_dim']
  args.update(mlp_ratio=ratio, dynamic_img_size=False)
  if model_config.get('gated_mlp'):
    del args['act_layer']  # the architecture's SwiGLU with SiLU
  pretrained_cfg = {**spec['pretrained_cfg'], 'num_classes': num_classes,
                    'first_conv': 'patch_embed.proj', 'classifier': 'head',
                    'fixed_input_size': True}
  return {'architecture': architecture, 'num_classes': num_classes,
          'num_features': model_config.hidden_size, 'global_pool': args['global_pool'],
          'model_args': args, 'pretrained_cfg': pretrained_cfg}


def export(params: Any, model_config, num_classes: int, image_size: int, out_dir: str,
           pp: Optional[str] = None) -> str:
  torch_names.check_exportable(params, model_config, 'timm', allow_gap=True, allow_headless=True,
                                 allow_pre_logits=False, allow_map=True, allow_features=True)
  num_classes = num_classes or 0  # a headless encoder: timm's num_classes=0 (no head)
  os.makedirs(out_dir, exist_ok=True)
  safetensors_numpy.save_file(timm_names.state_dict(params, model_config, image_size),
                              os.path.join(out_dir, 'model.safetensors'),
                              metadata={'format': 'pt'})
  with open(os.path.join(out_dir, SPEC_FILE), 'w', encoding='utf-8') as f:
    json.dump(timm_model_spec(model_config, num_classes, image_size, pp), f, indent=2)
  config = timm_hf_config(model_config, num_classes, image_size, pp)
  if config is not None:
    with open(os.path.join(out_dir, 'config.json'), 'w', encoding='utf-8') as f:
      json.dump(config, f, indent=2)
  return out_dir
