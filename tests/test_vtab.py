"""VTAB-1k: splits, the structured tasks' label mappings (on synthetic tfds datasets that carry
the real dataset names and features), the table, and missing datasets named with their command."""

import importlib.util
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from vit_jax.data import sources
from vit_jax.data import splits
from vit_jax.data import vtab

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SPEC = importlib.util.spec_from_file_location('vtab_experiment',
                                               os.path.join(ROOT, 'experiments', 'vtab.py'))
vtab_experiment = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(vtab_experiment)


def test_nineteen_tasks_in_three_groups():
  groups = [t.group for t in vtab.TASKS.values()]
  assert len(vtab.TASKS) == 19
  assert (groups.count('natural'), groups.count('specialized'), groups.count('structured')) == (
      7, 4, 8)


@pytest.mark.parametrize('task,split,sizes,expected', [
    ('cifar100', 'train800val200', {'train': 50000, 'test': 10000},
     ['train[0:800]', 'train[45000:45200]']),
    ('eurosat', 'val200', {'train': 27000}, ['train[16200:16400]']),
    ('eurosat', 'test', {'train': 27000}, ['train[21600:27000]']),
    ('clevr_count', 'test', {'train': 70000, 'validation': 15000, 'test': 15000},
     ['validation[0:15000]']),
    ('smallnorb_azimuth', 'val200', {'train': 24300, 'test': 24300}, ['test[0:200]']),
    ('dsprites_location', 'train800', {'train': 737280}, ['train[0:800]']),
    ('dtd', 'train800val200', {'train': 1880, 'validation': 1880, 'test': 1880},
     ['train[0:800]', 'validation[0:200]']),
])
def test_vtab_1k_splits(task, split, sizes, expected):
  assert vtab.split_slices(vtab.task(task), split, sizes) == expected


def _store(data_dir, name, features, splits):
  """A synthetic tfds dataset named like the real one, with the features VTAB reads; every
  example also carries the label VTAB's mapping must give it (`expected`)."""
  features = tfds.features.FeaturesDict({**features, 'expected': tfds.features.Scalar(np.int64)})
  tfds.dataset_builders.store_as_tfds_dataset(
      name=name, version='1.0.0', data_dir=data_dir, features=features,
      split_datasets={s: list(enumerate(examples)) for s, examples in splits.items()},
      file_format='array_record')
  return tfds.builder_from_directory(os.path.join(data_dir, name, '1.0.0'))


def _check_labels(task, builder, split, count):
  source = sources.vtab_source(task, split, builder=builder)
  assert source.num_examples == count and source.num_classes == vtab.task(task).num_classes
  data = {s: builder.as_data_source(s) for s in builder.info.splits}
  # The concatenated source reads the train part, then the val part, in the stored order.
  slices = vtab.split_slices(vtab.task(task), split,
                             {s: i.num_examples for s, i in builder.info.splits.items()})
  expected = []
  for part in slices:
    name, start, stop = splits.slice_split(part, {s: len(d) for s, d in data.items()})
    expected += [int(data[name][i]['expected']) for i in range(start, stop)]
  got = [int(source.lookup(i)['label']) for i in range(source.num_examples)]
  assert got == expected
  return source


def test_clevr_count_and_distance(tmp_path):
  rng = np.random.default_rng(0)

  def example(count, closest):
    depths = np.concatenate([[closest], rng.uniform(closest + 0.01, 12, count - 1)])
    return {'image': rng.integers(0, 255, (8, 8, 3), dtype=np.uint8),
            'objects': {'size': rng.integers(0, 2, count),
                        'pixel_coords': np.stack([rng.uniform(0, 400, count),
                                                  rng.uniform(0, 300, count), depths], 1).astype(np.float32)}}

  # (objects, closest depth) -> distance class: < 8, 8-8.5, 8.5-9, 9-9.5, 9.5-10, > 10.
  cases = [(3, 7.0, 0), (4, 8.2, 1), (5, 8.7, 2), (6, 9.2, 3), (7, 9.7, 4), (10, 11.0, 5),
           (8, 7.9, 0), (9, 10.5, 5), (3, 9.4, 3), (4, 8.6, 2)]
  features = {'image': tfds.features.Image(shape=(8, 8, 3)),
              'objects': tfds.features.Sequence({
                  'size': tfds.features.ClassLabel(names=['small', 'large']),
                  'pixel_coords': tfds.features.Tensor(shape=(3,), dtype=np.float32)})}
  for task, pick in (('clevr_count', lambda c: c[0] - 3), ('clevr_distance', lambda c: c[2])):
    splits = {'train': [{**example(c[0], c[1]), 'expected': pick(c)} for c in cases],
              'validation': [{**example(c[0], c[1]), 'expected': pick(c)} for c in cases[:4]]}
    builder = _store(str(tmp_path / task), 'clevr', features, splits)
    _check_labels(task, builder, 'train800val200', 10)  # train[:90%] (9) + train[90%:] (1)
    _check_labels(task, builder, 'test', 4)  # clevr's test part is its validation split


