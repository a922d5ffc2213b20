"""Our parameters as PyTorch ViT state dicts (numpy arrays; torch is not needed to write them).

Both layouts hold plain ViTs only: a hybrid ResNet stem or a MAP head has no place in them and is
refused. Linear weights are stored [out, in] (our kernels transposed); the patch embedding is
OIHW.
"""

from typing import Any

import numpy as np

from vit_jax import checkpoint
from vit_jax.models import layout


def check_exportable(params: Any, model_config, fmt: str, *, allow_gap: bool,
                     allow_pre_logits: bool) -> None:
  """Raises a ValueError naming what `fmt` cannot hold."""
  problems = []
  if model_config.get('resnet') is not None:
    problems.append('a hybrid ResNet stem (R+ViT)')
  if model_config.classifier == 'map':
    problems.append('a MAP (attention pooling) head')
  if model_config.classifier in ('unpooled', 'token_unpooled'):
    problems.append(f'classifier={model_config.classifier!r}')
  if model_config.classifier == 'gap' and not allow_gap:
    problems.append('global average pooling (classifier="gap"): it classifies from the cls token')
  if model_config.get('representation_size') and not allow_pre_logits:
    problems.append('a representation (pre_logits) layer')
  if 'head' not in params:
    problems.append('no classification head')
  if problems:
    raise ValueError(f'The {fmt} format cannot hold this model: it has {"; ".join(problems)}.')


def _dense_to_torch(kernel, in_axes: int) -> np.ndarray:
  """A kernel whose first `in_axes` axes are inputs ([D, H, Dh]: 1; [H, Dh, D]: 2) -> [out, in]."""
  kernel = np.asarray(kernel)
  fan_in = int(np.prod(kernel.shape[:in_axes]))
  return kernel.reshape(fan_in, -1).T.copy()


def _bias(bias) -> np.ndarray:
  return np.asarray(bias).reshape(-1).copy()


def position_embedding(params: Any, model_config, image_size: int) -> np.ndarray:
  """The posemb as [1, tokens, width], with the fixed sincos table written out when used."""
  encoder = params['Transformer']
  if 'posembed_input' in encoder:
    return np.asarray(encoder['posembed_input']['pos_embedding'])
  from vit_jax.models import posemb  # pylint: disable=g-import-not-at-top
  grid = image_size // model_config.patches.size[0]
  table = posemb.posemb_sincos_2d(grid, grid, model_config.hidden_size)
  if 'cls' in params:
    table = np.concatenate([np.zeros_like(table[:, :1]), table], axis=1)
  return table


def _blocks(params):
  tree = layout.unstack_encoder_blocks(checkpoint.canonicalize(params))
  depth = layout.num_encoder_layers(tree)
  return tree, [tree['Transformer'][f'encoderblock_{i}'] for i in range(depth)]


def hf_state_dict(params: Any, model_config, image_size: int) -> dict[str, np.ndarray]:
  """transformers' ViTForImageClassification layout."""
  tree, blocks = _blocks(params)
  state = {
      'vit.embeddings.cls_token': np.asarray(tree['cls']),
      'vit.embeddings.position_embeddings': position_embedding(tree, model_config, image_size),
      'vit.embeddings.patch_embeddings.projection.weight':
          np.asarray(tree['embedding']['kernel']).transpose(3, 2, 0, 1).copy(),
      'vit.embeddings.patch_embeddings.projection.bias': _bias(tree['embedding']['bias']),
      'vit.layernorm.weight': _bias(tree['Transformer']['encoder_norm']['scale']),
      'vit.layernorm.bias': _bias(tree['Transformer']['encoder_norm']['bias']),
      'classifier.weight': _dense_to_torch(tree['head']['kernel'], 1),
      'classifier.bias': _bias(tree['head']['bias']),
  }
  for i, block in enumerate(blocks):
    prefix = f'vit.encoder.layer.{i}.'
    attention = block['MultiHeadDotProductAttention_0']
    for name in ('query', 'key', 'value'):
      state[f'{prefix}attention.attention.{name}.weight'] = _dense_to_torch(
          attention[name]['kernel'], 1)
      state[f'{prefix}attention.attention.{name}.bias'] = _bias(attention[name]['bias'])
    state[f'{prefix}attention.output.dense.weight'] = _dense_to_torch(attention['out']['kernel'], 2)
    state[f'{prefix}attention.output.dense.bias'] = _bias(attention['out']['bias'])
    mlp = block['MlpBlock_0']
    state[f'{prefix}intermediate.dense.weight'] = _dense_to_torch(mlp['Dense_0']['kernel'], 1)
    state[f'{prefix}intermediate.dense.bias'] = _bias(mlp['Dense_0']['bias'])
    state[f'{prefix}output.dense.weight'] = _dense_to_torch(mlp['Dense_1']['kernel'], 1)
    state[f'{prefix}output.dense.bias'] = _bias(mlp['Dense_1']['bias'])
    for ours, theirs in (('LayerNorm_0', 'layernorm_before'), ('LayerNorm_1', 'layernorm_after')):
      state[f'{prefix}{theirs}.weight'] = _bias(block[ours]['scale'])
      state[f'{prefix}{theirs}.bias'] = _bias(block[ours]['bias'])
  return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}


def timm_state_dict(params: Any, model_config, image_size: int) -> dict[str, np.ndarray]:
  """timm's `VisionTransformer` layout (fused qkv, OIHW patch conv)."""
  tree, blocks = _blocks(params)
  state = {
      'pos_embed': position_embedding(tree, model_config, image_size),
      'patch_embed.proj.weight': np.asarray(tree['embedding']['kernel']).transpose(3, 2, 0, 1).copy(),
      'patch_embed.proj.bias': _bias(tree['embedding']['bias']),
      'norm.weight': _bias(tree['Transformer']['encoder_norm']['scale']),
      'norm.bias': _bias(tree['Transformer']['encoder_norm']['bias']),
      'head.weight': _dense_to_torch(tree['head']['kernel'], 1),
      'head.bias': _bias(tree['head']['bias']),
  }
  if 'cls' in tree:
    state['cls_token'] = np.asarray(tree['cls'])
  for i, block in enumerate(blocks):
    prefix = f'blocks.{i}.'
    attention = block['MultiHeadDotProductAttention_0']
    state[f'{prefix}attn.qkv.weight'] = np.concatenate(
        [_dense_to_torch(attention[n]['kernel'], 1) for n in ('query', 'key', 'value')], axis=0)
    state[f'{prefix}attn.qkv.bias'] = np.concatenate(
        [_bias(attention[n]['bias']) for n in ('query', 'key', 'value')])
    state[f'{prefix}attn.proj.weight'] = _dense_to_torch(attention['out']['kernel'], 2)
    state[f'{prefix}attn.proj.bias'] = _bias(attention['out']['bias'])
    mlp = block['MlpBlock_0']
    state[f'{prefix}mlp.fc1.weight'] = _dense_to_torch(mlp['Dense_0']['kernel'], 1)
    state[f'{prefix}mlp.fc1.bias'] = _bias(mlp['Dense_0']['bias'])
    state[f'{prefix}mlp.fc2.weight'] = _dense_to_torch(mlp['Dense_1']['kernel'], 1)
    state[f'{prefix}mlp.fc2.bias'] = _bias(mlp['Dense_1']['bias'])
    for ours, theirs in (('LayerNorm_0', 'norm1'), ('LayerNorm_1', 'norm2')):
      state[f'{prefix}{theirs}.weight'] = _bias(block[ours]['scale'])
      state[f'{prefix}{theirs}.bias'] = _bias(block[ours]['bias'])
  return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}
