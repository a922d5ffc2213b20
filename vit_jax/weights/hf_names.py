"""Hugging Face transformers' vision models: names for the neutral roles, and model fields.

One table entry per family (the `model_type` of `config.json`): ViT (`ViTModel`,
`ViTForImageClassification`, and the same architecture as MAE, MSN and I-JEPA encoders), DeiT
(distilled: two heads, averaged; or the class head alone), DINOv2 with and without registers
(LayerScale, SwiGLU for ViT-g, the [cls, mean] classifier), CLIP and MetaCLIP 2 image towers
(pre-encoder norm, the projection as the head), SigLIP's image tower (MAP head), SigLIP 2's
NaFlex tower (SigLIP's, with a linear patch embedding; run it on `models.sequences.Sequences`),
DINOv3 (RoPE), BEiT and Data2Vec-vision (relative position bias), and AIMv2 (RMSNorm, a
patch norm, SwiGLU, attention pooling without MLP).
Families whose features we lack (`REFUSED`) are refused naming the feature. Entries under the model's
base prefix (`vit.`, `deit.`, `dinov2.`, `vision_model.`) are found wherever the file puts it.
"""

import dataclasses
import math
from typing import Any, Mapping, Optional

import numpy as np

from vit_jax import errors
from vit_jax.weights import torch_names


def _pairs(role: str, name: str) -> dict[str, str]:
  return {f'{role}.weight': f'{name}.weight', f'{role}.bias': f'{name}.bias'}


@dataclasses.dataclass(frozen=True)
class Family:
  top: dict[str, str]  # role -> name under the base prefix
  heads: dict[str, Any]  # role -> name (or alternatives) at the top of the file
  block_prefix: str
  block: dict[str, str]
  ignored: tuple[str, ...] = ()  # name prefixes that hold nothing of the image model
  fields: Optional[dict[str, Any]] = None  # model fields every checkpoint of the family has


VIT_TOP = {'cls': 'embeddings.cls_token', 'posemb': 'embeddings.position_embeddings',
            **_pairs('patch', 'embeddings.patch_embeddings.projection'),
            **_pairs('norm', 'layernorm'), **_pairs('pre_logits', 'pooler.dense')}
VIT_BLOCK = {**_pairs('query', 'attention.attention.query'),
              **_pairs('key', 'attention.attention.key'),
              **_pairs('value', 'attention.attention.value'),
              **_pairs('out', 'attention.output.dense'),
              **_pairs('fc1', 'intermediate.dense'), **_pairs('fc2', 'output.dense'),
              **_pairs('norm1', 'layernorm_before'), **_pairs('norm2', 'layernorm_after')}
_DINO_BLOCK = {**{k: v for k, v in VIT_BLOCK.items() if not k.startswith(('fc', 'norm'))},
               **_pairs('fc1', 'mlp.fc1'), **_pairs('fc2', 'mlp.fc2'),
               **_pairs('norm1', 'norm1'), **_pairs('norm2', 'norm2'),
               'ls1': 'layer_scale1.lambda1', 'ls2': 'layer_scale2.lambda1'}
_TOWER_BLOCK = {**_pairs('query', 'self_attn.q_proj'), **_pairs('key', 'self_attn.k_proj'),
                **_pairs('value', 'self_attn.v_proj'), **_pairs('out', 'self_attn.out_proj'),
                **_pairs('fc1', 'mlp.fc1'), **_pairs('fc2', 'mlp.fc2'),
                **_pairs('norm1', 'layer_norm1'), **_pairs('norm2', 'layer_norm2')}
_TOWER_IGNORED = ('text_model.', 'text_projection.', 'logit_scale', 'logit_bias',
                  'embeddings.position_ids')

VIT_BLOCK_PREFIX = 'encoder.layer.{}.'
_VIT = Family(top=VIT_TOP, heads=_pairs('head', 'classifier'),
              block_prefix=VIT_BLOCK_PREFIX, block=VIT_BLOCK,
              ignored=('embeddings.mask_token', 'decoder.'))  # ViTMAEForPreTraining's decoder
_DEIT = dataclasses.replace(
    _VIT, top={**VIT_TOP, 'dist': 'embeddings.distillation_token'},
    heads={'head.weight': ('cls_classifier.weight', 'classifier.weight'),
           'head.bias': ('cls_classifier.bias', 'classifier.bias'),
           **_pairs('head_dist', 'distillation_classifier')})
