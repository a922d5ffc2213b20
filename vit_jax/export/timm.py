"""timm: a safetensors state dict with timm's ViT names, timm's own `config.json`, and our JSON.

`config.json` is what timm's `save_for_hf` writes (architecture, model_args, pretrained_cfg),
so `timm.create_model('local-dir:<dir>', pretrained=True)` builds and loads the model; it is
left out when no timm architecture has the model's LayerNorm epsilon. `timm_model.json` carries
everything `timm.create_model(architecture, pretrained=False, **args)` needs plus the epsilon,
the activation included: our default GELU is the tanh form, so `act_layer` is `gelu_tanh`
(timm's own default is the exact erf GELU).
"""

import json
import math
import os
from typing import Any, Optional

import numpy as np
from safetensors import numpy as safetensors_numpy

from vit_jax.weights import transforms
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
  if model.attn_inner_norm or model.mlp_inner_norm:  # BEiT-3's norms inside attention and MLP
    args.update(scale_attn_norm=bool(model.attn_inner_norm),
                scale_mlp_norm=bool(model.mlp_inner_norm))
  return {
      'architecture': architecture,
      'args': args,
      'pretrained_cfg': _input_cfg(pp, image_size),
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
  if geometry.model_of(model_config).norm == 'rms':  # AIMv2: timm's aimv2 layout
    return export_aimv2(params, model_config, num_classes, image_size, out_dir, pp)
  torch_names.check_exportable(params, model_config, 'timm', allow_gap=True, allow_headless=True,
                                 allow_pre_logits=False, allow_map=True, allow_features=True,
                                 inner_norms=True)
  torch_names.check_table_grid(params, model_config, image_size, 'timm')
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


# timm's NaFlexViT: the architecture model_args start from (every field is then set).
_NAFLEX_BASE = 'naflexvit_base_patch16_gap'


def export_naflex(params: Any, model_config, num_classes: Optional[int], image_size: int,
                  out_dir: str, pp: Optional[str] = None) -> str:
  """timm's NaFlexViT (`naflexvit_*`): its table keeps its own grid and timm resizes it to every
  input, as `posemb_resize` and `posemb_resize_square` say; a linear patch embedding on
  flattened patches (row, column, channel); prefix tokens without position rows (a class
  token's row joins the token). `timm.create_model('local-dir:<dir>', pretrained=True)` builds
  it, for images and for NaFlex patch dicts. Anything NaFlexViT cannot hold is refused."""
  torch_names.check_exportable(params, model_config, 'timm NaFlexViT', allow_gap=True,
                                 allow_headless=True, allow_pre_logits=False, allow_map=True,
                                 allow_features=True)
  model = geometry.model_of(model_config)
  table = params['Transformer'].get('posembed_input', {}).get('pos_embedding')
  prefix = geometry.num_posemb_prefix(model_config)
  rows = 0 if table is None else table.shape[1] - prefix
  side = math.isqrt(rows)
  lacking = {'a learned square position table': table is not None and side * side == rows,
             'LayerNorm eps 1e-6': model.layer_norm_eps == 1e-6,
             'square patches': model.patches['size'][0] == model.patches['size'][1],
             'no distillation token, pre-norm or SwiGLU': not (
                 model.distilled or model.pre_norm or model.gated_mlp)}
  torch_names.refuse_lacking('timm NaFlexViT cannot hold this model: it lacks ', lacking)
  patch = model.patches['size'][0]
  # At the table's own grid the roles are the stored table; prefix rows are folded below.
  top, per_block = torch_names.to_roles(params, model_config, side * patch)
  for arrays in per_block:
    torch_names.join_fused(arrays, 'qkv', ('query', 'key', 'value'))
  torch_names.join_fused(top, 'map.kv', ('map.key', 'map.value'))
  posemb = top.pop('posemb')
  if 'cls' in top:  # NaFlexViT's class token has no position: its row joins the token
    top['cls'] = top['cls'] + posemb[:, :1]
  width = top['patch.weight'].shape[0]
  state = torch_names.name_roles(top, per_block, timm_names.TOP, timm_names.BLOCK_PREFIX,
                                 timm_names.BLOCK)
  state['embeds.proj.weight'] = np.ascontiguousarray(
      state.pop('patch_embed.proj.weight').transpose(0, 2, 3, 1).reshape(width, -1))
  state['embeds.proj.bias'] = state.pop('patch_embed.proj.bias')
  state['embeds.pos_embed'] = np.ascontiguousarray(
      posemb[:, prefix:].reshape(1, side, side, width), np.float32)
  for ours in ('cls_token', 'reg_token'):
    if ours in state:
      state[f'embeds.{ours}'] = state.pop(ours)
  if 'patch_norm.weight' in top:
    state['embeds.norm.weight'] = np.ascontiguousarray(top['patch_norm.weight'], np.float32)
    if 'patch_norm.bias' in top:
      state['embeds.norm.bias'] = np.ascontiguousarray(top['patch_norm.bias'], np.float32)
  num_classes = num_classes or 0
  pool = {'gap': 'avg', 'map': 'map'}.get(model.classifier, 'token')
  args = {
      'patch_size': patch, 'embed_dim': width, 'depth': model.transformer['num_layers'],
      'num_heads': model.transformer['num_heads'],
      'mlp_ratio': model.transformer['mlp_dim'] / width, 'qkv_bias': True,
      'num_classes': num_classes, 'class_token': model.has_class_token,
      'reg_tokens': model.num_registers, 'global_pool': pool, 'fc_norm': bool(model.fc_norm),
      'init_values': model.layerscale, 'qk_norm': model.qk_norm,
      'act_layer': _TIMM_ACT[activation_name(model.activation, model.gelu_approximate)],
      'pos_embed_grid_size': [side, side], 'pos_embed_interp_mode': model.posemb_resize,
      'pos_embed_ar_preserving': bool(model.posemb_resize_square),
      'norm_layer': 'rmsnorm' if model.norm == 'rms' else 'layernorm',
      'embed_norm_layer': None if not model.patch_norm else (
          'rmsnorm' if model.norm == 'rms' else 'layernorm')}
  if model.classifier == 'map' and model.map_include_prefix:
    args['pool_include_prefix'] = True
  config = _timm_config(_NAFLEX_BASE, num_classes, width, pool, args, pp,
                        image_size, naflex=True)
  return _write(out_dir, state, config)


def _pairs(role: str, name: str) -> dict[str, str]:
  return {f'{role}.weight': f'{name}.weight', f'{role}.bias': f'{name}.bias'}


# timm's Eva block with AttentionRope (`attn_type='rope'`: one fused qkv with its bias, the key's
# included: rotated keys make the key bias matter); LayerScale as gamma_1/gamma_2; a packed
# GluMlp `fc1`, or SwiGLU's `fc1_g`/`fc1_x` around an inner norm.
_EVA_BLOCK = {**_pairs('norm1', 'norm1'), **_pairs('norm2', 'norm2'), **_pairs('qkv', 'attn.qkv'),
              **_pairs('q_norm', 'attn.q_norm'), **_pairs('k_norm', 'attn.k_norm'),
              **_pairs('attn_norm', 'attn.norm'), **_pairs('out', 'attn.proj'),
              'ls1': 'gamma_1', 'ls2': 'gamma_2', **_pairs('fc1', 'mlp.fc1'),
              **_pairs('fc2', 'mlp.fc2'), **_pairs('mlp_norm', 'mlp.norm')}
_SWIGLU_BLOCK = {**_EVA_BLOCK, **_pairs('fc1', 'mlp.fc1_x'), **_pairs('gate', 'mlp.fc1_g')}


def _eva_architecture(model) -> Optional[str]:
  """A timm Eva architecture whose fixed choices (its rotary kind, norm kind and epsilon, GELU
  for plain MLPs) are the model's; model_args set the rest."""
  rope = 'dinov3' if model.posemb == 'rope' else model.rope
  # base sizes first: the plainest of each kind (the largest add their own twists)
  for name in sorted(timm_archs.ARCHITECTURES, key=lambda n: ('_base_' not in n, n)):
    entry = timm_archs.ARCHITECTURES[name]
    if not isinstance(entry, tuple) or len(entry) != 5 or name.startswith('naflexvit'):
      continue
    extra = entry[4]
    kind = 'dinov3' if extra.get('posemb') == 'rope' else extra.get('rope')
    if (kind == rope and entry[2] == float(model.layer_norm_eps)
        and extra.get('norm', 'layer') == model.norm):
      return name
  return None


def export_eva(params: Any, model_config, num_classes: Optional[int], image_size: int,
               out_dir: str, pp: Optional[str] = None) -> str:
  """timm's Eva: EVA-02 and timm's ROPE-ViTs (axial RoPE, with or without a table), DINOv3 in
  timm's layout (`posemb='rope'`), Perception Encoder (a pre-norm, a MAP head over every token
  with its own heads), with LayerScale, registers, SwiGLU, QK-norm. timm's `config.json` names an Eva architecture of the same
  rotary kind and norm, and `model_args` set every other choice, so that
  `timm.create_model('local-dir:<dir>', pretrained=True)` builds it."""
  torch_names.check_exportable(params, model_config, 'timm Eva', allow_gap=True,
                                 allow_headless=True, allow_pre_logits=False, allow_map=True,
                                 allow_features=True, eva=True)
  model = geometry.model_of(model_config)
  architecture = _eva_architecture(model)
  rope = 'dinov3' if model.posemb == 'rope' else model.rope
  lacking = {
      'rotary embeddings (else export with format timm)': rope != 'none',
      f'a timm Eva architecture with {rope} rotary embeddings, {model.norm} norms of eps '
      f'{model.layer_norm_eps:g}': architecture is not None,
      'erf GELU in plain MLPs, SiLU in gated ones': model.activation == (
          'silu' if model.gated_mlp else 'gelu'),
      'square patches': model.patches['size'][0] == model.patches['size'][1],
      'no distillation token or hybrid stem': not (model.distilled or model.resnet is not None),
      'a MAP head over every token (map_include_prefix) with an MLP, if any': (
          model.classifier != 'map' or (model.map_include_prefix and model.map_mlp)),
      'a position table beside a pre-norm (the patch bias joins it)': (
          not model.pre_norm or model.posemb not in ('none', 'rope')),
  }
  torch_names.refuse_lacking('timm Eva cannot hold this model: it lacks ', lacking)
  absolute = model.posemb not in ('none', 'rope')
  if absolute:
    torch_names.check_table_grid(params, model_config, image_size, 'timm Eva')
  top, per_block = torch_names.to_roles(params, model_config, image_size)
  if model.pre_norm:  # Eva's pre-norm models have no patch bias: a constant of every patch
    bias = top.pop('patch.bias')
    prefix = geometry.num_posemb_prefix(model_config)
    top['posemb'] = np.concatenate([top['posemb'][:, :prefix], top['posemb'][:, prefix:] + bias],
                                   axis=1)
  torch_names.join_fused(top, 'map.kv', ('map.key', 'map.value'))
  if absolute and 'registers' in top and 'cls' in top:  # no_embed_class: the class row joins the token
    top['cls'] = top['cls'] + top['posemb'][:, :1]
    top['posemb'] = top['posemb'][:, 1:]
  swiglu = model.gated_mlp and model.mlp_inner_norm
  for arrays in per_block:
    torch_names.join_fused(arrays, 'qkv', ('query', 'key', 'value'))
    if swiglu:  # SwiGLU's two projections: [gate, value] unpacked
      torch_names.split_fused(arrays, 'fc1', ('gate', 'fc1'))
  block = _SWIGLU_BLOCK if swiglu else _EVA_BLOCK
  unnamed = sorted({r for r in top if r not in timm_names.TOP}
                   | {r for arrays in per_block for r in arrays if r not in block})
  if unnamed:  # a bug of ours: the gate above lets through a role Eva has no name for
    raise AssertionError(f'Eva export: roles without a name: {unnamed}')
  state = torch_names.name_roles(top, per_block, timm_names.TOP, timm_names.BLOCK_PREFIX, block)
  width = model.hidden_size
  hidden = model.transformer['mlp_dim']
  pool = {'gap': 'avg', 'map': 'map'}.get(model.classifier, 'token')
  args = {
      'img_size': image_size, 'patch_size': model.patches['size'][0], 'embed_dim': width,
      'depth': model.transformer['num_layers'], 'num_heads': model.transformer['num_heads'],
      # timm: int(embed_dim * mlp_ratio), SwiGLU's hidden width as its fused MLP's
      'mlp_ratio': (hidden + 1e-6) / width, 'num_classes': num_classes or 0,
      'qkv_bias': True, 'qkv_fused': True, 'attn_type': 'rope', 'qk_norm': model.qk_norm,
      'swiglu_mlp': model.gated_mlp, 'swiglu_align_to': 0, 'scale_mlp': model.mlp_inner_norm,
      'scale_attn_inner': model.attn_inner_norm, 'init_values': model.layerscale,
      'class_token': model.has_class_token, 'num_reg_tokens': model.num_registers,
      'no_embed_class': bool(absolute and model.num_registers), 'use_abs_pos_emb': absolute,
      'use_rot_pos_emb': True, 'rope_temperature': float(model.rope_theta),
      'global_pool': pool, 'use_fc_norm': bool(model.fc_norm),
      'use_post_transformer_norm': not model.fc_norm,
      'use_pre_transformer_norm': bool(model.pre_norm), 'dynamic_img_size': False}
  if model.classifier == 'map':
    args.update(attn_pool_num_heads=model.map_heads or model.transformer['num_heads'],
                attn_pool_mlp_ratio=(model.map_mlp_dim or hidden) / width)
  if rope == 'axial':
    args.update(rope_grid_offset=float(model.rope_offset),
                rope_grid_indexing='xy' if model.rope_xy else 'ij',
                ref_feat_shape=None if model.rope_grid is None else list(model.rope_grid))
  config = _timm_config(architecture, num_classes or 0, width, pool, args, pp,
                        image_size)
  return _write(out_dir, state, config)


# timm's Beit block: a bias-free qkv beside a q and a v bias, its relative position table,
# LayerScale as gamma_1/gamma_2.
_BEIT_BLOCK = {**_pairs('norm1', 'norm1'), **_pairs('norm2', 'norm2'),
               'qkv.weight': 'attn.qkv.weight', 'q_bias': 'attn.q_bias', 'v_bias': 'attn.v_bias',
               'rel_bias': 'attn.relative_position_bias_table', **_pairs('out', 'attn.proj'),
               'ls1': 'gamma_1', 'ls2': 'gamma_2', **_pairs('fc1', 'mlp.fc1'),
               **_pairs('fc2', 'mlp.fc2')}
_BEIT_TOP = {**timm_names.TOP, 'rel_bias': 'rel_pos_bias.relative_position_bias_table'}


def export_beit(params: Any, model_config, num_classes: Optional[int], image_size: int,
                out_dir: str, pp: Optional[str] = None) -> str:
  """timm's Beit (`beit_*`, `beitv2_*`): relative position tables per block or shared, an
  absolute table or none, LayerScale, average pooling + `fc_norm` or the class token. BEiT's
  key has no bias: ours adds the same `q . b_k` to every logit of a query (no rotary
  embeddings here), which the softmax ignores, so it is dropped."""
  torch_names.check_exportable(params, model_config, 'timm Beit', allow_gap=True,
                                 allow_headless=True, allow_pre_logits=False,
                                 allow_features=True, relative=True)
  model = geometry.model_of(model_config)
  lacking = {
      'a class token': model.has_class_token,
      "the class token's logits or average pooling + fc_norm": (
          model.classifier == 'token' and not model.fc_norm) or (
              model.classifier == 'gap' and model.fc_norm),
      'erf GELU MLPs with LayerNorm eps 1e-6': (model.activation == 'gelu' and not model.gated_mlp
                                                and model.layer_norm_eps == 1e-6),
      'square patches': model.patches['size'][0] == model.patches['size'][1],
      'no registers, distillation token, QK-norm, pre-norm or hybrid stem': not (
          model.num_registers or model.distilled or model.qk_norm or model.pre_norm
          or model.resnet is not None),
  }
  torch_names.refuse_lacking('timm Beit cannot hold this model: it lacks ', lacking)
  absolute = model.posemb != 'none'
  if absolute:
    torch_names.check_table_grid(params, model_config, image_size, 'timm Beit')
  top, per_block = torch_names.to_roles(params, model_config, image_size)
  for arrays in per_block:
    arrays['qkv.weight'] = np.concatenate(
        [arrays.pop(f'{r}.weight') for r in ('query', 'key', 'value')], axis=0)
    arrays['q_bias'], arrays['v_bias'] = arrays.pop('query.bias'), arrays.pop('value.bias')
    arrays.pop('key.bias')  # the softmax ignores it (see above)
  unnamed = sorted({r for r in top if r not in _BEIT_TOP}
                   | {r for arrays in per_block for r in arrays if r not in _BEIT_BLOCK})
  if unnamed:  # a bug of ours: the gate above lets through a role Beit has no name for
    raise AssertionError(f'Beit export: roles without a name: {unnamed}')
  state = torch_names.name_roles(top, per_block, _BEIT_TOP, timm_names.BLOCK_PREFIX, _BEIT_BLOCK)
  width = model.hidden_size
  pool = 'avg' if model.classifier == 'gap' else 'token'
  args = {
      'img_size': image_size, 'patch_size': model.patches['size'][0], 'embed_dim': width,
      'depth': model.transformer['num_layers'], 'num_heads': model.transformer['num_heads'],
      'mlp_ratio': (model.transformer['mlp_dim'] + 1e-6) / width,
      'num_classes': num_classes or 0, 'qkv_bias': True, 'init_values': model.layerscale,
      'use_abs_pos_emb': absolute, 'use_rel_pos_bias': bool(model.rel_pos_bias),
      'use_shared_rel_pos_bias': bool(model.shared_rel_pos_bias), 'global_pool': pool,
      'use_fc_norm': bool(model.fc_norm)}
  return _write(out_dir, state, _timm_config('beit_base_patch16_224', num_classes or 0, width,
                                             pool, args, pp, image_size))


# timm's AIMv2 (a VisionTransformer with RMSNorm, a patch norm and timm's SwiGLU module).
_AIMV2_BLOCK = {**timm_names.BLOCK, **_pairs('fc1', 'mlp.fc1_x'), **_pairs('gate', 'mlp.fc1_g')}
_AIMV2_TOP = {**timm_names.TOP, 'patch_norm.weight': 'patch_embed.norm.weight'}


def export_aimv2(params: Any, model_config, num_classes: Optional[int], image_size: int,
                 out_dir: str, pp: Optional[str] = None) -> str:
  """timm's AIMv2 layout (`aimv2_*`): RMSNorm (eps 1e-5) throughout, a norm of the patch
  tokens, SwiGLU, no class token, average pooling. `qkv_bias` and `proj_bias` are written on,
  so biases trained here are kept. Its pooling head (a MAP head without MLP) has no timm form:
  such towers go out as `hf_aimv2`."""
  model = geometry.model_of(model_config)
  lacking = {
      'RMSNorm of eps 1e-5, a patch norm and a SiLU-gated MLP': (
          model.norm == 'rms' and model.layer_norm_eps == 1e-5 and model.patch_norm
          and model.gated_mlp and model.activation == 'silu'),
      'average pooling without fc_norm (a MAP head without MLP goes out as hf_aimv2)': (
          model.classifier == 'gap' and not model.fc_norm),
      'no class token, registers, LayerScale, QK-norm, pre-norm, rotary or relative positions, '
      'inner norms, representation layer or hybrid stem': not torch_names.beyond_aimv2(model),
      'square patches': model.patches['size'][0] == model.patches['size'][1],
  }
  torch_names.refuse_lacking('timm AIMv2 cannot hold this model: it lacks ', lacking)
  torch_names.check_table_grid(params, model_config, image_size, 'timm AIMv2')
  top, per_block = torch_names.to_roles(params, model_config, image_size)
  for arrays in per_block:
    torch_names.join_fused(arrays, 'qkv', ('query', 'key', 'value'))
    torch_names.split_fused(arrays, 'fc1', ('gate', 'fc1'))  # SwiGLU: [gate, value] unpacked
  unnamed = sorted({r for r in top if r not in _AIMV2_TOP}
                   | {r for arrays in per_block for r in arrays if r not in _AIMV2_BLOCK})
  if unnamed:  # a bug of ours: the gate above lets through a role AIMv2 has no name for
    raise AssertionError(f'AIMv2 export: roles without a name: {unnamed}')
  state = torch_names.name_roles(top, per_block, _AIMV2_TOP, timm_names.BLOCK_PREFIX,
                                 _AIMV2_BLOCK)
  width = model.hidden_size
  args = {
      'img_size': image_size, 'patch_size': model.patches['size'][0], 'embed_dim': width,
      'depth': model.transformer['num_layers'], 'num_heads': model.transformer['num_heads'],
      'mlp_ratio': (model.transformer['mlp_dim'] + 1e-6) / width,
      'num_classes': num_classes or 0, 'class_token': False, 'global_pool': 'avg',
      'fc_norm': False, 'qkv_bias': True, 'proj_bias': True, 'act_layer': 'silu'}
  return _write(out_dir, state, _timm_config('aimv2_large_patch14_224', num_classes or 0, width,
                                             'avg', args, pp, image_size))


def _timm_config(architecture: str, num_classes: int, width: int, pool: str, args: dict,
                 pp: Optional[str], image_size: int, naflex: bool = False) -> dict[str, Any]:
  """timm's `config.json` as `save_for_hf` writes it: an architecture whose `model_args` set
  every choice we make, and `pretrained_cfg` with the input transform `pp`."""
  pretrained_cfg = {**_input_cfg(pp, image_size), 'num_classes': num_classes,
                    'first_conv': 'embeds.proj' if naflex else 'patch_embed.proj',
                    'classifier': 'head', 'fixed_input_size': not naflex}
  return {'architecture': architecture, 'num_classes': num_classes, 'num_features': width,
          'global_pool': pool, 'model_args': args, 'pretrained_cfg': pretrained_cfg}


def _write(out_dir: str, state: dict[str, np.ndarray], config: dict[str, Any]) -> str:
  """model.safetensors and timm's config.json into `out_dir`."""
  os.makedirs(out_dir, exist_ok=True)
  safetensors_numpy.save_file(state, os.path.join(out_dir, 'model.safetensors'),
                              metadata={'format': 'pt'})
  with open(os.path.join(out_dir, 'config.json'), 'w', encoding='utf-8') as f:
    json.dump(config, f, indent=2)
  return out_dir


def _input_cfg(pp: Optional[str], image_size: int) -> dict[str, Any]:
  """timm's `pretrained_cfg` input fields for the input transform `pp` (default: [-1, 1])."""
  return transforms.to_timm(pp or transforms.released(image_size), image_size)
