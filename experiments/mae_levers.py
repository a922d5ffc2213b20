r"""Why the digits MAE's features are weak: each lever trained and measured the same way.

One run per lever of `configs/digits.py:mae` (16 px digits, 4 px patches: 16 patches), each for
`--steps`, then on the 450 test digits with a fixed mask: the masked-patch loss against the two
trivial predictors (zero: 1.0 under norm_pix_loss; the mean target patch of the training
images), and the run's own few-shot probes (big_vision's protocol, 10 shots per class) on the
class token ('token') or on the mean of the patch tokens ('gap'). The random encoder is the same
recipe after one step. Each lever is predicted before it is measured (PREDICTED).

  python experiments/mae_levers.py [--steps=300] [--seeds=0] [--levers=baseline,gap,...]
      # -> experiments/results/mae_levers_<steps>.{md,json}
"""

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time

import jax.numpy as jnp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from vit_jax.data import pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.data import preprocess  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.data import sources  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.models import mae as mae_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.train import loop  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.train import setup as setup_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.weights import workdir_params  # pylint: disable=g-import-not-at-top,wrong-import-position

# lever -> (config fields over configs/digits.py:mae, what we expect before measuring)
LEVERS = {
    'baseline': ({}, 'the issue: few-shot below the random encoder'),
    'gap': ({'model.classifier': 'gap', 'model.class_token': True},
            'better: MAE trains the patch tokens; its class token only feeds the decoder'),
    'raw_pixels': ({'mae.norm_pix_loss': False},
                   'better loss vs trivial: 4 px digit patches are often near-constant, and '
                   'per-patch normalisation turns their noise into targets'),
    'mask_0.5': ({'mae.mask_ratio': 0.5}, 'better: 8 of 16 patches visible instead of 4'),
    'mask_0.25': ({'mae.mask_ratio': 0.25},
                  'worse than 0.5: with 12 of 16 patches visible the task is interpolation'),
    'gap_raw_pixels': ({'model.classifier': 'gap', 'model.class_token': True,
                        'mae.norm_pix_loss': False}, 'the two above together: best'),
}


def _recipe():
  spec = importlib.util.spec_from_file_location('digits_recipe',
                                                os.path.join(ROOT, 'configs', 'digits.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config('mae')


def _config(fields, data_dir, steps, seed):
  config = _recipe()
  for dotted, value in fields.items():
    node, _, leaf = dotted.rpartition('.')
    holder = config
    for key in node.split('.') if node else ():
      holder = holder[key]
    holder[leaf] = value
  config.data.data_dir = data_dir
  for entry in config.evals.fewshot.datasets.values():
    entry.data_dir = data_dir
  config.update(total_steps=steps, seed=seed, log_every=max(steps // 5, 1),
                checkpoint_every=steps)
  config.evals.fewshot.every = steps
  config.lr.warmup_steps = min(config.lr.warmup_steps, max(steps // 5, 1))
  return config


def _test_images(data_dir):
  source = sources.digits_source('test', data_dir=data_dir, image_size=16)
  dataset, _ = pipeline.eval_dataset(
      source, preprocess.parse('decode|resize(20)|central_crop(16)|value_range(-1, 1)|'
                               'keep("image")'), local_batch=source.num_examples)
  return jnp.asarray(next(dataset.as_numpy_iterator())['image'])


def _losses(config, workdir, images, mean_patch):
  """(model, zero predictor, mean-patch predictor) masked-patch losses, the mask fixed by the
  images' positions."""
  objective = setup_lib.from_config(config).objective
  _, params = workdir_params.read(workdir)
  pred, mask = objective.reconstruct(params, images, jnp.arange(len(images), dtype=jnp.uint32))
  norm_pix = config.mae.norm_pix_loss
  loss = lambda p: float(mae_lib.reconstruction_loss(p, images, mask, 4, norm_pix))  # pylint: disable=unnecessary-lambda-assignment
  return loss(pred), loss(jnp.zeros_like(pred)), loss(jnp.broadcast_to(mean_patch[norm_pix],
                                                                       pred.shape))


def _mean_patches(data_dir):
  """{norm_pix: the mean target patch of the training images}."""
  source = sources.digits_source('train', data_dir=data_dir, image_size=16)
  dataset, _ = pipeline.eval_dataset(
      source, preprocess.parse('decode|resize(20)|central_crop(16)|value_range(-1, 1)|'
                               'keep("image")'), local_batch=source.num_examples)
  patches = mae_lib.patchify(jnp.asarray(next(dataset.as_numpy_iterator())['image']), 4)
  normed = (patches - patches.mean(-1, keepdims=True)) / jnp.sqrt(
      patches.var(-1, keepdims=True, ddof=1) + 1e-6)
  return {False: patches.mean(0), True: normed.mean(0)}


def run(levers, steps, seeds, root):
  data_dir = os.path.join(root, 'data')
  images, means = _test_images(data_dir), _mean_patches(data_dir)
  rows = []
  for lever in levers:
    fields, predicted = LEVERS[lever]
    for seed in seeds:
      row = {'lever': lever, 'seed': seed, 'predicted': predicted}
      for name, count in (('trained', steps), ('random', 1)):
        config = _config(fields, data_dir, count, seed)
        workdir = os.path.join(root, f'{lever}_{seed}_{name}')
        start = time.time()
        result = loop.train_and_evaluate(config, workdir)
        row[f'{name}_10shot'] = result.get('fewshot/digits_10shot')
        row[f'{name}_s'] = round(time.time() - start, 1)
        if name == 'trained':
          row['loss'], row['zero_loss'], row['mean_patch_loss'] = _losses(config, workdir,
                                                                        images, means)
      rows.append(row)
      print(json.dumps(row), flush=True)
  return rows


def _table(rows, steps):
  lines = [f'# The digits MAE, lever by lever ({steps} steps, 10-shot on the test digits)', '',
           '| lever | seed | masked loss | zero predictor | mean patch | 10-shot trained | '
           '10-shot random encoder | predicted |', '|---|---|---|---|---|---|---|---|']
  shown = lambda v: 'none' if v is None else f'{v:.3f}'  # pylint: disable=unnecessary-lambda-assignment
  for r in rows:
    lines.append(f"| {r['lever']} | {r['seed']} | {shown(r['loss'])} | {shown(r['zero_loss'])} | "
                 f"{shown(r['mean_patch_loss'])} | {shown(r['trained_10shot'])} | "
                 f"{shown(r['random_10shot'])} | {r['predicted']} |")
  return '\n'.join(lines) + '\n'


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--steps', type=int, default=300)
  parser.add_argument('--seeds', default='0')
  parser.add_argument('--levers', default=','.join(LEVERS))
  parser.add_argument('--out', default=os.path.join(ROOT, 'experiments', 'results'))
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as root:
    rows = run(args.levers.split(','), args.steps, [int(s) for s in args.seeds.split(',')], root)
  name = os.path.join(args.out, f'mae_levers_{args.steps}')
  with open(f'{name}.json', 'w', encoding='utf-8') as f:
    json.dump({'steps': args.steps, 'rows': rows}, f, indent=1)
  with open(f'{name}.md', 'w', encoding='utf-8') as f:
    f.write(_table(rows, args.steps))


if __name__ == '__main__':
  main()
