"""timm checkpoints in, as timm itself writes them (`save_for_hf`: config.json + model.safetensors):
each architecture built by timm with random weights, loaded through `trained_model.load`, and
compared with timm's own logits; the architectures we cannot represent are refused naming the
feature. The table of what timm's architecture names fix is checked against timm's modules."""

import json
import math
import os

import jax
import ml_collections
import numpy as np
import pytest
import torch

from vit_jax.data import naflex
from vit_jax.export import timm as timm_export
from vit_jax.models import posemb
from vit_jax.models import sequences
from vit_jax.models.vit import VisionTransformer
from vit_jax.weights import timm_archs
from vit_jax.weights import trained_model

from support import timm_reference

timm = timm_reference.import_timm()

# Small enough for a CPU test; the architecture-level choices (activation, norm epsilon, MLP kind,
# tokens, pooling, norms) still come from timm's name for the model.
SMALL = dict(embed_dim=64, depth=2, num_heads=4, img_size=32, patch_size=8, num_classes=5)


def _randomized(name: str, **kwargs) -> torch.nn.Module:
  model = timm.create_model(name, pretrained=False, **{**SMALL, **kwargs})
  generator = torch.Generator().manual_seed(len(name))
  with torch.no_grad():
    for param in model.parameters():  # zero and identity inits would hide mistakes
      param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
  return model.eval()


def _images(size=32, seed=0):
  height, width = (size, size) if isinstance(size, int) else size
  return np.random.default_rng(seed).uniform(-1, 1, (2, height, width, 3)).astype(np.float32)


def _compare(model, loaded, size=32):
  images = _images(size)
  with torch.no_grad():
    theirs = model(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()
  ours = np.asarray(loaded.model.apply({'params': loaded.params}, images, train=False))
  scale = np.abs(theirs).max()
  np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * scale)


EXACT = [
    ('vit_base_patch16_224', {}),
    ('vit_base_patch16_224', dict(qk_norm=True)),
    ('vit_base_patch16_clip_224', {}),  # pre-norm, LayerNorm eps 1e-5
    ('vit_base_patch16_clip_quickgelu_224', {}),
    ('vit_base_patch16_gap_224', {}),  # no class token, average pooling
    ('vit_small_patch16_224', dict(global_pool='avg', fc_norm=False)),  # avg beside a cls token
    ('vit_small_patch16_224', dict(global_pool='avg')),  # avg + fc_norm (MAE-style heads)
    ('vit_medium_patch16_gap_256', {}),
    ('vit_base_patch16_siglip_224', {}),  # MAP head, erf GELU
    ('vit_so400m_patch16_siglip_256', {}),  # MAP head, tanh GELU
    ('vit_base_patch16_siglip_gap_224', {}),
    ('vit_small_patch14_dinov2', {}),  # LayerScale
    ('vit_small_patch14_reg4_dinov2', {}),  # registers without positions
    ('vit_giant_patch14_dinov2', dict(embed_dim=96)),  # SwiGLU (packed), SiLU
    ('vit_base_patch16_reg4_gap_256', {}),
    ('vit_so150m_patch16_reg4_gap_256', {}),  # registers with position rows
    ('vit_so150m_patch16_reg4_map_256', {}),
    ('deit_small_patch16_224', {}),
    ('deit_small_distilled_patch16_224', {}),
    ('deit3_small_patch16_224', {}),  # LayerScale, no position for the class token
    ('flexivit_small', {}),
    ('vit_base_patch16_224', dict(class_token=False, global_pool='avg', fc_norm=True)),
    # Beit: a relative position table per block, q and v biases, LayerScale, mean pooling +
    # fc_norm; a shared table beside an absolute one; the class token read after `norm`.
    ('beit_base_patch16_224', {}),
    ('beitv2_base_patch16_224', {}),
    ('beit_base_patch16_224', dict(use_rel_pos_bias=False, use_shared_rel_pos_bias=True,
                                   use_abs_pos_emb=True)),
    ('beit_base_patch16_224', dict(global_pool='token')),
    # AIMv2: RMSNorm throughout, a norm of the patch tokens, SwiGLU as fc1_g/fc1_x, no biases.
    ('aimv2_large_patch14_224', {}),
    # timm's DINOv3 (Eva blocks): RoPE, registers, LayerScale; q and v biases; SwiGLU.
    ('vit_base_patch16_dinov3', {}),
    ('vit_base_patch16_dinov3_qkvb', {}),
    ('vit_huge_plus_patch16_dinov3', {}),
    # BEiT-3: norms inside attention and MLP; EVA (the first): Eva blocks without RoPE.
    ('beit3_base_patch16_224', {}),
    ('eva_giant_patch14_224', {}),
    # The axial RoPE (timm's RotaryEmbeddingCat): EVA-02 (a learned table beside it, SwiGLU;
    # base: unfused q/k/v, a norm inside the MLP), ROPE-ViTs (columns first, with and without a
    # table), PE (offset 1, MAP head).
    ('eva02_tiny_patch14_224', {}),
    ('eva02_base_patch14_224', {}),
    ('vit_base_patch16_rope_224', {}),
    ('vit_base_patch16_rope_ape_224', {}),
    ('vit_base_patch16_rope_reg1_gap_256', {}),
    ('vit_pe_core_base_patch16_224', {}),
]


