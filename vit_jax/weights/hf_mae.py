"""transformers' `ViTMAEForPreTraining` <-> our `MaskedAutoencoder` (models/mae.py), decoder
included: the reference MAE's weights in PyTorch, read and written under its own names.

The encoder is `vit.` with ViT's names (hf_names); the decoder is `decoder.decoder_embed`,
`decoder.mask_token`, `decoder.decoder_layers.{i}.` (ViT's block names; transformers 5's
`save_pretrained` writes `decoder.decoder_encoder.layer.{i}.`, read as well),
`decoder.decoder_norm` and `decoder.decoder_pred`. Both position tables are fixed sincos tables
that neither side learns; ours are computed (models/mae.py), so reading checks that the file's
are the same, and writing puts ours there.
"""

import json
import os
from typing import Any, Mapping

import ml_collections
import numpy as np

from vit_jax import errors
from vit_jax.models import build
from vit_jax.models import mae
from vit_jax.models import vit
from vit_jax.weights import hf_names
from vit_jax.weights import torch_names
from vit_jax.weights import workdir_params

_DECODER_TOP = {'embed.weight': 'decoder.decoder_embed.weight',
                'embed.bias': 'decoder.decoder_embed.bias',
                'norm.weight': 'decoder.decoder_norm.weight',
                'norm.bias': 'decoder.decoder_norm.bias',
                'pred.weight': 'decoder.decoder_pred.weight',
                'pred.bias': 'decoder.decoder_pred.bias', 'mask_token': 'decoder.mask_token'}
_DECODER_BLOCKS = 'decoder.decoder_layers.{}.'  # the Hub's files (and what we write)
_DECODER_BLOCKS_V5 = 'decoder.decoder_encoder.layer.{}.'  # transformers 5's save_pretrained
_TABLES = ('vit.embeddings.position_embeddings', 'decoder.decoder_pos_embed')


def model(config: Mapping[str, Any], source: str = 'ViTMAE') -> mae.MaskedAutoencoder:
  """Our MaskedAutoencoder with a `ViTMAEConfig`'s fields (a config.json as a dict)."""
  patch = int(config['patch_size'])
  encoder = {'patches': {'size': (patch, patch)}, 'hidden_size': int(config['hidden_size']),
             'transformer': {'mlp_dim': int(config['intermediate_size']),
                             'num_heads': int(config['num_attention_heads']),
                             'num_layers': int(config['num_hidden_layers']),
                             'dropout_rate': 0.0, 'attention_dropout_rate': 0.0},
             'classifier': 'token', **hf_names.model_fields({**config, 'model_type': 'vit_mae'},
                                                            source)}
  return mae.MaskedAutoencoder(
      encoder=ml_collections.ConfigDict(encoder), mask_ratio=float(config['mask_ratio']),
      decoder_width=int(config['decoder_hidden_size']),
      decoder_depth=int(config['decoder_num_hidden_layers']),
      decoder_heads=int(config['decoder_num_attention_heads']),
      decoder_mlp_dim=int(config['decoder_intermediate_size']))


def _grid(config: Mapping[str, Any]) -> tuple[int, int]:
  size, patch = config['image_size'], config['patch_size']
  size = (size, size) if isinstance(size, int) else tuple(size)
  return size[0] // patch, size[1] // patch


def to_params(state: Mapping[str, np.ndarray], config: Mapping[str, Any],
              source: str = 'ViTMAE') -> dict[str, Any]:
  """A `ViTMAEForPreTraining` state dict -> our MaskedAutoencoder's parameters."""
  grid = _grid(config)
  for name, width in zip(_TABLES, (config['hidden_size'], config['decoder_hidden_size'])):
    if name in state and not np.allclose(state[name], mae.table(grid, width), atol=1e-5):
      raise errors.UserError(f'{source}: {name} is not the fixed sincos table of a {grid[0]}x'
                             f'{grid[1]} grid, which our MAE computes; it cannot be loaded.')
  encoder_state = {k: v for k, v in state.items()
                   if k.startswith('vit.') and k != _TABLES[0]}
  params = hf_names.to_params(encoder_state, hf_names.FAMILIES['vit_mae'],
                              int(config['num_attention_heads']), source)
  params['Transformer'].pop('posembed_input', None)
  blocks = (_DECODER_BLOCKS if any(k.startswith(_DECODER_BLOCKS.format(0)) for k in state)
            else _DECODER_BLOCKS_V5)
  top, per_block, used = torch_names.read_roles(state, _DECODER_TOP, blocks, hf_names.VIT_BLOCK)
  unknown = sorted(k for k in state if k.startswith('decoder.') and k not in used
                   and k != _TABLES[1])
  missing = sorted(set(_DECODER_TOP) - set(top))
  if unknown or missing or not per_block:
    raise errors.UserError(f'{source}: the decoder does not read as ViTMAE\'s (not understood: '
                           f'{unknown[:6]}; missing: {missing}).')
  heads = int(config['decoder_num_attention_heads'])
  decoder = {f'encoderblock_{i}': torch_names.block_from_roles(arrays, heads)
             for i, arrays in enumerate(per_block)}
  decoder['encoder_norm'] = torch_names.norm_from_torch(top, 'norm')
  params.update(decoder_embed=torch_names.dense_from_torch(top, 'embed'),
                mask_token=np.asarray(top['mask_token'], np.float32).reshape(1, 1, -1),
                decoder=decoder, decoder_pred=torch_names.dense_from_torch(top, 'pred'))
  return params


