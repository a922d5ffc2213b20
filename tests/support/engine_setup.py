"""Shared tiny model, optimizer config and batches for the engine tests (and the multi-host worker)."""

import flax
import jax
from jax.experimental import multihost_utils
from jax.sharding import PartitionSpec as P
import jax.numpy as jnp
import numpy as np

from vit_jax import models
from vit_jax.objectives import classification
from vit_jax.parallel import partitioning
from vit_jax.parallel import mesh as mesh_lib
from vit_jax.train import optimizer
from vit_jax.train import options
from vit_jax.train import state as state_lib
from vit_jax.train import step as step_lib

MODEL = dict(model_name='tiny', patches={'size': (4, 4)}, hidden_size=16,
             transformer=dict(mlp_dim=32, num_heads=4, num_layers=2, dropout_rate=0.0,
                              attention_dropout_rate=0.0),
             classifier='token', representation_size=None)
IMAGE_SHAPE = (16, 16, 3)
NUM_CLASSES = 5


def classifier(vit):
  """The supervised objective around a bare model: what `make_train_step` trains."""
  return classification.Classification(vit)


def opt_config(**overrides) -> options.Optimizer:
  """Adam with warmup, cosine decay, decoupled decay and clipping; `overrides` of config fields."""
  fields = dict(optim=dict(name='adam'), lr=dict(base=1e-2, warmup_steps=1, schedule='cosine'),
                wd=1e-4, wd_style='schedule_scaled', grad_clip_norm=1.0)
  return options.optimizer_with(**{**fields, **overrides})


def under_rules(step, mesh, preset):
  """`step` called inside the run's context (mesh and axis rules), as the loop calls it."""
  def call(*args):
    with partitioning.use(mesh, preset):
      return step(*args)
  return call


def model(**overrides):
  return models.VisionTransformer(num_classes=NUM_CLASSES, **{**MODEL, **overrides})


def batches(num_steps, global_batch=16, seed=0):
  """The same random batch `num_steps` times: a loss that must fall as the model fits it."""
  rng = np.random.default_rng(seed)
  batch = {'image': rng.uniform(-1, 1, (global_batch, *IMAGE_SHAPE)).astype(np.float32),
           'labels': np.eye(NUM_CLASSES, dtype=np.float32)[rng.integers(0, NUM_CLASSES,
                                                                        global_batch)]}
  return [{k: v.copy() for k, v in batch.items()} for _ in range(num_steps)]


def abstract_params(vit):
  return jax.eval_shape(lambda: vit.init(jax.random.key(0), jnp.zeros((1, *IMAGE_SHAPE)),
                                         train=False)['params'])


def train(mesh_sizes, num_steps=4, preset='fsdp_tp', devices=None, micro_batches=1,
          local_batches=None, **model_overrides):
  """Runs `num_steps` GSPMD steps; returns (losses, final params as numpy)."""
  vit = model(**model_overrides)
  mesh = mesh_lib.make_mesh(mesh_sizes, devices)
  tx, schedule = optimizer.build(opt_config(), abstract_params(vit), total_steps=10)
  state, shardings = state_lib.create(vit, tx, image_shape=IMAGE_SHAPE, seed=0, mesh=mesh,
                                      preset=preset)
  step = under_rules(step_lib.jit_train_step(
      step_lib.make_train_step(classifier(vit), tx, step_lib.StepOptions(
          schedule=schedule, micro_batches=micro_batches)),
      shardings, mesh), mesh, preset)
  sharding = mesh_lib.batch_sharding(mesh)
  losses = []
  for i, batch in enumerate(batches(num_steps)):
    if local_batches is not None:  # multi-host: each process passes its own slice
      batch = local_batches(batch)
      data = {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}
    else:
      data = jax.device_put(batch, sharding)
    state, metrics = step(state, data)
    losses.append(float(metrics['loss']))
    del i
  params = jax.tree.map(lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=True)),
                        state.params)
  return losses, params


def assert_params_close(actual, expected):
  """Equal within float tolerance; the attention key bias (gradient 0 in exact arithmetic:
  softmax ignores a shift shared by all keys) only within the noise Adam amplifies there."""
  flat_a = flax.traverse_util.flatten_dict(flax.core.unfreeze(actual), sep='/')
  flat_e = flax.traverse_util.flatten_dict(flax.core.unfreeze(expected), sep='/')
  assert flat_a.keys() == flat_e.keys()
  for path, value in flat_a.items():
    atol = 2e-3 if path.endswith('key/bias') else 2e-6
    np.testing.assert_allclose(np.asarray(value), flat_e[path], rtol=2e-4, atol=atol,
                               err_msg=path)


def flat_params(params):
  return flax.traverse_util.flatten_dict(flax.core.unfreeze(params), sep='/')


def state_and_step(sizes, preset, **step_kwargs):
  """(model, mesh, tx, state, jitted train step) of the tiny model on a fresh mesh."""
  vit = model()
  mesh = mesh_lib.make_mesh(sizes)
  tx, _ = optimizer.build(opt_config(), abstract_params(vit), total_steps=10)
  state, shardings = state_lib.create(vit, tx, image_shape=IMAGE_SHAPE, seed=0, mesh=mesh,
                                      preset=preset, ema='ema_decay' in step_kwargs)
  jitted = step_lib.jit_train_step(step_lib.make_train_step(
      classifier(vit), tx, step_lib.StepOptions(**step_kwargs)), shardings, mesh)
  return vit, mesh, tx, state, jitted


def data_parallel_step(train_step_factory, mesh):
  """The explicit data-parallel variant of the step, to check GSPMD against: replicated state,
  each shard runs `train_step_factory(grad_reduce=pmean)` on its slice of the batch."""
  axes = mesh_lib.BATCH_AXES
  local_step = train_step_factory(grad_reduce=lambda tree: jax.lax.pmean(tree, axes))
  return jax.jit(jax.shard_map(local_step, mesh=mesh, in_specs=(P(), P(axes)),
                               out_specs=(P(), P()), check_vma=False), donate_argnums=(0,))
