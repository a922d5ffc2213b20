"""Random-access example sources: tfds datasets, image folders and the embedded digits.

A `Source` maps an example index (a TF scalar) to `{'image': encoded bytes or uint8 [h, w, c],
'label': int32}` inside a tf.data graph. Random access is what makes the input order a pure
function of (seed, epoch, position), so a restored iterator continues exactly (see pipeline.py).
tfds datasets are read through `tfds` data sources, which need the ArrayRecord file format.
"""

import dataclasses
from typing import Callable, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from vit_jax import errors
from vit_jax.data import folders
from vit_jax.data import preparation
from vit_jax.data import vtab
from vit_jax.data import splits



class DatasetMissing(errors.UserError):
  """A dataset this machine does not have: unknown to tfds, or not prepared in the data dir."""


@dataclasses.dataclass
class Source:
  """`num_examples` examples readable by index; `lookup` runs inside tf.data graphs."""

  name: str
  num_examples: int
  class_names: Sequence[str]
  lookup: Callable[[tf.Tensor], dict[str, tf.Tensor]]
  skipped_files: Sequence[str] = ()
  # The same for a vector of indices in one call, where a source reads faster that way (tfds:
  # one Python call per batch instead of per example); None: the pipeline uses `lookup`.
  lookup_many: Optional[Callable[[tf.Tensor], dict[str, tf.Tensor]]] = None

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


def tfds_source(name: str, split: str, *, data_dir: Optional[str] = None,
                prepare: bool = False, image_key: str = 'image',
                label_key: str = 'label') -> Source:
  """A tfds dataset split (slicing allowed), prepared in the ArrayRecord format.

  With `prepare=True` the dataset is built first (`download_and_prepare`: from local files for
  manually downloaded datasets such as imagenet2012, or downloading where allowed).
  """
  return _builder_source(prepared_builder(name, data_dir, prepare), split, image_key, label_key)


def prepared_builder(name: str, data_dir: Optional[str] = None, prepare: bool = False):
  """The tfds builder of a prepared dataset (built first with `prepare`); DatasetMissing names
  the command that prepares it."""
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise DatasetMissing(f'Unknown tfds dataset {name!r}: {str(e).splitlines()[0]}') from e
  if prepare:
    preparation.once(f'{builder.name}/{builder.version}', str(builder.data_dir_root),
                     builder.is_prepared,
                     lambda: builder.download_and_prepare(file_format='array_record'))
    builder = tfds.builder(name, data_dir=data_dir)  # anew: see digits_source
  if not builder.is_prepared():
    raise DatasetMissing(
        f'tfds dataset {name!r} is not prepared under {builder.data_dir_root}; build it first '
        f'(tfds build {name} --file_format=array_record --data_dir=...) or set prepare=True.')
  return builder


