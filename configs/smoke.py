"""Any recipe's smoke run: its model, optimizer and train step on generated data, no download.

  python -m vit_jax.main --config=configs/smoke.py:i1k_s16 --workdir=workdirs/smoke
  python -m vit_jax.main --config=configs/smoke.py:finetune:oxford_iiit_pet --workdir=workdirs/smoke_pets

The argument is `<recipe>[:<its argument>]` (configs/<recipe>.py). The recipe's training data
becomes `data.name='synthetic'` (vit_jax/data/sources.py: JPEG noise whose brightness is its
label, at 1.15 x the recipe's image size so that its crops apply), its evaluators and
`init_from` are dropped, and it runs 50 steps of batch 64 (`--config.batch_size` for more).
What it shows on a new machine: the install, the devices, the recipe's step compiling and
fitting in memory, and its loss falling (dark vs bright is learnt in tens of steps).
"""

import importlib.util
import os

import ml_collections

from vit_jax.configs import common
from vit_jax.configs import sources

STEPS = 50


def _recipe_module(name: str):
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f'{name}.py')
  if name == 'smoke' or not os.path.exists(path):
    raise ValueError(f'configs/smoke.py:<recipe>[:<argument>] needs a recipe of configs/; '
                     f'found {name!r}.')
  spec = importlib.util.spec_from_file_location(f'recipe_{name}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def source(arg: str = 'digits') -> sources.Source:
  return sources.ours(f'a smoke run of configs/{arg.partition(":")[0]}.py on generated data: '
                      'nothing to match')


def get_config(arg: str = 'digits'):
  name, _, recipe_arg = arg.partition(':')
  module = _recipe_module(name)
  config = module.get_config(recipe_arg) if recipe_arg else module.get_config()
  if config.get('objective') == 'dense':
    raise ValueError('configs/smoke.py: dense recipes need per-pixel targets, which generated '
                     'data does not have; smoke-test them with configs/dense.py:digits_*.')
  config.data = common.data_source('synthetic', 'train')
  config.data.image_size = round(1.15 * config.image_size)
  config.evals = ml_collections.ConfigDict()
  config.init_from = None
  config.batch_size = 64
  config.update(total_steps=STEPS, log_every=10, checkpoint_every=STEPS)
  if 'total_epochs' in config:  # a recipe that counts epochs: the smoke run counts steps
    config.total_epochs = 0
  config.lr.warmup_steps = min(config.lr.warmup_steps, STEPS // 5)
  return config
