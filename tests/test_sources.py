"""Sources: tfds by name and split expression, image folders (bad files), config dispatch."""

import importlib.util
import logging
import os
import sys

import numpy as np
import pytest
import tensorflow as tf

from vit_jax.data import digits
from vit_jax.data import sources
from vit_jax.data import splits

from support import in_process
from support import write_image_folder


def _read(source, index):
  return {k: v.numpy() for k, v in source.lookup(tf.constant(index, tf.int64)).items()}


def test_slice_split():
  sizes = {'train': 1000, 'test': 7}
  assert splits.slice_split('train', sizes) == ('train', 0, 1000)
  assert splits.slice_split('train[:98%]', sizes) == ('train', 0, 980)
  assert splits.slice_split('train[98%:]', sizes) == ('train', 980, 1000)
  assert splits.slice_split('train[10:-10]', sizes) == ('train', 10, 990)
  with pytest.raises(ValueError, match="Split 'validation' not found; available splits"):
    splits.slice_split('validation', sizes)
  with pytest.raises(ValueError, match='Cannot parse split'):
    splits.slice_split('train[::2]', sizes)


def test_tfds_source_by_name_and_split_expression(digits_data_dir):
  source = sources.tfds_source('digits/32px', 'train[:10%]', data_dir=digits_data_dir)
  assert source.num_examples == 135 and source.class_names[3] == '3'
  example = _read(source, 5)
  image = tf.io.decode_image(example['image']).numpy()  # encoded bytes: decoded in the pipeline
  expected = digits.builder(32, data_dir=digits_data_dir).as_data_source('train')[5]
  np.testing.assert_array_equal(image, expected['image'])
  assert example['label'] == expected['label']


def test_the_batched_read_equals_reading_one_by_one(digits_data_dir):
  source = sources.tfds_source('digits/32px', 'test', data_dir=digits_data_dir)
  indices = [7, 0, 31, 7]  # out of order, and one index twice
  many = source.lookup_many(tf.constant(indices, tf.int64))
  for i, index in enumerate(indices):
    one = _read(source, index)
    assert many['image'][i].numpy() == one['image'] and many['label'][i].numpy() == one['label']
  assert len(set(many['label'].numpy())) > 1  # the records differ, so their order is checked


def test_tfds_errors_are_clear(digits_data_dir, tmp_path):
  with pytest.raises(ValueError, match="Unknown tfds dataset 'no_such_dataset'"):
    sources.tfds_source('no_such_dataset', 'train')
  with pytest.raises(ValueError, match="Split 'validation' not found"):
    sources.tfds_source('digits/32px', 'validation', data_dir=digits_data_dir)
  with pytest.raises(ValueError, match="'digits/16px' is not prepared"):
    sources.tfds_source('digits/16px', 'train', data_dir=str(tmp_path))
  tfrecord_dir = str(tmp_path / 'tfrecord')
  digits.builder(16, data_dir=tfrecord_dir).download_and_prepare(file_format='tfrecord')
  with pytest.raises(ValueError, match='python -m vit_jax.data.to_array_record --dataset_version_dir='):
    sources.tfds_source('digits/16px', 'train', data_dir=tfrecord_dir)


def test_folder_source_classes_and_order(tmp_path):
  write_image_folder(tmp_path, {'train': {'cat': 3, 'dog': 2}, 'val': {'cat': 1, 'dog': 1}})
  source = sources.folder_source(str(tmp_path), 'train')  # a val/ folder: nothing held out
  assert source.class_names == ['cat', 'dog'] and source.num_examples == 5
  assert [_read(source, i)['label'] for i in range(5)] == [0, 0, 0, 1, 1]
  sliced = sources.folder_source(str(tmp_path), 'train[2:4]')
  assert sliced.num_examples == 2 and _read(sliced, 0)['image'] == _read(source, 2)['image']