def _builder_source(builder, split: str, image_key: str, label_key: str, *,
                    label_fn: Optional[Callable[[dict], int]] = None,
                    image_scale: Optional[int] = None,
                    class_names: Optional[Sequence[str]] = None) -> Source:
  """`label_fn(example)` (VTAB's structured tasks) replaces the `label_key` feature;
  `image_scale` multiplies decoded pixels (dSprites stores 0/1)."""
  sizes = {s: info.num_examples for s, info in builder.info.splits.items()}
  splits.slice_split(split, sizes)  # clear error for a missing split or a bad slice
  features = builder.info.features
  for key in (image_key,) if label_fn else (image_key, label_key):
    if key not in features:
      raise errors.UserError(
          f'{builder.name} has no feature {key!r}; features: {sorted(features)}.')
  encoded = isinstance(features[image_key], tfds.features.Image) and image_scale is None
  # tfds 4.9 restores `alternativeFileFormats` of dataset_info.json into the proto but not into
  # the formats `as_data_source` chooses among: register them (a converted TFRecord dataset).
  known = {f.value for f in builder.info.alternative_file_formats}
  for file_format in set(builder.info.as_proto.alternative_file_formats) - known:
    builder.info.add_alternative_file_format(file_format)
  try:
    data = builder.as_data_source(
        split, decoders={image_key: tfds.decode.SkipDecoding()} if encoded else None)
  except (NotImplementedError, ValueError) as e:
    raise errors.UserError(
        f'{builder.name} split {split!r} cannot be read by index (random access needs the '
        f'ArrayRecord format; this one is {builder.info.file_format.value}). Convert it in place '
        f'with: {convert_command(builder)}') from e

  image_dtype = tf.string if encoded else tf.uint8
  label_feature = None if label_fn else features[label_key]
  # A sequence of class labels (ImageNet-ReaL's `real_label`) reads as an int32 list.
  multi_label = isinstance(label_feature, tfds.features.Sequence)
  if multi_label:
    label_feature = label_feature.feature

  def read(index):
    example = data[int(index)]
    image = example[image_key]
    if image_scale is not None:
      image = (np.asarray(image) * image_scale).astype(np.uint8)
    label = label_fn(example) if label_fn else example[label_key]
    return image, np.asarray(label, np.int64)

  def lookup(index):
    image, label = tf.numpy_function(read, [index], (image_dtype, tf.int64), stateful=False)
    image.set_shape([] if encoded else [None, None, None])
    label = tf.reshape(label, [-1] if multi_label else [])
    return {'image': image, 'label': tf.cast(label, tf.int32)}

  def read_many(indices):
    examples = data.__getitems__([int(i) for i in indices])
    return (np.array([e[image_key] for e in examples], dtype=object),
            np.array([e[label_key] for e in examples], np.int64))

  def lookup_many(indices):
    images, labels = tf.numpy_function(read_many, [indices], (tf.string, tf.int64),
                                       stateful=False)
    images.set_shape([None])
    labels.set_shape([None])
    return {'image': images, 'label': tf.cast(labels, tf.int32)}

  # Records are read a batch per call in the common case (JPEG bytes and one class each).
  batched = encoded and not multi_label and label_fn is None

  names = class_names or (
      label_feature.names if isinstance(label_feature, tfds.features.ClassLabel)
      else [str(i) for i in range(int(getattr(label_feature, 'num_classes', 0)))])
  return Source(name=f'{builder.name}:{split}', num_examples=len(data), class_names=names,
                lookup=lookup, lookup_many=lookup_many if batched else None)


def convert_command(builder) -> str:
  """The one command that adds ArrayRecord files beside a prepared dataset's (TFRecord) ones
  (`vit_jax.data.to_array_record`; `tfds convert_format` does the same with Apache Beam)."""
  return f'python -m vit_jax.data.to_array_record --dataset_version_dir={builder.data_dir}'


def concat_sources(parts: Sequence[Source], name: str, class_names: Sequence[str]) -> Source:
  """One source reading `parts` one after the other."""
  first, rest = parts[0], parts[1:]
  if not rest:
    return dataclasses.replace(first, name=name, class_names=class_names)
  tail = concat_sources(rest, name, class_names)

  def lookup(index):
    return tf.cond(index < first.num_examples, lambda: first.lookup(index),
                   lambda: tail.lookup(index - first.num_examples))

  return Source(name=name, num_examples=first.num_examples + tail.num_examples,
                class_names=class_names, lookup=lookup)


