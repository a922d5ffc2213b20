"""Weights in from timm and Hugging Face: each family built in-process with random weights, saved,
imported, and compared on features and logits; timm layouts through our export round trip."""

import json
import os
import pickle

import jax
import ml_collections
import numpy as np
import pytest
from safetensors import numpy as safetensors_numpy
import torch
import transformers

from vit_jax import checkpoint
from vit_jax import param_names
from vit_jax.export import hf
from vit_jax.export import hf as hf_export
from vit_jax.export import timm as timm_export
from vit_jax.models import sequences
from vit_jax.models import vit
from vit_jax.models.stacking import stack_encoder_blocks
from vit_jax.models.vit import VisionTransformer
from vit_jax.train import init_from
from vit_jax.weights import foreign
from vit_jax.weights import trained_model

from support import timm_reference

SIZE, PATCH = 32, 8  # a 4x4 patch grid
COMMON = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
              image_size=SIZE, patch_size=PATCH, num_channels=3)


def _randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
  """Every parameter drawn at random (zero-initialised tokens and LayerScale included)."""
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for param in model.parameters():
      param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
  return model.eval()


def _images(seed=0, size=SIZE):
  return np.random.default_rng(seed).uniform(-1, 1, (2, size, size, 3)).astype(np.float32)


def _ours(path, **kwargs):
  loaded = trained_model.load(str(path), **kwargs)
  return loaded, loaded.model


def _apply(loaded, images, **kwargs):
  return np.asarray(loaded.model.apply({'params': loaded.params}, images, train=False, **kwargs))


def _features(loaded, images):
  return {k: np.asarray(v) for k, v in vit.representations(
      loaded.model, loaded.params, images).items()}


def _close(ours, theirs, rtol=1e-4):
  theirs = np.asarray(theirs)
  scale = np.abs(theirs).max()
  np.testing.assert_allclose(ours, theirs, atol=rtol * scale, rtol=rtol)


def _torch_in(images):
  return torch.from_numpy(images.transpose(0, 3, 1, 2).copy())


def test_vit_model_with_pooler(tmp_path):
  config = transformers.ViTConfig(**COMMON, hidden_act='gelu')
  model = _randomize(transformers.ViTModel(config))
  model.save_pretrained(tmp_path)
  loaded, _ = _ours(tmp_path)
  assert loaded.model_config.representation_size == 32 and loaded.num_classes is None
  assert loaded.model_config.activation == 'gelu' and loaded.model_config.layer_norm_eps == 1e-12
  images = _images()
  with torch.no_grad():
    out = model(_torch_in(images))
  _close(_apply(loaded, images), out.pooler_output)  # tanh(dense(LN(cls)))
  _close(_features(loaded, images)['pooled'], out.last_hidden_state[:, 0])


def test_vit_for_classification_bare_safetensors(tmp_path):
  """A lone model.safetensors with a config.json beside it, via checkpoint.load too."""
  config = transformers.ViTConfig(**COMMON, hidden_act='gelu_pytorch_tanh', num_labels=5,
                                  layer_norm_eps=1e-6)
  model = _randomize(transformers.ViTForImageClassification(config), seed=1)
  model.save_pretrained(tmp_path)
  loaded, _ = _ours(tmp_path / 'model.safetensors')
  assert loaded.num_classes == 5 and loaded.model_config.activation == 'gelu_tanh'
  images = _images(1)
  with torch.no_grad():
    logits = model(_torch_in(images)).logits
  _close(_apply(loaded, images), logits)
  params = checkpoint.load(str(tmp_path / 'model.safetensors'))
  np.testing.assert_array_equal(params['head']['kernel'], loaded.params['head']['kernel'])


def test_deit_distilled_averages_its_two_heads(tmp_path):
  config = transformers.DeiTConfig(**COMMON, num_labels=7)
  model = _randomize(transformers.DeiTForImageClassificationWithTeacher(config), seed=2)
  model.save_pretrained(tmp_path)
  loaded, _ = _ours(tmp_path)
  assert loaded.model_config.distilled and loaded.num_classes == 7
  images = _images(2)
  with torch.no_grad():
    out = model(_torch_in(images))
  _close(_apply(loaded, images), out.logits)  # (cls head + distillation head) / 2
  assert not np.allclose(out.cls_logits, out.logits, atol=1e-3)


