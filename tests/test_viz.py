"""Attention maps and analysis figures: values with known answers, and the files written."""

import csv
import os

import flax
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from vit_jax import checkpoint
from vit_jax import models
from vit_jax.data import images
from vit_jax.data import naflex
from vit_jax.models import posemb as posemb_lib
from vit_jax.viz import analysis
from vit_jax.viz import report

from support import randomize
from support import tiny_vit_config

TARGET = 2  # the patch every token is made to attend to


def _one_patch_model(num_layers=1, scan=False):
  """Weights set so that every query attends (almost) only to patch TARGET of a 2x2 grid."""
  config = tiny_vit_config(hidden_size=8, transformer=dict(
      mlp_dim=8, num_heads=1, num_layers=num_layers, dropout_rate=0.0,
      attention_dropout_rate=0.0))
  model = models.VisionTransformer(num_classes=3, **config)
  params = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)), train=False)['params']
  params = flax.core.unfreeze(jax.tree.map(np.asarray, randomize(params, scale=0.2)))
  params['embedding']['kernel'][:] = 0.0
  params['embedding']['bias'][:] = 0.0
  params['cls'][:] = 0.0
  posemb = np.zeros((1, 5, 8), np.float32)
  posemb[0, 1 + TARGET, 0] = 10.0  # only the target patch carries any signal
  params['Transformer']['posembed_input']['pos_embedding'] = posemb
  direction = (np.eye(8)[0] - 1 / 8) / np.linalg.norm(np.eye(8)[0] - 1 / 8)  # LN of the target
  for layer in range(num_layers):
    block = params['Transformer'][f'encoderblock_{layer}']
    block['LayerNorm_0']['scale'][:] = 1.0
    block['LayerNorm_0']['bias'][:] = 0.0
    attention = block['MultiHeadDotProductAttention_0']
    attention['query']['kernel'][:] = 0.0
    attention['query']['bias'][:] = 40.0 * direction[None]
    attention['key']['kernel'][:] = np.eye(8)[:, None, :]
    attention['key']['bias'][:] = 0.0
    # Keep the residual stream so later layers still see the target: small updates only.
    attention['out']['kernel'][:] *= 0.01
    block['MlpBlock_0']['Dense_1']['kernel'][:] *= 0.01
  if scan:
    model = models.VisionTransformer(num_classes=3, scan=True, **config)
    params = models.stack_encoder_blocks(params)
  return model, params


@pytest.mark.parametrize('num_layers,scan', [(1, False), (2, False), (2, True)])
def test_rollout_peaks_at_the_attended_patch(num_layers, scan):
  model, params = _one_patch_model(num_layers, scan)
  images = np.random.default_rng(0).uniform(-1, 1, (2, 8, 8, 3)).astype(np.float32)
  attention = analysis.attention_weights(model, params, images)
  assert attention.shape == (num_layers, 2, 1, 5, 5)
  assert np.all(attention[0].argmax(-1) == 1 + TARGET)
  assert attention[0, :, :, :, 1 + TARGET].min() > 0.99
  maps = analysis.rollout(attention, num_prefix_tokens=1)
  np.testing.assert_allclose(maps.sum(-1), 1.0, rtol=1e-6)
  assert np.all(maps.argmax(-1) == TARGET)


def test_rollout_of_known_matrices():
  tokens = 5
  attention = np.zeros((3, 1, 2, tokens, tokens))
  attention[..., 1 + TARGET] = 1.0  # every head, every query -> the target patch
  maps = analysis.rollout(attention, num_prefix_tokens=1)
  # (A + I) / 2 thrice: the cls row keeps 1/8 on itself, the target gets the rest.
  np.testing.assert_allclose(maps[0], np.eye(4)[TARGET], atol=1e-12)
  no_cls = analysis.rollout(attention[..., 1:, 1:], num_prefix_tokens=0)
  assert no_cls[0].argmax() == TARGET


def test_attention_distance_of_self_and_neighbour_heads():
  grid, patch = (3, 4), 16
  tokens = 12
  self_attention = np.broadcast_to(np.eye(tokens), (2, 1, 1, tokens, tokens))
  np.testing.assert_array_equal(
      analysis.mean_attention_distance(self_attention, grid, patch, 0), np.zeros((2, 1)))
  neighbour = np.zeros((1, 1, 1, tokens, tokens))
  for query in range(tokens):
    row, col = divmod(query, 4)
    neighbour[..., query, row * 4 + (col + 1 if col < 3 else col - 1)] = 1.0
  with_cls = np.zeros((1, 1, 1, tokens + 1, tokens + 1))
  with_cls[..., 1:, 1:] = neighbour
  with_cls[..., 1:, 0] = 5.0  # attention to cls is left out and the rest renormalised
  np.testing.assert_allclose(analysis.mean_attention_distance(with_cls, grid, patch, 1), [[16.0]])


def test_sincos_similarity_is_symmetric_and_peaks_on_the_diagonal():
  similarity = analysis.posemb_similarity(posemb_lib.posemb_sincos_2d(5, 6, 64), (5, 6), 0)
  assert similarity.shape == (5, 6, 5, 6)
  np.testing.assert_allclose(similarity, similarity.transpose(2, 3, 0, 1), atol=1e-12)
  flat = similarity.reshape(30, 30)
  assert np.all(flat.argmax(-1) == np.arange(30))
  np.testing.assert_allclose(np.diag(flat), 1.0)


