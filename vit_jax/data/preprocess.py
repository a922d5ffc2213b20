"""Preprocessing ops named in the config, composed with `|` as in big_vision:

  'decode_jpeg_and_inception_crop(224)|flip_lr|randaug(2, 10)|value_range(-1, 1)|onehot(1000)'

Each op maps an example dict (`image`, `label`, ...) to a new one inside tf.data. Random ops are
stateless: they draw from a per-example seed (derived from the run seed and the example's
position in the stream), so augmentation is reproducible and independent of parallelism.
"""

from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from vit_jax import errors
from vit_jax.data import naflex as naflex_lib
from vit_jax.data import pp_spec
from vit_jax.data import randaugment as randaugment_lib

Example = dict[str, tf.Tensor]
Op = Callable[[Example, tf.Tensor], Example]
OPS: dict[str, Callable[..., Op]] = {}


def register(name: str):
  """Adds an op factory `f(*args, **kwargs) -> op(example, seed)` under `name`."""
  def wrap(factory):
    OPS[name] = factory
    return factory
  return wrap


def _size(size) -> tuple[int, int]:
  return (size, size) if isinstance(size, int) else tuple(size)


def _to_uint8(image):
  return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def _decode(data, channels=3):
  if data.dtype == tf.string:
    image = tf.io.decode_image(data, channels=channels, expand_animations=False)
  else:
    image = data
    if image.shape.rank == 2:
      image = image[:, :, None]
  image = tf.cond(tf.shape(image)[-1] == 1, lambda: tf.tile(image, [1, 1, channels]),
                  lambda: image) if channels == 3 else image
  return tf.ensure_shape(image, [None, None, channels])


# Per-pixel targets of dense tasks ([h, w]: int32 classes, float32 depth): every geometric op
# applies the image's transform to them too, resampling them with nearest neighbours.
DENSE_KEYS = ('segmentation', 'depth')


def _with_dense(example: Example, image: tf.Tensor, transform) -> Example:
  """`example` with `image`, and `transform` ([h, w, 1] -> [h', w', 1], nearest) applied to
  each per-pixel target, which must have the image's height and width."""
  out = {**example, 'image': image}
  for key in DENSE_KEYS:
    if key in example:
      target = example[key]
      check = tf.debugging.assert_equal(
          tf.shape(target)[:2], tf.shape(example['image'])[:2],
          message=f'the {key} map and its image differ in size (a label map must have its '
                  'image\'s height and width)')
      with tf.control_dependencies([check]):
        out[key] = transform(target[:, :, None])[:, :, 0]
  return out


def _refuse_dense(example: Example, op_name: str) -> None:
  found = [k for k in DENSE_KEYS if k in example]
  if found:
    raise errors.UserError(f'pp op {op_name} moves pixels of the image only; the example has '
                           f'the per-pixel {found[0]!r} to keep aligned: use resize, '
                           'random_scale, pad_to, random_crop, central_crop, flip_lr.')


@register('decode')
def decode(channels: int = 3) -> Op:
  """Encoded bytes (or an already decoded array) -> uint8 [h, w, channels]."""
  def op(example, seed):
    del seed
    return {**example, 'image': _decode(example['image'], channels)}
  return op


def _crop_window(shape, seed, area_min, area_max, aspect_min, aspect_max):
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, tf.zeros([0, 0, 4], tf.float32), seed=seed,
      area_range=(area_min / 100, area_max / 100), aspect_ratio_range=(aspect_min, aspect_max),
      min_object_covered=0, use_image_if_no_bounding_boxes=True)
  return begin, size


@register('inception_crop')
def inception_crop(size, area_min: float = 5, area_max: float = 100, aspect_min: float = 3 / 4,
                   aspect_max: float = 4 / 3, method: str = 'bilinear') -> Op:
  """Random crop of area_min..area_max percent and aspect range, resized to `size`."""
  def op(example, seed):
    image = example['image']
    begin, crop = _crop_window(tf.shape(image), seed, area_min, area_max, aspect_min, aspect_max)
    image = tf.slice(image, begin, crop)
    resized = _to_uint8(tf.image.resize(image, _size(size), method))
    return _with_dense(example, resized, lambda t: tf.image.resize(
        tf.slice(t, tf.concat([begin[:2], [0]], 0), tf.concat([crop[:2], [1]], 0)), _size(size),
        'nearest'))
  return op


