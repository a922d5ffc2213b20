"""Our parameters as PyTorch ViT state dicts (numpy arrays; torch is not needed to write them).

Both layouts hold plain ViTs only: a hybrid ResNet stem or a MAP head has no place in them and is
refused. Linear weights are stored [out, in] (our kernels transposed); the patch embedding is
OIHW.
"""

from typing import Any

import numpy as np

from vit_jax import checkpoint
from vit_jax.models import geometry
from vit_jax.models import layout


def check_exportable(params: Any, model_config, fmt: str, *, allow_gap: bool,
                     allow_pre_logits: bool) -> None:
  """Raises a ValueError naming what `fmt` cannot hold."""
  problems = []
  if model_config.get('resnet') is not None:
    problems.append('a hybrid ResNet stem (R+ViT)')
  if model_config.classifier == 'map':
    problems.append('a MAP (attention pooling) head')
  if model_config.classifier in geometry.UNPOOLED_CLASSIFIERS:
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
  table, prefix_rows = geometry.position_table(params, model_config, image_size)
  if 'cls' in params and not prefix_rows:  # the fixed table has no cls row: it adds zero
    table = np.concatenate([np.zeros_like(table[:, :1]), table], axis=1)
  return table


def _blocks(params):
  tree = layout.unstack_encoder_blocks(checkpoint.canonicalize(params))
  depth = layout.num_encoder_layers(tree)
  return tree, [tree['Transformer'][f'encoderblock_{i}'] for i in range(depth)]


def _torch_arrays(params: Any, model_config, image_size: int):
  """(model-level, [per-block]) arrays in PyTorch orientation under neutral role names."""
  tree, blocks = _blocks(params)
  top = {
      'cls': np.asarray(tree['cls']) if 'cls' in tree else None,
      'posemb': position_embedding(tree, model_config, image_size),
      'patch.weight': np.asarray(tree['embedding']['kernel']).transpose(3, 2, 0, 1),
      'patch.bias': _bias(tree['embedding']['bias']),
      'norm.weight': _bias(tree['Transformer']['encoder_norm']['scale']),
      'norm.bias': _bias(tree['Transformer']['encoder_norm']['bias']),
      'head.weight': _dense_to_torch(tree['head']['kernel'], 1),
      'head.bias': _bias(tree['head']['bias']),
  }
  per_block = []
  for block in blocks:
    attention, mlp = block['MultiHeadDotProductAttention_0'], block['MlpBlock_0']
    arrays = {f'{n}.weight': _dense_to_torch(attention[n]['kernel'], 1)
              for n in ('query', 'key', 'value')}
    arrays.update({f'{n}.bias': _bias(attention[n]['bias']) for n in ('query', 'key', 'value')})
    arrays.update({
        'out.weight': _dense_to_torch(attention['out']['kernel'], 2),
        'out.bias': _bias(attention['out']['bias']),
        'fc1.weight': _dense_to_torch(mlp['Dense_0']['kernel'], 1),
        'fc1.bias': _bias(mlp['Dense_0']['bias']),
        'fc2.weight': _dense_to_torch(mlp['Dense_1']['kernel'], 1),
        'fc2.bias': _bias(mlp['Dense_1']['bias']),
        'norm1.weight': _bias(block['LayerNorm_0']['scale']),
        'norm1.bias': _bias(block['LayerNorm_0']['bias']),
        'norm2.weight': _bias(block['LayerNorm_1']['scale']),
        'norm2.bias': _bias(block['LayerNorm_1']['bias']),
    })
    per_block.append(arrays)
  return top, per_block


def _named(top, per_block, top_names, block_prefix, block_names):
  state = {top_names[role]: value for role, value in top.items()
           if value is not None and role in top_names}
  for i, arrays in enumerate(per_block):
    for role, value in arrays.items():
      if role in block_names:
        state[f'{block_prefix.format(i)}{block_names[role]}'] = value
  return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}


_HF_TOP = {'cls': 'vit.embeddings.cls_token', 'posemb': 'vit.embeddings.position_embeddings',
           'patch.weight': 'vit.embeddings.patch_embeddings.projection.weight',
           'patch.bias': 'vit.embeddings.patch_embeddings.projection.bias',
           'norm.weight': 'vit.layernorm.weight', 'norm.bias': 'vit.layernorm.bias',
           'head.weight': 'classifier.weight', 'head.bias': 'classifier.bias'}
_HF_BLOCK = {**{f'{n}.{w}': f'attention.attention.{n}.{w}' for n in ('query', 'key', 'value')
                for w in ('weight', 'bias')},
             'out.weight': 'attention.output.dense.weight',
             'out.bias': 'attention.output.dense.bias',
             'fc1.weight': 'intermediate.dense.weight', 'fc1.bias': 'intermediate.dense.bias',
             'fc2.weight': 'output.dense.weight', 'fc2.bias': 'output.dense.bias',
             'norm1.weight': 'layernorm_before.weight', 'norm1.bias': 'layernorm_before.bias',
             'norm2.weight': 'layernorm_after.weight', 'norm2.bias': 'layernorm_after.bias'}
_TIMM_TOP = {'cls': 'cls_token', 'posemb': 'pos_embed', 'patch.weight': 'patch_embed.proj.weight',
             'patch.bias': 'patch_embed.proj.bias', 'norm.weight': 'norm.weight',
             'norm.bias': 'norm.bias', 'head.weight': 'head.weight', 'head.bias': 'head.bias'}
_TIMM_BLOCK = {'out.weight': 'attn.proj.weight', 'out.bias': 'attn.proj.bias',
               'fc1.weight': 'mlp.fc1.weight', 'fc1.bias': 'mlp.fc1.bias',
               'fc2.weight': 'mlp.fc2.weight', 'fc2.bias': 'mlp.fc2.bias',
               'norm1.weight': 'norm1.weight', 'norm1.bias': 'norm1.bias',
               'norm2.weight': 'norm2.weight', 'norm2.bias': 'norm2.bias'}


def hf_state_dict(params: Any, model_config, image_size: int) -> dict[str, np.ndarray]:
  """transformers' ViTForImageClassification layout."""
  top, per_block = _torch_arrays(params, model_config, image_size)
  return _named(top, per_block, _HF_TOP, 'vit.encoder.layer.{}.', _HF_BLOCK)


def timm_state_dict(params: Any, model_config, image_size: int) -> dict[str, np.ndarray]:
  """timm's `VisionTransformer` layout (fused qkv in q, k, v order, OIHW patch conv)."""
  top, per_block = _torch_arrays(params, model_config, image_size)
  for arrays in per_block:
    arrays['qkv.weight'] = np.concatenate([arrays[f'{n}.weight'] for n in ('query', 'key', 'value')])
    arrays['qkv.bias'] = np.concatenate([arrays[f'{n}.bias'] for n in ('query', 'key', 'value')])
  return _named(top, per_block, _TIMM_TOP, 'blocks.{}.',
                {**_TIMM_BLOCK, 'qkv.weight': 'attn.qkv.weight', 'qkv.bias': 'attn.qkv.bias'})