@pytest.mark.parametrize('registers', [0, 4])
def test_dinov2_with_and_without_registers(tmp_path, registers):
  if registers:
    config = transformers.Dinov2WithRegistersConfig(**COMMON, num_register_tokens=registers)
    model = transformers.Dinov2WithRegistersModel(config)
  else:
    model = transformers.Dinov2Model(transformers.Dinov2Config(**COMMON))
  model = _randomize(model, seed=3)
  model.save_pretrained(tmp_path)
  loaded, _ = _ours(tmp_path)
  assert loaded.model_config.get('num_registers', 0) == registers
  assert loaded.model_config.layerscale is not None and loaded.model_config.activation == 'gelu'
  images = _images(3)
  with torch.no_grad():
    out = model(_torch_in(images))
  _close(_features(loaded, images)['pooled'], out.pooler_output)  # LN(x)[:, 0]
  # Every token of the final layer, registers included, after the final norm.
  unpooled = VisionTransformer(num_classes=None, **{**loaded.model_config, 'classifier':
                                                    'token_unpooled'})
  tokens = unpooled.apply({'params': loaded.params}, images, train=False)
  _close(np.asarray(tokens), out.last_hidden_state)


def test_siglip_vision_tower_map_head(tmp_path):
  config = transformers.SiglipVisionConfig(**COMMON)
  model = _randomize(transformers.SiglipVisionModel(config), seed=4)
  model.save_pretrained(tmp_path)
  loaded, _ = _ours(tmp_path)
  assert loaded.model_config.classifier == 'map'
  assert loaded.model_config.activation == 'gelu_tanh'
  images = _images(4)
  with torch.no_grad():
    out = model(_torch_in(images))
  _close(_features(loaded, images)['pooled'], out.pooler_output)


def _siglip2_inputs(grids, max_patches, seed=13):
  """transformers' NaFlex inputs for images of these patch grids: patches flattened (row,
  column, channel) as its processor does, padded to `max_patches`, with mask and shapes."""
  rng = np.random.default_rng(seed)
  pixels = np.zeros((len(grids), max_patches, PATCH * PATCH * 3), np.float32)
  mask = np.zeros((len(grids), max_patches), np.int64)
  for i, (rows, columns) in enumerate(grids):
    image = rng.uniform(-1, 1, (rows * PATCH, columns * PATCH, 3)).astype(np.float32)
    patches = image.reshape(rows, PATCH, columns, PATCH, 3).transpose(0, 2, 1, 3, 4)
    pixels[i, :rows * columns] = patches.reshape(rows * columns, -1)
    mask[i, :rows * columns] = 1
  return pixels, mask


def test_siglip2_naflex_equals_transformers_on_several_aspect_ratios(tmp_path):
  config = transformers.Siglip2VisionConfig(
      hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
      patch_size=PATCH, num_patches=16, num_channels=3)
  model = _randomize(transformers.Siglip2VisionModel(config), seed=13)
  model.save_pretrained(tmp_path)
  loaded, _ = _ours(tmp_path)
  assert loaded.model_config.classifier == 'map'
  # 1:3, 3:1 and 2:5 aspect ratios and an image far below the budget, padded to 24 tokens;
  # the 4x4 table is upsampled for one and downsampled (antialiased) for the others.
  grids = [(2, 6), (6, 2), (2, 5), (1, 1), (5, 4)]
  max_patches = 24
  _siglip2_close(loaded.model, loaded.params, model, grids, max_patches, seed=13)


def test_a_naflex_tower_of_ours_exports_to_siglip2_with_transformers_outputs(tmp_path):
  config = ml_collections.ConfigDict(dict(
      patches={'size': (PATCH, PATCH)}, hidden_size=32, classifier='map', representation_size=None,
      transformer=dict(num_layers=2, mlp_dim=64, num_heads=4, dropout_rate=0.0,
                       attention_dropout_rate=0.0)))
  model = VisionTransformer(num_classes=None, **config)
  params = model.init(jax.random.key(0), np.zeros((1, SIZE, SIZE, 3)), train=False)['params']
  params = jax.tree.map(
      lambda p: np.asarray(p + 0.1 * jax.random.normal(jax.random.key(3), p.shape)), params)
  hf.export_siglip2(params, config, None, str(tmp_path / 'siglip2'))
  theirs = transformers.Siglip2VisionModel.from_pretrained(str(tmp_path / 'siglip2')).eval()
  _siglip2_close(model, params, theirs, [(2, 7), (5, 2), (3, 3)], 16, seed=15)
  token = ml_collections.ConfigDict({**config.to_dict(), 'classifier': 'gap'})
  with pytest.raises(ValueError, match=r'lacks: a MAP head\.$'):
    hf.export_siglip2(params, token, None, str(tmp_path / 'refused'))


