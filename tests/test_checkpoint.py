"""Released and big_vision .npz files: loading, writing, load_pretrained, architecture inference."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from support import randomize
from support import tiny_vit_config
from vit_jax import checkpoint
from vit_jax import models
from vit_jax.configs import models as model_configs

# The released (pre-Linen) child names of an encoder block, written out independently of the
# library's own mapping.
RELEASED_BLOCK = {'LayerNorm_0': 'LayerNorm_0', 'MultiHeadDotProductAttention_0':
                  'MultiHeadDotProductAttention_1', 'LayerNorm_1': 'LayerNorm_2',
                  'MlpBlock_0': 'MlpBlock_3'}

# The key set of a released ViT file (one block shown), as the official vit_jax and timm read it.
RELEASED_TESTING_KEYS = {
    'cls', 'embedding/bias', 'embedding/kernel', 'head/bias', 'head/kernel',
    'Transformer/encoder_norm/bias', 'Transformer/encoder_norm/scale',
    'Transformer/posembed_input/pos_embedding',
    'Transformer/encoderblock_0/LayerNorm_0/bias', 'Transformer/encoderblock_0/LayerNorm_0/scale',
    'Transformer/encoderblock_0/LayerNorm_2/bias', 'Transformer/encoderblock_0/LayerNorm_2/scale',
    'Transformer/encoderblock_0/MlpBlock_3/Dense_0/bias',
    'Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel',
    'Transformer/encoderblock_0/MlpBlock_3/Dense_1/bias',
    'Transformer/encoderblock_0/MlpBlock_3/Dense_1/kernel',
} | {f'Transformer/encoderblock_0/MultiHeadDotProductAttention_1/{p}/{w}'
     for p in ('query', 'key', 'value', 'out') for w in ('bias', 'kernel')}


_config = tiny_vit_config


HYBRID = dict(patches={'size': (2, 2)}, resnet={'num_layers': (1, 1), 'width_factor': 1})


def _model_and_params(num_classes=7, image_size=16, seed=0, **overrides):
  model = models.VisionTransformer(num_classes=num_classes, **_config(**overrides))
  images = jnp.ones((1, image_size, image_size, 3))
  params = model.init(jax.random.key(seed), images, train=False)['params']
  return model, randomize(params, seed)


def _write_released(params, path):
  """The released file layout, by hand: pre-Linen block names and [1, 1, 1, C] GroupNorm."""
  arrays = {}
  for key, value in checkpoint.flatten(params).items():
    parts = key.split('/')
    if parts[0] == 'Transformer' and parts[1].startswith('encoderblock_'):
      parts[2] = RELEASED_BLOCK[parts[2]]
    if len(parts) > 1 and parts[-2].startswith('gn'):
      value = np.reshape(value, (1, 1, 1, -1))
    arrays['/'.join(parts)] = np.asarray(value)
  np.savez(path, **arrays)


def _images(seed=1, size=16, batch=2):
  return np.random.default_rng(seed).uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)


def _assert_trees_equal(actual, expected):
  assert checkpoint.flatten(actual).keys() == checkpoint.flatten(expected).keys()
  jax.tree.map(np.testing.assert_array_equal, actual, expected)


def test_released_layout_has_the_released_names():
  model = models.get_model('testing', num_classes=10)
  params = model.init(jax.random.key(0), jnp.ones((1, 32, 32, 3)), train=False)['params']
  assert set(checkpoint.to_released_layout(params)) == RELEASED_TESTING_KEYS
  shapes = jax.eval_shape(lambda: models.get_model('ViT-B_16', num_classes=1000).init(
      jax.random.key(0), jnp.ones((1, 224, 224, 3)), train=False))['params']
  released = checkpoint.to_released_layout(jax.tree.map(lambda s: np.zeros(s.shape, s.dtype),
                                                        shapes))
  block = 'Transformer/encoderblock_11/MultiHeadDotProductAttention_1'
  assert released[f'{block}/query/kernel'].shape == (768, 12, 64)
  assert released[f'{block}/out/kernel'].shape == (12, 64, 768)
  assert released['Transformer/posembed_input/pos_embedding'].shape == (1, 197, 768)


@pytest.mark.parametrize('overrides', [{}, {'classifier': 'gap'}, {'representation_size': 12},
                                       HYBRID], ids=['token', 'gap', 'pre_logits', 'hybrid'])
def test_released_file_loads_to_identical_logits(tmp_path, overrides):
  size = 32 if 'resnet' in overrides else 16
  model, params = _model_and_params(image_size=size, **overrides)
  _write_released(params, tmp_path / 'released.npz')
  loaded = checkpoint.load(str(tmp_path / 'released.npz'))
  _assert_trees_equal(loaded, params)
  images = _images(size=size)
  apply = jax.jit(lambda p: model.apply({'params': p}, images, train=False))
  np.testing.assert_array_equal(apply(loaded), apply(params))


def test_save_then_load_is_bit_identical_from_either_layout(tmp_path):
  _, params = _model_and_params(**HYBRID, image_size=32)
  checkpoint.save(params, str(tmp_path / 'a.npz'))
  checkpoint.save(models.stack_encoder_blocks(params), str(tmp_path / 'b.npz'))
  for name in ('a.npz', 'b.npz'):
    _assert_trees_equal(checkpoint.load(str(tmp_path / name)), params)
  with np.load(tmp_path / 'a.npz', allow_pickle=False) as f:
    assert f['gn_root/scale'].shape == (1, 1, 1, 64)
    assert 'Transformer/encoderblock_1/MlpBlock_3/Dense_1/kernel' in f.files


@pytest.mark.parametrize('classifier', ['token', 'gap', 'map'])
def test_big_vision_file_loads(tmp_path, classifier):
  model, params = _model_and_params(classifier=classifier)
  posemb = params['Transformer']['posembed_input']['pos_embedding']
  if classifier == 'token':  # big_vision gives cls no posemb: a zero row in our layout
    posemb[:, 0] = 0.0
  # big_vision: `params/` prefix, posemb at the top without the cls row, layers stacked.
  bv = models.stack_encoder_blocks(params)
  bv['Transformer'] = dict(bv['Transformer'])
  bv['pos_embedding'] = bv['Transformer'].pop('posembed_input')['pos_embedding'][
      :, 1 if classifier == 'token' else 0:]
  np.savez(tmp_path / 'bv.npz', **{f'params/{k}': v for k, v in checkpoint.flatten(bv).items()})
  loaded = checkpoint.load(str(tmp_path / 'bv.npz'))
  _assert_trees_equal(loaded, params)
  images = _images()
  np.testing.assert_allclose(model.apply({'params': loaded}, images, train=False),
                             model.apply({'params': params}, images, train=False), rtol=1e-6)


def test_older_big_vision_variants_load(tmp_path):
  _, params = _model_and_params(classifier='map')
  old = flax.core.unfreeze(params)
  old['Transformer']['pos_embedding'] = old['Transformer'].pop('posembed_input')['pos_embedding']
  old.update(old.pop('MAPHead_0'))  # the inlined MAP probe of the ViT-G era
  np.savez(tmp_path / 'old.npz', **checkpoint.flatten(old))
  _assert_trees_equal(checkpoint.load(str(tmp_path / 'old.npz')), params)


def _bilinear_corner_aligned(grid, new_h, new_w):
  """Separable linear interpolation with corners aligned, written with np.interp."""
  old_h, old_w, depth = grid.shape
  ys = np.linspace(0, old_h - 1, new_h)
  xs = np.linspace(0, old_w - 1, new_w)
  rows = np.stack([[np.interp(ys, np.arange(old_h), grid[:, j, c]) for j in range(old_w)]
                   for c in range(depth)], -1).transpose(1, 0, 2)  # [new_h, old_w, d]
  return np.stack([[np.interp(xs, np.arange(old_w), rows[i, :, c]) for i in range(new_h)]
                   for c in range(depth)], -1)  # [new_h, new_w, d]


def test_load_pretrained_resamples_posemb_and_resets_head(tmp_path):
  _, params = _model_and_params(num_classes=7, image_size=16)  # 4x4 grid
  checkpoint.save(params, str(tmp_path / 'pre.npz'))
  fine_model, init = _model_and_params(num_classes=3, image_size=28, seed=5)  # 7x7 grid
  restored = checkpoint.load_pretrained(pretrained_path=str(tmp_path / 'pre.npz'),
                                        init_params=init, model_config=_config())
  old = params['Transformer']['posembed_input']['pos_embedding']
  new = restored['Transformer']['posembed_input']['pos_embedding']
  assert new.shape == (1, 50, 16)
  np.testing.assert_array_equal(new[:, 0], old[:, 0])  # cls row kept
  expected = _bilinear_corner_aligned(old[0, 1:].reshape(4, 4, 16), 7, 7).reshape(49, 16)
  np.testing.assert_allclose(new[0, 1:], expected, rtol=1e-5, atol=1e-6)
  _assert_trees_equal(restored['head'], init['head'])
  _assert_trees_equal(restored['Transformer']['encoderblock_1'],
                      params['Transformer']['encoderblock_1'])
  logits = fine_model.apply({'params': restored}, _images(size=28), train=False)
  assert logits.shape == (2, 3)


def test_load_pretrained_non_square_grids(tmp_path):
  _, params = _model_and_params(image_size=16)
  checkpoint.save(params, str(tmp_path / 'pre.npz'))
  model = models.VisionTransformer(num_classes=7, **_config())
  init = model.init(jax.random.key(0), jnp.ones((1, 16, 24, 3)), train=False)['params']
  with pytest.raises(ValueError, match='not a square grid'):
    checkpoint.load_pretrained(pretrained_path=str(tmp_path / 'pre.npz'), init_params=init,
                               model_config=_config())
  restored = checkpoint.load_pretrained(pretrained_path=str(tmp_path / 'pre.npz'),
                                        init_params=init, model_config=_config(),
                                        grid_shape=(4, 6))
  grid = params['Transformer']['posembed_input']['pos_embedding'][0, 1:].reshape(4, 4, 16)
  expected = _bilinear_corner_aligned(grid, 4, 6).reshape(24, 16)
  np.testing.assert_allclose(
      restored['Transformer']['posembed_input']['pos_embedding'][0, 1:], expected, atol=1e-6)


def test_official_interpolate_posembed_signature():
  posemb = np.random.default_rng(0).standard_normal((1, 1 + 9, 4)).astype(np.float32)
  out = checkpoint.interpolate_posembed(posemb, 1 + 36, has_class_token=True)
  assert out.shape == (1, 37, 4)
  expected = _bilinear_corner_aligned(posemb[0, 1:].reshape(3, 3, 4), 6, 6).reshape(36, 4)
  np.testing.assert_allclose(out[0, 1:], expected, atol=1e-6)


def test_load_pretrained_pre_logits_follow_the_model(tmp_path):
  _, params = _model_and_params(representation_size=12)
  checkpoint.save(params, str(tmp_path / 'rep.npz'))
  _, init_norep = _model_and_params()
  restored = checkpoint.load_pretrained(pretrained_path=str(tmp_path / 'rep.npz'),
                                        init_params=init_norep, model_config=_config())
  assert 'pre_logits' not in restored  # the official drop-head variant
  _, init_rep = _model_and_params(representation_size=12, seed=3)
  restored = checkpoint.load_pretrained(pretrained_path=str(tmp_path / 'rep.npz'),
                                        init_params=init_rep, model_config=_config())
  _assert_trees_equal(restored['pre_logits'], params['pre_logits'])


def test_load_pretrained_onto_a_scanned_model(tmp_path):
  model, params = _model_and_params()
  checkpoint.save(params, str(tmp_path / 'pre.npz'))
  scanned = models.VisionTransformer(num_classes=7, scan=True, **_config())
  init = scanned.init(jax.random.key(0), jnp.ones((1, 16, 16, 3)), train=False)['params']
  restored = checkpoint.load_pretrained(pretrained_path=str(tmp_path / 'pre.npz'),
                                        init_params=flax.core.freeze(init), model_config=_config(),
                                        reset_head=False)
  assert isinstance(restored, flax.core.FrozenDict)
  assert 'encoderblock' in restored['Transformer']
  images = _images()
  np.testing.assert_allclose(scanned.apply({'params': restored}, images, train=False),
                             model.apply({'params': params}, images, train=False),
                             rtol=1e-5, atol=1e-5)


def test_mismatched_checkpoint_lists_every_problem(tmp_path):
  _, params = _model_and_params(classifier='gap')
  checkpoint.save(params, str(tmp_path / 'gap.npz'))
  _, init = _model_and_params(hidden_size=20, representation_size=8)
  with pytest.raises(ValueError) as error:
    checkpoint.load_pretrained(pretrained_path=str(tmp_path / 'gap.npz'), init_params=init,
                               model_config=_config())
  message = str(error.value)
  assert str(tmp_path / 'gap.npz') in message
  assert 'missing from the checkpoint:\n    cls\n' in message
  assert 'pre_logits/kernel' in message
  assert 'embedding/kernel: checkpoint (4, 4, 3, 16) vs model (4, 4, 3, 20)' in message
  assert 'unexpected in the checkpoint:\n    (none)' in message


def test_dont_load_takes_entries_from_init(tmp_path):
  _, params = _model_and_params(classifier='token')
  checkpoint.save(params, str(tmp_path / 'tok.npz'))
  _, init = _model_and_params(classifier='gap', seed=2)
  with pytest.raises(ValueError, match='unexpected in the checkpoint:\n    cls'):
    checkpoint.load_pretrained(pretrained_path=str(tmp_path / 'tok.npz'), init_params=init,
                               model_config=_config())
  restored = checkpoint.load_pretrained(pretrained_path=str(tmp_path / 'tok.npz'),
                                        init_params=init, model_config=_config(),
                                        dont_load=['cls', r'Transformer/encoderblock_1/.*'])
  np.testing.assert_array_equal(restored['Transformer']['posembed_input']['pos_embedding'],
                                params['Transformer']['posembed_input']['pos_embedding'][:, 1:])
  _assert_trees_equal(restored['Transformer']['encoderblock_1'],
                      init['Transformer']['encoderblock_1'])
  _assert_trees_equal(restored['Transformer']['encoderblock_0'],
                      params['Transformer']['encoderblock_0'])


def test_bad_files_are_named(tmp_path):
  missing = tmp_path / 'nope.npz'
  with pytest.raises(FileNotFoundError, match='nope.npz'):
    checkpoint.load(str(missing))
  truncated = tmp_path / 'truncated.npz'
  _, params = _model_and_params()
  checkpoint.save(params, str(tmp_path / 'good.npz'))
  truncated.write_bytes((tmp_path / 'good.npz').read_bytes()[:300])
  with pytest.raises(ValueError, match='truncated.npz is not a readable .npz'):
    checkpoint.load(str(truncated))
  pickled = tmp_path / 'pickled.npz'
  np.savez(pickled, evil=np.array([{'a': 1}], dtype=object))
  with pytest.raises(ValueError, match='pickled.npz holds pickled objects'):
    checkpoint.load(str(pickled))
  np.savez(tmp_path / 'other.npz', weights=np.zeros(3))
  with pytest.raises(ValueError, match='Not a ViT checkpoint'):
    checkpoint.load(str(tmp_path / 'other.npz'))


@pytest.mark.parametrize('name', ['ViT-B_16', 'ViT-L_32', 'ViT-B_16-gap-norep', 'R50+ViT-B_16',
                                  'R+ViT-Ti_16', 'ViT-g_14', 'testing'])
def test_infer_model_config_from_shapes(name):
  config = model_configs.get_config(name)
  shapes = jax.eval_shape(lambda: models.VisionTransformer(num_classes=21, **config).init(
      jax.random.key(0), jnp.ones((1, 224, 224, 3)), train=False))['params']
  inferred, num_classes = checkpoint.infer_model_config(shapes)
  assert num_classes == 21
  assert inferred.model_name == name
  expected = config.to_dict()
  expected['transformer'].update(dropout_rate=0.0)
  assert inferred.to_dict() == expected


def test_infer_model_config_of_custom_models():
  model = models.VisionTransformer(num_classes=4, posemb='sincos2d',
                                   **_config(classifier='map', representation_size=8))
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.ones((1, 16, 16, 3)),
                                             train=False))['params']
  inferred, num_classes = checkpoint.infer_model_config(shapes)
  assert (inferred.model_name, num_classes) == ('custom', 4)
  assert (inferred.classifier, inferred.posemb, inferred.representation_size) == ('map',
                                                                               'sincos2d', 8)
  assert dict(inferred.transformer) == dict(mlp_dim=24, num_heads=4, num_layers=2,
                                            attention_dropout_rate=0.0, dropout_rate=0.0)
