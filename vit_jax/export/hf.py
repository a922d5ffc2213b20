"""Hugging Face: a directory `transformers.ViTForImageClassification.from_pretrained` loads;
with `export_siglip2`, one `transformers.Siglip2VisionModel.from_pretrained` loads (NaFlex).

config.json (sizes, labels, `hidden_act` = `gelu_pytorch_tanh` for our default tanh GELU,
`layer_norm_eps` 1e-6), model.safetensors, and preprocessor_config.json (the model's own input
transform: [-1, 1] for the official models, an imported model's statistics otherwise). The model classifies from the cls token, so
only `classifier='token'` models without a representation layer fit.
"""

import json
import math
import os
from typing import Any, Optional, Sequence

from safetensors import numpy as safetensors_numpy

from vit_jax import errors
from vit_jax.models import geometry
from vit_jax.models.vit import activation_name
from vit_jax.weights import hf_names
from vit_jax.weights import transforms
from vit_jax.weights import torch_names


_HF_ACT = {'gelu_tanh': 'gelu_pytorch_tanh', 'gelu': 'gelu', 'quick_gelu': 'quick_gelu'}


def hf_config(model_config, num_classes: int, image_size: int,
              labels: Optional[Sequence[str]] = None) -> dict[str, Any]:
  patch_h, patch_w = model_config.patches.size
  if patch_h != patch_w:
    raise errors.UserError(
        f'Hugging Face ViT needs square patches; got patches.size={(patch_h, patch_w)}.')
  labels = list(labels) if labels else [f'LABEL_{i}' for i in range(num_classes or 0)]
  model = geometry.model_of(model_config)  # every field, with the model's defaults
  return {
      # A headless encoder (an MAE encoder) is a ViTModel: last_hidden_state, no pooler.
      'architectures': ['ViTForImageClassification' if num_classes else 'ViTModel'],
      'model_type': 'vit',
      'hidden_size': model_config.hidden_size,
      'num_hidden_layers': model_config.transformer.num_layers,
      'num_attention_heads': model_config.transformer.num_heads,
      'intermediate_size': model_config.transformer.mlp_dim,
      'hidden_act': _HF_ACT[activation_name(model.activation, model.gelu_approximate)],
      'hidden_dropout_prob': 0.0,
      'attention_probs_dropout_prob': 0.0,
      'initializer_range': 0.02,
      'layer_norm_eps': model.layer_norm_eps,
      'image_size': image_size,
      'patch_size': patch_h,
      'num_channels': 3,
      'qkv_bias': True,
      'encoder_stride': patch_h,
      'id2label': {str(i): name for i, name in enumerate(labels)},
      'label2id': {name: i for i, name in enumerate(labels)},
      'dtype': 'float32',
  }


def export(params: Any, model_config, num_classes: int, image_size: int, out_dir: str,
           labels: Optional[Sequence[str]] = None, pp: Optional[str] = None) -> str:
  """Writes the directory; `pp`, the model's input transform, becomes preprocessor_config.json
  (default: the official [-1, 1] resize)."""
  torch_names.check_exportable(params, model_config, 'Hugging Face ViT', allow_gap=False,
                                 allow_pre_logits=False, allow_headless=True)
  torch_names.check_table_grid(params, model_config, image_size, 'Hugging Face ViT')
  return _write(out_dir, hf_config(model_config, num_classes, image_size, labels),
                hf_names.vit_state_dict(params, model_config, image_size),
                transforms.to_hf(pp or transforms.released(image_size), image_size))


def export_siglip2(params: Any, model_config, num_classes: Optional[int], out_dir: str) -> str:
  """A MAP-pooled tower without class token or head as transformers' `Siglip2VisionModel`
  (NaFlex: a linear patch embedding on flattened patches, a square position table resized per
  image): config.json and model.safetensors. Anything the format cannot hold is refused."""
  model = geometry.model_of(model_config)
  table = params['Transformer'].get('posembed_input', {}).get('pos_embedding')
  side = 0 if table is None else math.isqrt(table.shape[1])
  lacking = {'a MAP head': model.classifier == 'map', 'no class token': 'cls' not in params,
             'no head (a tower)': not num_classes and 'head' not in params,
             'a learned square position table': table is not None and side * side == table.shape[1],
             'no representation layer': 'pre_logits' not in params,
             'no registers, LayerScale, QK-norm, pre-norm, fc_norm or gated MLP': not (
                 model.num_registers or model.layerscale or model.qk_norm or model.pre_norm
                 or model.fc_norm or model.gated_mlp)}
  torch_names.refuse_lacking('Siglip2VisionModel holds a SigLIP-style tower; this model lacks: ',
                             lacking)
  top, per_block = torch_names.to_roles(params, model_config, side * model.patches['size'][0])
  width = top['patch.weight'].shape[0]
  # OIHW -> [width, p * p * 3] on patches flattened (row, column, channel).
  top['patch.weight'] = top['patch.weight'].transpose(0, 2, 3, 1).reshape(width, -1)
  top['posemb'] = top['posemb'].reshape(-1, width)
  torch_names.join_fused(top, 'map.in_proj', ('map.query', 'map.key', 'map.value'))
  family = hf_names.FAMILIES['siglip2_vision_model']
  names = {role: f'vision_model.{name}' for role, name in family.top.items()}
  state = torch_names.name_roles(top, per_block, names, 'vision_model.' + family.block_prefix,
                                 family.block)
  patch = model_config.patches.size[0]
  config = {
      'architectures': ['Siglip2VisionModel'], 'model_type': 'siglip2_vision_model',
      'hidden_size': model_config.hidden_size,
      'intermediate_size': model_config.transformer.mlp_dim,
      'num_hidden_layers': model_config.transformer.num_layers,
      'num_attention_heads': model_config.transformer.num_heads, 'num_channels': 3,
      'num_patches': side * side, 'patch_size': patch,
      'hidden_act': _HF_ACT[activation_name(model.activation, model.gelu_approximate)],
      'layer_norm_eps': model.layer_norm_eps, 'attention_dropout': 0.0, 'dtype': 'float32'}
  return _write(out_dir, config, state)