def test_folder_source_skips_and_names_corrupt_images(tmp_path, caplog):
  write_image_folder(tmp_path, {'train': {'a': 2, 'b': 2}, 'val': {'a': 1, 'b': 1}})
  good = (tmp_path / 'train' / 'b' / '0000.png').read_bytes()
  (tmp_path / 'train' / 'a' / 'broken.png').write_bytes(b'\x89PNG not really')
  (tmp_path / 'train' / 'b' / 'cut.png').write_bytes(good[:len(good) // 2])
  with caplog.at_level(logging.WARNING):
    source = sources.folder_source(str(tmp_path), 'train')
  assert source.num_examples == 4
  assert sorted(p.split('/')[-1] for p in source.skipped_files) == ['broken.png', 'cut.png']
  assert '2 of 6 images' in caplog.text and 'broken.png' in caplog.text
  with pytest.raises(ValueError, match='2 of 6 images .* cannot be decoded'):
    sources.folder_source(str(tmp_path), 'train', strict=True)


def test_folder_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match='Image folder not found'):
    sources.folder_source(str(tmp_path / 'nowhere'), 'train')
  (tmp_path / 'train' / 'empty_class').mkdir(parents=True)
  with pytest.raises(ValueError, match='1 class folder.*needs at least 2'):
    sources.folder_source(str(tmp_path), 'train')
  (tmp_path / 'train' / 'another').mkdir(parents=True)
  with pytest.raises(ValueError, match='No images'):
    sources.folder_source(str(tmp_path), 'train')
  with pytest.raises(ValueError, match=r"Split 'test' not found in .*found: \['train'\]"):
    sources.folder_source(str(tmp_path), 'test')


def test_from_config_dispatch(digits_data_dir, tmp_path):
  source = sources.from_config({'name': 'digits', 'split': 'test', 'data_dir': digits_data_dir})
  assert source.num_examples == 450 and source.num_classes == 10
  with pytest.raises(ValueError, match='data.root'):
    sources.from_config({'name': 'folder', 'split': 'train'})


def test_a_tfrecord_dataset_names_the_command_that_converts_it(tmp_path):
  """A dataset prepared in TFRecord (tfds' default for years) fails at startup with the command
  that converts it in place; after that command it reads by index, example for example."""
  builder = digits.builder(8, data_dir=str(tmp_path))
  builder.download_and_prepare(file_format='tfrecord')
  with pytest.raises(ValueError, match='this one is tfrecord') as error:
    sources._builder_source(builder, 'test', 'image', 'label')  # pylint: disable=protected-access
  command = str(error.value).split('Convert it in place with: ')[1]
  assert command == f'python -m vit_jax.data.to_array_record --dataset_version_dir={builder.data_dir}'
  result = in_process.run([sys.executable, *command.split()[1:]])
  assert result.returncode == 0 and '1797 records copied' in result.stdout, result.stderr[-2000:]
  source = sources._builder_source(digits.builder(8, data_dir=str(tmp_path)), 'test',  # pylint: disable=protected-access
                                   'image', 'label')
  assert source.num_examples == 450
  reference = list(builder.as_dataset('test', shuffle_files=False).take(3).as_numpy_iterator())
  for i, example in enumerate(reference):
    read = _read(source, i)
    assert read['label'] == example['label']
    np.testing.assert_array_equal(tf.io.decode_image(read['image']).numpy(), example['image'])


def test_the_synthetic_source_needs_no_data_and_its_labels_can_be_learnt():
  """data.name='synthetic' (configs/smoke.py): JPEGs of the asked size, the same bytes for the
  same index, label i % 2 told apart by brightness alone."""
  source = sources.from_config({'name': 'synthetic', 'split': 'train', 'image_size': 40})
  assert source.num_examples == sources.SYNTHETIC_EXAMPLES and source.num_classes == 2
  examples = [source.lookup(tf.constant(i, tf.int64)) for i in range(6)]
  images = [tf.io.decode_jpeg(e['image']).numpy() for e in examples]
  assert all(image.shape == (40, 40, 3) for image in images)
  assert [int(e['label']) for e in examples] == [0, 1, 0, 1, 0, 1]
  means = [image.mean() for image in images]
  assert max(means[0::2]) + 60 < min(means[1::2]), means  # dark ~64, bright ~160
  assert examples[2]['image'].numpy() == source.lookup(tf.constant(2, tf.int64))['image'].numpy()
  assert examples[2]['image'].numpy() != examples[4]['image'].numpy()
  with pytest.raises(ValueError, match='data.name="synthetic" has no per-pixel targets'):
    sources.from_config({'name': 'synthetic', 'split': 'train', 'target': 'segmentation'})


@pytest.mark.parametrize('arg', ['digits', 'i1k_s16', 'finetune:cifar10', 'mae_pretrain:B'])
def test_the_smoke_config_swaps_in_generated_data_for_any_recipe(arg):
  spec = importlib.util.spec_from_file_location(
      'smoke', os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            'configs', 'smoke.py'))
  smoke = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(smoke)
  config = smoke.get_config(arg)
  assert config.data.name == 'synthetic' and not config.evals and config.init_from is None
  assert config.data.image_size == round(1.15 * config.image_size)
  assert config.total_steps == smoke.STEPS and config.get('total_epochs', 0) == 0
  with pytest.raises(ValueError, match='needs a recipe of configs/'):
    smoke.get_config('nonsense')
