"""RandAugment in TF ops on the host, stateless (same seed, same image), on uint8 [h, w, 3]:
the ops of `augment_table.py` (shared with the JAX ops of `device_randaugment.py`).
"""

import tensorflow as tf

from vit_jax import errors
from vit_jax.data import augment_table as table
from vit_jax.data.augment_table import FILL


def _blend(degenerate: tf.Tensor, image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """degenerate + factor * (image - degenerate), clipped to [0, 255]; uint8 in and out."""
  degenerate, image = tf.cast(degenerate, tf.float32), tf.cast(image, tf.float32)
  return tf.cast(tf.clip_by_value(degenerate + factor * (image - degenerate), 0, 255), tf.uint8)


def _grey(image):
  return tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))


def autocontrast(image, _):
  def channel(x):
    lo, hi = tf.cast(tf.reduce_min(x), tf.float32), tf.cast(tf.reduce_max(x), tf.float32)
    scaled = (tf.cast(x, tf.float32) - lo) * 255.0 / tf.maximum(hi - lo, 1e-6)
    return tf.where(hi > lo, tf.cast(tf.clip_by_value(scaled, 0, 255), tf.uint8), x)
  return tf.stack([channel(image[..., c]) for c in range(3)], -1)


def equalize(image, _):
  def channel(x):
    histogram = tf.histogram_fixed_width(tf.cast(x, tf.int32), [0, 255], nbins=256)
    nonzero = tf.boolean_mask(histogram, histogram != 0)
    step = (tf.reduce_sum(nonzero) - nonzero[-1]) // 255
    lut = (tf.cumsum(histogram) + step // 2) // tf.maximum(step, 1)
    lut = tf.clip_by_value(tf.concat([[0], lut[:-1]], 0), 0, 255)
    return tf.where(step == 0, x, tf.cast(tf.gather(lut, tf.cast(x, tf.int32)), tf.uint8))
  return tf.stack([channel(image[..., c]) for c in range(3)], -1)


def invert(image, _):
  return 255 - image


def posterize(image, level):
  shift = tf.cast(8 - tf.cast(table.posterize_bits(level), tf.int32), tf.uint8)
  return tf.bitwise.left_shift(tf.bitwise.right_shift(image, shift), shift)


def solarize(image, level):
  threshold = tf.cast(table.solarize_threshold(level), tf.int32)
  return tf.where(tf.cast(image, tf.int32) < threshold, image, 255 - image)


def solarize_add(image, level):
  added = tf.clip_by_value(
      tf.cast(image, tf.int32) + tf.cast(table.solarize_addition(level), tf.int32), 0, 255)
  return tf.where(image < 128, tf.cast(added, tf.uint8), image)


def color(image, level):
  return _blend(_grey(image), image, table.enhance_factor(level))


def contrast(image, level):
  mean = tf.reduce_mean(tf.cast(tf.image.rgb_to_grayscale(image), tf.float32))
  return _blend(tf.fill(tf.shape(image), mean), image, table.enhance_factor(level))


def brightness(image, level):
  return _blend(tf.zeros_like(image), image, table.enhance_factor(level))


def sharpness(image, level):
  kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
  kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
  smooth = tf.nn.depthwise_conv2d(tf.cast(image, tf.float32)[None], kernel, [1, 1, 1, 1], 'VALID')
  smooth = tf.cast(tf.clip_by_value(tf.round(smooth[0]), 0, 255), tf.uint8)
  # Borders keep their original pixels.
  smooth = tf.pad(smooth, [[1, 1], [1, 1], [0, 0]])
  mask = tf.pad(tf.ones_like(smooth[1:-1, 1:-1]), [[1, 1], [1, 1], [0, 0]])
  degenerate = tf.where(mask == 1, smooth, image)
  return _blend(degenerate, image, table.enhance_factor(level))


def _transform(image, matrix):
  """Projective transform (output -> input pixel map, 8 numbers), nearest, grey fill."""
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  out = tf.raw_ops.ImageProjectiveTransformV3(
      images=image[None], transforms=tf.cast(matrix, tf.float32)[None],
      output_shape=tf.stack([height, width]), fill_value=float(FILL), interpolation='NEAREST',
      fill_mode='CONSTANT')
  return out[0]


def geometric(image, name, level, sign):
  """A GEOMETRIC op of the table: its projective transform of the image."""
  height, width = tf.cast(tf.shape(image)[0], tf.float32), tf.cast(tf.shape(image)[1], tf.float32)
  return _transform(image, table.transform_matrix(name, height, width, level, sign, tf.cos,
                                                  tf.sin))


def cutout(image, level, seed):
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  pad = tf.cast(table.cutout_half_size(level, tf.cast(tf.minimum(height, width), tf.float32)),
                tf.int32)
  row_seed, col_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  centre_row = tf.random.stateless_uniform([], row_seed, 0, height, tf.int32)
  centre_col = tf.random.stateless_uniform([], col_seed, 0, width, tf.int32)
  rows, cols = tf.range(height)[:, None], tf.range(width)[None, :]
  inside = ((tf.abs(rows - centre_row) <= pad) & (tf.abs(cols - centre_col) <= pad))[..., None]
  return tf.where(inside, tf.constant(FILL, tf.uint8), image)


_PIXEL_OPS = {'AutoContrast': autocontrast, 'Equalize': equalize, 'Invert': invert,
              'Posterize': posterize, 'Solarize': solarize, 'Color': color, 'Contrast': contrast,
              'Brightness': brightness, 'Sharpness': sharpness, 'SolarizeAdd': solarize_add}


def randaugment(image: tf.Tensor, seed: tf.Tensor, num_layers: int = 2,
                magnitude: float = 10.0) -> tf.Tensor:
  """Applies `num_layers` ops drawn uniformly from the table's OPS, each with a probability
  drawn from APPLY_PROBABILITY."""
  image = tf.convert_to_tensor(image)
  if image.dtype != tf.uint8:
    raise errors.UserError(f'randaug expects uint8 images, got {image.dtype}; put it before '
                           'value_range/normalize.')
  level = tf.constant(float(magnitude))
  low, high = table.APPLY_PROBABILITY
  for layer in range(num_layers):
    seeds = tf.random.experimental.stateless_split(
        tf.random.experimental.stateless_fold_in(seed, layer), 4)
    op_index = tf.random.stateless_uniform([], seeds[0], 0, len(table.OPS), tf.int32)
    sign = tf.where(tf.random.stateless_uniform([], seeds[1]) < 0.5, -1.0, 1.0)
    probability = tf.random.stateless_uniform([], seeds[2], low, high)
    apply = tf.random.stateless_uniform([], tf.random.experimental.stateless_fold_in(seeds[2], 1)) < probability
    branches = []
    for name in table.OPS:  # the table's order: op_index picks the same op on both sides
      if name in table.GEOMETRIC:
        branches.append(lambda name=name: geometric(image, name, level, sign))
      elif name == 'Cutout':
        branches.append(lambda: cutout(image, level, seeds[3]))
      else:
        branches.append(lambda op=_PIXEL_OPS[name]: op(image, level))
    augmented = tf.switch_case(op_index, branches)
    augmented = tf.ensure_shape(augmented, image.shape)
    image = tf.where(apply, augmented, image)
  return image
