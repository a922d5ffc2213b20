"""Image folders: layouts, the held-out validation slice, corrupt files, and the README's
"fine-tune on your own images" command end to end on a generated folder."""

import importlib.util
import json
import os

import jax
import numpy as np
from PIL import Image
import pytest

from support import tiny_vit_config
from vit_jax import checkpoint
from vit_jax import export
from vit_jax import infer
from vit_jax.data import folders
from vit_jax.data import sources
from vit_jax.models.vit import VisionTransformer
from vit_jax.train import loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLOURS = {'blue': (0, 0, 220), 'green': (0, 200, 0), 'red': (230, 0, 0)}


def _make_folder(root, per_class=20, size=16, seed=0, classes=COLOURS):
  """`root/<colour>/*.jpg`: noisy images of one dominant colour per class."""
  rng = np.random.default_rng(seed)
  for name, colour in classes.items():
    os.makedirs(os.path.join(root, name), exist_ok=True)
    for i in range(per_class):
      pixels = np.clip(np.array(colour) + rng.normal(0, 40, (size, size, 3)), 0, 255)
      Image.fromarray(pixels.astype(np.uint8)).save(os.path.join(root, name, f'{i:03d}.jpg'))
  return str(root)


def test_flat_folder_holds_out_a_stable_slice(tmp_path):
  root = _make_folder(tmp_path / 'pool', per_class=20)
  train, val = folders.read_split(root, 'train'), folders.read_split(root, 'val')
  assert train.class_names == val.class_names == ['blue', 'green', 'red']
  assert len(val.files) == 6 and len(train.files) == 54  # 10% of each class of 20
  assert not set(train.files) & set(val.files)
  assert np.bincount(val.labels).tolist() == [2, 2, 2]
  # The slice is a function of the file names: the same on another machine or copy.
  copy = _make_folder(tmp_path / 'copy', per_class=20, seed=1)
  assert ([os.path.relpath(f, copy) for f in folders.read_split(copy, 'val').files]
          == [os.path.relpath(f, root) for f in val.files])
  with pytest.raises(ValueError, match="Split 'test' not found"):
    folders.read_split(root, 'test')


def test_split_folders_and_their_errors(tmp_path):
  _make_folder(tmp_path / 'data' / 'train', per_class=4)
  _make_folder(tmp_path / 'data' / 'test', per_class=2)
  root = str(tmp_path / 'data')
  test = sources.folder_source(root, 'test')
  assert test.num_examples == 6 and test.class_names == ['blue', 'green', 'red']
  assert sources.folder_source(root, 'val').num_examples == 3  # held out of train/: 1 per class
  assert sources.folder_source(root, 'train').num_examples == 9
  assert sources.folder_source(root, 'train[:50%]').num_examples == 4
  _make_folder(tmp_path / 'data' / 'validation', per_class=1)
  assert sources.folder_source(root, 'train').num_examples == 12  # a val folder: nothing held out
  assert sources.folder_source(root, 'validation').num_examples == 3
  os.makedirs(tmp_path / 'data' / 'test' / 'purple')
  with pytest.raises(ValueError, match=r"class folders \['purple'\] that .*train lacks"):
    sources.folder_source(root, 'test')
  one = _make_folder(tmp_path / 'one', classes={'cat': (1, 2, 3)})
  with pytest.raises(ValueError, match='at least 2'):
    sources.folder_source(one, 'train')
  os.makedirs(tmp_path / 'empty' / 'a')
  os.makedirs(tmp_path / 'empty' / 'b')
  with pytest.raises(ValueError, match='No images'):
    sources.folder_source(str(tmp_path / 'empty'), 'train')


def test_corrupt_files_are_skipped_and_counted(tmp_path):
  root = _make_folder(tmp_path / 'pool', per_class=10)
  for name in ('blue/bad1.jpg', 'red/bad2.png'):
    with open(os.path.join(root, name), 'wb') as f:
      f.write(b'not an image')
  source = sources.folder_source(root, 'train[:100%]')
  assert len(source.skipped_files) == 2 and source.num_examples == 27
  with pytest.raises(ValueError, match='2 of 29 images .* cannot be decoded'):
    sources.folder_source(root, 'train', strict=True)


def _finetune_recipe():
  spec = importlib.util.spec_from_file_location(
      'finetune', os.path.join(ROOT, 'configs', 'finetune.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config('folder,16')


@pytest.mark.slow
def test_finetune_on_a_folder_end_to_end(tmp_path):
  """The README's command: configs/finetune.py:folder with data.root and init_from a tiny .npz."""
  root = _make_folder(tmp_path / 'pets', per_class=30)
  tiny = tiny_vit_config()
  pretrained = VisionTransformer(num_classes=5, **tiny).init(
      jax.random.key(0), np.zeros((1, 16, 16, 3)), train=False)['params']
  checkpoint.save(pretrained, str(tmp_path / 'tiny.npz'))

  config = _finetune_recipe()
  config.data.root = root  # the one flag: the evaluator's root follows it
  config.init_from = str(tmp_path / 'tiny.npz')
  config.model.hidden_size, config.model.patches.size = 16, (4, 4)
  for field in ('mlp_dim', 'num_heads', 'num_layers'):
    config.model.transformer[field] = tiny.transformer[field]
  config.batch_size = config.eval_batch_size = 32
  config.total_steps, config.lr.warmup_steps, config.lr.base = 60, 5, 0.1
  config.log_every = config.checkpoint_every = 30
  workdir = str(tmp_path / 'run')
  result = loop.train_and_evaluate(config, workdir)
  assert result['eval/examples'] == 9  # 10% of each class of 30 held out
  assert result['eval/accuracy'] >= 8 / 9, result

  with open(os.path.join(workdir, 'labels.txt'), encoding='utf-8') as f:
    assert f.read().split() == ['blue', 'green', 'red']
  with open(os.path.join(workdir, 'config.json'), encoding='utf-8') as f:
    assert json.load(f)['num_classes'] == 3  # from the folder
  # The labels travel: infer names the classes, the HF export writes them as id2label.
  [prediction] = infer.run(checkpoint_path=workdir,
                           image_paths=[os.path.join(root, 'red', '000.jpg')], top_k=1)
  assert prediction.names == ['red']
  out = export.export(workdir, 'hf', str(tmp_path / 'hf'))
  with open(os.path.join(out, 'config.json'), encoding='utf-8') as f:
    assert json.load(f)['id2label'] == {'0': 'blue', '1': 'green', '2': 'red'}


def test_worker_processes_find_the_same_corrupt_files(tmp_path, monkeypatch):
  root = _make_folder(tmp_path / 'pool', per_class=5)
  files = folders.read_split(root, 'val').files + [os.path.join(root, 'cut.jpg')]
  with open(files[-1], 'wb') as f:
    f.write(open(files[0], 'rb').read()[:100])
  monkeypatch.setattr(folders, '_PARALLEL_FROM', 0)
  assert folders.check_decodable(files, processes=2) == [True] * (len(files) - 1) + [False]