def state_dict(params: Any, config: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Our MaskedAutoencoder's parameters -> a `ViTMAEForPreTraining` state dict (strict)."""
  grid = _grid(config)
  encoder = {k: v for k, v in params.items()
             if k not in ('decoder_embed', 'mask_token', 'decoder', 'decoder_pred')}
  top, per_block = torch_names.to_roles({**encoder, 'Transformer': {
      **encoder['Transformer'],
      'posembed_input': {'pos_embedding': mae.table(grid, config['hidden_size'])}}},
                                        {'classifier': 'token'}, grid[0] * config['patch_size'])
  names = {role: f'vit.{name}' for role, name in hf_names.VIT_TOP.items()}
  state = torch_names.name_roles(top, per_block, names, 'vit.' + hf_names.VIT_BLOCK_PREFIX,
                                 hf_names.VIT_BLOCK)
  decoder = params['decoder']
  roles = {'mask_token': np.asarray(params['mask_token'])}
  torch_names.linear(roles, 'embed', params['decoder_embed'])
  torch_names.linear(roles, 'pred', params['decoder_pred'])
  torch_names.norm(roles, 'norm', decoder['encoder_norm'])
  blocks = [torch_names.block_roles(decoder[f'encoderblock_{i}'])
            for i in range(sum(k.startswith('encoderblock_') for k in decoder))]
  state.update(torch_names.name_roles(roles, blocks, _DECODER_TOP, _DECODER_BLOCKS,
                                      hf_names.VIT_BLOCK))
  state[_TABLES[1]] = mae.table(grid, config['decoder_hidden_size'])
  return state


def config_of(model_config: ml_collections.ConfigDict, mae_fields: ml_collections.ConfigDict,
              image_size: int) -> dict[str, Any]:
  """The `ViTMAEConfig` (config.json) of an MAE run: its encoder, decoder and loss."""
  act = vit.activation_name(model_config.get('activation'),
                            model_config.get('gelu_approximate', True))
  names = {ours: theirs for theirs, ours in hf_names.ACTIVATIONS.items()}
  transformer = model_config.transformer
  return {'model_type': 'vit_mae', 'architectures': ['ViTMAEForPreTraining'],
          'image_size': int(image_size), 'patch_size': int(model_config.patches.size[0]),
          'num_channels': 3, 'hidden_size': int(model_config.hidden_size),
          'num_hidden_layers': int(transformer.num_layers),
          'num_attention_heads': int(transformer.num_heads),
          'intermediate_size': int(transformer.mlp_dim), 'hidden_act': names[act],
          'layer_norm_eps': float(model_config.get('layer_norm_eps') or 1e-6), 'qkv_bias': True,
          'decoder_hidden_size': int(mae_fields.decoder_width),
          'decoder_num_hidden_layers': int(mae_fields.decoder_depth),
          'decoder_num_attention_heads': int(mae_fields.decoder_heads),
          'decoder_intermediate_size': int(mae_fields.decoder_mlp_dim),
          'mask_ratio': float(mae_fields.mask_ratio),
          'norm_pix_loss': bool(mae_fields.norm_pix_loss)}


def export_workdir(workdir: str, out: str) -> str:
  """An MAE run's workdir -> a `ViTMAEForPreTraining` folder (model.safetensors, config.json)
  that transformers' `from_pretrained` loads, decoder included."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  from vit_jax.weights import trained_model  # pylint: disable=g-import-not-at-top
  run = trained_model.read_run_config(workdir)
  if run.get('objective') != 'mae':
    raise errors.UserError(f'{workdir}: --format=hf_mae exports an MAE run (config.objective='
                           f'mae); this one trains {run.get("objective")!r}.')
  _, model_config = build.from_run_config(run)
  config = config_of(model_config, run.mae, run.image_size)
  _, params = workdir_params.read(workdir)
  os.makedirs(out, exist_ok=True)
  save_file(state_dict(params, config), os.path.join(out, 'model.safetensors'))
  with open(os.path.join(out, 'config.json'), 'w', encoding='utf-8') as f:
    json.dump(config, f, indent=2)
  return out
