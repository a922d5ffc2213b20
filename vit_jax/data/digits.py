"""`digits`: the embedded default dataset, a tfds builder over scikit-learn's bundled UCI digits.

1,797 real handwritten digits (8x8, 17 grey levels) ship inside scikit-learn, so this dataset is
prepared offline. Images are upscaled (bilinear) to `image_size` and repeated to RGB; the split
is a fixed seeded permutation: 1,347 train / 450 test (75% / 25%).
"""

import dataclasses

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

NUM_TRAIN = 1347
SPLIT_SEED = 0


@dataclasses.dataclass
class DigitsConfig(tfds.core.BuilderConfig):
  image_size: int = 32


def _config(image_size: int) -> DigitsConfig:
  return DigitsConfig(name=f'{image_size}px', image_size=image_size,
                      description=f'Digits upscaled to {image_size}x{image_size} RGB.')


class Digits(tfds.core.GeneratorBasedBuilder):
  """UCI handwritten digits (via scikit-learn), upscaled to RGB images."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [_config(size) for size in (16, 32, 64, 224)]
  DEFAULT_CONFIG_NAME = '32px'

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.image_size
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(size, size, 3)),
            'label': tfds.features.ClassLabel(names=[str(d) for d in range(10)]),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://archive.ics.uci.edu/dataset/80',
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download: the data is inside scikit-learn
    order = np.random.default_rng(SPLIT_SEED).permutation(1797)
    return {'train': self._generate_examples(order[:NUM_TRAIN]),
            'test': self._generate_examples(order[NUM_TRAIN:])}

  def _generate_examples(self, indices):
    import sklearn.datasets  # pylint: disable=g-import-not-at-top  (slow; only when building)
    digits = sklearn.datasets.load_digits()
    size = self.builder_config.image_size
    for index in indices:
      grey = (digits.images[index] * (255.0 / 16.0)).astype(np.uint8)
      image = Image.fromarray(grey).resize((size, size), Image.BILINEAR)
      rgb = np.repeat(np.asarray(image)[:, :, None], 3, axis=2)
      yield int(index), {'image': rgb, 'label': int(digits.target[index])}


def builder(image_size: int = 32, data_dir: str | None = None) -> Digits:
  """The digits builder at `image_size` (any size: not only the predefined configs)."""
  name = f'{image_size}px'
  config = name if name in {c.name for c in Digits.BUILDER_CONFIGS} else _config(image_size)
  return Digits(config=config, data_dir=data_dir)