_DINOV2 = Family(
    top={**{k: v for k, v in VIT_TOP.items() if not k.startswith('pre_logits')},
         'registers': 'embeddings.register_tokens'},
    heads=_pairs('head', 'classifier'), block_prefix='encoder.layer.{}.', block=_DINO_BLOCK,
    ignored=('embeddings.mask_token',), fields={'layerscale': 1.0})
# DINOv2-g: a SwiGLU MLP, `weights_in` packing [gate, value] (SiLU whatever hidden_act says).
_DINOV2_SWIGLU = dataclasses.replace(
    _DINOV2, block={**_DINO_BLOCK, **_pairs('fc1', 'mlp.weights_in'),
                    **_pairs('fc2', 'mlp.weights_out')},
    fields={'layerscale': 1.0, 'gated_mlp': True, 'activation': 'silu'})
_CLIP = Family(
    top={'cls': 'embeddings.class_embedding', 'patch.weight': 'embeddings.patch_embedding.weight',
         'posemb': 'embeddings.position_embedding.weight', **_pairs('pre_norm', 'pre_layrnorm'),
         **_pairs('norm', 'post_layernorm')},
    heads={'head.weight': 'visual_projection.weight'}, block_prefix='encoder.layers.{}.',
    block=_TOWER_BLOCK, ignored=_TOWER_IGNORED, fields={'pre_norm': True})
_SIGLIP = Family(
    top={**_pairs('patch', 'embeddings.patch_embedding'),
         'posemb': 'embeddings.position_embedding.weight', **_pairs('norm', 'post_layernorm'),
         'map.probe': 'head.probe', 'map.in_proj.weight': 'head.attention.in_proj_weight',
         'map.in_proj.bias': 'head.attention.in_proj_bias',
         **_pairs('map.out', 'head.attention.out_proj'), **_pairs('map.norm', 'head.layernorm'),
         **_pairs('map.fc1', 'head.mlp.fc1'), **_pairs('map.fc2', 'head.mlp.fc2')},
    heads={}, block_prefix='encoder.layers.{}.', block=_TOWER_BLOCK, ignored=_TOWER_IGNORED)
# SigLIP 2 NaFlex: SigLIP's names; the patch embedding is a linear layer on flattened patches
# (row, column, channel), which `to_params` turns into the convolution's kernel.
_SIGLIP2 = dataclasses.replace(_SIGLIP)

# DINOv3: RoPE (no position table), registers, LayerScale; `gate_proj` + `up_proj` of a gated MLP
# are packed into one [gate, value] kernel.
_DINOV3 = Family(
    top={'cls': 'embeddings.cls_token', 'registers': 'embeddings.register_tokens',
         **_pairs('patch', 'embeddings.patch_embeddings'), **_pairs('norm', 'norm')},
    heads=_pairs('head', 'classifier'), block_prefix='layer.{}.',
    block={**_pairs('query', 'attention.q_proj'), **_pairs('key', 'attention.k_proj'),
           **_pairs('value', 'attention.v_proj'), **_pairs('out', 'attention.o_proj'),
           **_pairs('fc1', 'mlp.up_proj'), **_pairs('gate', 'mlp.gate_proj'),
           **_pairs('fc2', 'mlp.down_proj'), **_pairs('norm1', 'norm1'),
           **_pairs('norm2', 'norm2'), 'ls1': 'layer_scale1.lambda1',
           'ls2': 'layer_scale2.lambda1'},
    ignored=('embeddings.mask_token',), fields={'layerscale': 1.0, 'posemb': 'rope'})

# BEiT and Data2Vec-vision: relative position tables per block (`use_relative_position_bias`)
# or shared (`use_shared_relative_position_bias`), LayerScale as `lambda_1`/`lambda_2`, no key
# bias, and mean pooling through `pooler.layernorm` (our fc_norm) or the class token after
# `layernorm`.
_BEIT = Family(
    top={**{k: v for k, v in VIT_TOP.items() if not k.startswith('pre_logits')},
         **_pairs('fc_norm', 'pooler.layernorm'),
         'rel_bias': 'encoder.relative_position_bias.relative_position_bias_table'},
    heads=_pairs('head', 'classifier'), block_prefix=VIT_BLOCK_PREFIX,
    block={**VIT_BLOCK, 'ls1': 'lambda_1', 'ls2': 'lambda_2',
           'rel_bias': 'attention.attention.relative_position_bias.relative_position_bias_table'},
    ignored=('embeddings.mask_token',))

