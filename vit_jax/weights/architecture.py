"""A model config read off a canonical parameter tree's shapes (npz, safetensors, Hugging Face).

Width, depth, heads, MLP size, patch size, pooling, representation layer, hybrid stem, class
count, and the opt-in features whose parameters show (distillation token, registers, LayerScale,
QK-norm, pre-encoder norm, gated MLP, a norm after pooling, relative position tables, RMSNorm,
a patch norm, a MAP head without MLP). What shapes cannot show (the
activation, LayerNorm epsilon, pooling beside a class token, RoPE) is left at the official
defaults for the caller (a foreign format's config) to set.
"""

from typing import Any, Mapping, Optional

import ml_collections

from vit_jax.configs import models as model_configs
from vit_jax.models import stacking


def infer(tree: Mapping[str, Any]) -> tuple[ml_collections.ConfigDict, Optional[int]]:
  """Reads the architecture off a canonical tree's shapes -> (model config, num_classes).

  Width, depth, heads, MLP size, patch size, pooling, representation layer, hybrid stem and class
  count come from the shapes; dropout rates are 0. `model_name` is the matching variant's name
  when one matches, else 'custom'.
  """
  encoder = tree['Transformer']
  depth = stacking.num_encoder_layers(tree)
  block = encoder['encoderblock_0']
  query_kernel = block['MultiHeadDotProductAttention_0']['query']['kernel']
  embedding_kernel = tree['embedding']['kernel']

  config = ml_collections.ConfigDict()
  config.model_name = 'custom'
  config.patches = ml_collections.ConfigDict({'size': tuple(embedding_kernel.shape[:2])})
  config.hidden_size = int(embedding_kernel.shape[-1])
  mlp_in = int(block['MlpBlock_0']['Dense_0']['kernel'].shape[-1])
  mlp_dim = int(block['MlpBlock_0']['Dense_1']['kernel'].shape[0])
  config.transformer = ml_collections.ConfigDict(dict(
      mlp_dim=mlp_dim,
      num_heads=int(query_kernel.shape[1]), num_layers=depth,
      attention_dropout_rate=0.0, dropout_rate=0.0))
  config.classifier = 'map' if 'MAPHead_0' in tree else 'token' if 'cls' in tree else 'gap'
  config.representation_size = (int(tree['pre_logits']['kernel'].shape[-1])
                                if 'pre_logits' in tree else None)
  if 'conv_root' in tree:
    stages = []
    while f'block{len(stages) + 1}' in tree:
      stages.append(len(tree[f'block{len(stages) + 1}']))
    config.resnet = ml_collections.ConfigDict(dict(
        num_layers=tuple(stages), width_factor=tree['conv_root']['kernel'].shape[-1] / 64))
  attention = block['MultiHeadDotProductAttention_0']
  if 'relative_position_bias' in attention:
    config.rel_pos_bias = True
  if 'relative_position_bias' in encoder:
    config.shared_rel_pos_bias = True
  if 'posembed_input' not in encoder:  # BEiT: positions from its relative bias alone
    relative = 'relative_position_bias' in attention or 'relative_position_bias' in encoder
    config.posemb = 'none' if relative else 'sincos2d'
  # Opt-in features of other families (DeiT, DeiT-III, DINOv2, CLIP), read off their entries.
  if 'dist' in tree:
    config.distilled = True
  if 'registers' in tree:
    config.num_registers = int(tree['registers'].shape[1])
  if 'LayerScale_0' in block:
    config.layerscale = 1.0  # an initial value only: the loaded scales replace it
  if 'query_norm' in attention:
    config.qk_norm = True
  if 'pre_norm' in encoder:
    config.pre_norm = True
  if mlp_in == 2 * mlp_dim:  # [gate, value] from one packed kernel
    config.gated_mlp = True
  if 'fc_norm' in tree:
    config.fc_norm = True
  if 'bias' not in block['LayerNorm_0']:  # AIMv2: RMSNorm throughout
    config.norm = 'rms'
  if 'patch_norm' in tree:
    config.patch_norm = True
  if 'inner_norm' in attention:
    config.attn_inner_norm = True
  if 'inner_norm' in block['MlpBlock_0']:
    config.mlp_inner_norm = True
  if 'MAPHead_0' in tree and 'MlpBlock_0' not in tree['MAPHead_0']:
    config.map_mlp = False
  elif 'MAPHead_0' in tree:
    head_mlp = int(tree['MAPHead_0']['MlpBlock_0']['Dense_1']['kernel'].shape[0])
    if head_mlp != mlp_dim:
      config.map_mlp_dim = head_mlp

  comparable = lambda c: {k: v for k, v in c.to_dict().items() if k != 'model_name'}  # pylint: disable=unnecessary-lambda-assignment
  without_dropout = lambda d: {**d, 'transformer': {**d['transformer'], 'dropout_rate': 0.0}}  # pylint: disable=unnecessary-lambda-assignment
  for name, known in model_configs.MODEL_CONFIGS.items():
    if without_dropout(comparable(known)) == comparable(config):
      config.model_name = name
      break
  num_classes = int(tree['head']['kernel'].shape[-1]) if 'head' in tree else None
  return config, num_classes