@pytest.mark.parametrize('name', ['beit_base_patch16_224', 'aimv2_large_patch14_224',
                                  'vit_base_patch16_dinov3', 'vit_base_patch16_rope_224'])
def test_a_model_built_for_a_non_square_grid_gives_timm_logits(tmp_path, name):
  """timm's Beit, AIMv2 and DINOv3 at 32x48 pixels: Beit's tables are for the 4x6 grid (7 x 11
  offsets + 3 rows), AIMv2's position table has 4x6 rows, DINOv3 rotates by patch centres."""
  model = _randomized(name, img_size=(32, 48))
  # Its transform would centre-crop a non-square input (timm's ResizeKeepRatio), which our pp
  # does not follow and refuses; squashing is followed, and this test is of the model.
  model.pretrained_cfg = {**model.pretrained_cfg, 'crop_mode': 'squash'}
  timm.models.save_for_hf(model, str(tmp_path), safe_serialization=True)
  loaded = trained_model.load(str(tmp_path))
  if name.startswith('beit'):
    assert loaded.model_config.rel_pos_bias and loaded.model_config.posemb == 'none'
  elif 'dinov3' in name:
    assert loaded.model_config.posemb == 'rope' and loaded.model_config.num_registers == 4
  elif 'rope' in name:
    assert loaded.model_config.rope == 'axial' and loaded.model_config.posemb == 'none'
  else:
    assert loaded.model_config.norm == 'rms' and loaded.model_config.patch_norm
  _compare(model, loaded, size=(32, 48))


@pytest.mark.parametrize('name,kwargs', EXACT, ids=[
    f'{n}-{"-".join(f"{k}={v}" for k, v in kw.items())}' if kw else n for n, kw in EXACT])
def test_timm_checkpoint_gives_timm_logits(tmp_path, name, kwargs):
  model = _randomized(name, **kwargs)
  timm.models.save_for_hf(model, str(tmp_path), safe_serialization=True)
  loaded = trained_model.load(str(tmp_path))
  assert loaded.num_classes == 5
  _compare(model, loaded)


def test_timm_pretrained_cfg_travels_with_the_model(tmp_path):
  model = _randomized('vit_small_patch14_dinov2')
  timm.models.save_for_hf(model, str(tmp_path), safe_serialization=True)
  cfg = json.load(open(tmp_path / 'config.json'))['pretrained_cfg']
  loaded = trained_model.load(str(tmp_path))
  size = cfg['input_size'][-1]
  scaled = math.floor(size / cfg['crop_pct'])
  assert loaded.pp == (f"resize_small({scaled}, method='bicubic', floor=True)|central_crop({size})|"
                       'normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))')


REFUSED = [
    ('vit_base_patch16_rope_mixed_224', 'mixed rotary position embeddings'),
    ('vit_relpos_small_patch16_224', 'relpos attention'),
    ('vit_base_patch16_rpn_224', 'post-norm residual blocks'),
    ('vit_base_patch16_xp_224', 'parallel attention and MLP branches'),
    ('naflexvit_base_patch16_parfac_gap', 'factorized position tables'),
    ('naflexvit_base_patch16_radio_v3', 'position table resized without antialiasing'),
]


@pytest.mark.parametrize('name,feature', REFUSED, ids=[n for n, _ in REFUSED])
def test_architectures_we_lack_are_refused_naming_the_feature(tmp_path, name, feature):
  try:
    model = _randomized(name)
  except (TypeError, AssertionError, ValueError):  # not shrinkable: the full model's config
    model = timm.create_model(name, pretrained=False, num_classes=5)
  timm.models.save_for_hf(model, str(tmp_path), safe_serialization=True)
  with pytest.raises(ValueError, match=f'{feature}.*refused') as error:
    trained_model.load(str(tmp_path))
  assert '\n' not in str(error.value) and name in str(error.value)


