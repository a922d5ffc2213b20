r"""The real input path, end to end: tfds ArrayRecord -> read -> decode -> crop -> batch -> global array.

Builds a tfds dataset of ImageNet-sized JPEGs (generated, 224..512 px, prepared in the ArrayRecord
format exactly as `tfds build --file_format=array_record` writes it), then times each stage of
the training input on 1 and on all tf.data threads, against the same JPEGs read as files by the
image-folder source (no Python in the read) measured in the same run:

  read      the source's read alone (tfds: a `tf.numpy_function` into ArrayRecord, per example
            before, per batch of records now)
  decode    + fused JPEG decode and Inception crop to 224
  batch     + flip, value range, one-hot, batching (pipeline.train_dataset)
  global    + the batch as a global jax.Array on the devices (pipeline.TrainIterator)

and the i1k recipe's whole path with RandAugment on the host (TF) and on the devices (the host
ships uint8 images; the device side is measured in device_augment.py).

  python experiments/input_path.py [--num_images=3000] [--out=experiments/results]
"""

import argparse
import dataclasses
import json
import os
import platform
import tempfile
import time

import jax
import numpy as np
from PIL import Image
import tensorflow as tf
import tensorflow_datasets as tfds

from vit_jax.data import pipeline
from vit_jax.data import preprocess
from vit_jax.data import sources
from vit_jax.parallel import mesh as mesh_lib

TRAIN = ('decode_jpeg_and_inception_crop(224)|flip_lr|value_range(-1, 1)|onehot(10)|'
         'keep("image", "labels")')
# The i1k recipe (configs/i1k_s16.py) with RandAugment on the host (the TF path) and with it on
# the devices: the host then ships uint8 images and each example's position.
I1K_HOST = ('decode_jpeg_and_inception_crop(224)|flip_lr|randaug(2, 10)|value_range(-1, 1)|'
            'onehot(10)|keep("image", "labels")')
I1K_DEVICE = 'decode_jpeg_and_inception_crop(224)|flip_lr|onehot(10)|keep("image", "labels")'
TARGET = 3500  # images/s for a ViT-B/16 on an H200 (the performance issue's figure)


class Jpegs(tfds.core.GeneratorBasedBuilder):
  """Generated ImageNet-sized JPEGs with 10 labels, stored as JPEG bytes as tfds stores ImageNet."""

  VERSION = tfds.core.Version('1.0.0')
  FOLDER = None  # set before building: the folder of generated files

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'image': tfds.features.Image(encoding_format='jpeg'),
        'label': tfds.features.ClassLabel(num_classes=10)}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples()}

  def _generate_examples(self):
    for i in range(len(os.listdir(os.path.join(self.FOLDER, 'train', 'c0'))) * 2):
      path = os.path.join(self.FOLDER, 'train', f'c{i % 2}', f'{i:05d}.jpg')
      if os.path.exists(path):
        yield i, {'image': path, 'label': i % 10}


def write_jpegs(root: str, num_images: int, seed: int = 0) -> None:
  """Smooth random content that compresses like photographs, in two class folders."""
  rng = np.random.default_rng(seed)
  for name in ('c0', 'c1'):
    os.makedirs(os.path.join(root, 'train', name))
  for i in range(num_images):
    folder = os.path.join(root, 'train', f'c{i % 2}')
    height, width = rng.integers(224, 513, size=2)
    coarse = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
    Image.fromarray(coarse).resize((width, height), Image.BICUBIC).save(
        os.path.join(folder, f'{i:05d}.jpg'), quality=90)


def _options(threads: int) -> tf.data.Options:
  options = tf.data.Options()
  options.threading.private_threadpool_size = threads
  options.threading.max_intra_op_parallelism = 1
  return options


def _rate(iterator, examples_per_item: int, items: int) -> float:
  next(iterator)  # warm-up: graph building, first reads
  start = time.perf_counter()
  for _ in range(items):
    next(iterator)
  return items * examples_per_item / (time.perf_counter() - start)


