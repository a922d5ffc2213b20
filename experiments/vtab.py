r"""VTAB-1k: fine-tune a checkpoint on each task (configs/vtab.py) and write the paper's table.

  python experiments/vtab.py --checkpoint=imagenet21k/ViT-B_16.npz --model_name=ViT-B_16 \
      --data_dir=/data/tfds --workdir=runs/vtab_b16 [--tasks=cifar100,clevr_count]

Writes `<workdir>/vtab.md` and `<workdir>/vtab.json`: the test accuracy per task, the natural /
specialized / structured means and their mean over the tasks that ran. Tasks whose dataset is
not prepared are listed with the `tfds build` command that prepares them; the others still run.
Each task trains in `<workdir>/<task>` and resumes there when restarted.
"""

import functools
import importlib.util
import json
import os
from typing import Optional, Sequence

from absl import app
from absl import flags

from vit_jax import storage
from vit_jax import cli
from vit_jax.data import sources
from vit_jax.data import vtab

# Table 2 of the paper: VTAB (19 tasks) mean of the fine-tuned models.
PAPER_MEAN = {'ViT-H/14 (JFT)': 77.63, 'ViT-L/16 (JFT)': 76.28, 'ViT-L/16 (I21k)': 72.72}

RECIPE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs',
                      'vtab.py')



@functools.cache
def _recipe_module():
  spec = importlib.util.spec_from_file_location('vtab_recipe', RECIPE)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def recipe(task: str):
  """configs/vtab.py:<task>."""
  return _recipe_module().get_config(task)


def task_config(task: str, checkpoint: str, model_name: str, data_dir: Optional[str],
                steps=None, batch_size=None, image_size=None):
  config = recipe(task)
  config.model_name, config.init_from = model_name, checkpoint
  config.data.data_dir = config.evals.test.data.data_dir = data_dir
  if steps:
    config.total_steps = steps
    config.lr.warmup_steps = min(config.lr.warmup_steps, steps // 5)
    config.checkpoint_every = steps
  if batch_size:
    config.batch_size = config.eval_batch_size = batch_size
  if image_size:
    config.image_size = image_size
    config.pp_train = config.evals.test.pp = _recipe_module().PP.format(size=image_size)
  return config


def missing_datasets(tasks: Sequence[str], data_dir: Optional[str]) -> dict[str, str]:
  """{task: the command that prepares its dataset} for tasks whose dataset is not prepared."""
  missing = {}
  for task in tasks:
    try:
      sources.vtab_source(task, 'val200', data_dir=data_dir)
    except sources.DatasetMissing:
      missing[task] = vtab.prepare_command(vtab.task(task), data_dir)
  return missing


def summarize(accuracies: dict[str, float], missing: dict[str, str]) -> dict:
  """Per-task accuracy, group means and their mean (over the tasks that ran)."""
  groups = {}
  for group in vtab.GROUPS:
    values = [a for t, a in accuracies.items() if vtab.TASKS[t].group == group]
    groups[group] = sum(values) / len(values) if values else None
  ran = [a for a in accuracies.values()]
  return {'tasks': accuracies, 'groups': groups,
          'mean': sum(ran) / len(ran) if ran else None,
          'complete': not missing and len(accuracies) == len(vtab.TASKS),
          'missing': missing, 'paper_mean': PAPER_MEAN}


def markdown(summary: dict) -> str:
  pct = lambda v: '-' if v is None else f'{100 * v:.2f}'  # pylint: disable=unnecessary-lambda-assignment
  lines = ['| group | task | test top-1 (%) |', '|---|---|---|']
  for group in vtab.GROUPS:
    for task in sorted(t for t in vtab.TASKS if vtab.TASKS[t].group == group):
      if task in summary['tasks']:
        lines.append(f'| {group} | {task} | {pct(summary["tasks"][task])} |')
  lines += ['', '| natural | specialized | structured | mean |', '|---|---|---|---|',
            '| ' + ' | '.join(pct(summary['groups'][g]) for g in vtab.GROUPS) +
            f' | {pct(summary["mean"])} |', '']
  if not summary['complete']:
    lines.append('Not all 19 tasks ran: the means are over the tasks above, not the VTAB score.')
  lines.append('The paper (Table 2), mean over the 19 tasks: ' + ', '.join(
      f'{k} {v:.2f}' for k, v in summary['paper_mean'].items()) + '.')
  if summary['missing']:
    lines += ['', 'Datasets not prepared (prepare them, then run again):', '']
    lines += [f'- {task}: `{command}`' for task, command in summary['missing'].items()]
  return '\n'.join(lines) + '\n'


def write(summary: dict, out_dir: str) -> None:
  """`vtab.json` and `vtab.md` into `out_dir` (a folder or an object-store URL)."""
  storage.write(storage.path(out_dir) / 'vtab.json', json.dumps(summary, indent=2))
  storage.write(storage.path(out_dir) / 'vtab.md', markdown(summary))


def main(argv):
  """Fine-tunes on each prepared task and writes the table."""
  del argv
  f = flags.FLAGS
  if not f.checkpoint or not f.workdir:
    raise app.UsageError('--checkpoint=<npz or workdir> and --workdir=<dir> are required.')
  from vit_jax.train import loop  # pylint: disable=g-import-not-at-top
  if not os.path.exists(f.checkpoint):
    raise ValueError(f'Checkpoint not found: {f.checkpoint}')
  for task in f.tasks:
    vtab.task(task)  # an unknown name fails before anything runs
  missing = missing_datasets(f.tasks, f.data_dir)
  for task, command in missing.items():
    print(f'{task}: dataset not prepared; skipped. Prepare it with: {command}')
  accuracies = {}
  for task in f.tasks:
    if task in missing:
      continue
    config = task_config(task, f.checkpoint, f.model_name, f.data_dir, f.steps,
                         f.batch_size, f.image_size)
    result = loop.train_and_evaluate(config, os.path.join(f.workdir, task))
    accuracies[task] = result['test/accuracy']
    print(f'{task}: test top-1 {100 * accuracies[task]:.2f}%', flush=True)
  summary = summarize(accuracies, missing)
  write(summary, f.workdir)
  print(markdown(summary))


if __name__ == '__main__':
  flags.DEFINE_string('checkpoint', None, 'Released .npz or one of our workdirs.')
  flags.DEFINE_string('model_name', 'ViT-B_16', 'The checkpoint\'s architecture.')
  flags.DEFINE_string('data_dir', None, 'tfds data directory.')
  flags.DEFINE_string('workdir', None, 'Where each task trains and the table goes.')
  flags.DEFINE_list('tasks', sorted(vtab.TASKS), 'VTAB tasks to run (default: all 19).')
  flags.DEFINE_integer('steps', None, 'Override the 2,500 steps (for a quick check).')
  flags.DEFINE_integer('batch_size', None, 'Override the batch of 512.')
  flags.DEFINE_integer('image_size', None, 'Override the 384px input.')
  cli.run(main)
