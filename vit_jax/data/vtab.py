"""VTAB-1k (Zhai et al., 2019): the 19 tasks as the ViT paper evaluates them.

Each task names its tfds dataset, how its label is read (a feature, or a mapping of the
structured tasks' annotations: counts, distances, positions, orientations, angles) and its
train / val / test parts. The VTAB-1k splits take the first 800 examples of the train part
(`train800`), the first 200 of the val part (`val200`), both (`train800val200`, what the final
runs train on) and the whole test part (`test`).

As a data source: `name='vtab/<task>'`, `split` one of SPLITS (see sources.from_config).
"""

import dataclasses
from typing import Any, Callable, Optional, Union

import numpy as np

from vit_jax import errors
from vit_jax.data import splits

GROUPS = ('natural', 'specialized', 'structured')
SPLITS = ('train800', 'val200', 'train800val200', 'test')
Example = dict[str, Any]


def _below(thresholds, value) -> int:
  """Index of the largest threshold below `value` (VTAB's binning of distances)."""
  return int(np.max(np.flatnonzero(np.asarray(thresholds) < value)))


def clevr_count(example: Example) -> int:
  """3 to 10 objects -> classes 0..7."""
  return len(example['objects']['size']) - 3


def clevr_distance(example: Example) -> int:
  """Depth of the closest object, binned at 8, 8.5, 9, 9.5 and 10 -> 6 classes."""
  depth = float(np.min(np.asarray(example['objects']['pixel_coords'])[:, 2]))
  return _below([0.0, 8.0, 8.5, 9.0, 9.5, 10.0, 100.0], depth)


def kitti_distance(example: Example) -> int:
  """Depth of the closest vehicle (Car, Van, Truck): < 8 m, 8-20 m, > 20 m, none -> 4 classes."""
  types = np.asarray(example['objects']['type'])
  depths = np.asarray(example['objects']['location']).reshape(-1, 3)[:, 2][types < 3]
  closest = float(np.min(np.concatenate([depths, [1000.0]])))
  return _below([-100.0, 8.0, 20.0, 999.0], closest)


def binned(feature: str, original: int, classes: int) -> Callable[[Example], int]:
  """`feature` with `original` values in `classes` equal bins (dSprites position, orientation)."""
  def label(example: Example) -> int:
    return int(np.floor(float(example[feature]) / (original / classes)))
  label.__name__ = f'{feature}_in_{classes}_bins'
  return label


@dataclasses.dataclass(frozen=True)
class Task:
  group: str
  tfds_name: str
  num_classes: int
  train: str  # the train part, as a tfds split slice
  val: str
  test: str
  label: Union[str, Callable[[Example], int]] = 'label'  # a feature, or a function of the example
  image_scale: Optional[int] = None  # dSprites: binary pixels, times 255


TASKS = {
    # Natural.
    'caltech101': Task('natural', 'caltech101', 102, 'train[:2754]', 'train[2754:]', 'test'),
    'cifar100': Task('natural', 'cifar100', 100, 'train[:45000]', 'train[45000:]', 'test'),
    'dtd': Task('natural', 'dtd', 47, 'train', 'validation', 'test'),
    'oxford_flowers102': Task('natural', 'oxford_flowers102', 102, 'train', 'validation', 'test'),
    'oxford_iiit_pet': Task('natural', 'oxford_iiit_pet', 37, 'train[:2944]', 'train[2944:]',
                            'test'),
    'svhn': Task('natural', 'svhn_cropped', 10, 'train[:65931]', 'train[65931:]', 'test'),
    'sun397': Task('natural', 'sun397/tfds', 397, 'train', 'validation', 'test'),
    # Specialized.
    'patch_camelyon': Task('specialized', 'patch_camelyon', 2, 'train', 'validation', 'test'),
    'eurosat': Task('specialized', 'eurosat/rgb', 10, 'train[:60%]', 'train[60%:80%]',
                    'train[80%:]'),
    'resisc45': Task('specialized', 'resisc45', 45, 'train[:60%]', 'train[60%:80%]',
                     'train[80%:]'),
    'diabetic_retinopathy': Task('specialized', 'diabetic_retinopathy_detection/btgraham-300', 5,
                                 'train', 'validation', 'test'),
    # Structured.
    'clevr_count': Task('structured', 'clevr', 8, 'train[:90%]', 'train[90%:]', 'validation',
                        clevr_count),
    'clevr_distance': Task('structured', 'clevr', 6, 'train[:90%]', 'train[90%:]', 'validation',
                           clevr_distance),
    'dmlab': Task('structured', 'dmlab', 6, 'train', 'validation', 'test'),
    'kitti_distance': Task('structured', 'kitti', 4, 'train', 'validation', 'test',
                           kitti_distance),
    'dsprites_location': Task('structured', 'dsprites', 16, 'train[:80%]', 'train[80%:90%]',
                              'train[90%:]', binned('label_x_position', 32, 16), 255),
    'dsprites_orientation': Task('structured', 'dsprites', 16, 'train[:80%]', 'train[80%:90%]',
                                 'train[90%:]', binned('label_orientation', 40, 16), 255),
    'smallnorb_azimuth': Task('structured', 'smallnorb', 18, 'train', 'test[:50%]', 'test[50%:]',
                              'label_azimuth'),
    'smallnorb_elevation': Task('structured', 'smallnorb', 9, 'train', 'test[:50%]',
                                'test[50%:]', 'label_elevation'),
}


def task(name: str) -> Task:
  if name not in TASKS:
    raise errors.UserError(f'Unknown VTAB task {name!r}; expected one of {sorted(TASKS)}.')
  return TASKS[name]


def split_slices(task_: Task, split: str, sizes: dict[str, int]) -> list[str]:
  """The tfds slices (resolved to example counts) that make up a VTAB-1k split."""
  def first(part: str, count: Optional[int]) -> str:
    name, start, stop = splits.slice_split(part, sizes)
    stop = stop if count is None else min(stop, start + count)
    return f'{name}[{start}:{stop}]'

  if split not in SPLITS:
    raise errors.UserError(f'Unknown VTAB split {split!r}; expected one of {SPLITS}.')
  return {'train800': [first(task_.train, 800)], 'val200': [first(task_.val, 200)],
          'train800val200': [first(task_.train, 800), first(task_.val, 200)],
          'test': [first(task_.test, None)]}[split]


def prepare_command(task_: Task, data_dir: Optional[str]) -> str:
  where = f' --data_dir={data_dir}' if data_dir else ''
  return f'tfds build {task_.tfds_name} --file_format=array_record{where}'