def test_model_args_we_do_not_read_are_refused(tmp_path):
  model = _randomized('vit_small_patch16_224')
  timm.models.save_for_hf(model, str(tmp_path), model_args={'attn_layer': 'diff'})
  with pytest.raises(ValueError, match="config.json: model_args attn_layer='diff'"):
    trained_model.load(str(tmp_path))


def test_table_equals_what_timm_builds():
  """Every ViT-family architecture of the installed timm: our table's entry equals what timm's
  own module has (heads, activation, LayerNorm eps, gated MLP, or the feature we lack)."""
  assert timm.__version__ == timm_archs.TIMM_VERSION
  assert timm_reference.survey() == timm_archs.ARCHITECTURES


EXPORTS = [
    dict(),
    dict(activation='quick_gelu', layer_norm_eps=1e-5, pre_norm=True),  # a CLIP tower
    dict(classifier='gap', fc_norm=True, class_token=True, activation='gelu'),
    dict(num_registers=2, layerscale=0.1, qk_norm=True, activation='gelu'),
    dict(classifier='map', activation='gelu_tanh'),
    dict(gated_mlp=True, activation='silu', layerscale=0.1),
    dict(distilled=True, activation='gelu'),
    # AIMv2: RMSNorm, a patch norm, SwiGLU, average pooling (timm's aimv2 layout, with biases)
    dict(norm='rms', patch_norm=True, gated_mlp=True, activation='silu', layer_norm_eps=1e-5,
         classifier='gap'),
    # BEiT-3: norms inside attention and MLP (timm's scale_attn_norm, scale_mlp_norm)
    dict(attn_inner_norm=True, mlp_inner_norm=True, layer_norm_eps=1e-5, activation='gelu',
         classifier='gap', fc_norm=True, class_token=True),
]


@pytest.mark.parametrize('overrides', EXPORTS, ids=[
    '-'.join(f'{k}={v}' for k, v in o.items()) or 'plain' for o in EXPORTS])