def export_beit(params: Any, model_config, num_classes: Optional[int], image_size: int,
                out_dir: str, labels: Optional[Sequence[str]] = None,
                pp: Optional[str] = None) -> str:
  """transformers' BEiT (`BeitForImageClassification`, or `BeitModel` without a head): relative
  position tables per block or shared, an absolute table or none, LayerScale, mean pooling +
  norm (`gap` with a class token and `fc_norm`) or the class token. BEiT's key has no bias: ours
  adds the same `q . b_k` to every logit of a query, which the softmax ignores, so it is dropped.
  Anything else the format cannot hold is refused in one line."""
  model = geometry.model_of(model_config)
  mean_pooling = model.classifier == 'gap' and model.fc_norm and model.has_class_token
  lacking = {
      'a class token': model.has_class_token,
      "the class token's logits or mean pooling + norm (classifier='token', or 'gap' with "
      'class_token and fc_norm)': mean_pooling or (model.classifier == 'token'
                                                   and not model.fc_norm),
      'square patches': model.patches['size'][0] == model.patches['size'][1],
      'a LayerNorm model without registers, distillation, QK-norm, pre-norm, SwiGLU, rotary '
      'embeddings, inner norms, a patch norm, a representation layer or a hybrid stem': not (
          model.num_registers or model.distilled or model.qk_norm or model.pre_norm
          or model.gated_mlp or model.rope != 'none' or model.posemb == 'rope'
          or model.norm != 'layer' or model.attn_inner_norm or model.mlp_inner_norm
          or model.patch_norm or model.representation_size or model.resnet is not None),
  }
  torch_names.refuse_lacking('The hf_beit format (BeitForImageClassification) holds a BEiT; '
                             'this model lacks: ', lacking)
  absolute = model.posemb != 'none'
  if absolute:
    torch_names.check_table_grid(params, model_config, image_size, 'hf_beit')
  top, per_block = torch_names.to_roles(params, model_config, image_size)
  if not absolute:
    top.pop('posemb', None)
  for arrays in per_block:
    arrays.pop('key.bias')  # the softmax ignores it (see above)
  family = hf_names.FAMILIES['beit']
  prefix = 'beit.' if num_classes else ''
  names = {role: prefix + name for role, name in family.top.items()}
  names.update(family.heads)
  unnamed = sorted({r for r in top if r not in names}
                   | {r for arrays in per_block for r in arrays if r not in family.block})
  if unnamed:  # a bug of ours: the gate above lets through a role BEiT has no name for
    raise AssertionError(f'BEiT export: roles without a name: {unnamed}')
  state = torch_names.name_roles(top, per_block, names, prefix + family.block_prefix,
                                 family.block)
  labels = list(labels) if labels else [f'LABEL_{i}' for i in range(num_classes or 0)]
  config = {
      'architectures': ['BeitForImageClassification' if num_classes else 'BeitModel'],
      'model_type': 'beit', 'hidden_size': model.hidden_size,
      'num_hidden_layers': model.transformer['num_layers'],
      'num_attention_heads': model.transformer['num_heads'],
      'intermediate_size': model.transformer['mlp_dim'],
      'hidden_act': _HF_ACT[activation_name(model.activation, model.gelu_approximate)],
      'hidden_dropout_prob': 0.0, 'attention_probs_dropout_prob': 0.0, 'drop_path_rate': 0.0,
      'layer_norm_eps': model.layer_norm_eps, 'image_size': image_size,
      'patch_size': model.patches['size'][0], 'num_channels': 3, 'use_mask_token': False,
      'use_absolute_position_embeddings': absolute,
      'use_relative_position_bias': bool(model.rel_pos_bias),
      'use_shared_relative_position_bias': bool(model.shared_rel_pos_bias),
      # 0 builds no LayerScale; any other value only initialises the scales we write.
      'layer_scale_init_value': 0.1 if model.layerscale else 0.0,
      'use_mean_pooling': bool(mean_pooling),
      'id2label': {str(i): name for i, name in enumerate(labels)},
      'label2id': {name: i for i, name in enumerate(labels)}, 'dtype': 'float32'}
  return _write(out_dir, config, state,
                transforms.to_hf(pp or transforms.released(image_size), image_size))


