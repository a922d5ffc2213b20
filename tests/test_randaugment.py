"""RandAugment ops: each op's defining property, and the stateless draw."""

import numpy as np
import pytest
import tensorflow as tf

from vit_jax.data import randaugment as ra


def _image(seed=0, h=32, w=40):
  return tf.constant(np.random.default_rng(seed).integers(30, 200, (h, w, 3), dtype=np.uint8))


def test_pixel_ops():
  image = _image()
  np.testing.assert_array_equal(ra.invert(image, 0.0), 255 - image.numpy())
  posterized = ra.posterize(image, 10.0).numpy()  # 4 bits kept
  assert np.all(posterized % 16 == 0)
  solarized = ra.solarize(image, 5.0).numpy()  # threshold 128
  raw = image.numpy()
  np.testing.assert_array_equal(solarized, np.where(raw < 128, raw, 255 - raw))
  stretched = ra.autocontrast(image, 0.0).numpy()
  assert stretched.min() == 0 and stretched.max() == 255
  equalized = ra.equalize(image, 0.0).numpy()
  assert equalized.max() > 240 and equalized.min() < 15


def test_enhance_ops_at_the_neutral_level():
  image = _image()
  # factor = level / 10 * 1.8 + 0.1 = 1 at level 5: the image itself.
  for op in (ra.color, ra.contrast, ra.brightness):
    np.testing.assert_array_equal(op(image, 5.0), image)
  assert float(tf.reduce_max(ra.brightness(image, 0.0))) < 0.15 * 200


def test_geometric_ops():
  image = _image()
  np.testing.assert_array_equal(ra.geometric(image, 'Rotate', 0.0, 1.0), image)
  shifted = ra.geometric(image, 'TranslateX', 10.0 * 4 / (0.45 * 40), 1.0).numpy()  # 4 pixels
  np.testing.assert_array_equal(shifted[:, 4:], image.numpy()[:, :-4])
  np.testing.assert_array_equal(shifted[:, :4], np.full((32, 4, 3), ra.FILL))
  rotated = ra.geometric(
      tf.constant(np.eye(33, dtype=np.uint8)[..., None].repeat(3, -1) * 255), 'Rotate',
      10.0 * 90 / 30, 1.0)  # 90 degrees (level beyond 10 scales linearly)
  np.testing.assert_array_equal(rotated.numpy()[..., 0], np.fliplr(np.eye(33)) * 255)


def test_randaugment_is_stateless_and_keeps_shape():
  image = _image()
  a = ra.randaugment(image, tf.constant([1, 2], tf.int64), 3, 9)
  b = ra.randaugment(image, tf.constant([1, 2], tf.int64), 3, 9)
  np.testing.assert_array_equal(a, b)
  outputs = {ra.randaugment(image, tf.constant([s, 0], tf.int64), 2, 10).numpy().tobytes()
             for s in range(12)}
  assert len(outputs) > 6
  assert a.shape == image.shape and a.dtype == tf.uint8


def test_randaugment_rejects_float_images():
  with pytest.raises(ValueError, match='uint8'):
    ra.randaugment(tf.zeros((4, 4, 3)), tf.constant([0, 0], tf.int64))


def test_cutout_greys_a_square():
  image = tf.zeros((40, 40, 3), tf.uint8)
  out = ra.cutout(image, 10.0, tf.constant([3, 4], tf.int64)).numpy()
  grey = np.argwhere(out[..., 0] == ra.FILL)
  assert len(grey) > 0
  height = grey[:, 0].max() - grey[:, 0].min() + 1
  assert height <= 2 * int(40 * 40 / 224) + 1
