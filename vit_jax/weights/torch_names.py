"""Our parameters <-> PyTorch ViT state dicts (numpy arrays; torch is not needed for either way).

One neutral table of *roles* sits between our canonical tree and every PyTorch layout: model-level
roles (`cls`, `dist`, `registers`, `posemb`, `patch.weight`, `pre_norm.*`, `norm.*`, `fc_norm.*`, `head.*`,
`head_dist.*`, `pre_logits.*`, `map.*`) and per-block roles (`query.*`, `key.*`, `value.*`,
`out.*`, `fc1.*`, `fc2.*`, `norm1.*`, `norm2.*`, `ls1`, `ls2`, `q_norm.*`, `k_norm.*`), and
BEiT's relative position tables (`rel_bias`: per block, and model-level when shared), and
`patch_norm.*` (AIMv2's norm of the patch tokens), `attn_norm.*` and `mlp_norm.*` (norms
inside attention and MLP); a norm without `.bias` is an RMSNorm. All in
PyTorch orientation: linear weights [out, in], the patch embedding OIHW. The timm and Hugging
Face names (`timm_names.py`, `hf_names.py`) only name these roles.
"""

from typing import Any, Optional

import numpy as np

from vit_jax import errors
from vit_jax.models import geometry
from vit_jax.models import stacking
from vit_jax.models import vit



def check_exportable(params: Any, model_config, fmt: str, *, allow_gap: bool,
                     allow_pre_logits: bool, allow_map: bool = False,
                     allow_features: bool = False, allow_headless: bool = False,
                     eva: bool = False, relative: bool = False,
                     inner_norms: bool = False) -> None:
  """Raises a ValueError naming what `fmt` cannot hold (`allow_headless`: an encoder without
  a head, e.g. an MAE encoder, is written as the format's headless model; `eva`: timm's Eva
  layout, which holds rotary embeddings, no table and inner norms; `relative`: BEiT's, which
  holds relative position tables and no absolute table; `inner_norms`: norms inside attention
  and MLP)."""
  problems = []
  if model_config.get('resnet') is not None:
    problems.append('a hybrid ResNet stem (R+ViT)')
  if model_config.classifier == 'map' and not allow_map:
    problems.append('a MAP (attention pooling) head')
  if model_config.classifier in vit.UNPOOLED_CLASSIFIERS:
    problems.append(f'classifier={model_config.classifier!r}')
  if model_config.classifier == 'gap' and not allow_gap:
    problems.append('global average pooling (classifier="gap"): it classifies from the cls token')
  if model_config.get('representation_size') and not allow_pre_logits:
    problems.append('a representation (pre_logits) layer')
  if not allow_features:
    features = [f for f in ('layerscale', 'qk_norm', 'pre_norm', 'num_registers', 'distilled')
                if model_config.get(f)]
    if features:
      problems.append(f'{", ".join(features)} (export to timm instead)')
  if 'head' not in params and not allow_headless:
    problems.append('no classification head')
  if model_config.get('gated_mlp') and not allow_features:
    problems.append('a gated (SwiGLU) MLP (export to timm instead)')
  if model_config.get('fc_norm') and not allow_features:
    problems.append('a norm after pooling (fc_norm; export to timm instead)')
  if model_config.classifier == 'token_gap':
    problems.append("classifier='token_gap'")
  if model_config.get('posemb') == 'rope' and not eva:
    problems.append('rotary position embeddings (posemb=rope; export with format timm_eva)')
  if model_config.get('rope', 'none') != 'none' and not eva:
    problems.append(f'rotary position embeddings (rope={model_config.rope!r}: EVA-02, '
                    'ROPE-ViT; export with format timm_eva)')
  if model_config.get('posemb') == 'none' and not (eva or relative):
    problems.append('no position table (posemb=none)')
  if (model_config.get('rel_pos_bias') or model_config.get('shared_rel_pos_bias')) and not relative:
    problems.append('a relative position bias (BEiT: export with format hf_beit or timm_beit)')
  aimv2 = [name for name, asked in (('RMSNorm', model_config.get('norm') == 'rms'),
                                    ('a patch norm', model_config.get('patch_norm')),
                                    ('a MAP head without MLP', model_config.get('map_mlp') is False))
           if asked]
  if aimv2:
    problems.append(f'{", ".join(aimv2)} (AIMv2)')
  if ((model_config.get('attn_inner_norm') or model_config.get('mlp_inner_norm'))
      and not (eva or inner_norms)):
    problems.append('norms inside attention and MLP (BEiT-3, EVA)')
  if model_config.get('class_token') and model_config.classifier == 'gap' and not allow_features:
    problems.append('a class token beside average pooling (export to timm instead)')
  if (model_config.get('map_include_prefix') or model_config.get('map_heads')
      or model_config.get('map_mlp_dim')) and not eva:
    problems.append('a MAP head over the prefix tokens or with its own sizes (Perception '
                    'Encoder; export with format timm_eva)')
  if problems:
    raise errors.UserError(
        f'The {fmt} format cannot hold this model: it has {"; ".join(problems)}.')


