"""Recipes shrunk to the digits, trained and checked (tests/test_recipe_training*.py).

A recipe keeps its optimizer, schedule shape, weight decay, regularisation and augmentation as
written; only the model, the data and the number of steps are small. `train_and_check` says
what shows that it did not learn: the loss not falling below its start and below a constant
predictor's, the parameter norm or the decayed kernels' norm leaving a factor of 2 of their
start (a decay applied 400x too strongly takes the kernels to nothing), top-1 at chance."""

import importlib.util
import json
import math
import os
import re

import jax
import numpy as np
from PIL import Image

from vit_jax import param_names
from vit_jax.configs import common
from vit_jax.train import loop
from vit_jax.train import options as options_lib
from vit_jax.train import setup as setup_lib
from vit_jax.train import state as state_lib
from vit_jax.weights import workdir_params

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs')
STEPS = 300
# Recipes that need more steps to rank the classes at digits size: MAE fine-tuning regularises
# hard (drop path 0.3, mixup or CutMix, RandAugment, erasing, smoothing); ImageNet-21k's
# sigmoid loss starts each class at its prior and learns them one against all; LARS grows the
# linear probe's head (drawn at std 0.01) by at most 0.1% x lr of its norm a step.
STEPS_OF = {'mae_finetune': 800, 'pretrain_i21k': 600, 'mae_linprobe': 800}