@register('decode_jpeg_and_inception_crop')
def decode_jpeg_and_inception_crop(size, area_min: float = 5, area_max: float = 100,
                                   aspect_min: float = 3 / 4, aspect_max: float = 4 / 3,
                                   method: str = 'bilinear') -> Op:
  """`decode|inception_crop(...)` fused: JPEGs decode only the crop window (much faster)."""
  def op(example, seed):
    _refuse_dense(example, 'decode_jpeg_and_inception_crop (use decode|inception_crop)')
    data = example['image']

    def jpeg():
      shape = tf.image.extract_jpeg_shape(data)
      begin, crop = _crop_window(shape, seed, area_min, area_max, aspect_min, aspect_max)
      window = tf.stack([begin[0], begin[1], crop[0], crop[1]])
      return tf.image.decode_and_crop_jpeg(data, window, channels=3)

    def other():
      image = _decode(data)
      begin, crop = _crop_window(tf.shape(image), seed, area_min, area_max, aspect_min, aspect_max)
      return tf.slice(image, begin, crop)

    image = tf.cond(tf.io.is_jpeg(data), jpeg, other) if data.dtype == tf.string else other()
    image = tf.ensure_shape(image, [None, None, 3])
    return {**example, 'image': _to_uint8(tf.image.resize(image, _size(size), method))}
  return op


@register('resize')
def resize(size, method: str = 'bilinear') -> Op:
  """Resizes to `size` (int or (h, w)) ignoring the aspect ratio."""
  def op(example, seed):
    del seed
    resized = _to_uint8(tf.image.resize(example['image'], _size(size), method))
    return _with_dense(example, resized, lambda t: tf.image.resize(t, _size(size), 'nearest'))
  return op


@register('resize_small')
def resize_small(size: int, method: str = 'bilinear', floor: bool = False) -> Op:
  """Resizes so that the shorter side is `size`, keeping the aspect ratio; the longer side is
  rounded (big_vision), or floored with `floor=True` (torchvision, timm, transformers)."""
  def op(example, seed):
    del seed
    image = example['image']
    height, width = tf.cast(tf.shape(image)[0], tf.float32), tf.cast(tf.shape(image)[1], tf.float32)
    scale = size / tf.minimum(height, width)
    sides = tf.stack([height * scale, width * scale])
    new = tf.cast(tf.floor(sides + 1e-4) if floor else tf.round(sides), tf.int32)
    resized = _to_uint8(tf.image.resize(image, new, method))
    return _with_dense(example, resized, lambda t: tf.image.resize(t, new, 'nearest'))
  return op


@register('random_scale')
def random_scale(short: int, long: int, min_ratio: float = 0.5, max_ratio: float = 2.0,
                 method: str = 'bilinear') -> Op:
  """mmseg's multi-scale training resize: a ratio r uniform in [min_ratio, max_ratio], then the
  largest size keeping the aspect ratio within (short * r, long * r) (ADE20K: 512, 2048)."""
  def op(example, seed):
    image = example['image']
    ratio = tf.random.stateless_uniform([], seed, min_ratio, max_ratio)
    sides = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = ratio * tf.minimum(short / tf.reduce_min(sides), long / tf.reduce_max(sides))
    new = tf.cast(tf.round(sides * scale), tf.int32)
    resized = _to_uint8(tf.image.resize(image, new, method))
    return _with_dense(example, resized, lambda t: tf.image.resize(t, new, 'nearest'))
  return op