def refuse_lacking(message: str, lacking: dict[str, bool]) -> None:
  """A UserError of `message` followed by every need in `lacking` ({need: whether the model
  meets it}) that the model does not meet, in one line; nothing when it meets them all."""
  missing = [need for need, holds in lacking.items() if not holds]
  if missing:
    raise errors.UserError(message + '; '.join(missing) + '.')


def beyond_aimv2(model) -> bool:
  """Whether `model` (a VisionTransformer) has a feature an AIMv2 tower does not: a class
  token, registers, LayerScale, QK-norm, a pre-norm, rotary or relative positions, inner
  norms, a representation layer, a hybrid stem."""
  return bool(model.has_class_token or model.num_registers or model.distilled
              or model.layerscale or model.qk_norm or model.pre_norm or model.rope != 'none'
              or model.posemb not in ('learn', 'sincos2d') or model.rel_pos_bias
              or model.shared_rel_pos_bias or model.attn_inner_norm or model.mlp_inner_norm
              or model.representation_size or model.resnet is not None)


def check_table_grid(params: Any, model_config, image_size: int, fmt: str) -> None:
  """A learned table kept on its own grid and resized on the fly (timm NaFlexViT imports) is
  written only at that grid: the format's fixed-size model would resize it otherwise."""
  table, prefix = geometry.position_table(params, model_config, image_size)
  rows = table.shape[1] - prefix
  expected = int(np.prod(geometry.patch_grid(model_config, image_size)))
  if rows != expected:
    side = int(round(rows ** 0.5)) * geometry.patch_stride(model_config)[0]
    raise errors.UserError(
        f'The {fmt} format holds a table of the input grid: this model\'s table has {rows} patch '
        f'rows, image_size={image_size} needs {expected}; export with --image_size={side}.')


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
  missing = geometry.num_posemb_prefix(model_config) - prefix_rows
  if missing:  # the fixed table has no prefix rows: they add zero
    table = np.concatenate([np.zeros_like(table[:, :1])] * missing + [table], axis=1)
  return table


def linear(arrays: dict, role: str, dense: Any, in_axes: int = 1) -> None:
  arrays[f'{role}.weight'] = _dense_to_torch(dense['kernel'], in_axes)
  arrays[f'{role}.bias'] = _bias(dense['bias'])


def norm(arrays: dict, role: str, layer_norm: Any) -> None:
  arrays[f'{role}.weight'] = _bias(layer_norm['scale'])
  if 'bias' in layer_norm:  # an RMSNorm has none
    arrays[f'{role}.bias'] = _bias(layer_norm['bias'])


