"""One training step: a pure function of (state, batch), jitted once.

  train_step(state, batch) -> (state, metrics)
    images = augment(batch['image'], batch['position'])  # config.pp_device, on the accelerator
    images, labels = mixer(rng, images, labels)           # config.mixup
    loss, accuracy, grads = gradients(...)                # or accumulate_gradients over micro-batches
    state = apply_update(...)                             # optax, EMA; a non-finite step is dropped

Dropout and mixup randomness is `fold_in(state.rng, step)`. A step whose loss or gradient is not
finite leaves the state unchanged and reports `finite = 0`, so the loop stops naming the step
while the state (and the last checkpoint) stay good. `jit_train_step` adds the shardings and the
donation of the old state and nothing else: the mesh and the logical axis rules are entered once
around the run (`partitioning.use`). The eval step lives with the evaluators.
"""

from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from vit_jax import losses
from vit_jax.data import device_pp
from vit_jax.data import mixup
from vit_jax.parallel import mesh as mesh_lib
from vit_jax.train import preemption
from vit_jax.train import options as options_lib
from vit_jax.train.state import TrainState

Batch = dict[str, jax.Array]
Mixer = Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]
Augment = Callable[[jax.Array, Optional[jax.Array]], jax.Array]  # (images, positions) -> images
# (params, images, labels, dropout rng) -> ((mean loss, mean accuracy), gradients)
GradFn = Callable[..., tuple[tuple[jax.Array, jax.Array], Any]]


def _tree_norm(tree) -> jax.Array:
  return optax.tree.norm(jax.tree.map(lambda x: x.astype(jnp.float32), tree))


def gradient_fn(model: nn.Module, loss: str, label_smoothing: float) -> GradFn:
  """The mean loss and accuracy of a batch, and the loss's gradients."""
  loss_fn = losses.get_loss(loss)

  def forward(params, images, labels, rng):
    logits = model.apply({'params': params}, images, train=True, rngs={'dropout': rng})
    per_example = loss_fn(logits, labels, label_smoothing)
    return jnp.mean(per_example), jnp.mean(losses.correct(logits, labels))

  return jax.value_and_grad(forward, has_aux=True)


def accumulate_gradients(grad_fn: GradFn, params, images, labels, rng, micro_batches: int):
  """(loss, accuracy, gradients) averaged over `micro_batches` equal slices, one at a time:
  the activations of one slice are alive at once."""
  if images.shape[0] % micro_batches:
    raise ValueError(f'Batch of {images.shape[0]} does not split into {micro_batches} '
                     'micro-batches.')  # the setup checks batch_size; this is a bug of ours
  split = lambda x: x.reshape(micro_batches, -1, *x.shape[1:])  # pylint: disable=unnecessary-lambda-assignment

  def add(carry, inputs):
    index, micro_images, micro_labels = inputs
    (value, acc), grads = grad_fn(params, micro_images, micro_labels,
                                  jax.random.fold_in(rng, index))
    return jax.tree.map(jnp.add, carry, (value, acc, grads)), None

  zeros = (jnp.zeros([]), jnp.zeros([]), jax.tree.map(jnp.zeros_like, params))
  totals, _ = jax.lax.scan(add, zeros, (jnp.arange(micro_batches), split(images), split(labels)))
  return jax.tree.map(lambda x: x / micro_batches, totals)


def apply_update(tx: optax.GradientTransformation, state: TrainState, grads,
                 ema_decay: Optional[float]) -> TrainState:
  """The optimizer's update (and the EMA of the parameters when the state keeps one)."""
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  ema_params = state.ema_params
  if ema_params is not None:
    if ema_decay is None:
      raise ValueError('The state keeps EMA parameters but the step has no ema_decay.')
    ema_params = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, ema_params,
                              params)
  return TrainState(step=state.step + 1, params=params, opt_state=opt_state, rng=state.rng,
                    ema_params=ema_params)


