"""Batches: exact padded eval on an 8-device mesh, exact resume, per-process disjointness."""

import collections

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np
import pytest
import tensorflow as tf

from vit_jax.data import pipeline
from vit_jax.data import preprocess
from vit_jax.data import sources
from vit_jax.parallel import mesh as mesh_lib


def _index_source(n):
  """Example i has label i and an image filled with i % 251: we can tell which one we got."""
  def lookup(index):
    return {'image': tf.fill([6, 6, 3], tf.cast(index % 251, tf.uint8)),
            'label': tf.cast(index, tf.int32)}
  return sources.Source('synthetic', n, [str(i) for i in range(n)], lookup)


def _batch_sharding():
  mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ('data', 'fsdp'))
  return NamedSharding(mesh, P(('data', 'fsdp')))


def test_eval_covers_odd_splits_exactly_on_8_devices(digits_data_dir):
  assert jax.device_count() == 8
  sharding = _batch_sharding()
  source = sources.digits_source('test[:101]', data_dir=digits_data_dir)
  pp = preprocess.parse('decode|resize(32)|value_range(-1, 1)')
  dataset, num_batches = pipeline.eval_dataset(source, pp, local_batch=16)
  assert num_batches == 7  # ceil(101 / 16)
  labels, masks = [], []
  for batch in pipeline.eval_batches(dataset, sharding):
    assert batch['image'].shape == (16, 32, 32, 3) and batch['image'].sharding == sharding
    labels.append(np.asarray(batch['label']))
    masks.append(np.asarray(batch['mask']))
  labels, masks = np.concatenate(labels), np.concatenate(masks)
  assert masks.sum() == 101 and np.all(masks[:101] == 1) and np.all(masks[101:] == 0)
  raw = sources.digits_source('test', data_dir=digits_data_dir)
  expected = [int(raw.lookup(tf.constant(i, tf.int64))['label']) for i in range(101)]
  assert collections.Counter(labels[masks == 1].tolist()) == collections.Counter(expected)
  # A masked metric is exact: accuracy of "always predict 3" equals the true frequency.
  assert int(np.sum((labels == 3) * masks)) == expected.count(3)


@pytest.mark.parametrize('num_examples,process_count,local_batch', [(45, 3, 4), (7, 4, 2),
                                                                   (100, 2, 16)])
def test_eval_processes_see_every_example_once_in_equal_batch_counts(num_examples,
                                                                     process_count, local_batch):
  source = _index_source(num_examples)
  pp = preprocess.parse('value_range(0, 1)')
  seen, counts = [], set()
  for process in range(process_count):
    dataset, num_batches = pipeline.eval_dataset(source, pp, local_batch=local_batch,
                                                 process_index=process,
                                                 process_count=process_count)
    batches = list(dataset.as_numpy_iterator())
    assert len(batches) == num_batches
    counts.add(num_batches)
    for batch in batches:
      seen.extend(batch['label'][batch['mask'] == 1].tolist())
  assert len(counts) == 1
  assert sorted(seen) == list(range(num_examples))


def _train_iterator(source, spec, *, seed=0, position=0, process_index=0, process_count=1,
                    global_batch=8, sharding=None):
  pp = preprocess.parse(spec)
  make = lambda pos: pipeline.train_dataset(  # pylint: disable=g-long-lambda
      source, pp, global_batch=global_batch, seed=seed, position=pos,
      process_index=process_index, process_count=process_count)
  return pipeline.TrainIterator(make, global_batch=global_batch, sharding=sharding,
                                position=position)


def test_restored_iterator_gives_bit_identical_batches(digits_data_dir):
  source = sources.digits_source('train[:50]', data_dir=digits_data_dir)  # epochs of 50
  spec = 'decode|inception_crop(32)|flip_lr|randaug(2, 10)|value_range(-1, 1)|onehot(10)'
  sharding = _batch_sharding()
  reference = _train_iterator(source, spec, seed=7, sharding=sharding)
  batches = [jax.tree.map(np.asarray, next(reference)) for _ in range(16)]  # 2.5 epochs
  resumed = _train_iterator(source, spec, seed=7, sharding=sharding)
  for _ in range(5):
    next(resumed)
  state = resumed.get_state()
  assert state == {'global_position': 40}
  restored = _train_iterator(source, spec, seed=7, sharding=sharding,
                             position=pipeline.position_of(state))
  for expected in batches[5:]:
    actual = jax.tree.map(np.asarray, next(restored))
    for key in expected:
      np.testing.assert_array_equal(actual[key], expected[key])
  assert restored.get_state() == {'global_position': 128}
  for iterator in (reference, resumed, restored):
    iterator.close()


