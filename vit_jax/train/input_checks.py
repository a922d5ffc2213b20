"""What a run's input must hand the step, checked on the built pipeline's element spec before
anything trains: images and labels of the right kind for the device preprocessing, the model and
the objective; and the class count its training data decides."""

import numpy as np

from vit_jax import errors
from vit_jax.data import sources
from vit_jax.train import options as options_lib


def check_host_output(spec: dict, device_pp, needs_labels: bool, naflex=None,
                       targets: dict = None) -> None:
  """pp_train must hand the device preprocessing uint8 images, and a model float ones; and
  labels when the objective learns them. A NaFlex run's naflex op gives float patches. A dense
  run's per-pixel `targets` ({key: (shape, dtype)}) come at the image's size."""
  if naflex is not None:
    if 'patches' not in spec or spec['patches'].dtype.name != 'float32':
      raise errors.UserError('config.pp_train must end its image ops with value_range/normalize '
                             'then naflex(patch_size, max_patches): float patches; it produces '
                             f'{ {k: v.dtype.name for k, v in spec.items()} }.')
    if needs_labels and 'labels' not in spec:
      raise errors.UserError(f'config.pp_train must produce "labels" (end it with onehot) for '
                             f'this objective; it produces {sorted(spec)}.')
    return
  image = spec.get('image')
  if image is None:
    raise errors.UserError(f'config.pp_train must produce an "image"; it produces {sorted(spec)}.')
  if needs_labels and 'labels' not in spec:
    raise errors.UserError(f'config.pp_train must produce "labels" (end it with onehot) for '
                           f'this objective; it produces {sorted(spec)}.')
  if device_pp and image.dtype.name != 'uint8':
    raise errors.UserError(f'config.pp_device={device_pp.spec!r} needs uint8 images but '
                           f'config.pp_train ends with {image.dtype.name} ones; move value_range/'
                           'normalize from pp_train to pp_device.')
  for key, (shape, dtype) in (targets or {}).items():
    found = spec.get(key)
    if found is None or tuple(found.shape[1:]) != tuple(shape[1:]):
      raise errors.UserError(
          f'config.pp_train must produce "{key}" maps of the image size {tuple(shape[1:])} '
          f'(end it with a crop to config.image_size and keep "{key}"); it produces '
          f'{ {k: tuple(v.shape[1:]) for k, v in spec.items()} }.')
    if found.dtype.name != np.dtype(dtype).name:
      raise errors.UserError(f'config.pp_train gives "{key}" as {found.dtype.name}; expected '
                             f'{np.dtype(dtype).name} (the {key} op makes it).')
  if not device_pp and image.dtype.name == 'uint8':
    raise errors.UserError('config.pp_train ends with uint8 images and config.pp_device is empty; '
                           'end pp_train with value_range(-1, 1) or set --config.pp_device='
                           '"value_range(-1, 1)".')


def class_count(start: options_lib.Start, train_source: sources.Source) -> int:
  """`num_classes` unset (None) takes the training source's class count (an image folder's
  class folders); a folder whose count disagrees with a set one is refused."""
  found = train_source.num_classes
  if start.num_classes is None:
    if not found:
      raise errors.UserError(
          f'config.num_classes is unset and {train_source.name} names no classes; '
          'set --config.num_classes.')
    return found
  if start.source.get('name') == 'folder' and start.num_classes != found:
    raise errors.UserError(
        f'config.num_classes={start.num_classes} but {train_source.name} has '
        f'{found} class folders; drop --config.num_classes to take them from it.')
  return start.num_classes