def _attention_roles(attention: Any, prefix: str = '') -> dict[str, np.ndarray]:
  arrays = {}
  for name in ('query', 'key', 'value'):
    linear(arrays, f'{prefix}{name}', attention[name])
  linear(arrays, f'{prefix}out', attention['out'], in_axes=2)
  for ours, role in (('query_norm', 'q_norm'), ('key_norm', 'k_norm')):
    if ours in attention:
      norm(arrays, f'{prefix}{role}', attention[ours])
  if 'relative_position_bias' in attention:
    arrays[f'{prefix}rel_bias'] = np.asarray(attention['relative_position_bias'])
  if 'inner_norm' in attention:
    norm(arrays, f'{prefix}attn_norm', attention['inner_norm'])
  return arrays


def to_roles(params: Any, model_config, image_size: int) -> tuple[dict, list[dict]]:
  """(model-level roles, [per-block roles]) of a canonical or scanned tree."""
  tree = stacking.unstack_encoder_blocks(params)
  encoder = tree['Transformer']
  top = {name: np.asarray(tree[name]) for name in ('cls', 'dist', 'registers') if name in tree}
  if 'posembed_input' in encoder or geometry.model_of(model_config).posemb not in ('rope', 'none'):
    top['posemb'] = position_embedding(tree, model_config, image_size)
  top['patch.weight'] = np.asarray(tree['embedding']['kernel']).transpose(3, 2, 0, 1).copy()
  top['patch.bias'] = _bias(tree['embedding']['bias'])
  if 'patch_norm' in tree:
    norm(top, 'patch_norm', tree['patch_norm'])
  if 'encoder_norm' in encoder:
    norm(top, 'norm', encoder['encoder_norm'])
  if 'fc_norm' in tree:  # the final norm after pooling
    norm(top, 'fc_norm', tree['fc_norm'])
  if 'pre_norm' in encoder:
    norm(top, 'pre_norm', encoder['pre_norm'])
  for name in ('head', 'head_dist', 'pre_logits'):
    if name in tree:
      linear(top, name, tree[name])
  if 'relative_position_bias' in encoder:
    top['rel_bias'] = np.asarray(encoder['relative_position_bias'])
  if 'MAPHead_0' in tree:
    head = tree['MAPHead_0']
    top['map.probe'] = np.asarray(head['probe'])
    top.update(_attention_roles(head['MultiHeadDotProductAttention_0'], 'map.'))
    if 'MlpBlock_0' in head:
      norm(top, 'map.norm', head['LayerNorm_0'])
      linear(top, 'map.fc1', head['MlpBlock_0']['Dense_0'])
      linear(top, 'map.fc2', head['MlpBlock_0']['Dense_1'])

  per_block = [block_roles(encoder[f'encoderblock_{i}'])
               for i in range(stacking.num_encoder_layers(tree))]
  return top, per_block


def block_roles(block: Any) -> dict[str, np.ndarray]:
  """One encoder block's roles (an MAE decoder's blocks are the same)."""
  arrays = _attention_roles(block['MultiHeadDotProductAttention_0'])
  linear(arrays, 'fc1', block['MlpBlock_0']['Dense_0'])
  linear(arrays, 'fc2', block['MlpBlock_0']['Dense_1'])
  if 'inner_norm' in block['MlpBlock_0']:
    norm(arrays, 'mlp_norm', block['MlpBlock_0']['inner_norm'])
  norm(arrays, 'norm1', block['LayerNorm_0'])
  norm(arrays, 'norm2', block['LayerNorm_1'])
  for ours, role in (('LayerScale_0', 'ls1'), ('LayerScale_1', 'ls2')):
    if ours in block:
      arrays[role] = _bias(block[ours]['scale'])
  return arrays


def dense_from_torch(arrays: dict, role: str, num_heads: Optional[int] = None,
                      kind: str = 'plain') -> dict[str, np.ndarray]:
  """[out, in] (+ bias) -> our kernel: plain [in, out]; 'heads' [in, H, Dh]; 'out' [H, Dh, out]."""
  weight = np.asarray(arrays[f'{role}.weight'], np.float32)
  bias = arrays.get(f'{role}.bias')
  bias = np.zeros(weight.shape[0], np.float32) if bias is None else np.asarray(bias, np.float32)
  kernel = weight.T
  if kind == 'heads':
    kernel = kernel.reshape(kernel.shape[0], num_heads, -1)
    bias = bias.reshape(num_heads, -1)
  elif kind == 'out':
    kernel = kernel.reshape(num_heads, -1, kernel.shape[-1])
  return {'kernel': np.ascontiguousarray(kernel), 'bias': bias}