@register('pad_to')
def pad_to(size, ignore: int = 255) -> Op:
  """Pads the bottom and right to at least `size` (int or (h, w)): the image with 0, a
  segmentation map with `ignore`, a depth map with 0 (no measurement)."""
  height, width = _size(size)

  def op(example, seed):
    del seed
    shape = tf.shape(example['image'])
    pad = [[0, tf.maximum(height - shape[0], 0)], [0, tf.maximum(width - shape[1], 0)]]
    out = {**example, 'image': tf.pad(example['image'], pad + [[0, 0]])}
    for key in DENSE_KEYS:
      if key in example:
        out[key] = tf.pad(example[key], pad,
                          constant_values=ignore if key == 'segmentation' else 0)
    return out
  return op


@register('central_crop')
def central_crop(size) -> Op:
  """Crops the central `size` window."""
  height, width = _size(size)

  def op(example, seed):
    del seed
    image = example['image']
    top = (tf.shape(image)[0] - height) // 2
    left = (tf.shape(image)[1] - width) // 2
    crop = lambda t: tf.image.crop_to_bounding_box(t, top, left, height, width)  # pylint: disable=unnecessary-lambda-assignment
    return _with_dense(example, crop(image), crop)
  return op


@register('random_crop')
def random_crop(size) -> Op:
  """Crops a uniformly placed `size` window."""
  height, width = _size(size)

  def op(example, seed):
    image = example['image']
    if not any(k in example for k in DENSE_KEYS):
      crop = tf.image.stateless_random_crop(image, [height, width, tf.shape(image)[-1]], seed)
      return {**example, 'image': crop}
    shape = tf.shape(image)
    limits = tf.stack([shape[0] - height + 1, shape[1] - width + 1])
    with tf.control_dependencies([tf.debugging.assert_positive(
        limits, message=f'random_crop({height}, {width}) of a smaller image: pad_to first')]):
      offset = tf.random.stateless_uniform([2], seed, 0, 2**30, tf.int32) % limits
    crop = lambda t: tf.image.crop_to_bounding_box(t, offset[0], offset[1], height, width)  # pylint: disable=unnecessary-lambda-assignment
    return _with_dense(example, crop(image), crop)
  return op


@register('flip_lr')
def flip_lr() -> Op:
  """Mirrors left-right with probability 1/2."""
  def op(example, seed):
    if not any(k in example for k in DENSE_KEYS):
      return {**example,
              'image': tf.image.stateless_random_flip_left_right(example['image'], seed)}
    flip = tf.random.stateless_uniform([], seed) < 0.5
    mirror = lambda t: tf.cond(flip, lambda: t[:, ::-1], lambda: t)  # pylint: disable=unnecessary-lambda-assignment
    return _with_dense(example, mirror(example['image']), mirror)
  return op


@register('randaug')
def randaug(num_layers: int = 2, magnitude: float = 10) -> Op:
  """RandAugment on uint8 images (see randaugment.py); magnitude in [0, 20]."""
  num_layers, magnitude = pp_spec.check_randaug(num_layers, magnitude)

  def op(example, seed):
    _refuse_dense(example, 'randaug')
    return {**example, 'image': randaugment_lib.randaugment(
        example['image'], seed, num_layers, magnitude)}
  return op


def _uint8_pixels(example, op_name: str):
  """The image as float32, refusing an image that a value op already mapped: `value_range` and
  `normalize` both read pixels in [0, 255] and each ends the value chain."""
  image = example['image']
  if image.dtype != tf.uint8:
    raise errors.UserError(
        f'pp op {op_name} reads uint8 pixels in [0, 255]; found {image.dtype.name}: '
        'use one of value_range / normalize, not both.')
  return tf.cast(image, tf.float32)


@register('value_range')
def value_range(vmin: float = -1, vmax: float = 1, in_min: float = 0, in_max: float = 255) -> Op:
  """Maps uint8 [in_min, in_max] linearly onto [vmin, vmax] as float32 (the ViT's [-1, 1])."""
  def op(example, seed):
    del seed
    image = _uint8_pixels(example, 'value_range')
    image = vmin + (image - in_min) * (vmax - vmin) / (in_max - in_min)
    return {**example, 'image': image}
  return op