def test_our_timm_export_is_built_by_timm_itself(tmp_path, overrides):
  """Our timm export read by timm's own loader (`local-dir:`): timm builds the model from our
  config.json, loads our safetensors, and gives our logits."""
  config = ml_collections.ConfigDict(dict(
      patches={'size': (8, 8)}, hidden_size=32, classifier='token',
      transformer=dict(mlp_dim=64, num_heads=4, num_layers=2, dropout_rate=0.0,
                       attention_dropout_rate=0.0)))
  config.update(overrides)
  model = VisionTransformer(num_classes=5, **config)
  images = _images()
  params = model.init(jax.random.key(0), images, train=False)['params']
  params = jax.tree.map(
      lambda x: np.asarray(x) + np.random.default_rng(x.size).normal(0, 0.1, x.shape), params)
  timm_export.export(params, config, 5, 32, str(tmp_path))
  theirs = timm.create_model(f'local-dir:{tmp_path}', pretrained=True).eval()
  with torch.no_grad():
    out = theirs(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()
  ours = np.asarray(model.apply({'params': params}, images, train=False))
  np.testing.assert_allclose(out, ours, rtol=1e-4, atol=1e-4 * np.abs(ours).max())
  assert json.load(open(tmp_path / 'config.json'))['pretrained_cfg']['mean'] == [0.5] * 3


def test_lone_safetensors_says_what_it_assumed(tmp_path, caplog):
  """Without timm's config.json the weights still load (timm's defaults: erf GELU, eps 1e-6,
  pooling from the tokens, heads by width) and one warning line says what was assumed."""
  model = _randomized('vit_tiny_patch16_224', embed_dim=192, num_heads=3)
  timm.models.save_for_hf(model, str(tmp_path), safe_serialization=True)
  os.remove(tmp_path / 'config.json')
  with caplog.at_level('WARNING'):
    loaded = trained_model.load(str(tmp_path / 'model.safetensors'))
  assert 'no config.json: assumed gelu MLPs, LayerNorm eps 1e-06' in caplog.text
  assert len([r for r in caplog.records if 'assumed' in r.getMessage()]) == 1
  _compare(model, loaded)


# timm's NaFlexViT, small: its table keeps its own 6x6 grid, resized to every input's grid.
NAFLEX = dict(SMALL, pos_embed_grid_size=(6, 6))
NAFLEX.pop('img_size')
NAFLEX_GRIDS = [(4, 4), (3, 5), (2, 7), (7, 2)]  # 8-pixel patches, 16 tokens a sequence


def _naflex_outputs(timm_model, model, params):
  """(timm's, ours) on NaFlex sequences of images at four aspect ratios (ours: `data.naflex`),
  one per sequence: timm's own NaFlex forward on patches, patch_coord and patch_valid."""
  rng = np.random.default_rng(1)
  images = [rng.uniform(-1, 1, (r * 8, c * 8, 3)).astype(np.float32) for r, c in NAFLEX_GRIDS]
  tokens, positions = zip(*(naflex.patchify(im, 8, g) for im, g in zip(images, NAFLEX_GRIDS)))
  batch, _ = naflex.pack(tokens, positions, NAFLEX_GRIDS, num_sequences=4, seq_len=16,
                         images_per_sequence=1)
  with torch.no_grad():
    theirs = timm_model({'patches': torch.from_numpy(batch['patches'].astype(np.float32)),
                         'patch_coord': torch.from_numpy(batch['positions']).long(),
                         'patch_valid': torch.from_numpy(batch['segments'] > 0)}).numpy()
  seqs = sequences.Sequences(**batch)._replace(patches=batch['patches'].astype(np.float32))
  return theirs, np.asarray(model.apply({'params': params}, seqs, train=False))[:, 0]


@pytest.mark.parametrize('name,resize', [
    ('naflexvit_base_patch16_gap', dict(posemb_resize='bicubic')),  # 4 registers, fc_norm
    ('naflexvit_base_patch16_map', dict(posemb_resize='bicubic')),  # 1 register, MAP head
    ('naflexvit_base_patch16_siglip', dict(posemb_resize='bilinear')),
    ('naflexvit_base_patch16_par_gap', dict(posemb_resize='bicubic', posemb_resize_square=True)),
])
def test_naflexvit_gives_timm_logits_square_and_on_naflex_sequences(tmp_path, name, resize):
  """timm's NaFlexViT: on images of four sizes (its 6x6 table shrunk, grown, made non-square)
  and on NaFlex sequences at four aspect ratios, against timm's own NaFlex forward (patches,
  patch_coord, patch_valid)."""
  model = _randomized(name, **NAFLEX)
  timm.models.save_for_hf(model, str(tmp_path), safe_serialization=True)
  loaded = trained_model.load(str(tmp_path))
  config = loaded.model_config
  assert config.dynamic_image_size and {k: config.get(k) for k in resize} == resize
  for size in (32, 64, (32, 48), (56, 24)):
    _compare(model, loaded, size)
  theirs, ours = _naflex_outputs(model, loaded.model, loaded.params)
  np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * np.abs(theirs).max())