def _siglip2_close(ours, params, theirs, grids, max_patches, seed):
  """Our pooled output on images of these grids equals a transformers SigLIP 2 tower's."""
  pixels, mask = _siglip2_inputs(grids, max_patches, seed=seed)
  with torch.no_grad():
    out = theirs(pixel_values=torch.from_numpy(pixels),
                 pixel_attention_mask=torch.from_numpy(mask), spatial_shapes=torch.tensor(grids))
  pooled = vit.representations(ours, params, _sequences_of(grids, pixels, mask))['pooled']
  _close(np.asarray(pooled)[:, 0], out.pooler_output)


def _sequences_of(grids, pixels, mask):
  """Our one-image sequences of `_siglip2_inputs`: raster positions, the mask as segments."""
  positions = np.zeros((len(grids), pixels.shape[1], 2), np.int32)
  for i, (rows, columns) in enumerate(grids):
    grid = np.stack(np.meshgrid(np.arange(rows), np.arange(columns), indexing='ij'), -1)
    positions[i, :rows * columns] = grid.reshape(-1, 2)
  return sequences.Sequences(patches=pixels, positions=positions, segments=mask.astype(np.int32),
                             grids=np.asarray(grids, np.int32)[:, None])


def test_big_vision_naflex_npz_loads_and_equals_the_same_weights_in_transformers(tmp_path):
  """A big_vision `naflex_vit.py` file: Dense `embedding` on flattened patches, a [n, n, width]
  `pos_embedding`, scanned blocks under `params/`; the weights of a transformers SigLIP 2
  tower (which transformers converts from big_vision) in that layout give its pooled output."""
  config = transformers.Siglip2VisionConfig(
      hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
      patch_size=PATCH, num_patches=16, num_channels=3)
  model = _randomize(transformers.Siglip2VisionModel(config), seed=14)
  model.save_pretrained(tmp_path / 'hf')
  params = dict(trained_model.load(str(tmp_path / 'hf')).params)
  params['embedding'] = {**params['embedding'],
                         'kernel': params['embedding']['kernel'].reshape(-1, 32)}
  encoder = dict(params['Transformer'])
  params['pos_embedding'] = encoder.pop('posembed_input')['pos_embedding'].reshape(4, 4, 32)
  params['Transformer'] = encoder
  params = stack_encoder_blocks(params)
  flat = {f'params/{k}': np.asarray(v) for k, v in param_names.flatten(params).items()}
  np.savez(tmp_path / 'naflex.npz', **flat)
  loaded = trained_model.load(str(tmp_path / 'naflex.npz'))
  _siglip2_close(loaded.model, loaded.params, model, [(1, 8), (4, 4), (3, 2)], 16, seed=14)


@pytest.mark.parametrize('with_projection', [False, True])
def test_clip_vision_tower(tmp_path, with_projection):
  config = transformers.CLIPVisionConfig(**COMMON, projection_dim=12)
  cls = (transformers.CLIPVisionModelWithProjection if with_projection
         else transformers.CLIPVisionModel)
  model = _randomize(cls(config), seed=5)
  model.save_pretrained(tmp_path)
  loaded, _ = _ours(tmp_path)
  assert loaded.model_config.pre_norm and loaded.model_config.activation == 'quick_gelu'
  assert loaded.model_config.layer_norm_eps == 1e-5
  images = _images(5)
  with torch.no_grad():
    out = model(_torch_in(images))
  if with_projection:
    assert loaded.num_classes == 12
    _close(_apply(loaded, images), out.image_embeds)  # the projection is the (bias-free) head
  else:
    _close(_features(loaded, images)['pooled'], out.pooler_output)


def _feature_model(**overrides):
  config = ml_collections.ConfigDict(dict(
      patches={'size': (PATCH, PATCH)}, hidden_size=32, classifier='token',
      transformer=dict(mlp_dim=64, num_heads=4, num_layers=2, dropout_rate=0.0,
                       attention_dropout_rate=0.0)))
  config.update(overrides)
  return config


@pytest.mark.parametrize('overrides', [
    dict(layerscale=0.1, qk_norm=True, activation='gelu'),
    dict(num_registers=2, pre_norm=True, activation='quick_gelu'),
    dict(distilled=True),
    dict(classifier='map'),
    dict(classifier='gap', layer_norm_eps=1e-5),
], ids=['layerscale_qknorm', 'registers_prenorm', 'distilled', 'map', 'gap'])
def test_timm_round_trip(tmp_path, overrides):
  """Our model -> timm export -> import: the same parameters and logits."""
  config = _feature_model(**overrides)
  model = VisionTransformer(num_classes=6, **config)
  params = model.init(jax.random.key(0), _images(), train=False)['params']
  params = jax.tree.map(  # non-zero tokens, heads and scales
      lambda x: np.asarray(x) + np.random.default_rng(x.size).normal(0, 0.1, x.shape), params)
  timm_export.export(params, config, 6, SIZE, str(tmp_path))
  loaded, _ = _ours(tmp_path / 'model.safetensors')
  for field, value in overrides.items():
    if field == 'layerscale':  # the scales themselves are loaded; the initial value is moot
      assert loaded.model_config.get(field) is not None
    else:
      assert loaded.model_config.get(field) == value, field
  images = _images(6)
  _close(_apply(loaded, images), model.apply({'params': params}, images, train=False), 1e-5)