def make_train_step(model: nn.Module, tx: optax.GradientTransformation, *,
                    loss: str = 'softmax_xent', label_smoothing: float = 0.0,
                    micro_batches: int = 1, ema_decay: Optional[float] = None,
                    schedule: Optional[Callable[[jax.Array], jax.Array]] = None,
                    mixer: Optional[Mixer] = None, augment: Optional[Augment] = None,
                    grad_reduce: Optional[Callable[[Any], Any]] = None):
  """The pure train step. `grad_reduce` (a pmean) reduces gradients and metrics in an explicit
  data-parallel (shard_map) variant; GSPMD needs none."""
  grad_fn = gradient_fn(model, loss, label_smoothing)

  def train_step(state: TrainState, batch: Batch):
    dropout_rng, mix_rng = jax.random.split(jax.random.fold_in(state.rng, state.step))
    images, labels = batch['image'], batch['labels']
    if augment is not None:
      images = augment(images, batch.get('position'))
    if mixer is not None:
      images, labels = mixer(mix_rng, images, labels)
    if micro_batches == 1:
      (loss_value, accuracy), grads = grad_fn(state.params, images, labels, dropout_rng)
    else:
      loss_value, accuracy, grads = accumulate_gradients(grad_fn, state.params, images, labels,
                                                         dropout_rng, micro_batches)
    if grad_reduce is not None:
      grads, loss_value, accuracy = grad_reduce((grads, loss_value, accuracy))
    new_state = apply_update(tx, state, grads, ema_decay)
    grad_norm = _tree_norm(grads)
    finite = jnp.isfinite(loss_value) & jnp.isfinite(grad_norm)
    # A non-finite step changes nothing but the flag: the loop raises, naming the step. (A cond,
    # not a select: a select reads and writes the whole state again, ~15% of a CPU step.)
    new_state = jax.lax.cond(finite, lambda: new_state, lambda: state)
    metrics = {'loss': loss_value, 'accuracy': accuracy, 'grad_norm': grad_norm,
               'param_norm': _tree_norm(new_state.params), 'finite': finite.astype(jnp.float32)}
    if schedule is not None:
      metrics['learning_rate'] = schedule(state.step)
    if preemption.STOP_KEY in batch:  # every process's stop request, over the global batch
      metrics[preemption.STOP_KEY] = jnp.max(batch[preemption.STOP_KEY])
    return new_state, metrics

  return train_step


def jit_train_step(train_step, shardings: TrainState, mesh: jax.sharding.Mesh):
  """`train_step` under jit: the state on its shardings (the old one donated), the batch split
  over the batch axes, metrics replicated."""
  return jax.jit(train_step, in_shardings=(shardings, mesh_lib.batch_sharding(mesh)),
                 out_shardings=(shardings, mesh_lib.replicated(mesh)), donate_argnums=(0,))


def train_batch_spec(data: options_lib.Data, step: options_lib.Step,
                     sharding: Optional[jax.sharding.Sharding] = None) -> Batch:
  """Shapes and dtypes of the global batches the run's step takes: what the pipeline ships,
  and the stop flags (vit_jax.train.preemption)."""
  pp, batch = step.device_pp, data.batch_size
  spec = {'image': jax.ShapeDtypeStruct((batch, *data.image_shape),
                                        jnp.uint8 if pp else jnp.float32, sharding=sharding),
          'labels': jax.ShapeDtypeStruct((batch, data.num_classes), jnp.float32,
                                         sharding=sharding),
          preemption.STOP_KEY: jax.ShapeDtypeStruct((batch,), jnp.float32, sharding=sharding)}
  if pp and pp.needs_positions:
    spec['position'] = jax.ShapeDtypeStruct((batch,), jnp.uint32, sharding=sharding)
  return spec


def for_run(setup):
  """The run's train step (a `setup.Setup`: its model, optimizer, options and mesh), jitted."""
  step = setup.options.step
  mixer = (mixup.per_shard_mixer(step.mixup, step.mixup_alpha, setup.mesh,
                                 mesh_lib.BATCH_AXES) if step.mixup else None)
  augment = (device_pp.per_shard(step.device_pp, setup.mesh, mesh_lib.BATCH_AXES)
             if step.device_pp else None)
  pure = make_train_step(
      setup.model, setup.tx, loss=step.loss, label_smoothing=step.label_smoothing,
      micro_batches=step.micro_batches,
      ema_decay=step.ema_decay, schedule=setup.schedule, mixer=mixer, augment=augment)
  return jit_train_step(pure, setup.shardings, setup.mesh)
