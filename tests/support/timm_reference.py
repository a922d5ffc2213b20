"""timm built in-process: an import stand-in for torchvision, and what timm's own modules say.

timm imports torchvision at import time, and no CPU torchvision build matches the pinned torch;
its ViT code uses nothing from it, so a stand-in module is put in its place while timm imports
(and only then: transformers must not see it). `architecture_fields` reads a built timm model
the way `vit_jax/weights/timm_archs.py` records it; `python tests/support/timm_reference.py` rewrites
that table from the installed timm.
"""

import importlib.abc
import importlib.machinery
import pprint
import sys
import types


class _Anything(type):
  def __getattr__(cls, name):
    if name.startswith('__'):
      raise AttributeError(name)
    return _Anything(name, (), {})

  def __call__(cls, *args, **kwargs):
    raise RuntimeError('torchvision is a stand-in here: timm\'s ViTs do not use it.')


class _StandIn(types.ModuleType):
  def __getattr__(self, name):
    if name.startswith('__'):
      raise AttributeError(name)
    return _Anything(name, (), {})


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  def find_spec(self, name, path, target=None):
    del path, target
    if name == 'torchvision' or name.startswith('torchvision.'):
      return importlib.machinery.ModuleSpec(name, self, is_package=True)
    return None

  def create_module(self, spec):
    module = _StandIn(spec.name)
    module.__path__ = []
    return module

  def exec_module(self, module):
    pass


def import_timm():
  """timm, imported with the torchvision stand-in in place only during the import."""
  if 'timm' in sys.modules:
    return sys.modules['timm']
  finder = _Finder()
  sys.meta_path.insert(0, finder)
  try:
    # behind the torchvision stand-in (tests/support/timm_reference.py).
    import timm  # pylint: disable=g-import-not-at-top
    import timm.models  # pylint: disable=g-import-not-at-top,unused-import
  finally:
    sys.meta_path.remove(finder)
    # timm keeps what it took from the stand-in; nothing else may find a torchvision.
    for name in [n for n in sys.modules if n == 'torchvision' or n.startswith('torchvision.')]:
      if isinstance(sys.modules[name], _StandIn):
        del sys.modules[name]
  return timm


# timm modules whose architectures are ViTs we may read, and the feature the others lack.
READ_MODULES = ('vision_transformer', 'deit', 'beit', 'eva', 'naflexvit')
REFUSED_MODULES = {
    'vision_transformer_relpos': ("timm's relpos attention (a relative position MLP, or a "
                                  'table without class-token rows)'),
    'vision_transformer_hybrid': 'a CNN stem (timm hybrid)',
    'vision_transformer_sam': 'windowed attention with relative positions (SAM)',
}
_ACTIVATIONS = {'GELU': 'gelu', 'GELUTanh': 'gelu_tanh', 'QuickGELU': 'quick_gelu', 'SiLU': 'silu'}


def architecture_fields(model):
  """(heads, activation, norm eps, gated MLP[, {other fields: RMSNorm, DINOv3's RoPE}]) of a
  timm VisionTransformer, Beit or Eva, or the feature that our model lacks (a string)."""
  block = model.blocks[0]
  kind = type(block).__name__
  if kind not in ('Block', 'EvaBlock'):
    return {'ParallelScalingBlock': 'parallel attention and MLP branches',
            'ParallelThingsBlock': 'parallel attention and MLP branches',
            'DiffParallelScalingBlock': 'differential attention',
            'ResPostBlock': 'post-norm residual blocks'}.get(kind, f'{kind} blocks')
  norm = type(block.norm1).__name__
  if norm not in ('LayerNorm', 'RmsNorm'):
    return norm
  extra = _naflex_fields(model)
  if isinstance(extra, str):
    return extra
  rope = _rope_fields(model)  # the rotary variant we lack is named first
  if isinstance(rope, str):
    return rope
  extra.update(rope)
  if type(block.attn).__name__ not in ('Attention', 'EvaAttention', 'AttentionRope'):
    return {'DiffAttention': 'differential attention'}.get(type(block.attn).__name__,
                                                          type(block.attn).__name__)
  inner = [getattr(block.attn, 'norm', None), getattr(block.mlp, 'norm', None)]  # Beit: none
  attn_norm, mlp_norm = [n is not None and type(n).__name__ != 'Identity' for n in inner]
  if attn_norm:
    if type(block.attn.norm).__name__ != 'LayerNorm':
      return f'a {type(block.attn.norm).__name__} inside attention'
    extra['attn_inner_norm'] = True
  if mlp_norm:
    extra['mlp_inner_norm'] = True
  if getattr(block.attn, 'gate', None) is not None:
    return 'gated attention outputs'
  if type(model.norm).__name__ == 'Identity' and type(model.fc_norm).__name__ == 'Identity':
    return 'no final norm'
  mlp = type(block.mlp).__name__
  if mlp not in ('Mlp', 'GluMlp', 'SwiGLU'):
    return f'{mlp} MLPs'
  act = type(block.mlp.act).__name__
  if act == 'GELU' and block.mlp.act.approximate == 'tanh':
    act = 'GELUTanh'
  if norm == 'RmsNorm':
    extra['norm'] = 'rms'
  pool = getattr(model, 'attn_pool', None)  # Eva's attends to every token
  if pool is not None and (kind == 'EvaBlock' or getattr(model, 'pool_include_prefix', False)):
    extra['map_include_prefix'] = True
  if pool is not None and pool.num_heads != block.attn.num_heads:
    extra['map_heads'] = pool.num_heads
  fields = (block.attn.num_heads, _ACTIVATIONS[act], float(block.norm1.eps), mlp != 'Mlp')
  return fields + (extra,) if extra else fields