def test_bad_files_are_refused_with_one_line(tmp_path):
  # A pickled .bin holding code: never unpickled beyond weights_only.
  class Evil:
    def __reduce__(self):
      return (os.system, ('echo pwned',))
  path = tmp_path / 'pytorch_model.bin'
  with open(path, 'wb') as f:
    pickle.dump({'w': Evil()}, f)
  with pytest.raises(ValueError, match='pickled code or objects'):
    foreign.load(str(path))
  # An unsupported family names the keys it did not understand.
  safetensors_numpy.save_file({'patch_embed.proj.weight': np.zeros((32, 3, 8, 8), np.float32),
                               'blocks.0.attn.qkv.weight': np.zeros((96, 32), np.float32),
                               'blocks.0.mystery.weight': np.zeros(3, np.float32)},
                              str(tmp_path / 'odd.safetensors'))
  with pytest.raises(ValueError, match='not understood.*blocks.0.mystery.weight'):
    foreign.load(str(tmp_path / 'odd.safetensors'))
  safetensors_numpy.save_file({'foo': np.zeros(3, np.float32)}, str(tmp_path / 'x.safetensors'))
  with pytest.raises(ValueError, match='neither timm .* nor Hugging Face'):
    foreign.load(str(tmp_path / 'x.safetensors'))


def test_a_model_that_does_not_fit_lists_the_shapes(tmp_path):
  model = _randomize(transformers.ViTModel(transformers.ViTConfig(**COMMON)))
  model.save_pretrained(tmp_path)
  other = VisionTransformer(num_classes=3, **_feature_model(hidden_size=48))
  init = other.init(jax.random.key(0), _images(), train=False)['params']
  with pytest.raises(ValueError, match=r'mis-shaped:\n.*embedding/kernel: checkpoint \(8, 8, 3, 32\)'):
    checkpoint.adapt_params(checkpoint.load(str(tmp_path)), init, source=str(tmp_path))


def test_init_from_a_foreign_checkpoint_names_the_fields_to_set(tmp_path):
  """Fine-tuning from a CLIP tower: the run's model must take its activation, norms and
  pre-norm; a run that does not is refused before it starts, naming the flags."""
  model = _randomize(transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**COMMON)))
  model.save_pretrained(tmp_path)
  ours = _feature_model()
  with pytest.raises(ValueError, match=r'add --config.model.activation=quick_gelu '
                     r'--config.model.layer_norm_eps=1e-05 --config.model.pre_norm=True'):
    init_from.load(str(tmp_path), ours, '')
  ours.update(activation='quick_gelu', layer_norm_eps=1e-5, pre_norm=True)
  loaded = init_from.load(str(tmp_path), ours, '')
  assert loaded.model_config.pre_norm


def test_timm_names_give_our_variants():
  assert foreign.variant_of_timm_name('vit_base_patch16_224.augreg_in21k') == 'B/16'
  assert foreign.variant_of_timm_name('deit_small_distilled_patch16_224') == 'S/16'
  assert foreign.variant_of_timm_name('vit_large_patch14_dinov2.lvd142m') == 'L/14'
  assert foreign.variant_of_timm_name('vit_so400m_patch14_siglip_384') == 'So400m/14'
  assert foreign.variant_of_timm_name('resnet50') is None


def test_deit_without_teacher_reads_the_class_head_alone(tmp_path):
  model = _randomize(transformers.DeiTForImageClassification(
      transformers.DeiTConfig(**COMMON, num_labels=7)), seed=6)
  model.save_pretrained(tmp_path)
  loaded, _ = _ours(tmp_path)
  assert loaded.model_config.distilled and not loaded.model_config.distillation_head
  images = _images(7)
  with torch.no_grad():
    _close(_apply(loaded, images), model(_torch_in(images)).logits)


@pytest.mark.parametrize('kind', ['msn', 'ijepa'])
def test_plain_vit_families_under_other_names(tmp_path, kind):
  """ViTMSN (class token) and I-JEPA (no class token: the mean of all tokens) classifiers."""
  if kind == 'msn':
    model = transformers.ViTMSNForImageClassification(transformers.ViTMSNConfig(**COMMON,
                                                                                num_labels=4))
  else:
    model = transformers.IJepaForImageClassification(transformers.IJepaConfig(**COMMON,
                                                                             num_labels=4))
  model = _randomize(model, seed=8)
  model.save_pretrained(tmp_path)
  loaded, _ = _ours(tmp_path)
  assert loaded.model_config.classifier == ('token' if kind == 'msn' else 'gap')
  images = _images(8)
  with torch.no_grad():
    _close(_apply(loaded, images), model(_torch_in(images)).logits)