def measure(source, threads: int, batch: int, num_batches: int, transform: str = TRAIN,
            with_position: bool = False) -> dict[str, float]:
  pp = preprocess.parse(transform)
  if source.lookup_many is not None:  # one read call per batch of records
    lookup = tf.data.Dataset.range(source.num_examples).repeat().batch(batch).map(
        source.lookup_many, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)
  else:
    lookup = tf.data.Dataset.range(source.num_examples).repeat().map(
        source.lookup, num_parallel_calls=tf.data.AUTOTUNE).batch(batch).prefetch(2)
  decode_op = preprocess.parse('decode_jpeg_and_inception_crop(224)')
  decode = tf.data.Dataset.range(source.num_examples).repeat().map(
      lambda i: decode_op(source.lookup(i), tf.stack([i, i])),
      num_parallel_calls=tf.data.AUTOTUNE).batch(batch).prefetch(2)
  full = pipeline.train_dataset(source, pp, global_batch=batch, seed=0,
                                with_position=with_position)
  rates = {
      'read': _rate(iter(lookup.with_options(_options(threads))), batch, num_batches),
      'decode': _rate(iter(decode.with_options(_options(threads))), batch, num_batches),
      'batch': _rate(iter(full.with_options(_options(threads))), batch, num_batches),
  }
  mesh = mesh_lib.make_mesh((-1, 1, 1))
  batches = pipeline.TrainIterator(
      lambda position: pipeline.train_dataset(
          source, pp, global_batch=batch, seed=0, position=position,
          with_position=with_position).with_options(
              _options(threads)), global_batch=batch, sharding=mesh_lib.batch_sharding(mesh))
  try:
    rates['global'] = _rate(iter(batches), batch, num_batches)
  finally:
    batches.close()
  return rates


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--num_images', type=int, default=3000)
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--batches', type=int, default=20)
  parser.add_argument('--out', default=os.path.join(os.path.dirname(__file__), 'results'))
  args = parser.parse_args()
  cores = os.cpu_count()
  with tempfile.TemporaryDirectory() as root, tempfile.TemporaryDirectory() as data_dir:
    write_jpegs(root, args.num_images)
    Jpegs.FOLDER = root
    builder = Jpegs(data_dir=data_dir)
    builder.download_and_prepare(file_format='array_record')
    tfds_source = sources._builder_source(builder, 'train', 'image', 'label')  # pylint: disable=protected-access
    folder_source = sources.folder_source(root, 'train[:100%]')
    rows = []
    per_example = dataclasses.replace(tfds_source, lookup_many=None)  # the read before batching
    for name, source, transform, with_position in (
        ('tfds ArrayRecord, a read per example (before)', per_example, TRAIN, False),
        ('tfds ArrayRecord, a read per batch (now)', tfds_source, TRAIN, False),
        ('image folder (no Python in the read)', folder_source, TRAIN, False),
        ('i1k recipe, RandAugment on the host (TF)', tfds_source, I1K_HOST, False),
        ('i1k recipe, RandAugment on the devices (uint8 out)', tfds_source, I1K_DEVICE, True)):
      for threads in sorted({1, cores}):
        rates = measure(source, threads, args.batch, args.batches, transform, with_position)
        rows.append({'source': name, 'transform': transform, 'threads': threads,
                     **{k: round(v, 1) for k, v in rates.items()},
                     'per_core': round(rates['global'] / threads, 1)})
        print(rows[-1], flush=True)
  result = {'machine': f'{platform.processor() or platform.machine()}, {cores} cores',
            'tensorflow': tf.__version__, 'jax': jax.__version__, 'images': args.num_images,
            'image_sizes': '224..512 px JPEG q90', 'transform': TRAIN, 'rows': rows}
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, 'input_path.json'), 'w', encoding='utf-8') as f:
    json.dump(result, f, indent=2)
  lines = [f'# The input path end to end ({result["machine"]}, TF {tf.__version__})', '',
           f'`python experiments/input_path.py --num_images={args.num_images}`; images/s after '
           'each stage (each stage includes the ones before it); the train transform is '
           f'`{TRAIN}`; the i1k rows run configs/i1k_s16.py\'s: `{I1K_HOST}` on the host, or '
           f'`{I1K_DEVICE}` on the host with `randaug(2, 10)|value_range(-1, 1)` on the devices '
           '(their cost there: device_augment_cpu.md). The "+ decode & crop" column reads per example in every row (it times the '
           'decode); "+ batch" and "+ global array" are the trainer\'s own pipeline.', '',
           '| source | tf.data threads | read | + decode & crop | + batch | + global array | '
           f'img/s per core | cores for {TARGET} img/s |', '|---|---|---|---|---|---|---|---|']
  lines += [f'| {r["source"]} | {r["threads"]} | {r["read"]} | {r["decode"]} | {r["batch"]} | '
            f'{r["global"]} | {r["per_core"]} | {int(np.ceil(TARGET / r["per_core"]))} |'
            for r in rows]
  with open(os.path.join(args.out, 'input_path.md'), 'w', encoding='utf-8') as f:
    f.write('\n'.join(lines) + '\n')
  print('\n'.join(lines))


if __name__ == '__main__':
  main()
