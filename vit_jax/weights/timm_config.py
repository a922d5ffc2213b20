"""What a timm checkpoint's `config.json` (written by timm's `save_for_hf`) fixes of our model.

`architecture` names a timm model: its head count, activation, LayerNorm epsilon and MLP kind
come from `timm_archs.ARCHITECTURES` (read off timm's own modules); `model_args` (what the
model was created with) and `global_pool` override them. An architecture we cannot represent
is refused naming the feature it needs.
"""

from typing import Any, Mapping, Optional

from vit_jax import errors
from vit_jax.weights import timm_archs

# timm's act_layer names -> ours.
ACTIVATIONS = {'gelu': 'gelu', 'gelu_tanh': 'gelu_tanh', 'quick_gelu': 'quick_gelu',
                'silu': 'silu', 'swish': 'silu'}
# timm's global_pool -> our classifier.
_POOLS = {'token': 'token', 'avg': 'gap', 'map': 'map'}
# model_args we read: what the weights show, or what the fields below take.
_READ_ARGS = {'img_size', 'patch_size', 'embed_dim', 'depth', 'mlp_ratio', 'qkv_bias',
               'proj_bias', 'num_classes', 'drop_rate', 'pos_drop_rate', 'patch_drop_rate',
               'proj_drop_rate', 'attn_drop_rate', 'drop_path_rate', 'weight_init', 'fix_init',
               'dynamic_img_size', 'dynamic_img_pad', 'reg_tokens', 'no_embed_class',
               'class_token', 'init_values', 'qk_norm', 'pre_norm', 'fc_norm', 'strict_img_size',
               'num_heads', 'act_layer', 'global_pool', 'in_chans', 'final_norm', 'pos_embed',
               'pretrained_strict',
               # Beit's: the weights show its position tables and pooling norm.
               'use_abs_pos_emb', 'use_rel_pos_bias', 'use_shared_rel_pos_bias', 'use_fc_norm',
               'head_init_scale',
               # NaFlexViT's: the table's grid shows; how it is resized is read below.
               'pos_embed_grid_size', 'pos_embed_interp_mode', 'pos_embed_ar_preserving',
               'norm_layer', 'embed_norm_layer', 'pool_include_prefix',
               # Eva's (our timm_eva export writes them): read in `_eva_fields`.
               'qkv_fused', 'attn_type', 'swiglu_mlp', 'swiglu_align_to', 'scale_mlp',
               'scale_attn_inner', 'num_reg_tokens', 'use_abs_pos_emb', 'use_rot_pos_emb',
               'rope_temperature', 'rope_grid_offset', 'rope_grid_indexing', 'ref_feat_shape',
               'use_fc_norm', 'use_pre_transformer_norm', 'use_post_transformer_norm',
               'attn_pool_num_heads', 'attn_pool_mlp_ratio',
               # VisionTransformer's norms inside attention and MLP (BEiT-3)
               'scale_attn_norm', 'scale_mlp_norm'}
# norm_layer names whose kind the weights show (an RMSNorm has no bias).
_NORMS = ('layernorm', 'rmsnorm', None)


def _architecture(name: str, source: str) -> tuple:
  entry = timm_archs.ARCHITECTURES.get(name.split('.')[0])
  if entry is None:
    raise errors.UserError(
        f'{source}: architecture {name!r} is not a timm '
        f'{timm_archs.TIMM_VERSION} ViT we know (vit_*, deit*, flexivit_*, ...).')
  if isinstance(entry, str):
    raise errors.UserError(f'{source}: timm architecture {name!r} uses {entry}, which our model '
                           'lacks; it is refused.')
  return entry


