"""The trainer, top to bottom: config -> mesh -> input -> model -> state -> step -> loop.

One trainer for pretraining and fine-tuning. It resumes from the newest valid checkpoint in the
workdir, saves on SIGTERM/SIGINT before exiting, stops with the step's number on a non-finite
loss, evaluates on the whole eval split, and writes metrics, TensorBoard events and a PNG.
"""

import dataclasses
import json
import math
import os
import shutil
from typing import Any, Optional

from absl import logging
import flax
import jax
import ml_collections
import numpy as np

from vit_jax import checkpoint as npz_checkpoint
from vit_jax import checkpointing
from vit_jax import load
from vit_jax import metrics as metrics_lib
from vit_jax import models
from vit_jax.configs import models as model_configs
from vit_jax.data import mixup as mixup_lib
from vit_jax.data import pipeline
from vit_jax.data import preprocess
from vit_jax.data import sources
from vit_jax.parallel import mesh as mesh_lib
from vit_jax.parallel import partitioning
from vit_jax.train import optimizer
from vit_jax.train import state as state_lib
from vit_jax.train import step as step_lib


@dataclasses.dataclass
class Setup:
  """Everything derived from the config before any array exists."""

  config: ml_collections.ConfigDict
  model: Any
  model_config: ml_collections.ConfigDict
  mesh: jax.sharding.Mesh
  local_batch: Optional[int]
  total_steps: int
  train_source: Optional[sources.Source]
  eval_source: Optional[sources.Source]
  tx: Any
  schedule: Any
  abstract_state: Any
  shardings: Any