# AIMv2: RMSNorm throughout (a weight, no bias), a norm of the patch tokens before the position
# table, no class token, a SwiGLU MLP, and (`use_head`) a pooling head whose class token is the
# query itself (no projection) and that has no MLP: our MAP head with an identity query and no MLP.
_AIMV2 = Family(
    top={**_pairs('patch', 'embeddings.patch_embed'),
         'patch_norm.weight': 'embeddings.rms_norm.weight', 'posemb': 'embeddings.position_embedding.weight', 'norm.weight': 'rms_norm.weight',
         'map.probe': 'head.cls_token', **_pairs('map.key', 'head.k_proj'),
         **_pairs('map.value', 'head.v_proj'), **_pairs('map.out', 'head.output_proj')},
    heads={'head.weight': 'visual_projection.weight'}, block_prefix='encoder.layers.{}.',
    block={**_pairs('query', 'attention.q_proj'), **_pairs('key', 'attention.k_proj'),
           **_pairs('value', 'attention.v_proj'), **_pairs('out', 'attention.out_proj'),
           **_pairs('fc1', 'ffn.up_proj'), **_pairs('gate', 'ffn.gate_proj'),
           **_pairs('fc2', 'ffn.down_proj'), 'norm1.weight': 'rms_norm1.weight',
           'norm2.weight': 'rms_norm2.weight'},
    ignored=_TOWER_IGNORED, fields={'gated_mlp': True})

# model_type -> family: plain ViTs under other names (MAE, MSN, I-JEPA encoders) included.
FAMILIES = {'vit': _VIT, 'vit_mae': _VIT, 'vit_msn': _VIT, 'ijepa': _VIT, 'deit': _DEIT,
            'dinov2': _DINOV2, 'dinov2_with_registers': _DINOV2,
            'clip': _CLIP, 'clip_vision_model': _CLIP, 'metaclip_2': _CLIP,
            'metaclip_2_vision_model': _CLIP, 'siglip': _SIGLIP, 'siglip_vision_model': _SIGLIP,
            'siglip2': _SIGLIP2, 'siglip2_vision_model': _SIGLIP2,
            'dinov3_vit': _DINOV3, 'beit': _BEIT, 'data2vec-vision': _BEIT,
            'aimv2': _AIMV2, 'aimv2_vision_model': _AIMV2}
# model_type -> the feature our model lacks: refused naming it.
REFUSED = {'videomae': 'video tubelet embeddings', 'dinov3_convnext': 'a ConvNeXt (not a ViT)'}
# The patch projection's name in each family, for finding the base prefix of a file.
_PATCH_NAMES = ('embeddings.patch_embeddings.projection.weight',
                'embeddings.patch_embedding.weight', 'embeddings.patch_embeddings.weight',
                'embeddings.patch_embed.weight')

# transformers' `hidden_act` -> our `activation`.
ACTIVATIONS = {'gelu': 'gelu', 'gelu_pytorch_tanh': 'gelu_tanh', 'gelu_new': 'gelu_tanh',
               'quick_gelu': 'quick_gelu', 'silu': 'silu', 'swish': 'silu'}


def vision_config(config: Mapping[str, Any]) -> dict[str, Any]:
  """The image tower's part of a config.json (CLIP and SigLIP nest it under `vision_config`)."""
  config = dict(config)
  if 'vision_config' in config:
    config = {**config['vision_config'],
              'model_type': config.get('model_type', '') + '_vision_model'}
  return config


def family_of(config: Mapping[str, Any], source: str) -> Family:
  model_type = vision_config(config).get('model_type')
  if model_type in REFUSED:
    raise errors.UserError(f'{source}: Hugging Face model_type {model_type!r} uses '
                           f'{REFUSED[model_type]}, which our model lacks; it is refused.')
  if model_type not in FAMILIES:
    raise errors.UserError(f'{source}: Hugging Face model_type {model_type!r} is not supported; '
                           f'supported: {sorted(FAMILIES)}.')
  if vision_config(config).get('use_swiglu_ffn'):
    return _DINOV2_SWIGLU
  return FAMILIES[model_type]


def pooling(params: Mapping[str, Any]) -> dict[str, Any]:
  """The classifier fields the heads and tokens imply: a head on [cls, mean of patches]
  (Dinov2ForImageClassification), the mean of all tokens (I-JEPA: no class token), a DeiT
  classifier that reads the class token alone beside a distillation token."""
  width = params['embedding']['kernel'].shape[-1]
  if 'head' in params and params['head']['kernel'].shape[0] == 2 * width:
    return {'classifier': 'token_gap'}
  if 'cls' not in params:
    return {} if 'MAPHead_0' in params else {'classifier': 'gap'}
  if 'fc_norm' in params:  # BEiT's mean pooling: the patches' mean, then the norm
    return {'classifier': 'gap', 'class_token': True}
  if 'dist' in params and 'head' in params and 'head_dist' not in params:
    return {'distillation_head': False}
  return {}


