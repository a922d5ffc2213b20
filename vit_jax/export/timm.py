"""timm: a safetensors state dict with timm's ViT names, and a JSON naming the timm model.

The JSON carries everything `timm.create_model(architecture, pretrained=False, **args)` needs to
build the matching model, the activation included: our default GELU is the tanh form, so
`act_layer` is `gelu_tanh` (timm's own default is the exact erf GELU).
"""

import json
import os
from typing import Any

from safetensors import numpy as safetensors_numpy

from vit_jax.export import torch_layouts

# (width, depth, heads) -> timm's size word.
_TIMM_SIZES = {(192, 12, 3): 'tiny', (384, 12, 6): 'small', (768, 12, 12): 'base',
               (1024, 24, 16): 'large', (1280, 32, 16): 'huge', (1408, 40, 16): 'giant',
               (1664, 48, 16): 'gigantic'}


def timm_model_spec(model_config, num_classes: int, image_size: int) -> dict[str, Any]:
  width, depth = model_config.hidden_size, model_config.transformer.num_layers
  heads, patch = model_config.transformer.num_heads, model_config.patches.size[0]
  size = _TIMM_SIZES.get((width, depth, heads))
  architecture = f'vit_{size}_patch{patch}_{image_size}' if size else 'vit_custom'
  gap = model_config.classifier == 'gap'
  return {
      'architecture': architecture,
      'args': {
          'img_size': image_size, 'patch_size': patch, 'embed_dim': width, 'depth': depth,
          'num_heads': heads, 'mlp_ratio': model_config.transformer.mlp_dim / width,
          'qkv_bias': True, 'num_classes': num_classes, 'class_token': not gap,
          'global_pool': 'avg' if gap else 'token', 'fc_norm': False,
          'act_layer': 'gelu_tanh' if model_config.get('gelu_approximate', True) else 'gelu',
      },
      'notes': 'Inputs are NCHW in [-1, 1] (mean 0.5, std 0.5); LayerNorm eps 1e-6.',
  }


def export(params: Any, model_config, num_classes: int, image_size: int, out_dir: str) -> str:
  torch_layouts.check_exportable(params, model_config, 'timm', allow_gap=True,
                                 allow_pre_logits=False)
  os.makedirs(out_dir, exist_ok=True)
  safetensors_numpy.save_file(torch_layouts.timm_state_dict(params, model_config, image_size),
                              os.path.join(out_dir, 'model.safetensors'),
                              metadata={'format': 'pt'})
  with open(os.path.join(out_dir, 'timm_model.json'), 'w', encoding='utf-8') as f:
    json.dump(timm_model_spec(model_config, num_classes, image_size), f, indent=2)
  return out_dir
