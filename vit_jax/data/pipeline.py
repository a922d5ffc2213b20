"""Sources -> per-process tf.data batches -> global `jax.Array`s on the mesh.

Training order is a pure function of (seed, global position), independent of the host count:
one stateless permutation of the whole split per epoch makes a global stream of examples; global
batch b is stream positions [b * B, (b + 1) * B) and process p reads the p-th slice of it;
augmentation randomness is seeded by (run seed, global stream position). The iterator's state is
the global position (examples of the stream handed out so far), so a checkpoint resumes the same
batches on 1, 2 or N processes.

Evaluation covers the whole split: every process pads its block to the same number of batches
and a `mask` marks real examples, so metrics are exact for any split size and device count.
"""

import math
import queue
import threading
from typing import Any, Callable, Iterator, Optional

import jax
import numpy as np
import tensorflow as tf

from vit_jax import errors
from vit_jax.data import sources as sources_lib
from vit_jax.parallel import mesh as mesh_lib

Batch = dict[str, Any]
Preprocess = Callable[[dict[str, tf.Tensor], tf.Tensor], dict[str, tf.Tensor]]


def process_range(num_examples: int, process_index: int, process_count: int) -> tuple[int, int]:
  """[start, stop) of this process's block: sizes differ by at most one (as tfds.even_splits)."""
  return (num_examples * process_index // process_count,
          num_examples * (process_index + 1) // process_count)


def _example_seed(seed: int, position):
  """Augmentation seed of the example at global stream `position`: the same on any host count."""
  return tf.stack([tf.constant(seed, tf.int64), tf.cast(position, tf.int64)])


def train_dataset(source: sources_lib.Source, preprocess: Preprocess, *, global_batch: int,
                  seed: int, position: int = 0, process_index: int = 0,
                  process_count: int = 1, with_position: bool = False,
                  repeats: int = 1, pack: Optional[Callable[[Batch], Batch]] = None
                  ) -> tf.data.Dataset:
  """Infinite batches of this process's slice of each global batch, from global `position`.

  `repeats` > 1 is repeated augmentation (DeiT's RASampler): each epoch's order holds every
  example `repeats` times in a row and is cut to the split's length (an epoch sees 1/repeats of
  the split, each image `repeats` times, each copy at its own position: its own augmentation).

  `pack` (NaFlex packing, `naflex.pack_batch`) turns each local batch of examples into the
  step's sequences on the host, a pure function of the batch: positions and resume are the
  same as without it.

  `with_position` adds each example's global stream position (uint32, modulo 2**32) as
  `position`: the device preprocessing (device_pp.py) seeds its randomness with it.

  The global stream is one permutation of the whole split per epoch (seeded by (seed, epoch));
  global batch b is stream positions [b * global_batch, (b + 1) * global_batch), of which process
  p takes the p-th contiguous slice. Indices are cheap to skip: only this process's examples are
  read and decoded.
  """
  local_batch = mesh_lib.local_batch_size(global_batch, process_count, 1)
  if position % global_batch:
    raise errors.UserError(f'Data position {position} is not a whole number of global batches of '
                           f'{global_batch}.')
  size = source.num_examples
  if size == 0:
    raise errors.UserError(f'{source.name} has no examples.')
  first_epoch, offset = divmod(position, size)

  def epoch_order(epoch):
    epoch_seed = tf.stack([tf.constant(seed, tf.int64), epoch])
    order = tf.random.experimental.stateless_shuffle(tf.range(size, dtype=tf.int64), epoch_seed)
    if repeats > 1:
      order = tf.repeat(order, repeats)[:size]
    return tf.data.Dataset.from_tensor_slices(order)

  indices = tf.data.Dataset.range(first_epoch, 2**62).flat_map(epoch_order).skip(offset)
  positions = tf.data.Dataset.range(position, 2**62)
  mine = tf.data.Dataset.zip(positions, indices).batch(local_batch, drop_remainder=True)
  mine = mine.shard(process_count, process_index).unbatch()

  def transform(position, example):
    example = preprocess(example, _example_seed(seed, position))
    if with_position:
      example = {**example, 'position': tf.cast(position % 2**32, tf.uint32)}
    return example

  if source.lookup_many is not None:  # read a batch of records per call, then one by one
    mine = mine.batch(local_batch).map(
        as_written(lambda positions, indices: (positions, source.lookup_many(indices))),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).unbatch()
    load = transform
  else:
    load = lambda position, index: transform(position, source.lookup(index))  # pylint: disable=unnecessary-lambda-assignment

  dataset = mine.map(as_written(load), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  dataset = dataset.batch(local_batch, drop_remainder=True)
  if pack is not None:
    dataset = dataset.map(as_written(_numpy_map(pack, dataset.element_spec)),
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return dataset.prefetch(tf.data.AUTOTUNE)


def as_written(fn: Callable) -> Callable:
  """`fn` traced as written, not rewritten by AutoGraph first. Preprocessing branches with
  `tf.cond` and needs no rewrite; AutoGraph's rewrite of every op's source was about 1 s of
  each run's start (a tiny run: 8.8 s -> 7.7 s)."""
  return tf.autograph.experimental.do_not_convert(fn)


def _numpy_map(fn: Callable[[Batch], Batch], spec: dict) -> Callable:
  """A numpy function of a batch dict as a tf.data map (output shapes from a dry run)."""
  keys = sorted(spec)
  dry = fn({k: np.zeros(spec[k].shape, spec[k].dtype.as_numpy_dtype) for k in keys})
  out_keys = sorted(dry)

  def run(*values):
    result = fn(dict(zip(keys, values)))
    return [np.asarray(result[k], dry[k].dtype) for k in out_keys]

  def mapped(batch):
    values = tf.numpy_function(run, [batch[k] for k in keys],
                               [tf.as_dtype(dry[k].dtype) for k in out_keys])
    return {k: tf.ensure_shape(v, dry[k].shape) for k, v in zip(out_keys, values)}
  return mapped


def eval_dataset(source: sources_lib.Source, preprocess: Preprocess, *, local_batch: int,
                 process_index: int = 0, process_count: int = 1) -> tuple[tf.data.Dataset, int]:
  """(batches with a float `mask`, number of batches): the whole block, padded, no drops.

  Every process yields the same number of batches (collectives need it); padding examples
  are zeros with mask 0.
  """
  if source.num_examples == 0:
    raise errors.UserError(f'{source.name} is empty.')
  start, stop = process_range(source.num_examples, process_index, process_count)
  largest_block = math.ceil(source.num_examples / process_count)
  num_batches = math.ceil(largest_block / local_batch)

  def load(index):
    example = preprocess(source.lookup(index), _example_seed(0, index))
    return {**example, 'mask': tf.constant(1.0)}

  dataset = tf.data.Dataset.range(start, stop).map(as_written(load),
                                                   num_parallel_calls=tf.data.AUTOTUNE)
  spec = dataset.element_spec
  unknown = {k: s.shape for k, s in spec.items() if not s.shape.is_fully_defined()}
  if unknown:
    raise errors.UserError(f'Eval preprocessing must give fixed shapes to pad the last batch; got '
                           f'{unknown} (end it with resize/central_crop).')
  padding = tf.data.Dataset.from_tensors(
      {k: tf.zeros(s.shape, s.dtype) for k, s in spec.items()}).repeat(
          num_batches * local_batch - (stop - start))
  dataset = dataset.concatenate(padding).batch(local_batch, drop_remainder=True)
  return dataset.prefetch(tf.data.AUTOTUNE), num_batches


def to_global(batch: Batch, sharding: Optional[jax.sharding.Sharding]) -> Batch:
  """Process-local numpy batch -> global arrays sharded on the batch axis (or numpy if None)."""
  if sharding is None:
    return batch
  out = {}
  for key, value in batch.items():
    value = np.asarray(value)
    if value.dtype.kind in 'OSU':
      raise errors.UserError(
          f'Batch entry {key!r} holds {value.dtype} values, which cannot go to a '
          'device; decode or drop it in preprocessing.')
    out[key] = jax.make_array_from_process_local_data(sharding, value)
  return out


def eval_batches(dataset: tf.data.Dataset, sharding=None) -> Iterator[Batch]:
  """Global (or numpy) batches of an eval dataset."""
  for batch in dataset.as_numpy_iterator():
    yield to_global(batch, sharding)


class TrainIterator:
  """Training batches with a restorable position; converts and prefetches on a thread.

  `get_state()` is `{'global_position': examples of the global stream handed out so far}`: what
  the caller has received, not what the pipeline has read ahead. The same on every process.
  """

  def __init__(self, make_dataset: Callable[[int], tf.data.Dataset], *, global_batch: int,
               sharding: Optional[jax.sharding.Sharding] = None, prefetch: int = 2,
               position: int = 0):
    self._make_dataset = make_dataset
    self._global_batch = global_batch
    self._sharding = sharding
    self._prefetch = prefetch
    self._thread = None
    self._start(position)

  def _start(self, position: int):
    self.close()
    self._position = position
    self._queue = queue.Queue(maxsize=max(self._prefetch, 1))
    self._stop = threading.Event()
    numpy_batches = self._make_dataset(position).as_numpy_iterator()

    def produce(q, stop):
      try:
        for batch in numpy_batches:
          item = to_global(batch, self._sharding)
          while not stop.is_set():
            try:
              q.put(item, timeout=0.1)
              break
            except queue.Full:
              continue
          if stop.is_set():
            return
        q.put(StopIteration())
      except Exception as e:  # pylint: disable=broad-except
        q.put(e)  # surfaced to the consumer on its next call

    self._thread = threading.Thread(target=produce, args=(self._queue, self._stop), daemon=True)
    self._thread.start()

  def __iter__(self):
    return self

  def __next__(self) -> Batch:
    item = self._queue.get()
    if isinstance(item, StopIteration):
      raise item
    if isinstance(item, Exception):
      raise item
    self._position += self._global_batch
    return item

  def get_state(self) -> dict[str, int]:
    return {'global_position': self._position}

  def close(self):
    if self._thread is not None:
      self._stop.set()
      self._thread.join(timeout=5)
      self._thread = None


def position_of(data_state: dict) -> int:
  """The global stream position of a saved data state (`{'global_position': int}`, beside
  which the loop may keep its `unlogged` training rows)."""
  if ('global_position' in data_state and set(data_state) <= {'global_position', 'unlogged'}
      and int(data_state['global_position']) >= 0):
    return int(data_state['global_position'])
  raise errors.UserError(f'Not a data-iterator state: {data_state!r}; expected '
                         '{"global_position": int >= 0}.')