def _naflex_fields(model):
  """{} for timm's fixed-grid ViTs; for its NaFlexViT (`model.embeds`), how its position table
  is resized to every grid (it keeps its own grid: `dynamic_image_size`), or what we lack."""
  embeds = getattr(model, 'embeds', None)
  if embeds is None:
    return {}
  if embeds.norm_input is not None:
    return 'a norm of the raw patch pixels (NaFlexViT input_norm_layer)'
  if embeds.pos_embed_type == 'factorized':
    return 'factorized position tables (one per axis, NaFlexViT)'
  if embeds.pos_embed_type == 'none':
    return {'posemb': 'none'}
  if not embeds.pos_embed_antialias:
    return 'a position table resized without antialiasing (NaFlexViT, RADIO)'
  if embeds.pos_embed_align_corners:
    return 'a position table resized with aligned corners (NaFlexViT)'
  if embeds.pos_embed_use_grid_sample:
    return 'a position table read by grid sampling (NaFlexViT)'
  if embeds.pos_embed_interp_mode not in ('bilinear', 'bicubic'):
    return f'a position table resized by {embeds.pos_embed_interp_mode} (NaFlexViT)'
  fields = {'dynamic_image_size': True, 'posemb_resize': embeds.pos_embed_interp_mode}
  if embeds.pos_embed_ar_preserving:
    fields['posemb_resize_square'] = True
  return fields


def _rope_fields(model):
  """{} without rotary embeddings; DINOv3's (timm's RotaryEmbeddingDinoV3 as DINOv3 runs it
  at inference) as our posemb='rope' fields, the axial one of EVA-02, timm's ROPE-ViTs and PE
  (RotaryEmbeddingCat on an index grid, interleaved) as rope='axial'; else the variant we lack
  (a string)."""
  rope = getattr(model, 'rope', None)
  if rope is None:
    return {}
  name = type(rope).__name__
  if getattr(model.blocks[0].attn, 'num_kv_groups', 1) > 1:
    return 'grouped key/value heads'
  if (name == 'RotaryEmbeddingCat' and not rope.in_pixels and rope.grid_type == 'index'
      and not rope.rotate_half and not rope.aug_active):
    fields = {'rope': 'axial', 'rope_theta': float(rope.temperature),
              'rope_grid': None if rope.ref_feat_shape is None else tuple(rope.ref_feat_shape),
              'rope_offset': float(rope.grid_offset), 'rope_xy': rope.grid_indexing == 'xy'}
    if getattr(model, 'pos_embed', None) is None:
      fields['posemb'] = 'none'
    return fields
  dinov3 = (name == 'RotaryEmbeddingDinoV3' and rope.rotate_half and rope.min_period is None
            and rope.normalize_coords == 'separate' and rope.grid_indexing == 'ij'
            and not rope.grid_offset)
  if not dinov3:
    return {'RotaryEmbeddingCat': 'rotary position embeddings of EVA-02 and timm ROPE-ViTs '
                                  '(RotaryEmbeddingCat)',
            'RotaryEmbeddingMixed': 'learned mixed rotary position embeddings '
                                    '(RotaryEmbeddingMixed)'}.get(
                                        name, f'rotary position embeddings ({name})')
  if getattr(model, 'pos_embed', None) is not None:
    return 'rotary beside absolute position embeddings'
  return {'posemb': 'rope', 'rope_theta': float(rope.temperature)}


def survey():
  """{architecture: fields or refusal} for every ViT-family architecture the installed timm has."""
  # PyTorch: imported only by the tests that build a reference.
  import torch  # pylint: disable=g-import-not-at-top
  timm = import_timm()
  registry = timm.models._registry._model_to_module  # pylint: disable=protected-access
  table = {}
  for name in sorted(timm.list_models()):
    module = registry.get(name)
    if name.startswith('test_') or module not in READ_MODULES + tuple(REFUSED_MODULES):
      continue
    if module in REFUSED_MODULES:
      table[name] = REFUSED_MODULES[module]
      continue
    with torch.device('meta'):
      table[name] = architecture_fields(_one_block(timm, name))
  return table


def _one_block(timm, name):
  """The architecture with one block, which is all `architecture_fields` reads besides the
  model-level modules (for timm 1.0.31 the table is the same as from the full depth, and is
  built in seconds instead of minutes); the full model where one block is not a valid depth
  (`depth` not an argument, per-block settings)."""
  try:
    return timm.create_model(name, pretrained=False, depth=1)
  except (TypeError, AssertionError):
    return timm.create_model(name, pretrained=False)


def write_table(path='vit_jax/weights/timm_archs.py'):
  timm = import_timm()
  header = (f'"""What timm {timm.__version__}\'s ViT architectures fix beyond their weights: '
            'written by `python tests/support/timm_reference.py`.\n\n'
            '{architecture: (heads, activation, norm eps, gated MLP[, {other field: value}]) | '
            'the feature our\nmodel lacks}. The weights show the rest (width, depth, MLP size, tokens, norms, '
            'pooling head); `tests/test_timm_import.py`\nchecks every entry against timm\'s '
            'own modules.\n"""\n\n')
  with open(path, 'w', encoding='utf-8') as f:
    f.write(header + f'TIMM_VERSION = {timm.__version__!r}\n\nARCHITECTURES = ')
    f.write(pprint.pformat(survey(), width=100, sort_dicts=True) + '\n')


if __name__ == '__main__':
  write_table()
