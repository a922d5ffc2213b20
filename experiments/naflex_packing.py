r"""Square resize vs NaFlex padding vs packing, at one token budget, in one run.

A folder of generated images with aspect ratios from 1:3 to 3:1 and sides from 24 to 512 pixels
(a third of them far below the budget, kept at their size) is written as PNG files and read back.
Each way turns it into training sequences of `--seq_len` tokens (16-pixel patches):
  square:  every image resized to the square of seq_len patches (aspect ratio lost), 1 per sequence
  padded:  NaFlex, each image at its own grid under the budget, 1 per sequence, padding masked
  packed:  the same grids, packed first-fit into sequences of seq_len tokens (up to 8 images)
and trains with the trainer's own step (classification objective, SGD, float32): per step the
share of tokens that carry an image, images per step, seconds per step and images/s. The
attention-mask cost is the square step fed as one-image sequences (a mask of all ones) against
the plain square step.

  python experiments/naflex_packing.py [--images=192] [--seq_len=64] [--sequences=32]
      # -> experiments/results/naflex_packing_<backend>.{md,json}
"""

import argparse
import json
import os
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from vit_jax.data import naflex  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.objectives import classification  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.models import sequences  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.models import vit  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.train import step as step_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.train import state as state_lib  # pylint: disable=g-import-not-at-top,wrong-import-position

PATCH, CLASSES, SLOTS = 16, 10, 8


def write_folder(folder, count, seed=0):
  """PNG files of mixed aspect ratios (1:3 .. 3:1) and sizes; returns their paths."""
  rng = np.random.default_rng(seed)
  paths = []
  for i in range(count):
    aspect = float(np.exp(rng.uniform(np.log(1 / 3), np.log(3))))  # width / height
    longer = int(rng.choice([rng.integers(24, 96), rng.integers(96, 513)], p=[1 / 3, 2 / 3]))
    height, width = (longer, max(8, int(longer * aspect))) if aspect < 1 else (
        max(8, int(longer / aspect)), longer)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    path = os.path.join(folder, f'{i:04d}_{i % CLASSES}.png')
    Image.fromarray(image).save(path)
    paths.append(path)
  return paths


def model():
  return vit.VisionTransformer(
      num_classes=CLASSES, patches={'size': (PATCH, PATCH)}, hidden_size=192, classifier='gap',
      transformer={'num_layers': 4, 'mlp_dim': 768, 'num_heads': 3, 'dropout_rate': 0.0,
                   'attention_dropout_rate': 0.0})


def batches(images, labels, way, seq_len, num_sequences):
  """The run's batches of one way, each with its count of images and of image tokens."""
  side = int(np.sqrt(seq_len))
  out = []
  if way == 'square':
    for start in range(0, len(images) - num_sequences + 1, num_sequences):
      chunk = images[start:start + num_sequences]
      pixels = np.stack([naflex.resize(im, side * PATCH, side * PATCH) for im in chunk])
      batch = {'image': pixels.astype(np.float32) / 127.5 - 1,
               'labels': np.eye(CLASSES, dtype=np.float32)[labels[start:start + num_sequences]]}
      out.append((batch, len(chunk), len(chunk) * side * side))
  if way == 'square':
    return out
  # NaFlex: each image at its own grid; a batch packs the waiting images first-fit, in order,
  # looking ahead over a window; an image that finds no room waits for the next batch.
  grids = [naflex.budget_grid(*im.shape[:2], PATCH, seq_len) for im in images]
  patchified = [naflex.patchify(im, PATCH, g) for im, g in zip(images, grids)]
  onehot = np.eye(CLASSES, dtype=np.float32)[labels]
  slots = 1 if way == 'padded' else SLOTS
  waiting = list(range(len(images)))
  while waiting:
    window = waiting[:2 * num_sequences * slots]
    batch, placed = naflex.pack([patchified[i][0] for i in window],
                                [patchified[i][1] for i in window], [grids[i] for i in window],
                                num_sequences=num_sequences, seq_len=seq_len,
                                images_per_sequence=slots,
                                extras={'labels': [onehot[i] for i in window]})
    if len(window) == len(waiting) and (placed[:, 0] >= 0).all() and out:
      break  # the last, partial batch is left out for every way alike
    taken = {i for i, (s, _) in zip(window, placed) if s >= 0}
    waiting = [i for i in waiting if i not in taken]
    batch['patches'] = batch['patches'].astype(np.float32) / 127.5 - 1
    out.append((batch, len(taken), int(np.sum(batch['segments'] > 0))))
  return out


