r"""Does DeiT's distillation pay off on the digits? The recipes as a user runs them, seed by seed.

The teacher is `configs/digits.py` (the README's main job). Per seed, the same student (the
digits ViT with DeiT's distillation token and head) is trained twice for the same steps:
`configs/digits.py:distillation` from the teacher (hard distillation, DeiT's default), and on
the labels alone (classification; both heads learn the labels). Top-1 on the test digits, and
how often each student agrees with the teacher.

  python experiments/deit_payoff.py [--seeds=0,1,2] [--steps=<recipe default>]
      # -> experiments/results/deit_payoff.{md,json}
"""

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, 'experiments'))
import mae_payoff  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.data import pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.data import preprocess  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.data import sources  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.train import loop  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.weights import trained_model  # pylint: disable=g-import-not-at-top,wrong-import-position


def student_config(data_dir, seed, teacher=None, steps=None):
  """The digits student: distilled from `teacher`, or (None) on the labels alone."""
  config = mae_payoff.recipe('distillation')
  mae_payoff.with_data(config, data_dir)
  if teacher is None:
    config.objective = 'classification'  # the same model (its two heads), the labels alone
  else:
    config.distill.teacher = teacher
  config.seed = seed
  if steps is not None:
    config.update(total_steps=steps, checkpoint_every=steps)
  config.evals.eval.every = config.total_steps
  del config.evals['fewshot']
  return config


def _predictions(workdir, data_dir):
  source = sources.digits_source('test', data_dir=data_dir, image_size=16)
  dataset, _ = pipeline.eval_dataset(source, preprocess.parse(mae_payoff.EVAL_PP),
                                     local_batch=source.num_examples)
  images = next(dataset.as_numpy_iterator())['image']
  loaded = trained_model.load(workdir)
  return np.argmax(np.asarray(loaded.model.apply({'params': loaded.params}, images,
                                                 train=False)), -1)


def payoff(seed, root, data_dir, teacher, steps=None):
  row, start = {'seed': seed}, time.time()
  teacher_top = _predictions(teacher, data_dir)
  for name, source in (('distilled', teacher), ('labels_only', None)):
    workdir = os.path.join(root, f'{name}_{seed}')
    config = student_config(data_dir, seed, source, steps)
    row['steps'] = config.total_steps
    row[f'{name}_top1'] = loop.train_and_evaluate(config, workdir)['eval/accuracy']
    row[f'{name}_agrees'] = float(np.mean(_predictions(workdir, data_dir) == teacher_top))
  row['seconds'] = round(time.time() - start, 1)
  return row


def train_teacher(root, data_dir):
  config = mae_payoff.with_data(mae_payoff.recipe('classification'), data_dir)
  config.evals.eval.every = config.total_steps
  del config.evals['fewshot']
  workdir = os.path.join(root, 'teacher')
  return workdir, loop.train_and_evaluate(config, workdir)['eval/accuracy']


def table(rows, teacher_top1):
  lines = [f'# DeiT distillation on the digits ({rows[0]["steps"]} student steps; teacher: '
           f'configs/digits.py, top-1 {teacher_top1:.3f})', '',
           '| seed | top-1 distilled | top-1 labels alone | agrees with teacher: distilled | '
           'labels alone | seconds |', '|---|---|---|---|---|---|']
  for r in rows:
    lines.append(f"| {r['seed']} | {r['distilled_top1']:.3f} | {r['labels_only_top1']:.3f} | "
                 f"{r['distilled_agrees']:.3f} | {r['labels_only_agrees']:.3f} | {r['seconds']} |")
  wins = sum(r['distilled_top1'] > r['labels_only_top1'] for r in rows)
  lines += ['', f'- distilled beats labels alone in {wins} of {len(rows)} seeds']
  return '\n'.join(lines) + '\n'


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--seeds', default='0,1,2')
  parser.add_argument('--steps', type=int, default=None, help="students' steps; the recipe's "
                      'if unset')
  parser.add_argument('--out', default=os.path.join(ROOT, 'experiments', 'results'))
  args = parser.parse_args()
  rows = []
  with tempfile.TemporaryDirectory() as root:
    data_dir = os.path.join(root, 'data')
    teacher, teacher_top1 = train_teacher(root, data_dir)
    print(json.dumps({'teacher_top1': teacher_top1}), flush=True)
    for seed in (int(s) for s in args.seeds.split(',')):
      rows.append(payoff(seed, root, data_dir, teacher, args.steps))
      print(json.dumps(rows[-1]), flush=True)
  suffix = '' if args.steps is None else f'_{args.steps}'
  with open(os.path.join(args.out, f'deit_payoff{suffix}.json'), 'w', encoding='utf-8') as f:
    json.dump({'teacher_top1': teacher_top1, 'rows': rows}, f, indent=1)
  with open(os.path.join(args.out, f'deit_payoff{suffix}.md'), 'w', encoding='utf-8') as f:
    f.write(table(rows, teacher_top1))
  print(table(rows, teacher_top1))


if __name__ == '__main__':
  main()