def test_order_is_a_function_of_seed_epoch_and_position():
  source = _index_source(20)
  first_epochs = []
  for seed in (0, 0, 1):
    iterator = _train_iterator(source, 'keep("label")', seed=seed, global_batch=5)
    labels = np.concatenate([next(iterator)['label'] for _ in range(8)])  # 2 epochs
    iterator.close()
    assert sorted(labels[:20]) == sorted(labels[20:]) == list(range(20))  # each epoch: all once
    assert not np.array_equal(labels[:20], labels[20:])  # reshuffled per epoch
    first_epochs.append(labels)
  np.testing.assert_array_equal(first_epochs[0], first_epochs[1])
  assert not np.array_equal(first_epochs[0], first_epochs[2])
  late = _train_iterator(source, 'keep("label")', seed=0, position=25, global_batch=5)
  np.testing.assert_array_equal(next(late)['label'], first_epochs[0][25:30])
  late.close()


@pytest.mark.parametrize('process_count', [2, 4])
def test_processes_read_their_slice_of_the_same_global_batches(digits_data_dir, process_count):
  """Order and augmentation depend on (seed, global position) only, not on the host count."""
  source = sources.digits_source('train[:20]', data_dir=digits_data_dir)  # epochs of 20
  spec = 'decode|inception_crop(16)|flip_lr|value_range(-1, 1)|onehot(10)'
  single = _train_iterator(source, spec, seed=3, global_batch=8)
  expected = [next(single) for _ in range(6)]  # 2.4 epochs
  single.close()
  per_process = []
  for process in range(process_count):
    iterator = _train_iterator(source, spec, seed=3, global_batch=8, process_index=process,
                               process_count=process_count, position=16)
    per_process.append([next(iterator) for _ in range(4)])
    iterator.close()
  for b in range(4):
    for key in ('image', 'label'):
      joined = np.concatenate([per_process[p][b][key] for p in range(process_count)])
      np.testing.assert_array_equal(joined, expected[b + 2][key])


def test_startup_checks():
  assert mesh_lib.local_batch_size(256, 2, 8) == 128
  with pytest.raises(ValueError, match='batch_size=100 must be a positive multiple of the device '
                     r'count \(8\)'):
    mesh_lib.local_batch_size(100, 1, 8)
  with pytest.raises(ValueError, match='process count'):
    mesh_lib.local_batch_size(24, 16, 8)
  with pytest.raises(ValueError, match='Data position 12 is not a whole number of global '
                     'batches of 8'):
    pipeline.train_dataset(_index_source(20), preprocess.parse('keep("label")'), global_batch=8,
                           position=12, seed=0)
  with pytest.raises(ValueError, match='process count'):
    pipeline.train_dataset(_index_source(20), preprocess.parse('keep("label")'), global_batch=6,
                           seed=0, process_index=0, process_count=4)
  with pytest.raises(ValueError, match='fixed shapes'):
    ragged = sources.Source('ragged', 3, ['a'], lambda i: {  # pylint: disable=g-long-lambda
        'image': tf.zeros(tf.stack([i + 1, 2, 3]), tf.uint8), 'label': tf.cast(i, tf.int32)})
    pipeline.eval_dataset(ragged, preprocess.parse('value_range()'), local_batch=2)
  with pytest.raises(ValueError, match='Not a data-iterator state'):
    pipeline.position_of({'step': 3})


def test_errors_in_the_pipeline_reach_the_consumer():
  def lookup(index):
    bad = tf.io.decode_png(tf.constant(b'garbage'))
    return {'image': bad, 'label': tf.cast(index, tf.int32) + tf.cast(tf.size(bad), tf.int32)}
  iterator = _train_iterator(sources.Source('broken', 4, ['a'], lookup), 'keep("label")',
                             global_batch=2)
  with pytest.raises(tf.errors.InvalidArgumentError):
    next(iterator)