def fields(config: Mapping[str, Any], source: str) -> dict[str, Any]:
  """{model field: value} that the config fixes, plus 'num_heads' and 'global_pool' (the
  input transform of `pretrained_cfg` is read by `foreign.input_transform`)."""
  name = config.get('architecture')
  if not isinstance(name, str):
    raise errors.UserError(f'{source}: timm config.json has no architecture.')
  heads, activation, eps, gated, *extra = _architecture(name, source)  # [{field: value}]
  args = dict(config.get('model_args') or {})
  unknown = sorted(k for k in args if k not in _READ_ARGS)
  if unknown:
    raise errors.UserError(f'{source}: model_args {unknown[0]}={args[unknown[0]]!r} changes the '
                           'architecture in a way we do not read; it is refused.')
  if args.get('in_chans', 3) != 3:
    raise errors.UserError(
        f'{source}: model_args in_chans={args["in_chans"]}: only RGB (3) is read.')
  if args.get('pos_embed', 'learn') != 'learn':
    raise errors.UserError(f'{source}: model_args pos_embed={args["pos_embed"]!r}: only learned '
                           'position embeddings are read.')
  if 'act_layer' in args:
    if args['act_layer'] not in ACTIVATIONS:
      raise errors.UserError(
          f'{source}: model_args act_layer={args["act_layer"]!r}: expected one of '
          f'{sorted(ACTIVATIONS)}.')
    activation = ACTIVATIONS[args['act_layer']]
  pool = args.get('global_pool', config.get('global_pool'))
  if pool is not None and pool not in _POOLS and pool != '':
    raise errors.UserError(f'{source}: global_pool={pool!r}: expected one of {sorted(_POOLS)}.')
  out = {'activation': activation, 'layer_norm_eps': float(eps),
         'num_heads': int(args.get('num_heads', heads)), 'global_pool': pool}
  if gated:
    out['gated_mlp'] = True
  if extra:  # RMSNorm (AIMv2), DINOv3's rotary embeddings, NaFlexViT's table resizing
    out.update(extra[0])
  if 'pos_embed_interp_mode' in args:
    if args['pos_embed_interp_mode'] not in ('bilinear', 'bicubic'):
      raise errors.UserError(
          f'{source}: model_args pos_embed_interp_mode={args["pos_embed_interp_mode"]!r}: '
          "expected 'bilinear' or 'bicubic'.")
    out['posemb_resize'] = args['pos_embed_interp_mode']
  for name in ('norm_layer', 'embed_norm_layer'):
    if args.get(name) not in _NORMS:
      raise errors.UserError(f'{source}: model_args {name}={args[name]!r}: expected one of '
                             f'{_NORMS}.')
  _eva_fields(out, args, source)
  if args.get('pool_include_prefix'):
    out['map_include_prefix'] = True
  if 'pos_embed_ar_preserving' in args:
    out['posemb_resize_square'] = bool(args['pos_embed_ar_preserving'])
  if args.get('final_norm') is False and not args.get('fc_norm'):
    raise errors.UserError(
        f'{source}: model_args final_norm=False: a model without a final norm is '
        'refused.')
  return out


def _eva_fields(out: dict[str, Any], args: Mapping[str, Any], source: str) -> None:
  """Eva's model_args over its architecture's fields, in place: its MLP kind (SiLU gated or erf
  GELU), a table or none, and the rotary settings; the weights show the rest."""
  if args.get('attn_type', 'eva') not in ('eva', 'rope'):
    raise errors.UserError(f'{source}: model_args attn_type={args["attn_type"]!r}: expected '
                           "'eva' or 'rope'.")
  if 'swiglu_mlp' in args:
    out['activation'] = 'silu' if args['swiglu_mlp'] else 'gelu'
    out['gated_mlp'] = bool(args['swiglu_mlp'])
  for arg, field in (('scale_mlp', 'mlp_inner_norm'), ('scale_attn_inner', 'attn_inner_norm'),
                     ('scale_mlp_norm', 'mlp_inner_norm'), ('scale_attn_norm', 'attn_inner_norm')):
    if arg in args:
      out[field] = bool(args[arg])
  rope = 'dinov3' if out.get('posemb') == 'rope' else out.get('rope', 'none')
  if 'use_rot_pos_emb' in args and bool(args['use_rot_pos_emb']) != (rope != 'none'):
    raise errors.UserError(f'{source}: model_args use_rot_pos_emb={args["use_rot_pos_emb"]!r} '
                           f'on an architecture with {rope} rotary embeddings is not read; it is '
                           'refused.')
  if 'use_abs_pos_emb' in args and rope == 'axial':
    out['posemb'] = 'learn' if args['use_abs_pos_emb'] else 'none'
  if 'rope_temperature' in args:
    out['rope_theta'] = float(args['rope_temperature'])
  if args.get('attn_pool_num_heads'):
    out['map_heads'] = int(args['attn_pool_num_heads'])
  if args.get('use_post_transformer_norm') is False and not args.get('use_fc_norm'):
    raise errors.UserError(f'{source}: model_args use_post_transformer_norm=False: a model '
                           'without a final norm is refused.')
  if rope == 'dinov3' and args.get('rope_grid_indexing', 'ij') != 'ij':
    raise errors.UserError(f'{source}: model_args rope_grid_indexing='
                           f'{args["rope_grid_indexing"]!r} with DINOv3\'s rope is refused.')
  if rope == 'axial':
    if 'rope_grid_offset' in args:
      out['rope_offset'] = float(args['rope_grid_offset'])
    if 'rope_grid_indexing' in args:
      out['rope_xy'] = args['rope_grid_indexing'] == 'xy'
    if 'ref_feat_shape' in args:
      grid = args['ref_feat_shape']
      out['rope_grid'] = None if grid is None else tuple(
          [grid, grid] if isinstance(grid, int) else grid)


def classifier(pool: Optional[str], has_class_token: bool, has_map: bool) -> dict[str, Any]:
  """Our classifier (and class_token when it differs from the classifier's default) for timm's
  `global_pool` and the tokens the weights hold."""
  if pool is None:  # no config said it: timm's own default for these weights
    pool = 'map' if has_map else 'token' if has_class_token else 'avg'
  if pool == '':
    return {'classifier': 'token_unpooled' if has_class_token else 'unpooled'}
  ours = _POOLS[pool]
  out = {'classifier': ours}
  if ours != 'token' and has_class_token:
    out['class_token'] = True  # the class token is there, pooling reads the rest
  return out
