"""NaFlex sequences: square equivalence, packing equals each image alone, the posemb resize."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from vit_jax import errors
from vit_jax.data import naflex
from vit_jax.models import sequences
from vit_jax.models import vit

PATCH = 4


def _model(classifier='token', **fields):
  return vit.VisionTransformer(
      num_classes=5, patches={'size': (PATCH, PATCH)}, hidden_size=32, classifier=classifier,
      transformer={'num_layers': 2, 'mlp_dim': 64, 'num_heads': 4, 'dropout_rate': 0.0,
                   'attention_dropout_rate': 0.0}, **fields)


def _init(model, side=16, seed=0):
  params = model.init(jax.random.key(seed), jnp.zeros((1, side, side, 3)), train=False)['params']
  # Non-zero head and prefix tokens, so every path shows in the logits.
  return jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.key(1), p.shape), params)


@pytest.mark.parametrize('fields', [
    dict(classifier='token', posemb='sincos2d'), dict(classifier='gap', scan=True),
    dict(classifier='map'), dict(classifier='token_gap'),
    dict(classifier='token', num_registers=2, fc_norm=True, distilled=True)])
def test_sequences_of_square_images_equal_the_square_model(fields):
  model = _model(**fields)
  params = _init(model)
  images = jax.random.normal(jax.random.key(2), (3, 16, 16, 3))
  square = model.apply({'params': params}, images, train=False)
  seqs = sequences.from_images(images, (PATCH, PATCH))
  flexible = model.apply({'params': params}, seqs, train=False)
  assert flexible.shape == (3, 1, 5)
  np.testing.assert_allclose(flexible[:, 0], square, atol=1e-5, rtol=1e-5)


def _images(grids, seed=3):
  rng = np.random.default_rng(seed)
  return [rng.integers(0, 256, (r * PATCH, c * PATCH, 3), dtype=np.uint8) for r, c in grids]


def _alone(model, params, image, grid):
  patches, positions = naflex.patchify(image, PATCH, grid)
  n = len(patches)
  seqs = sequences.Sequences(
      patches=jnp.asarray(patches[None], jnp.float32), positions=jnp.asarray(positions[None]),
      segments=jnp.ones((1, n), jnp.int32), grids=jnp.asarray([[grid]], jnp.int32))
  return model.apply({'params': params}, seqs, train=False)[0, 0]


@pytest.mark.parametrize('classifier', ['token', 'map', 'gap'])
def test_packing_equals_each_image_alone(classifier):
  # Sequences of 16 tokens: (4, 4) fills the first exactly; (3, 3) then fits nowhere but a new
  # sequence; (2, 3) joins it; (1, 5) no longer fits there (9 + 6 + 5 > 16) and opens the third.
  grids = [(4, 4), (3, 3), (2, 3), (1, 5), (1, 1)]
  images = _images(grids)
  tokens, positions = zip(*(naflex.patchify(im, PATCH, g) for im, g in zip(images, grids)))
  batch, placed = naflex.pack(tokens, positions, grids, num_sequences=3, seq_len=16,
                              images_per_sequence=3)
  np.testing.assert_array_equal(placed, [[0, 0], [1, 0], [1, 1], [2, 0], [1, 2]])
  assert np.sum(batch['segments'] > 0) == sum(r * c for r, c in grids)
  model = _model(classifier)
  params = _init(model)
  seqs = sequences.Sequences(**{k: jnp.asarray(v) for k, v in batch.items()})
  seqs = seqs._replace(patches=seqs.patches.astype(jnp.float32))
  packed = model.apply({'params': params}, seqs, train=False)
  for image, grid, (s, slot) in zip(images, grids, placed):
    np.testing.assert_allclose(packed[s, slot], _alone(model, params, image, grid),
                               atol=1e-5, rtol=1e-5)


def test_an_image_that_fits_nowhere_is_dropped_and_counted():
  grids = [(4, 4), (4, 4), (2, 2)]
  tokens, positions = zip(*(naflex.patchify(im, PATCH, g) for im, g in zip(_images(grids), grids)))
  batch, placed = naflex.pack(tokens, positions, grids, num_sequences=1, seq_len=20,
                              images_per_sequence=4, extras={'labels': [0, 1, 2]})
  np.testing.assert_array_equal(placed, [[0, 0], [-1, -1], [0, 1]])
  np.testing.assert_array_equal(batch['labels'], [[0, 2, 0, 0]])
  np.testing.assert_array_equal(batch['grids'][0, :2], [[4, 4], [2, 2]])


@pytest.mark.parametrize('method', ['bilinear', 'bicubic'])
@pytest.mark.parametrize('grid', [(16, 16), (7, 12), (20, 5), (3, 30), (1, 1)])
def test_posemb_resize_equals_torch_antialiased_interpolation(grid, method):
  """Per token, as PyTorch's `interpolate(..., antialias=True)` resizes the whole table; square:
  timm NaFlexViT's `pos_embed_ar_preserving` (a square of the longer side, top-left kept)."""
  table = np.random.default_rng(0).normal(size=(16, 16, 8)).astype(np.float32)
  rows, columns = np.meshgrid(np.arange(grid[0]), np.arange(grid[1]), indexing='ij')
  positions = np.stack([rows.ravel(), columns.ravel()], -1)[None]
  grids = np.broadcast_to(np.asarray(grid), positions.shape)
  for square in (False, True):
    size = (max(grid),) * 2 if square else grid
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(table).permute(2, 0, 1)[None], size=size, mode=method,
        align_corners=False, antialias=True)[0, :, :grid[0], :grid[1]]
    got = sequences.resized_table_at(jnp.asarray(table), jnp.asarray(positions),
                                     jnp.asarray(grids), method, square)
    np.testing.assert_allclose(got[0], expected.permute(1, 2, 0).reshape(-1, 8).numpy(),
                               atol=1e-5)


