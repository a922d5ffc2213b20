"""timm's `VisionTransformer` (and `VisionTransformerDistilled`, and `Beit`) names for the neutral
roles, AIMv2's included.

Fused `attn.qkv` (q, k, v order), `ls1.gamma`/`ls2.gamma` (LayerScale), `attn.q_norm`/`k_norm`,
`norm_pre`, `reg_token`, `dist_token` + `head_dist`, and the MAP head as `attn_pool` (latent
query, `q`, fused `kv`). timm keeps no position for register tokens when its table has no
prefix rows (`no_embed_class=True`, the DINOv2-with-registers models): then the class token's
own position row is folded into the token on export, and is zero on import.
"""

import math
from typing import Any, Optional

import numpy as np

from vit_jax import errors
from vit_jax.weights import torch_names
from vit_jax.models import geometry


def _pairs(role: str, name: str) -> dict[str, str]:
  return {f'{role}.weight': f'{name}.weight', f'{role}.bias': f'{name}.bias'}


TOP = {'cls': 'cls_token', 'dist': 'dist_token', 'registers': 'reg_token', 'posemb': 'pos_embed',
       **_pairs('patch', 'patch_embed.proj'), **_pairs('pre_norm', 'norm_pre'),
       **_pairs('norm', 'norm'), **_pairs('fc_norm', 'fc_norm'), **_pairs('head', 'head'), **_pairs('head_dist', 'head_dist'),
       **_pairs('pre_logits', 'pre_logits.fc'), 'map.probe': 'attn_pool.latent',
       **_pairs('map.query', 'attn_pool.q'), **_pairs('map.kv', 'attn_pool.kv'),
       **_pairs('map.out', 'attn_pool.proj'), **_pairs('map.norm', 'attn_pool.norm'),
       **_pairs('map.fc1', 'attn_pool.mlp.fc1'), **_pairs('map.fc2', 'attn_pool.mlp.fc2')}
BLOCK_PREFIX = 'blocks.{}.'
BLOCK = {**_pairs('qkv', 'attn.qkv'), **_pairs('out', 'attn.proj'),
         **_pairs('q_norm', 'attn.q_norm'), **_pairs('k_norm', 'attn.k_norm'),
         **_pairs('fc1', 'mlp.fc1'), **_pairs('fc2', 'mlp.fc2'),
         **_pairs('norm1', 'norm1'), **_pairs('norm2', 'norm2'),
         **_pairs('attn_norm', 'attn.norm'), **_pairs('mlp_norm', 'mlp.norm'),
         'ls1': 'ls1.gamma', 'ls2': 'ls2.gamma'}
# Read, never written: timm's Beit (`beit_*`, `beitv2_*`: LayerScale as `gamma_1`/`gamma_2`, a q
# and a v bias beside a bias-free qkv, relative position tables per block or shared), and its
# AIMv2 (`aimv2_*`: a norm of the patch tokens, a SwiGLU MLP as `fc1_g` (gate) and `fc1_x`).
_READ_TOP = {'rel_bias': 'rel_pos_bias.relative_position_bias_table',
             **_pairs('patch_norm', 'patch_embed.norm')}
_READ_BLOCK = {'ls1': ('ls1.gamma', 'gamma_1'), 'ls2': ('ls2.gamma', 'gamma_2'),
               'q_bias': 'attn.q_bias', 'v_bias': 'attn.v_bias',
               'rel_bias': 'attn.relative_position_bias_table',
               **_pairs('gate', 'mlp.fc1_g'), 'fc1.weight': ('mlp.fc1.weight', 'mlp.fc1_x.weight'),
               'fc1.bias': ('mlp.fc1.bias', 'mlp.fc1_x.bias'),
               # Eva's unfused projections (qkv_fused=False)
               **_pairs('query', 'attn.q_proj'), **_pairs('key', 'attn.k_proj'),
               **_pairs('value', 'attn.v_proj')}


def state_dict(params: Any, model_config, image_size: int) -> dict[str, np.ndarray]:
  """Our canonical tree -> timm's state dict."""
  top, per_block = torch_names.to_roles(params, model_config, image_size)
  if 'pre_norm.weight' in top:  # timm's pre-norm models have no patch bias: it is a constant
    bias = top.pop('patch.bias')  # added to every patch token, so it joins their positions
    prefix = geometry.num_posemb_prefix(model_config)
    top['posemb'] = np.concatenate([top['posemb'][:, :prefix],
                                    top['posemb'][:, prefix:] + bias], axis=1)
  for arrays in per_block:
    torch_names.join_fused(arrays, 'qkv', ('query', 'key', 'value'))
  torch_names.join_fused(top, 'map.kv', ('map.key', 'map.value'))
  if 'registers' in top and 'cls' in top:  # no_embed_class: fold the prefix rows into tokens
    prefix = ('cls', 'dist') if 'dist' in top else ('cls',)
    for i, name in enumerate(prefix):
      top[name] = top[name] + top['posemb'][:, i:i + 1]
    top['posemb'] = top['posemb'][:, len(prefix):]
  return torch_names.name_roles(top, per_block, TOP, BLOCK_PREFIX, BLOCK)


def _is_square(n: int) -> bool:
  return n > 0 and math.isqrt(n) ** 2 == n