def norm_from_torch(arrays: dict, role: str) -> dict[str, np.ndarray]:
  """A LayerNorm (weight and bias), or an RMSNorm (a weight alone)."""
  out = {'scale': np.asarray(arrays[f'{role}.weight'], np.float32)}
  if f'{role}.bias' in arrays:
    out['bias'] = np.asarray(arrays[f'{role}.bias'], np.float32)
  return out


def _attention_from_roles(arrays: dict, num_heads: int, prefix: str = '') -> dict:
  out = {name: dense_from_torch(arrays, f'{prefix}{name}', num_heads, 'heads')
         for name in ('query', 'key', 'value')}
  out['out'] = dense_from_torch(arrays, f'{prefix}out', num_heads, 'out')
  for ours, role in (('query_norm', 'q_norm'), ('key_norm', 'k_norm')):
    if f'{prefix}{role}.weight' in arrays:
      out[ours] = norm_from_torch(arrays, f'{prefix}{role}')
  if f'{prefix}rel_bias' in arrays:  # [(2h-1)(2w-1) + 3, heads] in both layouts
    out['relative_position_bias'] = np.asarray(arrays[f'{prefix}rel_bias'], np.float32)
  if f'{prefix}attn_norm.weight' in arrays:
    out['inner_norm'] = norm_from_torch(arrays, f'{prefix}attn_norm')
  return out


def from_roles(top: dict, per_block: list[dict], num_heads: int,
               map_heads: Optional[int] = None) -> dict[str, Any]:
  """The canonical tree from (model-level roles, [per-block roles]): `to_roles` reversed; the
  MAP head has `map_heads` heads (None: `num_heads`)."""
  patch = np.asarray(top['patch.weight'], np.float32)
  tree = {'embedding': {
      'kernel': np.ascontiguousarray(patch.transpose(2, 3, 1, 0)),
      'bias': np.asarray(top.get('patch.bias', np.zeros(patch.shape[0])), np.float32)}}
  for name in ('cls', 'dist', 'registers'):
    if name in top:
      tree[name] = np.asarray(top[name], np.float32).reshape(1, -1, patch.shape[0])
  if 'patch_norm.weight' in top:
    tree['patch_norm'] = norm_from_torch(top, 'patch_norm')
  encoder = {}
  if 'posemb' in top:  # RoPE models have none
    posemb = np.asarray(top['posemb'], np.float32).reshape(1, -1, patch.shape[0])
    encoder['posembed_input'] = {'pos_embedding': posemb}
  if 'norm.weight' in top:
    encoder['encoder_norm'] = norm_from_torch(top, 'norm')
  if 'fc_norm.weight' in top:
    tree['fc_norm'] = norm_from_torch(top, 'fc_norm')
  if 'pre_norm.weight' in top:
    encoder['pre_norm'] = norm_from_torch(top, 'pre_norm')
  if 'rel_bias' in top:  # one relative position bias shared by every block
    encoder['relative_position_bias'] = np.asarray(top['rel_bias'], np.float32)
  for i, arrays in enumerate(per_block):
    encoder[f'encoderblock_{i}'] = block_from_roles(arrays, num_heads)
  tree['Transformer'] = encoder
  for name in ('head', 'head_dist', 'pre_logits'):
    if f'{name}.weight' in top:
      tree[name] = dense_from_torch(top, name)
  if 'map.probe' in top:
    width = patch.shape[0]
    if 'map.query.weight' not in top:  # the probe is the query itself (AIMv2): an identity
      top['map.query.weight'] = np.eye(width, dtype=np.float32)
    tree['MAPHead_0'] = {
        'probe': np.asarray(top['map.probe'], np.float32).reshape(1, 1, -1),
        'MultiHeadDotProductAttention_0': _attention_from_roles(top, map_heads or num_heads,
                                                                'map.')}
    if 'map.fc1.weight' in top:  # AIMv2's pooling head has no MLP
      tree['MAPHead_0'].update({
          'LayerNorm_0': norm_from_torch(top, 'map.norm'),
          'MlpBlock_0': {'Dense_0': dense_from_torch(top, 'map.fc1'),
                         'Dense_1': dense_from_torch(top, 'map.fc2')}})
  return tree


