"""Image folders as labelled splits: the layouts we read, held-out validation, corrupt files.

Two layouts:
- `root/<class>/*.jpg`: one pool of images; split `train` is all of it but a held-out slice,
  `val` (or `validation`) is that slice;
- `root/{train,val,test}/<class>/*`: a folder per split (`validation` also names `val`); without a
  validation folder, `val` is held out of `train` as above.
Class names are the sorted class folders of the training images; a split's class folders must
be among them. The held-out slice takes `HOLDOUT_FRACTION` of each class (at least one image of
a class with two or more): the files whose names hash lowest (sha1), so the same files on every
machine, copy and run.
"""

import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
from typing import Optional, Sequence

import jax
from PIL import Image

from vit_jax import errors
from vit_jax.data import images
from vit_jax.data import preparation

HOLDOUT_FRACTION = 0.1
_PARALLEL_FROM = 4000  # files; below it, worker start-up (about a second) costs more than it saves
SPLIT_FOLDERS = {'train': ('train',), 'val': ('val', 'validation'),
                 'validation': ('val', 'validation'), 'test': ('test',)}


@dataclasses.dataclass
class FolderSplit:
  files: list[str]
  labels: list[int]
  class_names: list[str]
  skipped: list[str]  # undecodable files left out
  description: str  # where the files came from, for messages


def _subdirs(path: str) -> list[str]:
  return sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))


def _class_files(directory: str, class_names: Sequence[str]) -> dict[str, list[str]]:
  return {name: sorted(os.path.join(directory, name, f)
                       for f in os.listdir(os.path.join(directory, name)) if images.is_image_file(f))
          for name in class_names}


def _holdout(files: Sequence[str]) -> set[str]:
  if len(files) < 2:
    return set()
  count = max(1, round(HOLDOUT_FRACTION * len(files)))
  key = lambda path: hashlib.sha1(os.path.basename(path).encode()).hexdigest()  # pylint: disable=unnecessary-lambda-assignment
  return set(sorted(files, key=key)[:count])


def _is_decodable(path: str) -> bool:
  try:
    with Image.open(path) as image:
      image.draft('RGB', (64, 64))  # JPEG: decode at reduced scale, still reads every block
      image.load()
    return True
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
    return False


def _decodable_chunk(files: Sequence[str]) -> list[bool]:
  return [_is_decodable(path) for path in files]


def check_decodable(files: Sequence[str], processes: Optional[int] = None) -> list[bool]:
  """Whether each file decodes. Decoding small images is bound by Python (threads measured
  slower than one), so large folders are checked by `processes` worker processes (default:
  one per core; spawned, so no TensorFlow or JAX state is forked)."""
  processes = processes or os.cpu_count() or 1
  if processes == 1 or len(files) < _PARALLEL_FROM:
    return _decodable_chunk(files)
  chunk = -(-len(files) // (processes * 8))
  chunks = [files[i:i + chunk] for i in range(0, len(files), chunk)]
  context = multiprocessing.get_context('spawn')
  with concurrent.futures.ProcessPoolExecutor(processes, mp_context=context) as pool:
    return [ok for part in pool.map(_decodable_chunk, chunks) for ok in part]


def read_split(root: str, split_name: str) -> FolderSplit:
  """The files and labels of `split_name` ('train', 'val'/'validation', 'test', or a folder)."""
  if not os.path.isdir(root):
    raise errors.MissingFile(f'Image folder not found: {root}')
  top = _subdirs(root)
  split_layout = any(d in ('train', 'val', 'validation', 'test') for d in top)
  train_dir = os.path.join(root, 'train') if split_layout else root
  if split_layout and not os.path.isdir(train_dir):
    raise errors.UserError(f'{root} has split folders {top} but no train/ folder (class names come '
                           'from it).')
  class_names = _subdirs(train_dir)
  if len(class_names) < 2:
    raise errors.UserError(f'{train_dir} holds {len(class_names)} class folder(s) '
                           f'{class_names}; classification needs at least 2 (<class>/*.jpg).')
  wanted = SPLIT_FOLDERS.get(split_name, (split_name,))
  found = [d for d in wanted if split_layout and d in top]
  held_out = split_name in ('train', 'val', 'validation') and not any(
      d in top for d in SPLIT_FOLDERS['val'])
  if split_name != 'train' and not found and not held_out:
    raise errors.UserError(f'Split {split_name!r} not found in {root}: expected a folder '
                           f'{" or ".join(wanted)}/; found: {top}.')
  if found and split_name != 'train':
    directory = os.path.join(root, found[0])
    extra = sorted(set(_subdirs(directory)) - set(class_names))
    if extra:
      raise errors.UserError(f'{directory} has class folders {extra} that {train_dir} lacks.')
    per_class = _class_files(directory, [c for c in class_names
                                         if os.path.isdir(os.path.join(directory, c))])
    description = directory
  else:
    per_class = _class_files(train_dir, class_names)
    if held_out:
      keep_held_out = split_name != 'train'
      held = {c: _holdout(fs) for c, fs in per_class.items()}
      per_class = {c: [f for f in fs if (f in held[c]) == keep_held_out]
                   for c, fs in per_class.items()}
      description = (f'{train_dir} ({"held-out " if keep_held_out else "all but the held-out "}'
                     f'{HOLDOUT_FRACTION:.0%} per class)')
    else:
      description = train_dir
  files = [f for c in class_names for f in per_class.get(c, [])]
  labels = [i for i, c in enumerate(class_names) for _ in per_class.get(c, [])]
  if not files:
    raise errors.UserError(
        f'No images ({", ".join(images.IMAGE_EXTENSIONS)}) found in {description} '
        '(<class>/<image>).')
  return FolderSplit(files, labels, class_names, [], description)


def drop_undecodable(split: FolderSplit, *, strict: bool) -> FolderSplit:
  """The split without the files that do not decode (counted and named), or a ValueError. With
  several processes, process 0 decodes every file and hands the verdict to the others."""

  def scan() -> str:
    return json.dumps({'count': len(split.files), 'bad': [
        i for i, ok in enumerate(check_decodable(split.files)) if not ok]})

  verdict = json.loads(preparation.agreed(f'decode check of {split.description}', scan))
  if verdict['count'] != len(split.files):
    raise errors.UserError(f'{split.description} holds {len(split.files)} images on process '
                           f'{jax.process_index()} but {verdict["count"]} on process 0: a folder '
                           'local to each host must hold the same files.')
  bad = set(verdict['bad'])
  decodable = [i not in bad for i in range(len(split.files))]
  skipped = [path for path, ok in zip(split.files, decodable) if not ok]
  if not skipped:
    return split
  message = (f'{len(skipped)} of {len(split.files)} images in {split.description} cannot be '
             f'decoded: ' + ', '.join(skipped[:20]) + (' ...' if len(skipped) > 20 else ''))
  if strict:
    raise errors.UserError(message)
  logging.warning('%s (skipped)', message)
  kept = [(f, l) for f, l, ok in zip(split.files, split.labels, decodable) if ok]
  return FolderSplit([f for f, _ in kept], [l for _, l in kept], split.class_names, skipped,
                     split.description)