def test_kitti_closest_vehicle_distance(tmp_path):
  rng = np.random.default_rng(1)
  # objects: (type, depth); Car, Van, Truck are 0-2. No vehicle at all is class 3.
  cases = [([(0, 5.0), (3, 2.0)], 0), ([(1, 12.0), (2, 30.0)], 1), ([(2, 25.0)], 2),
           ([(3, 4.0), (5, 6.0)], 3), ([(0, 19.9), (0, 40.0), (4, 1.0)], 1)]

  def example(objects, label):
    types = np.array([t for t, _ in objects], np.int64)
    location = np.stack([rng.uniform(-5, 5, len(objects)), rng.uniform(0, 2, len(objects)),
                         [d for _, d in objects]], 1).astype(np.float32)
    return {'image': rng.integers(0, 255, (8, 8, 3), dtype=np.uint8),
            'objects': {'type': types, 'location': location}, 'expected': label}

  features = {'image': tfds.features.Image(shape=(8, 8, 3)),
              'objects': tfds.features.Sequence({
                  'type': tfds.features.ClassLabel(names=['Car', 'Van', 'Truck', 'Pedestrian',
                                                          'Person_sitting', 'Cyclist', 'Tram',
                                                          'Misc']),
                  'location': tfds.features.Tensor(shape=(3,), dtype=np.float32)})}
  builder = _store(str(tmp_path), 'kitti', features, {
      'train': [example(*c) for c in cases], 'validation': [example(*c) for c in cases[:2]],
      'test': [example(*c) for c in cases[2:]]})
  _check_labels('kitti_distance', builder, 'train800val200', 7)
  _check_labels('kitti_distance', builder, 'test', 3)


def test_dsprites_bins_and_binary_pixels(tmp_path):
  rng = np.random.default_rng(2)
  positions, orientations = np.arange(32), np.arange(40) % 40
  features = {'image': tfds.features.Image(shape=(8, 8, 1)),
              'label_x_position': tfds.features.Scalar(np.int64),
              'label_orientation': tfds.features.Scalar(np.int64)}
  for task, key, bins in (('dsprites_location', 'label_x_position', lambda v: v // 2),
                          ('dsprites_orientation', 'label_orientation',
                           lambda v: int(np.floor(v / 2.5)))):
    examples = [{'image': rng.integers(0, 2, (8, 8, 1), dtype=np.uint8),
                 'label_x_position': int(positions[i % 32]),
                 'label_orientation': int(orientations[i % 40])} for i in range(40)]
    for e in examples:
      e['expected'] = bins(e[key])
    builder = _store(str(tmp_path / task), 'dsprites', features, {'train': examples})
    source = _check_labels(task, builder, 'train800', 32)  # train[:80%] of 40
    pixels = np.asarray(source.lookup(0)['image'])
    assert set(np.unique(pixels)) <= {0, 255} and pixels.max() == 255


def test_smallnorb_reads_its_angle_features(tmp_path):
  rng = np.random.default_rng(3)
  features = {'image': tfds.features.Image(shape=(8, 8, 1)),
              'label_azimuth': tfds.features.ClassLabel(num_classes=18),
              'label_elevation': tfds.features.ClassLabel(num_classes=9)}
  examples = [{'image': rng.integers(0, 255, (8, 8, 1), dtype=np.uint8),
               'label_azimuth': i % 18, 'label_elevation': i % 9, 'expected': i % 18}
              for i in range(20)]
  builder = _store(str(tmp_path), 'smallnorb', features, {'train': examples, 'test': examples})
  _check_labels('smallnorb_azimuth', builder, 'val200', 10)  # test[:50%]


def test_table_groups_and_missing_datasets(tmp_path):
  missing = vtab_experiment.missing_datasets(['cifar100', 'clevr_count'], str(tmp_path))
  assert missing == {
      'cifar100': f'tfds build cifar100 --file_format=array_record --data_dir={tmp_path}',
      'clevr_count': f'tfds build clevr --file_format=array_record --data_dir={tmp_path}'}
  summary = vtab_experiment.summarize({'dtd': 0.6, 'cifar100': 0.8, 'eurosat': 0.9,
                                       'clevr_count': 0.5, 'dmlab': 0.3}, {'kitti_distance': 'x'})
  assert summary['groups'] == pytest.approx({'natural': 0.7, 'specialized': 0.9,
                                             'structured': 0.4})
  assert summary['mean'] == pytest.approx(0.62) and not summary['complete']
  vtab_experiment.write(summary, str(tmp_path / 'out'))
  text = open(tmp_path / 'out' / 'vtab.md', encoding='utf-8').read()
  assert '| 70.00 | 90.00 | 40.00 | 62.00 |' in text and '- kitti_distance: `x`' in text
  assert 'ViT-H/14 (JFT) 77.63' in text


def test_the_recipe_is_the_papers_setting():
  config = vtab_experiment.recipe('clevr_distance')
  assert (config.num_classes, config.image_size, config.batch_size, config.total_steps) == (
      6, 384, 512, 2500)
  assert (config.optim.name, config.optim.momentum, config.lr.base, config.lr.schedule,
          config.wd, config.grad_clip_norm) == ('sgd', 0.9, 0.01, 'cosine', 0.0, 1.0)
  assert (config.data.name, config.data.split) == ('vtab/clevr_distance', 'train800val200')
  assert (config.evals.test.data.name, config.evals.test.data.split) == (
      'vtab/clevr_distance', 'test')
  with pytest.raises(ValueError, match="Unknown VTAB task 'clevr'"):
    vtab_experiment.recipe('clevr')
