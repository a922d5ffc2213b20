r"""Does the digits MAE pay off? `configs/digits.py:mae` as a user runs it, seed by seed.

For each seed:
- the recipe's MAE run (its default steps unless `--steps`), and the same recipe after one step
  (the random encoder);
- (a) on the 450 test digits with a fixed mask: the masked-patch loss against the zero
  predictor's (1.0 under norm_pix_loss) and the mean target patch's;
- (b) the run's own 10-shot probes (big_vision's protocol) against the random encoder's;
- (c) `configs/digits.py` fine-tuned on 10% of the training labels (`train[:10%]`: 135 digits)
  from the MAE encoder (`init_from`) and from scratch, the same steps; top-1 on the test split.

  python experiments/mae_payoff.py [--seeds=0,1,2] [--steps=<recipe default>]
      # -> experiments/results/mae_payoff.{md,json}

tests/test_mae_payoff.py runs `payoff` on the recipe's defaults.
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

FINETUNE_SPLIT = 'train[:10%]'
FINETUNE_STEPS = 300
EVAL_PP = 'decode|resize(20)|central_crop(16)|value_range(-1, 1)|keep("image")'


def recipe(objective):
  spec = importlib.util.spec_from_file_location('digits_recipe',
                                                os.path.join(ROOT, 'configs', 'digits.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(objective)


def with_data(config, data_dir):
  config.data.data_dir = data_dir
  for evaluator in config.evals.values():
    if 'data' in evaluator:
      evaluator.data.data_dir = data_dir
    for entry in evaluator.get('datasets', {}).values():
      entry.data_dir = data_dir
  return config


def mae_config(data_dir, seed, steps=None):
  config = with_data(recipe('mae'), data_dir)
  config.seed = seed
  if steps is not None:
    config.update(total_steps=steps, checkpoint_every=steps)
    config.lr.warmup_steps = min(config.lr.warmup_steps, max(steps // 5, 1))
  config.evals.fewshot.every = config.total_steps  # at the end only
  return config


def finetune_config(data_dir, seed, init_from=None):
  """configs/digits.py on 10% of the labels, from `init_from` (an MAE workdir) or scratch."""
  config = with_data(recipe('classification'), data_dir)
  config.data.split = FINETUNE_SPLIT
  config.update(seed=seed, total_steps=FINETUNE_STEPS, checkpoint_every=FINETUNE_STEPS,
                init_from=init_from)
  config.lr.warmup_steps = FINETUNE_STEPS // 10
  config.evals.eval.every = FINETUNE_STEPS
  del config.evals['fewshot']
  return config


def _batch(data_dir, split):
  source = sources.digits_source(split, data_dir=data_dir, image_size=16)
  dataset, _ = pipeline.eval_dataset(source, preprocess.parse(EVAL_PP),
                                     local_batch=source.num_examples)
  return jnp.asarray(next(dataset.as_numpy_iterator())['image'])


def losses(config, workdir, data_dir):
  """{model, zero, mean_patch}: masked-patch losses on the test digits, the mask fixed by each
  image's position; the mean patch is the training images' mean target patch."""
  images, train = _batch(data_dir, 'test'), _batch(data_dir, 'train')
  size, norm_pix = config.model.patches.size[0], config.mae.norm_pix_loss
  patches = mae_lib.patchify(train, size)
  if norm_pix:
    patches = (patches - patches.mean(-1, keepdims=True)) / jnp.sqrt(
        patches.var(-1, keepdims=True, ddof=1) + 1e-6)
  objective = setup_lib.from_config(config).objective
  _, params = workdir_params.read(workdir)
  pred, mask = objective.reconstruct(params, images, jnp.arange(len(images), dtype=jnp.uint32))
  loss = lambda p: float(mae_lib.reconstruction_loss(p, images, mask, size, norm_pix))  # pylint: disable=unnecessary-lambda-assignment
  return {'model': loss(pred), 'zero': loss(jnp.zeros_like(pred)),
          'mean_patch': loss(jnp.broadcast_to(patches.mean(0), pred.shape))}


def payoff(seed, root, data_dir, steps=None, finetune=True):
  """One seed's row: (a) the losses, (b) 10-shot of the MAE and the random encoder, (c) top-1
  of the fine-tune from the MAE encoder and from scratch (unless `finetune=False`)."""
  row, start = {'seed': seed}, time.time()
  pretrained = os.path.join(root, f'mae_{seed}')
  config = mae_config(data_dir, seed, steps)
  row['steps'] = config.total_steps
  row['mae_10shot'] = loop.train_and_evaluate(config, pretrained)['fewshot/digits_10shot']
  row['losses'] = losses(config, pretrained, data_dir)
  row['random_10shot'] = loop.train_and_evaluate(
      mae_config(data_dir, seed, 1), os.path.join(root, f'random_{seed}'))['fewshot/digits_10shot']
  for name, init_from in (('finetuned', pretrained), ('scratch', None)) if finetune else ():
    row[f'{name}_top1'] = loop.train_and_evaluate(
        finetune_config(data_dir, seed, init_from),
        os.path.join(root, f'{name}_{seed}'))['eval/accuracy']
  row['seconds'] = round(time.time() - start, 1)
  return row


def spread(values):
  return max(values) - min(values)


def verdict(rows):
  """What the issue asks of the rows, as (claim, holds) pairs."""
  margins = [r['mae_10shot'] - r['random_10shot'] for r in rows]
  largest_spread = max(spread([r['mae_10shot'] for r in rows]),
                       spread([r['random_10shot'] for r in rows]))
  return [
      ('(a) masked loss under the zero and the mean-patch predictors, every seed',
       all(r['losses']['model'] < min(r['losses']['zero'], r['losses']['mean_patch'])
           for r in rows)),
      (f'(b) 10-shot over the random encoder by more than the seed spread: smallest margin '
       f'{min(margins):.3f}, largest spread {largest_spread:.3f}', min(margins) > largest_spread),
      ('(c) 10% labels: fine-tuned from MAE beats scratch, every seed fine-tuned',
       all(r['finetuned_top1'] > r['scratch_top1'] for r in rows if 'finetuned_top1' in r)),
  ]


def _shown(value):
  return '-' if value is None else f'{value:.3f}'


def table(rows):
  lines = [f'# The digits MAE pays off ({rows[0]["steps"]} MAE steps; fine-tunes: '
           f'{FINETUNE_STEPS} steps on {FINETUNE_SPLIT})', '',
           '| seed | masked loss | zero predictor | mean patch | 10-shot MAE | 10-shot random '
           'encoder | top-1 fine-tuned from MAE | top-1 from scratch | seconds |',
           '|---|---|---|---|---|---|---|---|---|']
  for r in rows:
    loss = r['losses']
    lines.append(f"| {r['seed']} | {loss['model']:.3f} | {loss['zero']:.3f} | "
                 f"{loss['mean_patch']:.3f} | {r['mae_10shot']:.3f} | {r['random_10shot']:.3f} | "
                 f"{_shown(r.get('finetuned_top1'))} | {_shown(r.get('scratch_top1'))} | "
                 f"{r['seconds']} |")
  lines += [''] + [f'- {claim}: {"holds" if holds else "FAILS"}' for claim, holds in verdict(rows)]
  return '\n'.join(lines) + '\n'


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--seeds', default='0,1,2')
  parser.add_argument('--steps', type=int, default=None, help='MAE steps; the recipe\'s if unset')
  parser.add_argument('--out', default=os.path.join(ROOT, 'experiments', 'results'))
  args = parser.parse_args()
  rows = []
  with tempfile.TemporaryDirectory() as root:
    for seed in (int(s) for s in args.seeds.split(',')):
      rows.append(payoff(seed, root, os.path.join(root, 'data'), args.steps))
      print(json.dumps(rows[-1]), flush=True)
  suffix = '' if args.steps is None else f'_{args.steps}'
  with open(os.path.join(args.out, f'mae_payoff{suffix}.json'), 'w', encoding='utf-8') as f:
    json.dump({'rows': rows, 'verdict': verdict(rows)}, f, indent=1)
  with open(os.path.join(args.out, f'mae_payoff{suffix}.md'), 'w', encoding='utf-8') as f:
    f.write(table(rows))
  print(table(rows))


if __name__ == '__main__':
  main()