def model_config_from(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The variant's fields with `config.model` overrides applied (nested for `transformer`)."""
  model_config = model_configs.get_config(config.model_name)
  overrides = config.get('model') or {}
  overrides = overrides.to_dict() if hasattr(overrides, 'to_dict') else dict(overrides)
  transformer = overrides.pop('transformer', {})
  for key, value in transformer.items():
    if key not in model_config.transformer:
      raise ValueError(f'Unknown field model.transformer.{key}; known: '
                       f'{sorted(model_config.transformer)}.')
    model_config.transformer[key] = value
  allowed = {f.name for f in dataclasses.fields(models.VisionTransformer)} - {
      'num_classes', 'parent', 'name'}
  for key, value in overrides.items():
    if key not in allowed:
      raise ValueError(f'Unknown field model.{key}; VisionTransformer takes {sorted(allowed)}.')
    model_config[key] = value
  return model_config


def _num_steps(config, num_examples: Optional[int]) -> int:
  if config.get('total_steps'):
    return int(config.total_steps)
  if config.get('total_epochs') and num_examples:
    return max(1, math.ceil(config.total_epochs * num_examples / config.batch_size))
  raise ValueError('Set total_steps, or total_epochs with a training dataset.')


def build_setup(config: ml_collections.ConfigDict, *, with_train_data: bool = True,
                devices=None) -> Setup:
  """Mesh, sources, model, optimizer and the abstract (sharded) state; fails early and clearly.

  Without training data (restoring for eval or export) the batch is not checked and `devices`
  may restrict the mesh (e.g. to one device).
  """
  mesh = mesh_lib.make_mesh(tuple(config.mesh), devices)
  local_batch = None
  if with_train_data:
    local_batch = pipeline.local_batch_size(config.batch_size, jax.process_count(),
                                            jax.device_count())
  model_config = model_config_from(config)
  pipeline.check_image_size(config.image_size, model_config)
  model = models.VisionTransformer(num_classes=config.num_classes, **model_config)
  train_source = sources.from_config(config.data) if with_train_data else None
  eval_source = sources.from_config(config.eval_data) if config.get('eval_data') else None
  total_steps = _num_steps(config, train_source.num_examples if train_source else None)
  image_shape = (config.image_size, config.image_size, 3)
  abstract_params = jax.eval_shape(lambda: model.init(
      jax.random.key(0), np.zeros((1, *image_shape), np.float32), train=False)['params'])
  tx, schedule = optimizer.build(config, abstract_params, total_steps)
  abstract_state, shardings = state_lib.abstract(
      model, tx, image_shape=image_shape, mesh=mesh, layout=config.layout,
      ema=bool(config.get('ema_decay')))
  return Setup(config, model, model_config, mesh, local_batch, total_steps, train_source,
               eval_source, tx, schedule, abstract_state, shardings)


def _pretrained_params(setup: Setup, init_params: Any) -> Any:
  """`config.init_from` (a released/big_vision .npz or one of our workdirs) mapped onto the model."""
  path = setup.config.init_from
  return npz_checkpoint.adapt_params(load.load_model(path).params, init_params, source=path,
                                     dont_load=tuple(setup.config.get('dont_load') or ()))


def _check_workdir_config(workdir: str, config_dict: dict, overwrite: bool) -> None:
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    return
  with open(path, encoding='utf-8') as f:
    saved = json.load(f)
  if saved == config_dict:
    return
  if overwrite:
    logging.warning('Overwriting the run in %s (its config differs).', workdir)
    for name in ('checkpoints', 'tensorboard', 'metrics.jsonl', 'config.json', 'curves.png'):
      target = os.path.join(workdir, name)
      if os.path.isdir(target):
        shutil.rmtree(target)
      elif os.path.exists(target):
        os.remove(target)
    return
  flat_saved = flax.traverse_util.flatten_dict(saved, sep='.')
  flat_new = flax.traverse_util.flatten_dict(config_dict, sep='.')
  changed = sorted(k for k in set(flat_saved) | set(flat_new)
                   if flat_saved.get(k) != flat_new.get(k))
  raise ValueError(f'{workdir} holds a run with a different config (fields: {changed}). Use '
                   'another --workdir, or --overwrite to start it afresh.')


def evaluate_params(config, mesh, eval_source, params: Any, eval_step) -> dict[str, float]:
  """Loss and accuracy over the whole eval split (padded batches, masked sums)."""
  eval_local = pipeline.local_batch_size(config.get('eval_batch_size') or config.batch_size,
                                         jax.process_count(), jax.device_count())
  dataset, _ = pipeline.eval_dataset(eval_source, preprocess.parse(config.pp_eval),
                                     local_batch=eval_local, process_index=jax.process_index(),
                                     process_count=jax.process_count())
  totals = None
  for batch in pipeline.eval_batches(dataset, mesh_lib.batch_sharding(mesh)):
    sums = eval_step(params, batch)
    totals = sums if totals is None else jax.tree.map(lambda a, b: a + b, totals, sums)
  totals = jax.device_get(totals)
  count = float(totals['count'])
  return {'eval/loss': float(totals['loss_sum']) / count,
          'eval/accuracy': float(totals['correct']) / count, 'eval/examples': count}


def _config_dict(config) -> dict:
  return json.loads(config.to_json_best_effort())


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       overwrite: bool = False) -> dict[str, Any]:
  """Trains (or resumes) in `workdir`; returns the final metrics and how the run ended."""
  lead = jax.process_index() == 0
  config_dict = _config_dict(config)
  if lead:
    os.makedirs(workdir, exist_ok=True)
    _check_workdir_config(workdir, config_dict, overwrite)
  setup = build_setup(config)
  if lead:
    with open(os.path.join(workdir, 'config.json'), 'w', encoding='utf-8') as f:
      json.dump(config_dict, f, indent=2)

  # State: the newest valid checkpoint, else a fresh (or pretrained) initialisation.
  ckpt = checkpointing.Checkpointer(workdir, max_to_keep=config.get('keep_checkpoints', 3),
                                    keep_period=config.get('keep_period'))
  restored = ckpt.restore(setup.abstract_state)
  ema = bool(config.get('ema_decay'))
  if restored is not None:
    start_step, state, data_state, _ = restored
    if lead:
      print(f'Resumed from the checkpoint at step {start_step}.', flush=True)
  else:
    start_step, data_state = 0, {'position': 0}
    image_shape = (config.image_size, config.image_size, 3)
    state, _ = state_lib.create(setup.model, setup.tx, image_shape=image_shape, seed=config.seed,
                                mesh=setup.mesh, layout=config.layout, ema=ema)
    if config.get('init_from'):
      params = _pretrained_params(setup, jax.device_get(state.params))
      state = state_lib.with_params(params, setup.tx, setup.shardings, seed=config.seed, ema=ema)

  # Input: this process's stream, continuing at the saved position.
  train_pp = preprocess.parse(config.pp_train)
  make_dataset = lambda position: pipeline.train_dataset(  # pylint: disable=g-long-lambda
      setup.train_source, train_pp, local_batch=setup.local_batch, seed=config.seed,
      position=position, process_index=jax.process_index(), process_count=jax.process_count())
  batches = pipeline.TrainIterator(make_dataset, local_batch=setup.local_batch,
                                   sharding=mesh_lib.batch_sharding(setup.mesh),
                                   position=int(data_state['position']))

  # Steps.
  mixer = None
  mix = config.get('mixup') or {}
  if mix.get('kind'):
    kinds = {'mixup': mixup_lib.mixup, 'cutmix': mixup_lib.cutmix}
    if mix['kind'] not in kinds:
      raise ValueError(f"mixup.kind={mix['kind']!r}; expected one of {sorted(kinds)}.")
    base = kinds[mix['kind']]
    mixer = mixup_lib.per_shard(lambda r, x, y: base(r, x, y, mix.get('alpha', 0.2)),
                                setup.mesh, mesh_lib.BATCH_AXES)
  train_step = step_lib.jit_train_step(step_lib.make_train_step(
      setup.model, setup.tx, loss=config.loss, label_smoothing=config.get('label_smoothing', 0.0),
      micro_batches=config.get('micro_batches', 1), ema_decay=config.get('ema_decay'),
      schedule=setup.schedule, mixer=mixer), setup.mesh, setup.shardings, config.layout)
  eval_step = None
  if setup.eval_source is not None:
    eval_step = step_lib.jit_eval_step(step_lib.make_eval_step(setup.model, setup.mesh,
                                                               loss=config.loss),
                                       setup.mesh, setup.shardings.params, config.layout)

  writer = metrics_lib.MetricWriter(workdir, enabled=lead)
  progress = metrics_lib.Progress(setup.total_steps, start_step, config.batch_size,
                                  config.log_every, enabled=lead)
  stop = checkpointing.StopSignal()
  pending: list[tuple[int, dict]] = []
  outcome, final = 'completed', {}

  def flush():
    """Host sync: checks every pending step was finite, logs their mean."""
    if not pending:
      return
    fetched = jax.device_get([m for _, m in pending])
    for (number, _), values in zip(pending, fetched):
      if values['finite'] != 1.0:
        raise FloatingPointError(
            f'Non-finite loss or gradient at step {number} (loss={values["loss"]}, '
            f'grad_norm={values["grad_norm"]}). The state was not updated by that step and '
            f'checkpoints up to step {ckpt.steps()[-1] if ckpt.steps() else 0} are intact; '
            'lower the learning rate or check the input.')
    scalars = {f'train/{k}': float(np.mean([v[k] for v in fetched]))
               for k in fetched[0] if k != 'finite'}
    writer.write(pending[-1][0], scalars)
    progress.update(pending[-1][0], scalars)
    pending.clear()

  def save(step, wait=False):
    flush()
    if step in ckpt.steps():  # e.g. re-running a finished run
      return
    ckpt.save(step, state, batches.get_state(), config_dict, wait=wait)

  def run_eval(step):
    params = state.ema_params if ema else state.params
    result = evaluate_params(config, setup.mesh, setup.eval_source, params, eval_step)
    writer.write(step, result)
    progress.note(f'step {step}: eval accuracy {result["eval/accuracy"]:.4f}, '
                  f'loss {result["eval/loss"]:.4f} on {int(result["eval/examples"])} examples')
    return result

  try:
    step = start_step
    while step < setup.total_steps:
      state, step_metrics = train_step(state, next(batches))
      step += 1
      pending.append((step, step_metrics))
      if step % config.log_every == 0:
        flush()
      if stop.requested or ckpt.reached_preemption(step):
        save(step, wait=True)
        outcome = f'preempted ({stop.signal_name or "cluster"}) at step {step}'
        break
      if step % config.checkpoint_every == 0 and step < setup.total_steps:
        save(step)
      if eval_step is not None and config.get('eval_every') and step % config.eval_every == 0 \
          and step < setup.total_steps:
        final = run_eval(step)
    if outcome == 'completed':
      save(setup.total_steps, wait=True)
      if eval_step is not None:
        final = run_eval(setup.total_steps)
  finally:
    stop.restore_handlers()
    batches.close()
    ckpt.close()
    progress.close()
    writer.close()
  plot = None
  if lead:
    plot = metrics_lib.plot_curves(writer.jsonl_path, os.path.join(workdir, 'curves.png'))
  return {'outcome': outcome, 'step': step, 'plot': plot, **final}


def evaluate(config: ml_collections.ConfigDict, checkpoint_path: str) -> dict[str, float]:
  """Evaluates a workdir's newest checkpoint or a released .npz on `config.eval_data`.

  A workdir brings its own model (its saved config); an .npz's architecture is read off its
  shapes, its position embeddings resampled to `config.image_size`.
  """
  if not config.get('eval_data'):
    raise ValueError('--mode=eval needs config.eval_data (name, split).')
  loaded = load.load_model(checkpoint_path, image_size=config.image_size)
  pipeline.check_image_size(config.image_size, loaded.model_config)
  mesh = mesh_lib.make_mesh(tuple(config.mesh))
  shardings = partitioning.param_shardings(loaded.params, mesh, config.layout)
  params = jax.device_put(loaded.params, shardings)
  eval_step = step_lib.jit_eval_step(
      step_lib.make_eval_step(loaded.model, mesh, loss=config.loss), mesh, shardings,
      config.layout)
  return evaluate_params(config, mesh, sources.from_config(config.eval_data), params, eval_step)
