r"""Startup cost of an image-folder source: listing, the held-out split, and the corrupt-file check.

Writes a synthetic folder of small JPEGs (100 classes; a few files truncated, so they must be
found and skipped), then times `vit_jax.data.sources.folder_source` the way a run starts: listing
and splitting (`folders.read_split`) and the decode check of every file
(`folders.drop_undecodable`, one process per core), against the same check in one process
measured on a subset in the same run. Goal (the fine-tuning issue): 100k files in under 60 s on 2 cores.

  python experiments/folder_startup.py [--num_images=100000] [--root=/tmp/folder] \
      [--out=experiments/results]
"""

import argparse
import json
import os
import platform
import tempfile
import time

import numpy as np
from PIL import Image

from vit_jax.data import folders

NUM_CLASSES = 100
CORRUPT_EVERY = 1000  # one truncated file per this many


def write_folder(root: str, num_images: int, size: int = 64, seed: int = 0) -> int:
  """`root/class_XX/NNNNNN.jpg`; returns how many were truncated on purpose."""
  rng = np.random.default_rng(seed)
  base = [Image.fromarray(rng.integers(0, 255, (size, size, 3), np.uint8)) for _ in range(16)]
  encoded = []
  for image in base:
    path = os.path.join(root, 'tmp.jpg')
    os.makedirs(root, exist_ok=True)
    image.save(path, quality=90)
    with open(path, 'rb') as f:
      encoded.append(f.read())
    os.remove(path)
  corrupt = 0
  for i in range(num_images):
    folder = os.path.join(root, f'class_{i % NUM_CLASSES:02d}')
    if i < NUM_CLASSES:
      os.makedirs(folder, exist_ok=True)
    data = encoded[i % len(encoded)]
    if i % CORRUPT_EVERY == CORRUPT_EVERY - 1:
      data, corrupt = data[:len(data) // 2], corrupt + 1
    with open(os.path.join(folder, f'{i:06d}.jpg'), 'wb') as f:
      f.write(data)
  return corrupt


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--num_images', type=int, default=100_000)
  parser.add_argument('--root', default=None, help='reuse or create the folder here')
  parser.add_argument('--subset', type=int, default=5000, help='files in the one-thread baseline')
  parser.add_argument('--out', default=os.path.join(os.path.dirname(__file__), 'results'))
  args = parser.parse_args()
  root = args.root or tempfile.mkdtemp(prefix='folder_startup_')
  if not os.path.isdir(os.path.join(root, 'class_00')):
    start = time.perf_counter()
    corrupt = write_folder(root, args.num_images)
    print(f'wrote {args.num_images} JPEGs ({corrupt} truncated) in '
          f'{time.perf_counter() - start:.1f} s')
  expected_corrupt = args.num_images // CORRUPT_EVERY

  start = time.perf_counter()
  split = folders.read_split(root, 'train')
  listing = time.perf_counter() - start
  start = time.perf_counter()
  checked = folders.drop_undecodable(split, strict=False)
  checking = time.perf_counter() - start
  start = time.perf_counter()
  for path in split.files[:args.subset]:
    folders._is_decodable(path)  # pylint: disable=protected-access
  serial_per_file = (time.perf_counter() - start) / min(args.subset, len(split.files))

  total = listing + checking
  rows = {
      'files': len(split.files), 'skipped': len(checked.skipped),
      'expected_skipped_in_train': None, 'listing_and_split_s': round(listing, 2),
      'decode_check_s': round(checking, 2), 'startup_s': round(total, 2),
      'one_thread_check_s_extrapolated': round(serial_per_file * len(split.files), 2),
      'processes': os.cpu_count(), 'cores': os.cpu_count(), 'goal_s': 60, 'machine': platform.processor(),
  }
  held_out = folders.read_split(root, 'val')
  rows['expected_skipped_in_train'] = expected_corrupt - sum(
      1 for f in held_out.files if int(os.path.basename(f)[:6]) % CORRUPT_EVERY
      == CORRUPT_EVERY - 1)
  print(json.dumps(rows, indent=2))
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, 'folder_startup.json'), 'w', encoding='utf-8') as f:
    json.dump(rows, f, indent=2)
  ratio = rows['one_thread_check_s_extrapolated'] / max(checking, 1e-9)
  with open(os.path.join(args.out, 'folder_startup.md'), 'w', encoding='utf-8') as f:
    f.write(f'''# Image-folder startup ({len(split.files):,} training files of 64x64 JPEGs, {os.cpu_count()} cores)

`python experiments/folder_startup.py --num_images={args.num_images}`

| step | seconds |
|---|---|
| list {NUM_CLASSES} class folders, hash names, hold out 10% per class | {listing:.1f} |
| decode check of every file ({os.cpu_count()} processes) | {checking:.1f} |
| **startup total** (goal: under 60 s) | **{total:.1f}** |
| the same check in this one process (extrapolated from {args.subset} files, same run) | {rows["one_thread_check_s_extrapolated"]:.1f} ({ratio:.2f}x the parallel check) |

Truncated files found and skipped: {len(checked.skipped)} (expected {rows["expected_skipped_in_train"]} in the training part).
''')


if __name__ == '__main__':
  main()