def from_naflex(state: dict[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
  """timm's NaFlexViT names (`embeds.*`) -> its VisionTransformer's: the linear patch kernel
  [width, p*p*3] (row, column, channel) becomes the convolution [width, 3, p, p], the table
  [1, h, w, width] (patches only) becomes [1, h*w, width]; other entries keep their names."""
  out = {k: v for k, v in state.items() if not k.startswith('embeds.')}
  for name, value in state.items():
    if not name.startswith('embeds.'):
      continue
    rest = name[len('embeds.'):]
    if rest == 'proj.weight':
      width, inputs = value.shape
      side = math.isqrt(inputs // 3)
      if side * side * 3 != inputs:
        raise errors.UserError(f'{source}: {name} takes {inputs} inputs, not p*p*3 of a square '
                               'RGB patch.')
      out['patch_embed.proj.weight'] = value.reshape(width, side, side, 3).transpose(0, 3, 1, 2)
    elif rest == 'pos_embed':
      if value.ndim != 4 or value.shape[1] != value.shape[2]:
        raise errors.UserError(f'{source}: {name} has shape {tuple(value.shape)}; a square '
                               '[1, n, n, width] table is read.')
      out['pos_embed'] = value.reshape(1, -1, value.shape[-1])
    elif rest in ('cls_token', 'reg_token'):
      out[rest] = value
    elif rest.startswith(('proj.', 'norm.')):
      out[f'patch_embed.{rest}'] = value
    else:
      out[name] = value  # not understood: named by `to_params`
  return out


def to_params(state: dict[str, np.ndarray], source: str, num_heads: Optional[int] = None,
              map_heads: Optional[int] = None,
              posemb_prefix_rows: Optional[bool] = None) -> tuple[dict[str, Any], int]:
  """timm's state dict -> (our canonical tree, head count); a ValueError names what is not
  understood. timm files do not store the head count: `num_heads`, else the q_norm width, else
  timm's sizes by width; `map_heads`: the MAP head's, when it differs. `posemb_prefix_rows`:
  whether the position table has rows for the prefix tokens (None: read off its row count;
  NaFlexViT's never has)."""
  top, per_block, used = torch_names.read_roles(state, {**TOP, **_READ_TOP}, BLOCK_PREFIX,
                                                {**BLOCK, **_READ_BLOCK})
  unknown = sorted(k for k in state if k not in used)
  if unknown:
    raise errors.UserError(
        f'{source}: entries not understood as a timm ViT: {", ".join(unknown[:12])}'
        f'{" ..." if len(unknown) > 12 else ""}')
  if 'patch.weight' not in top or not per_block:
    raise errors.UserError(f'{source}: not a timm ViT (no patch_embed.proj.weight or blocks.0.*).')
  width = top['patch.weight'].shape[0]
  head_dim = per_block[0]['q_norm.weight'].shape[0] if 'q_norm.weight' in per_block[0] else None
  num_heads = num_heads or (width // head_dim if head_dim else _HEADS_BY_WIDTH.get(width))
  if not num_heads:
    raise errors.UserError(
        f'{source}: width {width} is not a timm size ({sorted(_HEADS_BY_WIDTH)}); '
        'give the head count (timm_model.json "num_heads" or --model).')
  for arrays in per_block:
    torch_names.split_fused(arrays, 'qkv', ('query', 'key', 'value'))
    if 'q_bias' in arrays:  # Beit: the key's bias is zero
      arrays['query.bias'], arrays['value.bias'] = arrays.pop('q_bias'), arrays.pop('v_bias')
    if 'gate.weight' in arrays:  # SwiGLU: [gate, value] packed into one kernel
      torch_names.join_fused(arrays, 'fc1', ('gate', 'fc1'))
  torch_names.split_fused(top, 'map.kv', ('map.key', 'map.value'))
  if 'posemb' not in top:  # Beit without an absolute position table
    return torch_names.from_roles(top, per_block, num_heads, map_heads), num_heads
  prefix = [n for n in ('cls', 'dist') if n in top]
  registers = top['registers'].shape[1] if 'registers' in top else 0
  rows = top['posemb'].shape[1]
  if posemb_prefix_rows is False:
    top['posemb'] = np.concatenate(
        [np.zeros_like(top['posemb'][:, :len(prefix)]), top['posemb']], axis=1)
  elif prefix and _is_square(rows):  # no_embed_class: the prefix tokens have no position
    top['posemb'] = np.concatenate(
        [np.zeros_like(top['posemb'][:, :len(prefix)]), top['posemb']], axis=1)
  elif registers and _is_square(rows - len(prefix) - registers):
    # Registers with position rows (timm's reg_tokens without no_embed_class): a constant token
    # plus a constant row is one constant token, so the rows are folded into the registers.
    start = len(prefix)
    top['registers'] = top['registers'] + top['posemb'][:, start:start + registers]
    top['posemb'] = np.concatenate(
        [top['posemb'][:, :start], top['posemb'][:, start + registers:]], axis=1)
  elif prefix and not _is_square(rows - len(prefix)):
    raise errors.UserError(f'{source}: pos_embed has {rows} rows, which is neither a square patch '
                           f'grid nor one plus the prefix tokens {prefix}.')
  # No prefix tokens: every row is a patch's, of a grid that may be non-square (the input's
  # grid must then have as many patches: `AddPositionEmbs` checks it).
  return torch_names.from_roles(top, per_block, num_heads, map_heads), num_heads


# timm's ViT sizes: width -> heads (tiny, small, medium, base, large, so400m, huge, giant, gigantic).
_HEADS_BY_WIDTH = {192: 3, 384: 6, 512: 8, 768: 12, 1024: 16, 1152: 16, 1280: 16, 1408: 16,
                   1664: 16}
