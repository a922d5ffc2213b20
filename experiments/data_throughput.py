r"""Input-pipeline throughput: images/s per CPU core for the ImageNet train and eval transforms.

Generates JPEGs on the fly (sizes 224..512 px, smooth content that compresses like photographs),
reads them through the image-folder source and the real tf.data pipeline, and reports images/s
with tf.data limited to 1 and to all threads, plus the cores needed to feed a ViT-B/16 at
3,500 images/s (the H200 target of the performance issue).

  python experiments/data_throughput.py [--num_images=512] [--out=experiments/results]
"""

import argparse
import json
import os
import platform
import tempfile
import time

import numpy as np
from PIL import Image
import tensorflow as tf

from vit_jax.data import pipeline
from vit_jax.data import preprocess
from vit_jax.data import sources

TRANSFORMS = {
    'train (fused decode+crop)': 'decode_jpeg_and_inception_crop(224)|flip_lr|value_range(-1, 1)',
    'train (decode, then crop)': 'decode|inception_crop(224)|flip_lr|value_range(-1, 1)',
    'train + randaug(2, 15)': ('decode_jpeg_and_inception_crop(224)|flip_lr|randaug(2, 15)|'
                               'value_range(-1, 1)'),
    'eval': 'decode|resize_small(256)|central_crop(224)|value_range(-1, 1)',
}
TARGET_IMAGES_PER_SECOND = 3500


def write_jpegs(root: str, num_images: int, seed: int = 0) -> None:
  rng = np.random.default_rng(seed)
  for name in ('class0', 'class1'):  # a folder source needs two classes
    os.makedirs(os.path.join(root, 'train', name))
  for i in range(num_images):
    folder = os.path.join(root, 'train', f'class{i % 2}')
    height, width = rng.integers(224, 513, size=2)
    coarse = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)
    image.save(os.path.join(folder, f'{i:05d}.jpg'), quality=90)


def measure(source, spec: str, threads: int, batch: int, num_batches: int) -> float:
  dataset = pipeline.train_dataset(source, preprocess.parse(spec), global_batch=batch, seed=0)
  options = tf.data.Options()
  options.threading.private_threadpool_size = threads
  options.threading.max_intra_op_parallelism = 1
  iterator = iter(dataset.with_options(options))
  next(iterator)  # warm-up: graph building, first files
  start = time.perf_counter()
  for _ in range(num_batches):
    next(iterator)
  return num_batches * batch / (time.perf_counter() - start)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--num_images', type=int, default=512)
  parser.add_argument('--batches', type=int, default=24)
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--out', default=os.path.join(os.path.dirname(__file__), 'results'))
  args = parser.parse_args()
  cores = os.cpu_count()
  with tempfile.TemporaryDirectory() as root:
    write_jpegs(root, args.num_images)
    source = sources.folder_source(root, 'train[:100%]')
    rows = []
    for name, spec in TRANSFORMS.items():
      one = measure(source, spec, 1, args.batch, args.batches)
      every = measure(source, spec, cores, args.batch, args.batches)
      rows.append({'transform': name, 'spec': spec, 'images_per_s_1_thread': round(one, 1),
                   f'images_per_s_{cores}_threads': round(every, 1),
                   'scaling': round(every / one, 2),
                   'cores_for_3500_per_s': int(np.ceil(TARGET_IMAGES_PER_SECOND / one))})
      print(rows[-1], flush=True)
  result = {'machine': f'{platform.processor() or platform.machine()}, {cores} cores',
            'tensorflow': tf.__version__, 'images': args.num_images,
            'image_sizes': '224..512 px JPEG q90', 'rows': rows}
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, 'data_throughput.json'), 'w') as f:
    json.dump(result, f, indent=2)
  lines = [f'# Input pipeline throughput ({result["machine"]}, TF {tf.__version__})', '',
           f'| transform | img/s, 1 thread | img/s, {cores} threads | scaling | cores for '
           f'{TARGET_IMAGES_PER_SECOND} img/s |', '|---|---|---|---|---|']
  lines += [f'| {r["transform"]} | {r["images_per_s_1_thread"]} | '
            f'{r[f"images_per_s_{cores}_threads"]} | {r["scaling"]}x | {r["cores_for_3500_per_s"]} |'
            for r in rows]
  with open(os.path.join(args.out, 'data_throughput.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')
  print('\n'.join(lines))


if __name__ == '__main__':
  main()