def vtab_source(task_name: str, split: str, *, data_dir: Optional[str] = None,
                builder=None) -> Source:
  """A VTAB-1k task's split (`train800`, `val200`, `train800val200`, `test`): see data/vtab.py.
  `builder` replaces the task's tfds builder (tests pass a synthetic one)."""
  task = vtab.task(task_name)
  if builder is None:
    try:
      builder = tfds.builder(task.tfds_name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
      raise DatasetMissing(f'VTAB task {task_name}: unknown tfds dataset {task.tfds_name!r}: '
                           f'{str(e).splitlines()[0]}') from e
    if not builder.is_prepared():
      raise DatasetMissing(f'VTAB task {task_name}: tfds dataset {task.tfds_name!r} is not '
                           f'prepared under {builder.data_dir_root}; prepare it with: '
                           f'{vtab.prepare_command(task, data_dir)}')
  sizes = {s: info.num_examples for s, info in builder.info.splits.items()}
  label = task.label if isinstance(task.label, str) else None
  parts = [_builder_source(builder, part, 'image', label or '',
                           label_fn=None if label else task.label,
                           image_scale=task.image_scale)
           for part in vtab.split_slices(task, split, sizes)]
  return concat_sources(parts, f'vtab/{task_name}:{split}',
                        [str(c) for c in range(task.num_classes)])


def digits_source(split: str, *, image_size: int = 32, data_dir: Optional[str] = None) -> Source:
  """The embedded digits dataset, built offline on first use (a few seconds)."""
  # Here: the digits builder brings scikit-learn, needed by this dataset alone.
  from vit_jax.data import digits  # pylint: disable=g-import-not-at-top
  builder = digits.builder(image_size, data_dir=data_dir)
  preparation.once(f'{builder.name}/{builder.builder_config.name}/{builder.version}',
                   str(builder.data_dir_root), builder.is_prepared,
                   lambda: builder.download_and_prepare(file_format='array_record'))
  # Anew: a builder made before another process prepared the data knows no splits.
  builder = digits.builder(image_size, data_dir=data_dir)
  return _builder_source(builder, split, 'image', 'label')


def dense_source(builder, split: str, target_key: str, *, image_key: str = 'image',
                 class_names: Sequence[str] = ()) -> Source:
  """A dense dataset's split: `{'image': encoded bytes, <target_key>: encoded label PNG bytes or
  a float32 map}` (tfds `scene_parse150` 'annotation', `nyu_depth_v2` 'depth', `digit_canvas`
  'segmentation' or 'depth'); the `segmentation` and `depth` pp ops read the target."""
  features = builder.info.features
  for key in (image_key, target_key):
    if key not in features:
      raise errors.UserError(f'{builder.name} has no feature {key!r}; features: '
                             f'{sorted(features)}.')
  sizes = {s: info.num_examples for s, info in builder.info.splits.items()}
  splits.slice_split(split, sizes)
  encoded = [k for k in (image_key, target_key) if isinstance(features[k], tfds.features.Image)]
  data = builder.as_data_source(split, decoders={k: tfds.decode.SkipDecoding() for k in encoded})
  target_encoded = target_key in encoded

  def read(index):
    example = data[int(index)]
    target = example[target_key]
    return example[image_key], target if target_encoded else np.asarray(target, np.float32)

  def lookup(index):
    image, target = tf.numpy_function(
        read, [index], (tf.string, tf.string if target_encoded else tf.float32), stateful=False)
    image.set_shape([])
    target.set_shape([] if target_encoded else [None, None])
    return {'image': image, target_key: target}

  return Source(name=f'{builder.name}:{split}', num_examples=len(data),
                class_names=list(class_names), lookup=lookup)


def digit_canvas_source(split: str, target: str, *, height: int = 32, width: int = 32,
                        data_dir: Optional[str] = None) -> Source:
  """The embedded digit canvases (data/digit_canvas.py), built offline on first use."""
  from vit_jax.data import digit_canvas  # pylint: disable=g-import-not-at-top  (scikit-learn)
  builder = digit_canvas.builder(height, width, data_dir=data_dir)
  preparation.once(f'{builder.name}/{builder.builder_config.name}/{builder.version}',
                   str(builder.data_dir_root), builder.is_prepared,
                   lambda: builder.download_and_prepare(file_format='array_record'))
  builder = digit_canvas.builder(height, width, data_dir=data_dir)
  names = digit_canvas.CLASS_NAMES if target == 'segmentation' else ()
  return dense_source(builder, split, target, class_names=names)


def folder_source(root: str, split: str, *, strict: bool = False) -> Source:
  """Images under `root` (`<class>/*` or `{train,val,test}/<class>/*`: see data/folders.py);
  `split` is a split name with an optional slice (`train[:50%]`). Classes are the sorted class
  folders. Every file is test-decoded once at startup: undecodable ones are skipped, counted and
  named in a warning, or raise when `strict`."""
  name = split.split('[', 1)[0]
  found = folders.drop_undecodable(folders.read_split(root, name), strict=strict)
  _, start, stop = splits.slice_split(split, {name: len(found.files)})
  paths = tf.constant(found.files[start:stop])
  label_table = tf.constant(found.labels[start:stop], tf.int32)

  def lookup(index):
    return {'image': tf.io.read_file(tf.gather(paths, index)),
            'label': tf.gather(label_table, index)}

  return Source(name=f'folder:{found.description}', num_examples=stop - start,
                class_names=found.class_names, lookup=lookup, skipped_files=found.skipped)


SYNTHETIC_EXAMPLES = 10_000


def synthetic_source(split: str, *, image_size: int = 256) -> Source:
  """Generated JPEGs, no download, no disk: a smoke run's data (configs/smoke.py). Example `i`
  is `image_size`-square noise whose brightness is its label, `i % 2` ('dark', 'bright'), so a
  run that trains shows it: the loss falls. Any split name reads the same 10,000 examples."""
  del split

  def lookup(index):
    index = tf.cast(index, tf.int32)
    label = index % 2
    noise = tf.random.stateless_uniform([image_size, image_size, 3], seed=tf.stack([index, 7]),
                                        minval=0, maxval=128, dtype=tf.int32)
    return {'image': tf.io.encode_jpeg(tf.cast(noise + 96 * label, tf.uint8)), 'label': label}
  return Source(name=f'synthetic:{image_size}px', num_examples=SYNTHETIC_EXAMPLES,
                class_names=('dark', 'bright'), lookup=lookup)


def from_config(data) -> Source:
  """A source from a config dict: `name` ('digits', 'digit_canvas', 'synthetic', 'folder' with
  `root`, 'vtab/<task>', or a tfds name), `split`, and optionally `data_dir`, `prepare`,
  `image_size` (digits, synthetic), `canvas` ((height, width) of digit_canvas), `strict`
  (folders), `target` (the per-pixel feature of a dense dataset: see `dense_source`)."""
  name, split = data['name'], data['split']
  if name == 'synthetic':
    if data.get('target'):
      raise errors.UserError('data.name="synthetic" has no per-pixel targets (data.target='
                             f'{data.get("target")!r}): dense runs need a dense dataset.')
    return synthetic_source(split, image_size=data.get('image_size') or 256)
  target = data.get('target')
  if name == 'digit_canvas':
    if target not in ('segmentation', 'depth'):
      raise errors.UserError(f'data.name="digit_canvas" needs data.target="segmentation" or '
                             f'"depth"; found {target!r}.')
    height, width = tuple(data.get('canvas') or (32, 32))
    return digit_canvas_source(split, target, height=height, width=width,
                               data_dir=data.get('data_dir'))
  if target:
    builder = prepared_builder(name, data.get('data_dir'), bool(data.get('prepare')))
    return dense_source(builder, split, target, image_key=data.get('image_key') or 'image')
  if name.startswith('vtab/'):
    return vtab_source(name[len('vtab/'):], split, data_dir=data.get('data_dir'))
  if name == 'digits':
    return digits_source(split, image_size=data.get('image_size') or 32,
                         data_dir=data.get('data_dir'))
  if name == 'folder':
    if not data.get('root'):
      raise errors.UserError('data.name="folder" needs data.root=<folder of <class>/ or '
                             '{train,val,test}/<class>/ images>.')
    return folder_source(data['root'], split, strict=bool(data.get('strict')))
  return tfds_source(name, split, data_dir=data.get('data_dir'),
                     prepare=bool(data.get('prepare')),
                     image_key=data.get('image_key') or 'image',
                     label_key=data.get('label_key') or 'label')