def test_budget_grid_keeps_the_aspect_ratio_under_the_budget():
  assert naflex.budget_grid(64, 64, 16, 256) == (4, 4)  # small: kept at its size
  assert naflex.budget_grid(64, 64, 16, 256, upscale=True) == (16, 16)
  rows, columns = naflex.budget_grid(300, 900, 16, 64)
  assert rows * columns <= 64 and columns / rows == pytest.approx(3, rel=0.35)
  assert max(naflex.budget_grid(100, 2000, 16, 256, max_side=320)) * 16 <= 320
  with pytest.raises(errors.UserError, match='max_side=8'):
    naflex.budget_grid(64, 64, 16, 16, max_side=8)


@pytest.mark.parametrize('fields, message', [
    (dict(posemb='rope'), 'rotary embeddings are square-only'),
    (dict(rope='axial'), 'rotary embeddings are square-only'),
    (dict(posemb='none', rel_pos_bias=True, classifier='gap', class_token=True),
     'a relative position bias is square-only'),
    (dict(classifier='unpooled'), 'square-only'),
    (dict(resnet={'num_layers': (1,), 'width_factor': 1}), 'hybrid stem')])
def test_square_only_features_are_refused_for_sequences(fields, message):
  model = _model(**fields)
  seqs = sequences.from_images(jnp.zeros((1, 16, 16, 3)), (PATCH, PATCH))
  with pytest.raises(errors.UserError, match=message):
    model.init(jax.random.key(0), seqs, train=False)


@pytest.mark.parametrize('grid', [(7, 12), (20, 5), (16, 16)])
def test_posemb_resize_equals_big_visions_scale_and_translate(grid):
  """big_vision's NaFlex resizes its table with jax.image.scale_and_translate (bilinear,
  antialiased, no translation); the per-token weights give the same rows."""
  table = np.random.default_rng(1).normal(size=(16, 16, 8)).astype(np.float32)
  resized = jax.image.scale_and_translate(
      jnp.asarray(table), (*grid, 8), (0, 1), jnp.asarray(grid, jnp.float32) / 16.0,
      jnp.zeros(2), method='bilinear', antialias=True)
  rows, columns = np.meshgrid(np.arange(grid[0]), np.arange(grid[1]), indexing='ij')
  positions = np.stack([rows.ravel(), columns.ravel()], -1)[None]
  got = sequences.resized_table_at(jnp.asarray(table), jnp.asarray(positions),
                                   jnp.asarray(np.broadcast_to(np.asarray(grid), positions.shape)))
  np.testing.assert_allclose(got[0], np.asarray(resized).reshape(-1, 8), atol=1e-5)
