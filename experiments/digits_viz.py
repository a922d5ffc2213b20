r"""The figures of `python -m vit_jax.viz` for the digits model of the main job.

Writes four test digits as PNGs, then runs the viz report on the trained workdir:

  python -m vit_jax.main --config=configs/digits.py --workdir=workdirs/digits   # first
  python experiments/digits_viz.py [--workdir=workdirs/digits] [--out=experiments/results/viz]
"""

import argparse
import os
import tempfile

import numpy as np
from PIL import Image

from vit_jax.data import images
from vit_jax.data import sources
from vit_jax.viz import report


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--workdir', default='workdirs/digits')
  parser.add_argument('--out', default=os.path.join(os.path.dirname(__file__), 'results', 'viz'))
  parser.add_argument('--count', type=int, default=4)
  args = parser.parse_args()
  test = sources.digits_source('test', image_size=64)
  with tempfile.TemporaryDirectory() as folder:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    for index in range(args.count):
      example = test.lookup(tf.constant(index, tf.int64))
      pixels = tf.io.decode_image(example['image']).numpy()
      Image.fromarray(pixels.astype(np.uint8)).save(
          os.path.join(folder, f'digit{index}_label{int(example["label"])}.png'))
    written = report.run(args.workdir, images.image_paths(folder, args.count), args.out)
  for path in [*written.rollouts, written.distance_png, written.posemb_png, written.filters_png]:
    print(path)


if __name__ == '__main__':
  main()
