"""`digit_canvas`: the embedded dense dataset, digits placed on a canvas with per-pixel labels.

Built offline from the same scikit-learn digits as `digits` (train canvases from its train
split, test canvases from its test split). The canvas is a grid of square cells of half its
height (2x2 cells at 32x32, 2x3 at 32x48); from 2 to all but one of them hold a digit, upscaled
into a black square filling the cell at a random brightness; the rest show the grey background,
which brightens towards the bottom. The class of a square's pixels is its digit's: telling the
squares apart takes reading the digits. Features:

  image         uint8 [h, w, 3]
  segmentation  uint8 [h, w, 1]: 0 background, 1 + d inside the square of digit d, 255 (ignore)
                on each square's outermost pixel ring
  depth         float32 [h, w]: a receding floor behind (10 at the top row to 4 at the bottom),
                each digit's square at 1 / its brightness (in [0.4, 1]: brighter is nearer)

1,000 train and 200 test canvases per configuration (`<h>x<w>`, default 32x32).
"""

import dataclasses

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from vit_jax.data import digits as digits_lib

CLASS_NAMES = ['background'] + [str(d) for d in range(10)]
IGNORE = 255
SPLIT_SIZES = {'train': 1000, 'test': 200}


@dataclasses.dataclass
class CanvasConfig(tfds.core.BuilderConfig):
  height: int = 32
  width: int = 32


def _config(height: int, width: int) -> CanvasConfig:
  return CanvasConfig(name=f'{height}x{width}', height=height, width=width,
                      description=f'Digit canvases of {height}x{width} pixels.')


def floor_depth(height: int, width: int) -> np.ndarray:
  """The background's depth: 10 at the top row to 4 at the bottom one."""
  rows = (np.arange(height, dtype=np.float32) + 0.5) / height
  return np.repeat((10.0 - 6.0 * rows)[:, None], width, axis=1)


def render(grey8: list[np.ndarray], labels: list[int], rng: np.random.Generator, height: int,
           width: int) -> dict[str, np.ndarray]:
  """One canvas of the 8x8 digits `grey8` (grey levels 0..16) with classes `labels`, each in
  its own cell of the canvas's grid of (height / 2)-pixel cells, the other cells empty."""
  rows = np.arange(height, dtype=np.float32)[:, None] / height
  image = np.repeat(np.round(60 + 40 * rows), width, axis=1).astype(np.float32)
  segmentation = np.zeros((height, width), np.uint8)
  depth = floor_depth(height, width)
  side = height // 2
  cells = [(r, c) for r in range(height // side) for c in range(width // side)]
  for index, (grey, label) in zip(rng.permutation(len(cells)), zip(grey8, labels)):
    top, left = cells[index][0] * side, cells[index][1] * side
    near = float(rng.uniform(0.4, 1.0))  # brightness: nearer digits are brighter
    pixels = near * np.asarray(Image.fromarray((grey * (255.0 / 16.0)).astype(np.uint8)).resize(
        (side, side), Image.BILINEAR), np.float32)
    window = (slice(top, top + side), slice(left, left + side))
    image[window] = pixels  # the digit's own black square
    square = np.full((side, side), 1 + label, np.uint8)
    square[[0, -1], :] = IGNORE  # the edge ring: ambiguous
    square[:, [0, -1]] = IGNORE
    segmentation[window] = square
    depth[window] = 1.0 / near
  rgb = np.repeat(np.clip(np.round(image), 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)
  return {'image': rgb, 'segmentation': segmentation[:, :, None], 'depth': depth}


class DigitCanvas(tfds.core.GeneratorBasedBuilder):
  """Digits on a canvas with per-pixel classes and depth."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [_config(32, 32), _config(32, 48)]
  DEFAULT_CONFIG_NAME = '32x32'

  def _info(self) -> tfds.core.DatasetInfo:
    height, width = self.builder_config.height, self.builder_config.width
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(height, width, 3)),
            'segmentation': tfds.features.Image(shape=(height, width, 1)),
            'depth': tfds.features.Tensor(shape=(height, width), dtype=np.float32),
        }),
        supervised_keys=('image', 'segmentation'),
        homepage='https://archive.ics.uci.edu/dataset/80',
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download: the digits are inside scikit-learn
    order = np.random.default_rng(digits_lib.SPLIT_SEED).permutation(1797)
    return {'train': self._generate_examples('train', order[:digits_lib.NUM_TRAIN]),
            'test': self._generate_examples('test', order[digits_lib.NUM_TRAIN:])}

  def _generate_examples(self, split, pool):
    import sklearn.datasets  # pylint: disable=g-import-not-at-top  (slow; only when building)
    digits = sklearn.datasets.load_digits()
    height, width = self.builder_config.height, self.builder_config.width
    rng = np.random.default_rng([height, width, 0 if split == 'train' else 1])
    for index in range(SPLIT_SIZES[split]):
      cells = (height // (height // 2)) * (width // (height // 2))
      chosen = rng.choice(pool, size=int(rng.integers(2, cells)), replace=False)
      yield index, render([digits.images[i] for i in chosen],
                          [int(digits.target[i]) for i in chosen], rng, height, width)


def builder(height: int = 32, width: int = 32, data_dir: str | None = None) -> DigitCanvas:
  """The canvas builder at (height, width) (any size: not only the predefined configs)."""
  name = f'{height}x{width}'
  config = name if name in {c.name for c in DigitCanvas.BUILDER_CONFIGS} else _config(height,
                                                                                        width)
  return DigitCanvas(config=config, data_dir=data_dir)