@register('normalize')
def normalize(mean=pp_spec.IMAGENET_MEAN, std=pp_spec.IMAGENET_STD) -> Op:
  """(image / 255 - mean) / std per channel on uint8 pixels (ImageNet statistics by default):
  used in place of value_range, never after it."""
  def op(example, seed):
    del seed
    image = _uint8_pixels(example, 'normalize') / 255.0
    return {**example, 'image': (image - tf.constant(mean)) / tf.constant(std)}
  return op


@register('onehot')
def onehot(depth: int, key: str = 'label', key_result: str = 'labels') -> Op:
  """Integer label -> float32 [depth] one-hot target.

  A list of labels (ImageNet-ReaL's `real_label`) gives their union, a multi-hot target (all
  zeros for an empty list). In a run's config write `onehot` alone: the depth follows
  `config.num_classes`. Label smoothing is the loss's (`config.label_smoothing`).
  """
  def op(example, seed):
    del seed
    target = tf.one_hot(example[key], depth, dtype=tf.float32)
    if target.shape.rank == 2:
      target = tf.minimum(tf.reduce_sum(target, axis=0), 1.0)
    return {**example, key_result: target}
  return op


@register('segmentation')
def segmentation(key: str = 'segmentation', reduce_zero_label: bool = False,
                 num_classes: Optional[int] = None, ignore: int = 255) -> Op:
  """The class map `key` (PNG bytes or uint8 [h, w(, c)]; channel 0 holds the class) ->
  `segmentation` int32 [h, w]. `reduce_zero_label` (ADE20K's protocol): 0 ("other") becomes
  `ignore` and every other class shifts down by one. Ids other than `ignore` must be below
  `num_classes` (in a run's config it follows config.num_classes)."""
  def op(example, seed):
    del seed
    data = example[key]
    labels = tf.io.decode_png(data, channels=0)[:, :, 0] if data.dtype == tf.string else (
        data[:, :, 0] if data.shape.rank == 3 else data)
    labels = tf.cast(labels, tf.int32)
    if reduce_zero_label:
      labels = tf.where(labels == 0, ignore, labels - 1)
      labels = tf.where(labels == ignore - 1, ignore, labels)  # 255 stays ignored
    checks = []
    if num_classes is not None:
      wrong = (labels >= num_classes) & (labels != ignore) | (labels < 0)
      checks.append(tf.debugging.assert_equal(
          tf.reduce_any(wrong), False,
          message=f'{key}: class ids outside [0, {num_classes}) other than the ignore label '
                  f'{ignore}'))
    with tf.control_dependencies(checks):
      labels = tf.identity(labels)
    out = {k: v for k, v in example.items() if k != key}
    return {**out, 'segmentation': labels}
  return op


@register('depth')
def depth(key: str = 'depth', scale: float = 1.0) -> Op:
  """The depth map `key` (float [h, w], or 16-bit PNG bytes) times `scale` -> `depth` float32
  [h, w] (0: no measurement)."""
  def op(example, seed):
    del seed
    data = example[key]
    values = (tf.cast(tf.io.decode_png(data, channels=1, dtype=tf.uint16)[:, :, 0], tf.float32)
              if data.dtype == tf.string else tf.cast(data, tf.float32))
    out = {k: v for k, v in example.items() if k != key}
    return {**out, 'depth': values * scale}
  return op


@register('keep')
def keep(*keys: str) -> Op:
  """Drops every entry but `keys`."""
  def op(example, seed):
    del seed
    missing = [k for k in keys if k not in example]
    if missing:
      raise errors.UserError(f'keep{keys}: example has no {missing}; it has {sorted(example)}.')
    return {k: example[k] for k in keys}
  return op


def _onehot_depth(text: str, args: list, kwargs: dict, num_classes) -> tuple[list, dict]:
  """`onehot` without a depth takes `num_classes`; a depth that disagrees with it is refused."""
  depth = args[0] if args else kwargs.get('depth')
  if depth is None:
    if num_classes is None:
      raise errors.UserError(f'{text.strip()!r} needs a depth (no num_classes to take it from).')
    return args, {**kwargs, 'depth': num_classes}
  if num_classes is not None and depth != num_classes:
    raise errors.UserError(f'{text.strip()!r} has depth {depth} but config.num_classes is '
                           f'{num_classes}; write onehot without a depth to follow num_classes.')
  return args, kwargs