def test_embedding_components_find_the_dominant_filter():
  rng = np.random.default_rng(0)
  direction = rng.standard_normal(4 * 4 * 3)
  direction /= np.linalg.norm(direction)
  weights = rng.standard_normal(64) * 10
  filters = np.outer(direction, weights) + 0.01 * rng.standard_normal((48, 64))
  components = analysis.embedding_components(filters.reshape(4, 4, 3, 64), count=5)
  assert components.shape == (5, 4, 4, 3)
  flat = components.reshape(5, -1)
  np.testing.assert_allclose(flat @ flat.T, np.eye(5), atol=1e-9)
  assert abs(flat[0] @ direction) > 0.99


@pytest.mark.parametrize('kind', ['token', 'gap_sincos', 'hybrid'])
def test_command_writes_every_figure(tmp_path, kind):
  if kind == 'token':
    model, params = _one_patch_model(2)
    size = 8
  else:
    overrides = ({'classifier': 'gap', 'posemb': 'sincos2d'} if kind == 'gap_sincos' else
                 {'resnet': {'num_layers': (1,), 'width_factor': 1}, 'patches': {'size': (2, 2)}})
    size = 32 if kind == 'hybrid' else 16
    model = models.VisionTransformer(num_classes=3, **tiny_vit_config(**overrides))
    params = randomize(model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)),
                                  train=False)['params'], scale=0.3)
  checkpoint.save(params, str(tmp_path / 'model.npz'))
  image_dir = tmp_path / 'images'
  image_dir.mkdir()
  for i in range(3):
    Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 30, 3), np.uint8)).save(
        image_dir / f'img{i}.png')
  out = str(tmp_path / 'viz')
  written = report.run(str(tmp_path / 'model.npz'),
                       images.image_paths(str(image_dir), 10), out,
                       image_size=size if kind == 'gap_sincos' else None)
  assert len(written.rollouts) == len(written.head_maps) == 3
  for path in [*written.rollouts, *written.head_maps, written.distance_png, written.posemb_png,
               written.filters_png]:
    pixels = np.asarray(Image.open(path).convert('L'), np.float32)
    assert pixels.shape[0] >= 100 and pixels.shape[1] >= 100 and pixels.std() > 5, path
  assert Image.open(written.rollouts[0]).size == (600, 300)
  rows = list(csv.DictReader(open(written.distance_csv)))
  heads = 1 if kind == 'token' else 4
  assert len(rows) == 2 * heads  # layers x heads
  assert all(0.0 <= float(r['mean_attention_distance_px']) <= size * 1.5 for r in rows)
  raw = np.load(os.path.join(out, 'img0_rollout.npy'))
  np.testing.assert_allclose(raw.sum(), 1.0, rtol=1e-5)
  if kind == 'token':
    assert raw.argmax() == TARGET


def test_missing_inputs_are_named(tmp_path):
  with pytest.raises(FileNotFoundError, match='nope.png'):
    images.image_paths(str(tmp_path / 'nope.png'), 1)
  (tmp_path / 'empty').mkdir()
  with pytest.raises(ValueError, match='No images'):
    images.image_paths(str(tmp_path / 'empty'), 1)


def test_native_resolution_figures_keep_each_image_aspect_ratio(tmp_path):
  """`--naflex`: each image on its own grid; a square image at the model's own grid gives the
  square path's rollout."""
  model = models.VisionTransformer(num_classes=3, **tiny_vit_config())
  params = randomize(model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)),
                                train=False)['params'], scale=0.3)
  checkpoint.save(params, str(tmp_path / 'model.npz'))
  sizes = {'wide': (20, 60), 'tall': (48, 24), 'square': (16, 16)}
  for name, (height, width) in sizes.items():
    Image.fromarray(np.random.default_rng(height).integers(0, 255, (height, width, 3),
                                                           np.uint8)).save(tmp_path / f'{name}.png')
  paths = [str(tmp_path / f'{name}.png') for name in sizes]
  native = report.run(str(tmp_path / 'model.npz'), paths, str(tmp_path / 'native'), naflex=16)
  square = report.run(str(tmp_path / 'model.npz'), paths[2:], str(tmp_path / 'square'))
  for name, (height, width) in sizes.items():
    raw = np.load(tmp_path / 'native' / f'{name}_rollout.npy')
    assert raw.shape == naflex.budget_grid(height, width, 4, 16), name
    np.testing.assert_allclose(raw.sum(), 1.0, rtol=1e-5)
  assert np.load(tmp_path / 'native' / 'wide_rollout.npy').shape[1] > 2 * np.load(
      tmp_path / 'native' / 'wide_rollout.npy').shape[0]
  np.testing.assert_allclose(np.load(tmp_path / 'native' / 'square_rollout.npy'),
                             np.load(tmp_path / 'square' / 'square_rollout.npy'), rtol=1e-4,
                             atol=1e-6)
  wide = Image.open(native.rollouts[0])
  assert wide.size[0] > wide.size[1] and os.path.exists(square.distance_csv)