def recipe(name, arg):
  """configs/<name>.py's config (its default argument when `arg` is None)."""
  spec = importlib.util.spec_from_file_location(name, os.path.join(CONFIGS, f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config() if arg is None else module.get_config(arg)


def _digits_folder(root):
  """sklearn's digits as a folder of PNGs of several aspect ratios (for the NaFlex recipe)."""
  # sklearn's photographs and digits: imported only where they are read.
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  digits = datasets.load_digits()
  for split, indices in (('train', range(0, 1200)), ('val', range(1200, 1400))):
    for i in indices:
      folder = root / split / str(digits.target[i])
      folder.mkdir(parents=True, exist_ok=True)
      pixels = (digits.images[i] * 255 / 16).astype(np.uint8)
      size = ((16, 16), (20, 12), (12, 20))[i % 3]
      Image.fromarray(pixels).convert('RGB').resize(size).save(folder / f'{i}.png')
  return str(root)


def shrink(config, data_dir, tmp_path, steps=STEPS):
  """The recipe at digits size: model, data and steps small; the schedule's shape kept (warmup
  the same fraction of the run), every optimizer and regularisation field as written."""
  full_steps = options_lib.read_length(config).steps(1_281_167)
  if config.objective != 'dense':
    config.model_name = 'testing'
    config.model.update(patches={'size': (4, 4)}, hidden_size=32, dtype='float32', scan=False)
    config.model.transformer.update(mlp_dim=64, num_heads=2, num_layers=2)
    if config.model.representation_size:
      config.model.representation_size = 32
    if config.model.head_bias_init:  # -10 = log(1 / 21,843): each class's prior; now of 10
      config.model.head_bias_init = math.log(1 / 10)
    config.mae.update(decoder_width=32, decoder_depth=1, decoder_heads=2, decoder_mlp_dim=64,
                      mask_ratio=config.mae.mask_ratio)
    config.image_size = 16
  config.update(batch_size=32, eval_batch_size=40, total_epochs=None, total_steps=steps,
                log_every=10, checkpoint_every=steps)
  config.lr.warmup_steps = round(steps * config.lr.warmup_steps / full_steps)
  if config.num_classes is not None and config.objective != 'dense':
    config.num_classes = 10
  config.evals = type(config)()
  if config.objective == 'dense':
    config.data.data_dir = data_dir
    return config
  if config.naflex.sequences:  # NaFlex: a folder of digits at several aspect ratios
    config.data.root = _digits_folder(tmp_path / 'folder')
    config.pp_train = config.pp_train.replace('naflex(16, 256)', 'naflex(4, 20)')
    config.naflex.sequences = 16
    return config
  config.data.update(name='digits', split='train', data_dir=data_dir, image_size=32)
  config.pp_train = re.sub(r'decode_jpeg_and_inception_crop\(\d+', 'decode|inception_crop(16',
                           config.pp_train)
  config.pp_train = re.sub(r'resize\(\d+\)', 'resize(16)', config.pp_train)
  if config.objective == 'mae':
    return config
  test = common.data_source('digits', 'test[:200]')
  test.update(data_dir=data_dir, image_size=32)
  # The recipe's own input values (ImageNet's mean and std where it normalises).
  values = ('normalize()' if 'normalize' in config.pp_train + config.pp_device
            else 'value_range(-1, 1)')
  config.evals.eval = common.classification_eval(
      test, f'decode|resize(16)|{values}|onehot|keep("image", "labels")', every=steps)
  return config


def constant_loss(config) -> float:
  """The loss of the best input-blind predictor: uniform over 10 classes (softmax), 0.1 per
  class (sigmoid), zero (MAE's normalised pixels), 11 equal classes (segmentation)."""
  if config.objective == 'mae':
    return 1.0
  if config.objective == 'dense':
    return math.log(11)
  if config.loss == 'sigmoid_xent':
    return -(math.log(0.1) + 9 * math.log(0.9))
  return math.log(10)




def kernel_norm(params) -> float:
  """The norm of what weight decay acts on (wd_mask: the kernels)."""
  return math.sqrt(sum(float(np.sum(np.square(np.asarray(leaf, np.float64))))
                       for path, leaf in param_names.flatten(params).items()
                       if path.endswith('/kernel')))


def train_and_check(config, workdir) -> list[str]:
  """Trains `config` in `workdir`; what shows it did not learn (empty: it learned)."""
  fresh = None
  if not config.init_from:  # from scratch: the kernels the run starts from, as it makes them
    built = setup_lib.from_config(config)
    state, _ = state_lib.create(built.objective.train_model, built.tx,
                                image_shape=built.options.data.image_shape, seed=config.seed,
                                mesh=built.mesh, preset='dp')
    fresh = kernel_norm(jax.device_get(state.params))
  result = loop.train_and_evaluate(config, workdir)
  rows = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'),
                                            encoding='utf-8') if line.strip()]
  train = [row for row in rows if 'train/loss' in row]
  losses = [row['train/loss'] for row in train]
  norms = [row['train/param_norm'] for row in train]
  start, end = float(np.mean(losses[:2])), float(np.mean(losses[-3:]))
  kernels = kernel_norm(workdir_params.read(workdir)[1]) / fresh if fresh else 1.0
  accuracy = result.get('eval/accuracy')
  print((config.objective, f'loss {start:.3f} -> {end:.3f} (constant '
         f'{constant_loss(config):.3f})', f'norm x{norms[-1] / norms[0]:.3f}',
         f'kernels x{kernels:.3f}', f'top-1 {accuracy}'))
  problems = []
  if not 0.5 < norms[-1] / norms[0] < 2.0:
    problems.append(f'parameter norm {norms[0]:.2f} -> {norms[-1]:.2f}')
  if not 0.5 < kernels < 2.0:  # a decay 400x too strong takes the kernels to nothing
    problems.append(f'kernel norm x{kernels:.3f} of the fresh model\'s')
  if not end < 0.98 * start:  # with mixup or CutMix its floor is high
    problems.append(f'loss {start:.3f} -> {end:.3f} does not fall')
  if not end < constant_loss(config):  # below the best input-blind predictor
    problems.append(f'loss {end:.3f} above the constant predictor\'s {constant_loss(config):.3f}')
  if accuracy is not None and not accuracy > 0.2:  # chance: 0.1
    problems.append(f'top-1 {accuracy:.3f}')
  return problems