@register('naflex')
def naflex(patch_size: int, max_patches: int, max_side: Optional[int] = None,
           upscale: bool = False) -> Op:
  """`image` -> one NaFlex sequence of `max_patches` tokens (`models.sequences.KEYS`): the image
  resized, keeping its aspect ratio, to the largest grid under the budget
  (`naflex.budget_grid`; small images keep their size unless `upscale`), antialiased
  bilinear, patchified (row, column, channel), padded. Ends the image ops; labels stay."""
  naflex_lib.budget_grid(patch_size, patch_size, patch_size, max_patches, max_side)  # checks

  def grid_of(height, width):
    return np.asarray(naflex_lib.budget_grid(int(height), int(width), patch_size, max_patches,
                                             max_side, upscale), np.int32)

  def op(example, seed):
    del seed
    _refuse_dense(example, 'naflex')
    image = example['image']
    shape = tf.shape(image)
    grid = tf.ensure_shape(tf.numpy_function(grid_of, [shape[0], shape[1]], tf.int32), [2])
    rows, columns, channels = grid[0], grid[1], image.shape[-1]
    resized = tf.image.resize(tf.cast(image, tf.float32), [rows * patch_size,
                                                           columns * patch_size],
                              'bilinear', antialias=True)
    resized = _to_uint8(resized) if image.dtype == tf.uint8 else tf.cast(resized, image.dtype)
    patches = tf.reshape(tf.transpose(tf.reshape(
        resized, [rows, patch_size, columns, patch_size, channels]), [0, 2, 1, 3, 4]),
                         [rows * columns, patch_size * patch_size * channels])
    count = rows * columns
    padding = [[0, max_patches - count], [0, 0]]
    positions = tf.reshape(tf.stack(tf.meshgrid(tf.range(rows), tf.range(columns),
                                                indexing='ij'), -1), [-1, 2])
    out = {k: v for k, v in example.items() if k != 'image'}
    out.update(
        patches=tf.ensure_shape(tf.pad(patches, padding),
                                [max_patches, patch_size * patch_size * channels]),
        positions=tf.ensure_shape(tf.pad(positions, padding), [max_patches, 2]),
        segments=tf.ensure_shape(tf.pad(tf.ones([count], tf.int32),
                                        [[0, max_patches - count]]), [max_patches]),
        grids=grid[None])
    return out
  return op


def parse(spec: str, num_classes: Optional[int] = None) -> Callable[[Example, tf.Tensor], Example]:
  """'op1(...)|op2|...' -> fn(example, seed): each random op gets its own seed from `seed`.

  `num_classes` is the depth of a bare `onehot`.
  """
  ops = []
  for index, text in enumerate(pp_spec.ops(spec)):
    name, args, kwargs = pp_spec.parse_op(text)
    if name not in OPS:
      raise errors.UserError(
          f'Unknown preprocessing op {name!r} in {spec!r}; known: {sorted(OPS)}.')
    if name == 'segmentation' and 'num_classes' not in kwargs and num_classes is not None:
      kwargs = {**kwargs, 'num_classes': num_classes}
    if name == 'onehot':
      if 'smoothing' in kwargs or len(args) > 1 and not isinstance(args[1], str):
        raise errors.UserError(f'{text.strip()!r}: onehot has no smoothing; label smoothing is '
                               'config.label_smoothing (the loss applies it).')
      args, kwargs = _onehot_depth(text, args, kwargs, num_classes)
    try:
      ops.append((index, OPS[name](*args, **kwargs)))
    except TypeError as e:
      raise errors.UserError(f'Bad arguments for preprocessing op {text.strip()!r}: {e}.') from e

  def apply(example, seed):
    for index, op in ops:
      example = op(example, tf.random.experimental.stateless_fold_in(seed, index))
    return example
  return apply