def block_from_roles(arrays: dict, num_heads: int) -> dict[str, Any]:
  """One encoder block from its roles: `block_roles` reversed."""
  block = {
      'LayerNorm_0': norm_from_torch(arrays, 'norm1'),
      'MultiHeadDotProductAttention_0': _attention_from_roles(arrays, num_heads),
      'LayerNorm_1': norm_from_torch(arrays, 'norm2'),
      'MlpBlock_0': {'Dense_0': dense_from_torch(arrays, 'fc1'),
                     'Dense_1': dense_from_torch(arrays, 'fc2')},
  }
  for ours, role in (('LayerScale_0', 'ls1'), ('LayerScale_1', 'ls2')):
    if role in arrays:
      block[ours] = {'scale': np.asarray(arrays[role], np.float32)}
  if 'mlp_norm.weight' in arrays:
    block['MlpBlock_0']['inner_norm'] = norm_from_torch(arrays, 'mlp_norm')
  return block


def name_roles(top: dict, per_block: list[dict], top_names: dict[str, str], block_prefix: str,
               block_names: dict[str, str]) -> dict[str, np.ndarray]:
  """Roles -> a state dict under a layout's names (roles without a name there are left out)."""
  state = {top_names[role]: value for role, value in top.items() if role in top_names}
  for i, arrays in enumerate(per_block):
    for role, value in arrays.items():
      if role in block_names:
        state[f'{block_prefix.format(i)}{block_names[role]}'] = value
  return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}


def read_roles(state: dict[str, np.ndarray], top_names: dict[str, str], block_prefix: str,
               block_names: dict[str, str]) -> tuple[dict, list[dict], set[str]]:
  """A state dict -> (model-level roles, [per-block roles], the names used): `name_roles`
  reversed; blocks are counted from 0 while `block_prefix.format(i)` names any entry. A role
  (model-level or per block) may name alternatives (a tuple): the first present is taken."""
  used = set()
  top = {}
  for role, names in top_names.items():
    for name in (names,) if isinstance(names, str) else names:  # alternatives, first found
      if name in state:
        top[role] = np.asarray(state[name])
        used.add(name)
        break
  per_block = []
  while any(k.startswith(block_prefix.format(len(per_block))) for k in state):
    prefix, arrays = block_prefix.format(len(per_block)), {}
    for role, names in block_names.items():
      for name in (names,) if isinstance(names, str) else names:
        if prefix + name in state:
          arrays[role] = np.asarray(state[prefix + name])
          used.add(prefix + name)
          break
    per_block.append(arrays)
  return top, per_block, used


def split_fused(arrays: dict, fused: str, roles: tuple[str, ...]) -> None:
  """A fused projection (timm `qkv`, PyTorch `in_proj`) -> one role per part, in place."""
  for suffix in ('weight', 'bias'):
    value = arrays.pop(f'{fused}.{suffix}', None)
    if value is not None:
      for role, part in zip(roles, np.split(np.asarray(value), len(roles), axis=0)):
        arrays[f'{role}.{suffix}'] = part


def join_fused(arrays: dict, fused: str, roles: tuple[str, ...]) -> None:
  """`split_fused` reversed: the parts concatenated into `fused`, in place."""
  for suffix in ('weight', 'bias'):
    parts = [arrays.pop(f'{role}.{suffix}') for role in roles if f'{role}.{suffix}' in arrays]
    if parts:
      arrays[f'{fused}.{suffix}'] = np.concatenate(parts, axis=0)