def time_steps(step, state, run_batches, repeats):
  """The median seconds of a step over `repeats` passes through the batches (after a compile)."""
  state, metrics = step(state, run_batches[0][0])
  jax.block_until_ready(metrics)
  times = []
  for _ in range(repeats):
    for batch, _, _ in run_batches:
      start = time.perf_counter()
      state, metrics = step(state, batch)
      jax.block_until_ready(metrics)
      times.append(time.perf_counter() - start)
  return float(np.median(times))


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--images', type=int, default=320)
  parser.add_argument('--seq_len', type=int, default=64)
  parser.add_argument('--sequences', type=int, default=32)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--out', default=os.path.join(ROOT, 'experiments', 'results'))
  args = parser.parse_args()

  with tempfile.TemporaryDirectory() as folder:
    paths = write_folder(folder, args.images)
    images = [np.asarray(Image.open(p).convert('RGB')) for p in paths]
  labels = np.asarray([int(os.path.basename(p)[5:-4]) for p in paths])
  side = int(np.sqrt(args.seq_len))
  net = model()
  tx = optax.sgd(0.01)
  state, _ = state_lib.create(net, tx, image_shape=(side * PATCH, side * PATCH, 3), seed=0,
                              mesh=mesh_lib.make_mesh((-1, 1, 1)), preset='dp')
  step = jax.jit(step_lib.make_train_step(classification.Classification(net), tx))

  rows = {}
  for way in ('square', 'padded', 'packed'):
    run_batches = batches(images, labels, way, args.seq_len, args.sequences)
    seconds = time_steps(step, state, run_batches, args.repeats)
    images_per_step = float(np.mean([n for _, n, _ in run_batches]))
    image_tokens = float(np.mean([t for _, _, t in run_batches]))
    rows[way] = {'steps': len(run_batches), 'images_per_step': images_per_step,
                 'image_token_share': image_tokens / (args.sequences * args.seq_len),
                 'seconds_per_step': seconds, 'images_per_second': images_per_step / seconds}
    print(way, rows[way], flush=True)

  # The mask's cost: the square batch as one-image sequences (every key visible).
  square = batches(images, labels, 'square', args.seq_len, args.sequences)
  as_sequences = []
  for batch, n, t in square:
    seqs = sequences.from_images(jnp.asarray(batch['image']), (PATCH, PATCH))
    as_sequences.append(({**{k: np.asarray(v) for k, v in seqs._asdict().items()},
                          'labels': batch['labels'][:, None]}, n, t))
  masked = time_steps(step, state, as_sequences, args.repeats)
  mask_cost = masked / rows['square']['seconds_per_step']

  result = {'backend': jax.default_backend(), 'device': str(jax.devices()[0]),
            'images': args.images, 'seq_len': args.seq_len, 'sequences_per_step': args.sequences,
            'patch': PATCH, 'model': 'width 192, 4 blocks, 3 heads, gap', 'ways': rows,
            'packed_vs_padded_images_per_second':
                rows['packed']['images_per_second'] / rows['padded']['images_per_second'],
            'packed_padding_share': 1 - rows['packed']['image_token_share'],
            'mask_step_ratio': mask_cost}
  os.makedirs(args.out, exist_ok=True)
  name = f'naflex_packing_{jax.default_backend()}'
  with open(os.path.join(args.out, name + '.json'), 'w', encoding='utf-8') as f:
    json.dump(result, f, indent=1)
  lines = [f'# NaFlex: square vs padded vs packed ({result["device"]})', '',
           f'{args.images} generated PNGs (aspect 1:3 to 3:1, sides 24 to 512 px), sequences of '
           f'{args.seq_len} tokens of {PATCH}x{PATCH} patches, {args.sequences} sequences per '
           f'step, {result["model"]}, SGD, float32.', '',
           '| way | steps | images/step | image tokens | padding | s/step | images/s |',
           '|---|---|---|---|---|---|---|']
  for way, row in rows.items():
    lines.append(f'| {way} | {row["steps"]} | {row["images_per_step"]:.1f} | '
                 f'{row["image_token_share"]:.1%} | {1 - row["image_token_share"]:.1%} | '
                 f'{row["seconds_per_step"]:.3f} | {row["images_per_second"]:.1f} |')
  lines += ['', f'Packed vs padded images/s: **{result["packed_vs_padded_images_per_second"]:.2f}x** '
            '(goal >= 1.3x); packed padding: '
            f'**{result["packed_padding_share"]:.1%}** (goal < 5%).',
            f'Attention-mask cost: the square step fed as one-image sequences takes '
            f'{mask_cost:.2f}x the plain square step.', '',
            'The square way distorts every aspect ratio and upsamples small images to the full '
            'budget; its images/s is the ceiling a fixed grid buys by spending the budget on '
            'every image.']
  with open(os.path.join(args.out, name + '.md'), 'w', encoding='utf-8') as f:
    f.write('\n'.join(lines) + '\n')
  print('\n'.join(lines))


if __name__ == '__main__':
  main()
