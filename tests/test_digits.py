"""The embedded digits dataset: a tfds builder prepared offline from scikit-learn's copy."""

import hashlib

import numpy as np
import tensorflow_datasets as tfds

from vit_jax.data import digits


def test_builds_offline_with_fixed_splits(digits_data_dir):
  builder = digits.builder(32, data_dir=digits_data_dir)
  assert builder.is_prepared()
  assert {s: i.num_examples for s, i in builder.info.splits.items()} == {'train': 1347,
                                                                        'test': 450}
  assert builder.info.features['label'].names == [str(d) for d in range(10)]
  train = builder.as_data_source('train')
  test = builder.as_data_source('test')
  example = train[0]
  assert example['image'].shape == (32, 32, 3) and example['image'].dtype == np.uint8
  np.testing.assert_array_equal(example['image'][..., 0], example['image'][..., 2])  # grey RGB
  labels = np.array([test[i]['label'] for i in range(len(test))])
  assert set(labels) == set(range(10))
  digest = lambda ex: hashlib.sha1(ex['image'].tobytes()).hexdigest()  # pylint: disable=unnecessary-lambda-assignment
  assert not {digest(train[i]) for i in range(len(train))} & {digest(test[i]) for i in range(450)}


def test_images_are_the_upscaled_sklearn_digits(digits_data_dir):
  # sklearn's photographs and digits: imported only where they are read.
  import sklearn.datasets  # pylint: disable=g-import-not-at-top
  builder = digits.builder(32, data_dir=digits_data_dir)
  first = builder.as_data_source('train')
  order = np.random.default_rng(digits.SPLIT_SEED).permutation(1797)
  source = sklearn.datasets.load_digits()
  # Which example is first depends on tfds's shuffling; find it by its label and pixels.
  image = first[0]['image'][..., 0].astype(np.float32)
  downsampled = image.reshape(8, 4, 8, 4).mean((1, 3)) * 16 / 255
  candidates = [i for i in order[:digits.NUM_TRAIN] if source.target[i] == first[0]['label']]
  errors = [np.abs(source.images[i] - downsampled).mean() for i in candidates]
  assert min(errors) < 1.5 and image.max() > 100


def test_any_image_size(tmp_path):
  builder = digits.builder(20, data_dir=str(tmp_path))
  builder.download_and_prepare(file_format='array_record')
  assert builder.as_data_source('test')[0]['image'].shape == (20, 20, 3)
  assert isinstance(builder, tfds.core.GeneratorBasedBuilder)