def test_vit_mae_encoder_from_the_pretraining_checkpoint(tmp_path):
  """ViTMAEForPreTraining's file: the encoder loads, the decoder is dropped; with no masking
  (mask_ratio 0, patches kept in order) every token equals ViTMAEModel's."""
  config = transformers.ViTMAEConfig(**COMMON, mask_ratio=0.0)
  pretraining = _randomize(transformers.ViTMAEForPreTraining(config), seed=9)
  pretraining.save_pretrained(tmp_path)
  loaded, _ = _ours(tmp_path)
  images = _images(9)
  with torch.no_grad():
    out = pretraining.vit(_torch_in(images), noise=torch.arange(16.).repeat(2, 1))
  unpooled = VisionTransformer(num_classes=None, **{**loaded.model_config,
                                                    'classifier': 'token_unpooled'})
  _close(np.asarray(unpooled.apply({'params': loaded.params}, images, train=False)),
         out.last_hidden_state)


def test_metaclip2_vision_tower(tmp_path):
  config = transformers.MetaClip2VisionConfig(**COMMON, projection_dim=12)
  model = _randomize(transformers.MetaClip2VisionModelWithProjection(config), seed=10)
  model.save_pretrained(tmp_path)
  loaded, _ = _ours(tmp_path)
  images = _images(10)
  with torch.no_grad():
    _close(_apply(loaded, images), model(_torch_in(images)).image_embeds)


@pytest.mark.parametrize('registers', [0, 2])
def test_dinov2_classifier_on_cls_and_mean_with_swiglu(tmp_path, registers):
  """Dinov2ForImageClassification: the head reads [cls, mean of patches]; ViT-g's SwiGLU MLP."""
  if registers:
    config = transformers.Dinov2WithRegistersConfig(**COMMON, num_register_tokens=registers,
                                                    num_labels=3)
    model = transformers.Dinov2WithRegistersForImageClassification(config)
  else:
    config = transformers.Dinov2Config(**COMMON, use_swiglu_ffn=True, num_labels=3)
    model = transformers.Dinov2ForImageClassification(config)
  model = _randomize(model, seed=11)
  model.save_pretrained(tmp_path)
  loaded, _ = _ours(tmp_path)
  assert loaded.model_config.classifier == 'token_gap'
  assert bool(loaded.model_config.get('gated_mlp')) == (not registers)
  images = _images(11)
  with torch.no_grad():
    _close(_apply(loaded, images), model(_torch_in(images)).logits)


