"""NaFlex runs of the one trainer: a folder of non-square images, packed, end to end and resumed."""

import json
import os

import numpy as np
import pytest
from PIL import Image

import runs
from vit_jax import errors
from vit_jax.configs import common
from vit_jax.train import loop

STEPS = 24
KEEP = 'keep("patches", "positions", "segments", "grids", "labels")'


def write_folder(root, per_class=24, seed=0):
  """root/{train,val}/{blue,red}/*.png: aspect ratios 1:3 to 3:1, sides 6 to 24 pixels; the
  class is the dominant colour under noise."""
  rng = np.random.default_rng(seed)
  for split, count in (('train', per_class), ('val', per_class // 2)):
    for label, channel in (('blue', 2), ('red', 0)):
      os.makedirs(os.path.join(root, split, label), exist_ok=True)
      for i in range(count):
        aspect = float(np.exp(rng.uniform(np.log(1 / 3), np.log(3))))
        longer = int(rng.integers(8, 25))
        height, width = ((longer, max(6, int(longer * aspect))) if aspect < 1
                         else (max(6, int(longer / aspect)), longer))
        image = rng.integers(0, 120, (height, width, 3))
        image[..., channel] += 120
        Image.fromarray(image.astype(np.uint8)).save(
            os.path.join(root, split, label, f'{i:03d}.png'))


def naflex_config(root, images_per_sequence=4, sequences=8):
  config = common.get_config()
  config.model_name = 'testing'
  config.model.patches.size = (4, 4)
  config.model.hidden_size = 16
  config.model.transformer.update(mlp_dim=32, num_heads=2, num_layers=1, dropout_rate=0.0)
  config.model.classifier = 'map'
  config.num_classes = 2
  config.image_size = 16  # the position table's grid (4 x 4), resized to every image's own
  config.data = common.data_source('folder', 'train')
  config.data.root = root
  config.pp_train = f'decode|flip_lr|value_range(-1, 1)|naflex(4, 32)|onehot|{KEEP}'
  config.naflex.images_per_sequence = images_per_sequence
  config.naflex.sequences = sequences
  config.batch_size = 16  # images per step, packed into 8 sequences of 32 tokens
  config.total_steps = STEPS
  config.lr.base, config.lr.warmup_steps = 1e-2, 2
  config.wd = 1e-4
  config.log_every = 4
  config.checkpoint_every = 8
  val = common.data_source('folder', 'val')
  val.root = root
  config.evals.eval = common.classification_eval(
      val, f'decode|value_range(-1, 1)|naflex(4, 32)|onehot|{KEEP}', every=STEPS)
  shots = common.fewshot_dataset('folder', 'train', 'val', root=root)
  config.evals.fewshot = common.fewshot_eval(
      {'shapes': shots}, 'decode|value_range(-1, 1)|naflex(4, 32)', every=STEPS, shots=(5,))
  config.eval_batch_size = 8
  return config


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('shapes'))
  write_folder(root)
  return root


@pytest.fixture(scope='module')
def finished(folder, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('naflex_run'))
  return workdir, loop.train_and_evaluate(naflex_config(folder), workdir)


@pytest.mark.slow
def test_a_packed_run_on_non_square_images_learns_them(finished):
  workdir, result = finished
  assert result['step'] == STEPS
  assert result['eval/accuracy'] >= 0.9, result
  assert result['fewshot/shapes_5shot'] >= 0.9, result  # linear probes on native-size features
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    rows = [json.loads(line) for line in f if '"train/loss"' in line]
  # Nearly all of a step's 16 images find room in its 8 sequences of 32 tokens (means of 4 steps).
  packed = [row['train/images_packed'] for row in rows]
  assert len(packed) == STEPS // 4 and min(packed) >= 15 and max(packed) <= 16, packed
  assert rows[-1]['train/loss'] < rows[0]['train/loss']


@pytest.mark.slow
def test_a_killed_packed_run_resumes_bit_identical(folder, finished, tmp_path, monkeypatch):
  # Step 13 never runs; the last checkpoint is step 8.
  runs.kill_and_resume(naflex_config(folder), str(tmp_path / 'killed'), finished[0],
                       monkeypatch, after=12, restored_step=8)


@pytest.mark.parametrize('fields, message', [
    (dict(sequences=6), r'naflex.sequences=6 .* multiple of the device count'),
    (dict(images_per_sequence=1, sequences=8), 'must equal batch_size=16'),
    (dict(images_per_sequence=0), 'images_per_sequence must be a positive integer'),
])
def test_bad_naflex_settings_are_refused_at_startup(folder, tmp_path, fields, message):
  config = naflex_config(folder)
  config.naflex.update(fields)
  with pytest.raises(errors.UserError, match=message):
    loop.train_and_evaluate(config, str(tmp_path / 'bad'))


def test_square_only_input_features_are_refused_for_naflex(folder, tmp_path):
  config = naflex_config(folder)
  config.pp_device = 'randaug(2, 5)'
  with pytest.raises(errors.UserError, match='pp_device and mixup are square-only'):
    loop.train_and_evaluate(config, str(tmp_path / 'bad'))
  config = naflex_config(folder)
  config.pp_train = config.pp_train.replace('naflex(4, 32)', 'naflex(4, 0)')
  with pytest.raises(errors.UserError, match='max_patches must be a positive integer'):
    loop.train_and_evaluate(config, str(tmp_path / 'bad2'))