def model_fields(config: Mapping[str, Any], source: str) -> dict[str, Any]:
  """Our model fields that a config.json fixes and the shapes cannot show."""
  config = vision_config(config)
  family = family_of(config, source)
  act = config.get('hidden_act', 'gelu')
  if act not in ACTIVATIONS:
    raise errors.UserError(f'{source}: hidden_act={act!r} is not supported; expected one of '
                           f'{sorted(ACTIVATIONS)}.')
  fields = {'activation': ACTIVATIONS[act],
            'layer_norm_eps': float(config.get('layer_norm_eps', 1e-12))}
  fields.update(family.fields or {})
  if family is _AIMV2:
    if config.get('is_native'):
      raise errors.UserError(f'{source}: AIMv2 is_native=true (a sin-cos table of any input '
                             'grid, width first) is not one we follow; it is refused.')
    fields['layer_norm_eps'] = float(config.get('rms_norm_eps', 1e-5))
  if family is _DINOV3:
    fields['rope_theta'] = float(config.get('rope_theta', 100.0))
    if config.get('use_gated_mlp'):
      fields['gated_mlp'] = True
  return fields


def base_prefix(state: Mapping[str, Any], source: str) -> str:
  for key in state:
    for name in _PATCH_NAMES:
      if key.endswith(name):
        return key[:-len(name)]
  raise errors.UserError(f'{source}: no patch embedding ({" or ".join(_PATCH_NAMES)}) found: not a '
                         'Hugging Face ViT-family vision model.')


def looks_like(state: Mapping[str, Any]) -> bool:
  return any(key.endswith(name) for key in state for name in _PATCH_NAMES)


def to_params(state: Mapping[str, np.ndarray], family: Family, num_heads: int,
              source: str, channels: int = 3) -> dict[str, Any]:
  """A transformers state dict -> our canonical tree; ValueError naming what is not understood.
  `channels`: the image channels of a linear patch embedding (SigLIP 2 NaFlex)."""
  base = base_prefix(state, source)
  top_names = {role: base + name for role, name in family.top.items()}
  top_names.update(family.heads)
  block_prefix = base + family.block_prefix
  if not any(k.startswith(block_prefix.format(0)) for k in state):
    block_prefix = family.block_prefix  # ViTMSN files keep their blocks outside `vit.`
  top, per_block, used = torch_names.read_roles(state, top_names, block_prefix, family.block)
  if base.startswith('ijepa') and 'pre_logits.weight' in top:
    raise errors.UserError(
        f'{source}: an I-JEPA pooler (a dense layer on the first patch token) has '
        'no place in our model; it is refused.')
  ignored = tuple(base + p for p in family.ignored) + family.ignored
  unknown = sorted(k for k in state if k not in used and not k.startswith(ignored))
  if unknown:
    raise errors.UserError(f'{source}: entries not understood for this family: '
                           f'{", ".join(unknown[:12])}{" ..." if len(unknown) > 12 else ""}')
  if top['patch.weight'].ndim == 2:  # [width, p * p * c] on patches flattened (row, col, channel)
    width, values = top['patch.weight'].shape
    side = math.isqrt(values // channels)
    if side * side * channels != values:
      raise errors.UserError(f'{source}: a linear patch embedding of {values} inputs is not '
                             f'square patches of {channels} channels.')
    top['patch.weight'] = top['patch.weight'].reshape(width, side, side, channels).transpose(
        0, 3, 1, 2)
  torch_names.split_fused(top, 'map.in_proj', ('map.query', 'map.key', 'map.value'))
  for arrays in per_block:  # a gated MLP's gate and value projections: one packed kernel
    if 'gate.weight' in arrays:
      torch_names.join_fused(arrays, 'fc1', ('gate', 'fc1'))
  return torch_names.from_roles(top, per_block, num_heads)


def vit_state_dict(params: Any, model_config, image_size: int) -> dict[str, np.ndarray]:
  """Our canonical tree -> transformers' ViTForImageClassification state dict."""
  top, per_block = torch_names.to_roles(params, model_config, image_size)
  names = {role: f'vit.{name}' for role, name in VIT_TOP.items()}
  names.update(_VIT.heads)
  return torch_names.name_roles(top, per_block, names, 'vit.' + _VIT.block_prefix, VIT_BLOCK)