def export_aimv2(params: Any, model_config, num_classes: Optional[int], image_size: int,
                 out_dir: str) -> str:
  """transformers' `Aimv2VisionModel` (an image tower, no classification head): RMSNorm
  throughout, a norm of the patch tokens, SwiGLU, a square table without prefix rows, and its
  pooling head (our MAP head without MLP: the probe's query projection, a constant, becomes the
  head's query token) or mean pooling. Written with `qkv_bias` and `mlp_bias`, so biases trained
  here are kept. Anything else is refused in one line."""
  model = geometry.model_of(model_config)
  pooling = ((model.classifier == 'map' and model.map_mlp is False and not model.map_heads)
             or (model.classifier == 'gap' and not model.fc_norm))
  lacking = {
      'RMSNorm, a patch norm and a SiLU-gated MLP': (
          model.norm == 'rms' and model.patch_norm and model.gated_mlp
          and model.activation == 'silu'),
      'a MAP head without MLP or mean pooling': pooling,
      'no class token, registers, LayerScale, QK-norm, pre-norm, rotary or relative positions, '
      'inner norms, representation layer or hybrid stem': not torch_names.beyond_aimv2(model),
      'no classification head (a tower)': not num_classes and 'head' not in params,
      'square patches': model.patches['size'][0] == model.patches['size'][1],
  }
  torch_names.refuse_lacking('Aimv2VisionModel holds an AIMv2 image tower; this model lacks: ',
                             lacking)
  torch_names.check_table_grid(params, model_config, image_size, 'Aimv2VisionModel')
  top, per_block = torch_names.to_roles(params, model_config, image_size)
  width = top['patch.weight'].shape[0]
  top['posemb'] = top['posemb'].reshape(-1, width)
  if model.classifier == 'map':  # the query token: the probe through its (constant) projection
    probe = top.pop('map.probe').reshape(1, width)
    query = probe @ top.pop('map.query.weight').T + top.pop('map.query.bias')
    top['map.probe'] = query.reshape(1, 1, width)
  for arrays in per_block:  # SwiGLU: [gate, value] unpacked
    torch_names.split_fused(arrays, 'fc1', ('gate', 'fc1'))
  family = hf_names.FAMILIES['aimv2_vision_model']
  block = {**family.block, **_bias_names(family.block)}
  names = {**family.top, **_bias_names(family.top)}
  unnamed = sorted({r for r in top if r not in names}
                   | {r for arrays in per_block for r in arrays if r not in block})
  if unnamed:  # a bug of ours: the gate above lets through a role AIMv2 has no name for
    raise AssertionError(f'AIMv2 export: roles without a name: {unnamed}')
  state = torch_names.name_roles(top, per_block, names, family.block_prefix, block)
  config = {
      'architectures': ['Aimv2VisionModel'], 'model_type': 'aimv2_vision_model',
      'hidden_size': width, 'intermediate_size': model.transformer['mlp_dim'],
      'num_hidden_layers': model.transformer['num_layers'],
      'num_attention_heads': model.transformer['num_heads'], 'num_channels': 3,
      'image_size': image_size, 'patch_size': model.patches['size'][0],
      'rms_norm_eps': model.layer_norm_eps, 'attention_dropout': 0.0, 'qkv_bias': True,
      'mlp_bias': True, 'hidden_act': 'silu', 'use_head': model.classifier == 'map',
      'is_native': False, 'dtype': 'float32'}
  return _write(out_dir, config, state)


def _bias_names(names: dict[str, str]) -> dict[str, str]:
  """AIMv2's family table reads bias-free files; written with biases, each weight's `.bias`
  (its RMSNorms have none)."""
  return {role[:-len('.weight')] + '.bias': name[:-len('.weight')] + '.bias'
          for role, name in names.items()
          if role.endswith('.weight') and not role.startswith(('norm', 'patch_norm'))}


def _write(out_dir: str, config: dict[str, Any], state: dict[str, Any],
           processor: Optional[dict[str, Any]] = None) -> str:
  """config.json, model.safetensors and (given) preprocessor_config.json into `out_dir`."""
  os.makedirs(out_dir, exist_ok=True)
  files = {'config.json': config, 'preprocessor_config.json': processor}
  for name, content in files.items():
    if content is not None:
      with open(os.path.join(out_dir, name), 'w', encoding='utf-8') as f:
        json.dump(content, f, indent=2)
  safetensors_numpy.save_file(state, os.path.join(out_dir, 'model.safetensors'),
                              metadata={'format': 'pt'})
  return out_dir
