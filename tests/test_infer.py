"""The inference command: checkpoint -> architecture -> predictions on image files."""

import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image
import pytest

from support import in_process
from support import randomize
from vit_jax import checkpoint
from vit_jax import infer
from vit_jax import models
from vit_jax.data import naflex
from vit_jax.data import images as images_lib
from vit_jax.models import geometry
from vit_jax.models import sequences

CONFIG = ml_collections.ConfigDict(dict(
    model_name='tiny', patches={'size': (8, 8)}, hidden_size=16,
    transformer=dict(mlp_dim=24, num_heads=4, num_layers=2, dropout_rate=0.0,
                     attention_dropout_rate=0.0), classifier='token', representation_size=None))


@pytest.fixture
def saved(tmp_path):
  model = models.VisionTransformer(num_classes=6, **CONFIG)
  params = randomize(model.init(jax.random.key(0), jnp.ones((1, 32, 32, 3)), train=False)['params'])
  checkpoint.save(params, str(tmp_path / 'tiny.npz'))
  rng = np.random.default_rng(0)
  paths = []
  for i in range(2):
    path = tmp_path / f'image{i}.png'
    Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(path)
    paths.append(str(path))
  return model, params, str(tmp_path / 'tiny.npz'), paths


def test_predictions_equal_the_model_on_the_same_pixels(saved):
  model, params, path, images = saved
  predictions = infer.run(checkpoint_path=path, image_paths=images, top_k=3)
  pixels = np.stack([images_lib.load(p, 'resize(32)|value_range(-1, 1)') for p in images])  # native size read off posemb
  probabilities = np.asarray(jax.nn.softmax(model.apply({'params': params}, pixels, train=False)))
  for prediction, row in zip(predictions, probabilities):
    assert prediction.classes == list(np.argsort(-row)[:3])
    np.testing.assert_allclose(prediction.probabilities, np.sort(row)[::-1][:3], rtol=1e-5)


def test_other_resolution_resamples_the_position_embeddings(saved):
  _, _, path, images = saved
  model, params, pp, _ = infer.build(None, path, 48, 1000)
  assert pp == 'resize(48)|value_range(-1, 1)'  # the released transform at the new size
  assert params['Transformer']['posembed_input']['pos_embedding'].shape == (1, 37, 16)
  assert len(infer.run(checkpoint_path=path, image_paths=images, image_size=48)[0].classes) == 5
  assert model.num_classes == 6


def test_native_image_size_of_variants():
  for name, size in (('ViT-B_16', 224), ('R50+ViT-B_16', 224), ('R+ViT-Ti_16', 224)):
    config = models.get_model(name, num_classes=3)
    shapes = jax.eval_shape(lambda c=config: c.init(
        jax.random.key(0), jnp.ones((1, 224, 224, 3)), train=False))['params']
    inferred, _ = checkpoint.infer_model_config(shapes)
    assert geometry.native_image_size(shapes, inferred) == size, name


def test_missing_image_and_missing_arguments(tmp_path, saved):
  with pytest.raises(FileNotFoundError, match='missing.png'):
    images_lib.open_rgb(str(tmp_path / 'missing.png'))
  (tmp_path / 'broken.png').write_bytes(b'not an image')
  with pytest.raises(ValueError, match='Cannot decode image .*broken.png'):
    images_lib.open_rgb(str(tmp_path / 'broken.png'))
  with pytest.raises(ValueError, match='--model'):
    infer.build(None, None, None, 10)
  with pytest.raises(FileNotFoundError, match='expected a workdir, an .npz, or a timm'):
    infer.build(None, str(tmp_path / 'nothing.npz'), None, 10)


def test_command_line_smoke_run():
  result = in_process.run(
      [sys.executable, '-m', 'vit_jax.infer', '--model=testing', '--num_classes=4', '--top_k=2'])
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'china.jpg' in result.stdout
  assert result.stdout.count('0.2500  class') == 2  # zero head: uniform over 4 classes


def test_native_resolution_keeps_each_images_aspect_ratio(saved, tmp_path):
  model, params, path, images = saved
  tall = tmp_path / 'tall.png'
  Image.fromarray(np.random.default_rng(1).integers(0, 256, (60, 20, 3), dtype=np.uint8)).save(tall)
  paths = images + [str(tall)]
  predictions = infer.run(checkpoint_path=path, image_paths=paths, top_k=3, naflex_patches=64)
  # Under 64 patches both keep their size: 40x50 is 5 x 7 patches of 8 px (rounded up), 60x20
  # is 8 x 3.
  seqs = naflex.image_files(paths, "value_range(-1, 1)", 8, 64)
  np.testing.assert_array_equal(np.asarray(seqs.grids)[:, 0], [[5, 7], [5, 7], [8, 3]])
  # Each image equals the model on its own pixels: resized to its grid, as one-image sequences.
  for prediction, image_path, grid in zip(predictions, paths, [(5, 7), (5, 7), (8, 3)]):
    pixels = np.asarray(Image.open(image_path).convert('RGB').resize(
        (grid[1] * 8, grid[0] * 8), Image.Resampling.BILINEAR), np.float32) / 127.5 - 1
    logits = model.apply({'params': params}, sequences.from_images(pixels[None], (8, 8)),
                         train=False)[0, 0]
    row = np.asarray(jax.nn.softmax(logits))
    assert prediction.classes == list(np.argsort(-row)[:3])
    np.testing.assert_allclose(prediction.probabilities, np.sort(row)[::-1][:3], rtol=1e-4)
