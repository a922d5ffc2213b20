r"""A tfds dataset prepared in TFRecord (tfds' default for years) made readable by index, in place.

  python -m vit_jax.data.to_array_record --dataset_version_dir=/data/tfds/imagenet2012/5.1.0

Every `*.tfrecord-XXXXX-of-YYYYY` shard is copied record for record, in order, into the
`*.array_record-XXXXX-of-YYYYY` shard beside it, and `dataset_info.json` gains `array_record` as
an alternative file format; the TFRecord files stay. Records are copied byte for byte (the
serialized examples are not parsed), so what tfds reads from either format is the same, example
for example. `tfds convert_format` does the same, but needs Apache Beam installed.
"""

import glob
import json
import os

from absl import flags

from vit_jax import errors
from vit_jax import cli

_DIR = flags.DEFINE_string('dataset_version_dir', None,
                           'A prepared dataset version, e.g. /data/tfds/imagenet2012/5.1.0.')


def convert(dataset_version_dir: str) -> int:
  """Writes the ArrayRecord twin of every TFRecord shard; returns how many records it copied."""
  # TensorFlow and array_record: this command's alone, not the package's import.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  info_path = os.path.join(dataset_version_dir, 'dataset_info.json')
  if not os.path.isfile(info_path):
    raise errors.MissingFile(f'{dataset_version_dir} is not a prepared tfds dataset version (no '
                             'dataset_info.json).')
  with open(info_path, encoding='utf-8') as f:
    info = json.load(f)
  shards = sorted(glob.glob(os.path.join(dataset_version_dir, '*.tfrecord-*-of-*')))
  if not shards:
    raise errors.UserError(f'{dataset_version_dir} holds no TFRecord shards (*.tfrecord-*-of-*).')
  copied = 0
  for shard in shards:
    target = shard.replace('.tfrecord-', '.array_record-')
    writer = array_record_module.ArrayRecordWriter(target + '.tmp', 'group_size:1')
    for record in tf.data.TFRecordDataset(shard).as_numpy_iterator():
      writer.write(record)
      copied += 1
    writer.close()
    os.replace(target + '.tmp', target)
  formats = set(info.get('alternativeFileFormats', [])) | {'array_record'}
  info['alternativeFileFormats'] = sorted(formats - {info.get('fileFormat', 'tfrecord')})
  with open(info_path + '.tmp', 'w', encoding='utf-8') as f:
    json.dump(info, f, indent=2)
  os.replace(info_path + '.tmp', info_path)
  return copied


def main(argv):
  del argv
  if not _DIR.value:
    raise errors.UserError('--dataset_version_dir=<prepared dataset version folder> is required.')
  copied = convert(_DIR.value)
  print(f'{copied} records copied to ArrayRecord shards in {_DIR.value}.')


if __name__ == '__main__':
  cli.run(main)