@pytest.mark.parametrize('overrides', [
    dict(classifier='map', num_registers=1, layerscale=0.1, posemb_resize='bicubic'),
    dict(classifier='gap', fc_norm=True, num_registers=2, posemb_resize='bicubic',
         posemb_resize_square=True),
    dict(classifier='token', activation='gelu_tanh', qk_norm=True),  # bilinear, a class token
], ids=['map-registers', 'gap-square', 'token-bilinear'])
def test_our_naflexvit_export_is_built_by_timm_itself(tmp_path, overrides):
  """`timm_naflex`: timm builds NaFlexViT from our config.json, loads our safetensors, and gives
  our logits on images of three sizes and on NaFlex sequences (timm's NaFlex forward)."""
  config = ml_collections.ConfigDict(dict(
      patches={'size': (8, 8)}, hidden_size=32, dynamic_image_size=True, activation='gelu',
      transformer=dict(mlp_dim=64, num_heads=4, num_layers=2, dropout_rate=0.0,
                       attention_dropout_rate=0.0)))
  config.update(overrides)
  model = VisionTransformer(num_classes=5, **config)
  params = model.init(jax.random.key(0), _images(48), train=False)['params']  # a 6x6 table
  params = jax.tree.map(
      lambda x: np.asarray(x) + np.random.default_rng(x.size).normal(0, 0.1, x.shape), params)
  timm_export.export_naflex(params, config, 5, 48, str(tmp_path))
  theirs = timm.create_model(f'local-dir:{tmp_path}', pretrained=True).eval()
  for size in (32, 64, (32, 48)):
    images = _images(size)
    with torch.no_grad():
      out = theirs(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()
    ours = np.asarray(model.apply({'params': params}, images, train=False))
    np.testing.assert_allclose(out, ours, rtol=1e-4, atol=1e-4 * np.abs(ours).max())
  out, ours = _naflex_outputs(theirs, model, params)
  np.testing.assert_allclose(out, ours, rtol=1e-4, atol=1e-4 * np.abs(ours).max())
  loaded = trained_model.load(str(tmp_path))  # and back in: the same logits
  _compare(theirs, loaded, (32, 48))


EVA_EXPORTS = {
    # EVA-02: axial RoPE on a rescaled grid beside a table, SwiGLU around an inner norm.
    'eva02': dict(rope='axial', rope_theta=10_000.0, rope_grid=(6, 6), gated_mlp=True,
                  activation='silu', mlp_inner_norm=True, classifier='gap', fc_norm=True),
    # A ROPE-ViT: axial RoPE, columns first, no table, LayerScale, the class token.
    'rope-vit': dict(rope='axial', rope_xy=True, posemb='none', layerscale=0.1,
                     activation='gelu'),
    # DINOv3 in timm's layout: its RoPE, registers, LayerScale, eps 1e-5, a packed SwiGLU.
    # Perception Encoder: offset axial RoPE on a rescaled grid beside a table, a pre-norm, a MAP
    # head over every token with its own head count.
    'pe': dict(rope='axial', rope_theta=10_000.0, rope_grid=(6, 6), rope_offset=1.0,
               rope_xy=True, pre_norm=True, layer_norm_eps=1e-5, activation='gelu',
               classifier='map', map_include_prefix=True, map_heads=2),
    'dinov3': dict(posemb='rope', num_registers=2, layerscale=0.1, layer_norm_eps=1e-5,
                   gated_mlp=True, activation='silu'),
}


@pytest.mark.parametrize('kind', sorted(EVA_EXPORTS))
def test_our_eva_export_is_built_by_timm_itself(tmp_path, kind):
  """`timm_eva`: timm builds its Eva from our config.json (an architecture of the same rotary
  kind, every other choice in model_args), loads our safetensors and gives our logits; our key
  bias (random here) is dropped exactly. Read back, the same logits."""
  config = ml_collections.ConfigDict(dict(
      patches={'size': (8, 8)}, hidden_size=32, classifier='token',
      transformer=dict(mlp_dim=64, num_heads=4, num_layers=2, dropout_rate=0.0,
                       attention_dropout_rate=0.0)))
  config.update(EVA_EXPORTS[kind])
  model = VisionTransformer(num_classes=5, **config)
  images = _images()
  params = model.init(jax.random.key(0), images, train=False)['params']
  params = jax.tree.map(lambda x: (np.asarray(x) + np.random.default_rng(x.size).normal(
      0, 0.1, x.shape)).astype(np.float32), params)
  timm_export.export_eva(params, config, 5, 32, str(tmp_path))
  theirs = timm.create_model(f'local-dir:{tmp_path}', pretrained=True).eval()
  with torch.no_grad():
    out = theirs(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()
  ours = np.asarray(model.apply({'params': params}, images, train=False))
  np.testing.assert_allclose(out, ours, rtol=1e-4, atol=1e-4 * np.abs(ours).max())
  _compare(theirs, trained_model.load(str(tmp_path)))


def test_a_lone_naflexvit_file_loads_with_timms_defaults(tmp_path, caplog):
  """Without timm's config.json beside it, a NaFlexViT state dict (`embeds.*`) loads with
  NaFlexViT's defaults (a bicubic resize) and says so in one line."""
  # PyTorch: imported only by the tests that build a reference.
  from safetensors import torch as safetensors_torch  # pylint: disable=g-import-not-at-top
  model = _randomized('naflexvit_base_patch16_gap', **{**NAFLEX, 'embed_dim': 192, 'num_heads': 3})
  path = str(tmp_path / 'model.safetensors')
  safetensors_torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
  with caplog.at_level('WARNING'):
    loaded = trained_model.load(path)
  assert 'a position table resized bicubically (NaFlexViT)' in caplog.text
  _compare(model, loaded, (32, 48))


@pytest.mark.parametrize('grid', [(4, 4), (4, 6), (7, 3)])
def test_the_relative_position_index_is_timms(grid):
  # behind the torchvision stand-in (tests/support/timm_reference.py).
  from timm.models import beit  # pylint: disable=g-import-not-at-top
  np.testing.assert_array_equal(posemb.relative_position_index(*grid),
                                beit.gen_relative_position_index(grid).numpy())