@pytest.mark.parametrize('gated', [False, True])
def test_dinov3_rope_registers_and_gated_mlp_at_square_and_other_sizes(tmp_path, gated):
  """DINOv3: RoPE on the patch tokens (any grid: patch centres span [-1, 1]), 4 registers,
  LayerScale, no key bias, and for the large models a gated MLP with SiLU."""
  config = transformers.DINOv3ViTConfig(
      **{**COMMON, 'num_attention_heads': 2}, num_register_tokens=4, use_gated_mlp=gated,
      hidden_act='silu' if gated else 'gelu')
  model = _randomize(transformers.DINOv3ViTModel(config), seed=12)
  model.save_pretrained(tmp_path)
  loaded, _ = _ours(tmp_path)
  assert loaded.model_config.posemb == 'rope' and loaded.model_config.num_registers == 4
  assert bool(loaded.model_config.get('gated_mlp')) == gated
  unpooled = VisionTransformer(num_classes=None, **{**loaded.model_config,
                                                    'classifier': 'token_unpooled'})
  for height, width in ((SIZE, SIZE), (SIZE, 3 * SIZE // 2)):
    images = np.random.default_rng(12).uniform(-1, 1, (2, height, width, 3)).astype(np.float32)
    with torch.no_grad():
      out = model(_torch_in(images))
    _close(_features(loaded, images)['pooled'], out.pooler_output)
    _close(np.asarray(unpooled.apply({'params': loaded.params}, images, train=False)),
           out.last_hidden_state)


@pytest.mark.parametrize('make,feature', [
    (lambda: transformers.VideoMAEModel(transformers.VideoMAEConfig(**COMMON)),
     'video tubelet embeddings'),
], ids=['videomae'])
def test_families_we_lack_are_refused_naming_the_feature(tmp_path, make, feature):
  make().save_pretrained(tmp_path)
  with pytest.raises(ValueError, match=f'{feature}.*refused') as error:
    trained_model.load(str(tmp_path))
  assert '\n' not in str(error.value) and 'config.json' in str(error.value) or str(tmp_path) in (
      str(error.value))


def test_bad_configs_are_refused_naming_the_file_and_field(tmp_path):
  model = _randomize(transformers.ViTForImageClassification(
      transformers.ViTConfig(**COMMON, num_labels=5)))
  model.save_pretrained(tmp_path)
  config_path = tmp_path / 'config.json'
  config = json.loads(config_path.read_text())

  config_path.write_text(json.dumps({**config, 'num_attention_heads': 5}))
  with pytest.raises(ValueError, match='num_attention_heads=5 does not divide hidden_size=32'):
    trained_model.load(str(tmp_path))
  config_path.write_text(json.dumps({**config, 'model_type': 'swin'}))
  with pytest.raises(ValueError, match="model_type 'swin' is not supported"):
    trained_model.load(str(tmp_path))
  labels = {str(i): f'c{i}' for i in range(9)}
  config_path.write_text(json.dumps({**config, 'id2label': labels,
                                     'label2id': {v: k for k, v in labels.items()}}))
  with pytest.raises(ValueError, match=r'config.json: num_classes=9 disagrees with the weights'):
    trained_model.load(str(tmp_path))
  config_path.write_text(json.dumps(config))
  (tmp_path / 'preprocessor_config.json').write_text(json.dumps(
      {'do_resize': True, 'size': {'height': 32, 'width': 32}, 'do_magic': True}))
  with pytest.raises(ValueError, match="preprocessor_config.json field 'do_magic' is not one we "
                     'follow'):
    trained_model.load(str(tmp_path))


def test_sharded_index_with_a_missing_shard(tmp_path):
  model = _randomize(transformers.ViTModel(transformers.ViTConfig(**COMMON)))
  model.save_pretrained(tmp_path, max_shard_size='20KB')
  index = json.loads((tmp_path / 'model.safetensors.index.json').read_text())
  shards = sorted(set(index['weight_map'].values()))
  assert len(shards) > 1
  loaded, _ = _ours(tmp_path)  # all shards there: loads
  os.remove(tmp_path / shards[-1])
  with pytest.raises(FileNotFoundError, match=f'{shards[-1]}.*model.safetensors.index.json'):
    trained_model.load(str(tmp_path))


def test_init_from_warns_when_the_run_feeds_other_statistics(tmp_path, caplog):
  model = _randomize(transformers.Dinov2Model(transformers.Dinov2Config(**COMMON)))
  model.save_pretrained(tmp_path)
  transformers.BitImageProcessor(size={'shortest_edge': 36}, crop_size=32,
                                 image_mean=[0.485, 0.456, 0.406],
                                 image_std=[0.229, 0.224, 0.225]).save_pretrained(tmp_path)
  loaded = trained_model.load(str(tmp_path))
  with caplog.at_level('WARNING'):
    init_from.warn_on_other_statistics(str(tmp_path), loaded,
                                  'decode|resize(32)|value_range(-1, 1)')
  assert 'use normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)) in place' in caplog.text
  caplog.clear()
  with caplog.at_level('WARNING'):
    init_from.warn_on_other_statistics(
        str(tmp_path), loaded,
        'decode|resize(32)|normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))')
  assert not caplog.text


BEIT_KINDS = {
    # BEiT fine-tuned: a relative position table per block, mean pooling + pooler.layernorm.
    'beit': (transformers.BeitConfig, transformers.BeitForImageClassification,
             dict(use_relative_position_bias=True)),
    # Data2Vec-vision: one table shared by every block beside an absolute position table.
    'data2vec-vision': (transformers.Data2VecVisionConfig,
                        transformers.Data2VecVisionForImageClassification,
                        dict(use_shared_relative_position_bias=True,
                             use_absolute_position_embeddings=True)),
    # The class token after the final layernorm.
    'beit-token': (transformers.BeitConfig, transformers.BeitForImageClassification,
                   dict(use_relative_position_bias=True, use_mean_pooling=False)),
}


@pytest.mark.parametrize('kind', sorted(BEIT_KINDS))
def test_beit_and_data2vec_vision_give_transformers_logits(tmp_path, kind):
  config_class, model_class, fields = BEIT_KINDS[kind]
  model = _randomize(model_class(config_class(**COMMON, num_labels=4, **fields)), seed=11)
  model.save_pretrained(tmp_path)
  loaded, _ = _ours(tmp_path)
  assert loaded.model_config.classifier == ('token' if kind == 'beit-token' else 'gap')
  images = _images(11)
  with torch.no_grad():
    _close(_apply(loaded, images), model(_torch_in(images)).logits)


def test_beit_at_another_grid_resamples_its_tables_as_transformers_does(tmp_path):
  """A BEiT of 4x4 patches on 32x48 images (4x6 patches) and on 48x24 (6x3): transformers'
  `interpolate_pos_encoding` resamples each block's table bilinearly; ours does the same."""
  config = transformers.BeitConfig(**COMMON, num_labels=4, use_relative_position_bias=True)
  model = _randomize(transformers.BeitForImageClassification(config), seed=12)
  model.save_pretrained(tmp_path)
  loaded, _ = _ours(tmp_path)
  for height, width in ((32, 48), (48, 24)):
    images = np.random.default_rng(12).uniform(-1, 1, (2, height, width, 3)).astype(np.float32)
    with torch.no_grad():
      theirs = model(_torch_in(images), interpolate_pos_encoding=True).logits
    _close(_apply(loaded, images), theirs)


def test_fine_tuning_a_beit_at_another_size_resamples_its_tables_once(tmp_path):
  """`adapt_params` into a model for 48x48 images (6x6 patches): the tables are resampled
  offline to the new grid, and the model then equals transformers' at 48x48."""
  config = transformers.BeitConfig(**COMMON, num_labels=4, use_relative_position_bias=True)
  model = _randomize(transformers.BeitForImageClassification(config), seed=13)
  model.save_pretrained(tmp_path)
  loaded, _ = _ours(tmp_path)
  images = np.random.default_rng(13).uniform(-1, 1, (2, 48, 48, 3)).astype(np.float32)
  init = loaded.model.init(jax.random.PRNGKey(0), images, train=False)['params']
  table = 'Transformer/encoderblock_0/MultiHeadDotProductAttention_0/relative_position_bias'
  assert param_names.flatten(init)[table].shape == (11 * 11 + 3, 4)
  adapted = checkpoint.adapt_params(loaded.params, init, reset_head=False, grid_shape=(6, 6))
  assert param_names.flatten(adapted)[table].shape == (11 * 11 + 3, 4)
  with torch.no_grad():
    theirs = model(_torch_in(images), interpolate_pos_encoding=True).logits
  _close(np.asarray(loaded.model.apply({'params': adapted}, images, train=False)), theirs)


BEIT_EXPORTS = {
    # BEiT fine-tuned: a table per block, no absolute table, LayerScale, mean pooling + norm.
    'per-block-mean': dict(posemb='none', rel_pos_bias=True, layerscale=0.1, classifier='gap',
                           class_token=True, fc_norm=True),
    # Data2Vec-vision-like: one shared table beside an absolute table, the class token.
    'shared-absolute-token': dict(shared_rel_pos_bias=True, classifier='token'),
}


@pytest.mark.parametrize('kind', sorted(BEIT_EXPORTS))
def test_our_beit_exports_are_read_by_transformers_and_timm(tmp_path, kind):
  """`hf_beit` and `timm_beit`: transformers' own BeitForImageClassification and timm's Beit
  load the directories and give our logits, although our key bias (random here) has no place
  in BEiT: the softmax ignores it."""
  config = ml_collections.ConfigDict(dict(
      patches={'size': (PATCH, PATCH)}, hidden_size=32, activation='gelu',
      transformer=dict(mlp_dim=64, num_heads=4, num_layers=2, dropout_rate=0.0,
                       attention_dropout_rate=0.0), **BEIT_EXPORTS[kind]))
  model = VisionTransformer(num_classes=4, **config)
  images = _images(15)
  params = model.init(jax.random.key(0), images, train=False)['params']
  params = jax.tree.map(
      lambda x: np.asarray(x) + np.random.default_rng(x.size).normal(0, 0.2, x.shape), params)
  ours = np.asarray(model.apply({'params': params}, images, train=False))
  hf_export.export_beit(params, config, 4, SIZE, str(tmp_path / 'hf'))
  theirs = transformers.BeitForImageClassification.from_pretrained(str(tmp_path / 'hf')).eval()
  with torch.no_grad():
    _close(ours, theirs(_torch_in(images)).logits)
  loaded, _ = _ours(tmp_path / 'hf')  # and back: the same logits
  _close(_apply(loaded, images), ours)
  # timm's Beit, built by timm itself from our config.json (`timm_beit`)
  timm_export.export_beit(params, config, 4, SIZE, str(tmp_path / 'timm'))
  timm = timm_reference.import_timm()
  built = timm.create_model(f'local-dir:{tmp_path / "timm"}', pretrained=True).eval()
  with torch.no_grad():
    _close(ours, built(_torch_in(images)))
  _close(_apply(_ours(tmp_path / 'timm')[0], images), ours)


def test_the_beit_export_refuses_what_beit_lacks(tmp_path):
  config = ml_collections.ConfigDict(dict(
      patches={'size': (PATCH, PATCH)}, hidden_size=32, classifier='gap', num_registers=2,
      transformer=dict(mlp_dim=64, num_heads=4, num_layers=1)))
  params = VisionTransformer(num_classes=4, **config).init(
      jax.random.key(0), _images(), train=False)['params']
  with pytest.raises(ValueError, match=r'hf_beit format .*lacks: a class token; .*mean pooling'
                                       r'.*without registers') as error:
    hf_export.export_beit(params, config, 4, SIZE, str(tmp_path))
  assert '\n' not in str(error.value)


@pytest.mark.parametrize('use_head', [True, False])
def test_aimv2_vision_tower_gives_transformers_outputs(tmp_path, use_head):
  """RMSNorm throughout, a norm of the patch tokens, SwiGLU, no biases; its pooling head (the
  class token as the query itself, no MLP) as our MAP head, or no head (average pooling)."""
  config = transformers.Aimv2VisionConfig(**COMMON, use_head=use_head)
  model = _randomize(transformers.Aimv2VisionModel(config), seed=14)
  model.save_pretrained(tmp_path)
  loaded, _ = _ours(tmp_path)
  fields = loaded.model_config
  assert (fields.norm, fields.patch_norm, fields.gated_mlp, fields.activation) == (
      'rms', True, True, 'silu')
  assert fields.classifier == ('map' if use_head else 'gap') and fields.layer_norm_eps == 1e-5
  images = _images(14)
  with torch.no_grad():
    out = model(_torch_in(images))
  unpooled = VisionTransformer(num_classes=None, **{**fields, 'classifier': 'unpooled'})
  _close(np.asarray(unpooled.apply({'params': loaded.params}, images, train=False)),
         out.last_hidden_state)
  if use_head:
    _close(_apply(loaded, images), out.pooler_output)


@pytest.mark.parametrize('classifier', ['map', 'gap'])
def test_our_aimv2_export_is_read_by_transformers(tmp_path, classifier):
  """`hf_aimv2`: transformers' own Aimv2VisionModel loads the directory and gives our pooled
  features, with every bias and the MAP query projection random (as after training here)."""
  config = ml_collections.ConfigDict(dict(
      patches={'size': (PATCH, PATCH)}, hidden_size=32, classifier=classifier, norm='rms',
      patch_norm=True, gated_mlp=True, activation='silu', layer_norm_eps=1e-5,
      transformer=dict(mlp_dim=64, num_heads=4, num_layers=2, dropout_rate=0.0,
                       attention_dropout_rate=0.0)))
  if classifier == 'map':
    config.map_mlp = False
  model = VisionTransformer(num_classes=None, **config)
  images = _images(16)
  params = model.init(jax.random.key(0), images, train=False)['params']
  params = jax.tree.map(lambda x: (np.asarray(x) + np.random.default_rng(x.size).normal(
      0, 0.2, x.shape)).astype(np.float32), params)
  hf_export.export_aimv2(params, config, None, SIZE, str(tmp_path))
  theirs = transformers.Aimv2VisionModel.from_pretrained(str(tmp_path)).eval()
  with torch.no_grad():
    out = theirs(_torch_in(images))
  # Without its head, AIMv2 has no pooled output: ours is the mean of its last hidden state.
  pooled = out.pooler_output if classifier == 'map' else out.last_hidden_state.mean(1)
  _close(np.asarray(model.apply({'params': params}, images, train=False)), pooled)


def test_aimv2_image_embeddings_of_the_two_tower_model(tmp_path):
  """Aimv2Model (image and text towers): the image tower with its projection as the head gives
  `get_image_features`; the text tower is left out."""
  config = transformers.Aimv2Config(
      vision_config=dict(COMMON), projection_dim=12,
      text_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                       intermediate_size=64, vocab_size=50))
  model = _randomize(transformers.Aimv2Model(config), seed=15)
  model.save_pretrained(tmp_path)
  loaded, _ = _ours(tmp_path)
  images = _images(15)
  with torch.no_grad():
    theirs = model.get_image_features(pixel_values=_torch_in(images))
  theirs = getattr(theirs, 'pooler_output', theirs)
  _close(_apply(loaded, images), theirs)


def test_aimv2_native_resolution_is_refused_by_name(tmp_path):
  config = transformers.Aimv2VisionConfig(**COMMON, is_native=True)
  transformers.Aimv2VisionModel(config).save_pretrained(tmp_path)
  with pytest.raises(ValueError, match='is_native=true .* refused'):
    trained_model.load(str(tmp_path))
