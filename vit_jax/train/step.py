"""The train step as a pure function, and its jitted, sharded forms.

`train_step(state, batch) -> (state, metrics)`: the device preprocessing (`config.pp_device`,
seeded by each example's global position) turns the host's uint8 images into the model's input;
dropout/mixup randomness is `fold_in(state.rng, step)`; gradients may be accumulated over
micro-batches; a step whose loss or gradient is not finite leaves the state unchanged and reports
`finite = 0`, so the loop can stop with the step's number while the state (and the last
checkpoint) stay good.

The eval step lives with the evaluators (vit_jax/evaluators/step.py).
"""

from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from vit_jax import errors
from vit_jax import losses
from vit_jax.data import device_pp
from vit_jax.data import mixup
from vit_jax.parallel import mesh as mesh_lib
from vit_jax.parallel import partitioning
from vit_jax.train.state import TrainState

Batch = dict[str, jax.Array]
Mixer = Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]
Augment = Callable[[jax.Array, Optional[jax.Array]], jax.Array]  # (images, positions) -> images


def _tree_norm(tree) -> jax.Array:
  return optax.tree.norm(jax.tree.map(lambda x: x.astype(jnp.float32), tree))


def make_train_step(model: nn.Module, tx: optax.GradientTransformation, *,
                    loss: str = 'softmax_xent', label_smoothing: float = 0.0,
                    micro_batches: int = 1, ema_decay: Optional[float] = None,
                    schedule: Optional[Callable[[jax.Array], jax.Array]] = None,
                    mixer: Optional[Mixer] = None, augment: Optional[Augment] = None,
                    grad_reduce: Optional[Callable[[Any], Any]] = None):
  """A pure train step. `augment(images, batch['position'])` runs first (the device
  preprocessing); `grad_reduce` (e.g. a pmean) is applied to gradients and metrics in the
  explicit data-parallel variant; GSPMD needs none."""
  loss_fn = losses.get_loss(loss)
  reduce = grad_reduce or (lambda x: x)

  def forward(params, images, labels, rng):
    logits = model.apply({'params': params}, images, train=True, rngs={'dropout': rng})
    per_example = loss_fn(logits, labels, label_smoothing)
    return jnp.mean(per_example), jnp.mean(losses.correct(logits, labels))

  grad_fn = jax.value_and_grad(forward, has_aux=True)

  def accumulate(params, images, labels, dropout_rng):
    """Mean loss, accuracy and gradients over `micro_batches` equal slices, one at a time."""
    if images.shape[0] % micro_batches:
      raise errors.UserError(f'Batch of {images.shape[0]} does not split into {micro_batches} '
                             'micro-batches.')
    split = lambda x: x.reshape(micro_batches, -1, *x.shape[1:])  # pylint: disable=unnecessary-lambda-assignment

    def add(carry, inputs):
      index, micro_images, micro_labels = inputs
      (value, acc), grads = grad_fn(params, micro_images, micro_labels,
                                    jax.random.fold_in(dropout_rng, index))
      return jax.tree.map(jnp.add, carry, (value, acc, grads)), None

    zeros = (jnp.zeros([]), jnp.zeros([]), jax.tree.map(jnp.zeros_like, params))
    totals, _ = jax.lax.scan(add, zeros, (jnp.arange(micro_batches), split(images),
                                          split(labels)))
    return jax.tree.map(lambda x: x / micro_batches, totals)

  def train_step(state: TrainState, batch: Batch):
    rng = jax.random.fold_in(state.rng, state.step)
    dropout_rng, mix_rng = jax.random.split(rng)
    images, labels = batch['image'], batch['labels']
    if augment is not None:
      images = augment(images, batch.get('position'))
    if mixer is not None:
      images, labels = mixer(mix_rng, images, labels)

    if micro_batches == 1:
      (loss_value, accuracy), grads = grad_fn(state.params, images, labels, dropout_rng)
    else:
      loss_value, accuracy, grads = accumulate(state.params, images, labels, dropout_rng)

    grads, loss_value, accuracy = reduce((grads, loss_value, accuracy))
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = _tree_norm(grads)
    finite = jnp.isfinite(loss_value) & jnp.isfinite(grad_norm)

    ema_params = state.ema_params
    if ema_params is not None:
      decay = ema_decay if ema_decay is not None else 0.9999
      ema_params = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema_params, params)
    new_state = TrainState(step=state.step + 1, params=params, opt_state=opt_state,
                           rng=state.rng, ema_params=ema_params)
    # A non-finite step changes nothing but the flag: the loop raises, naming the step. (A cond,
    # not a select: a select reads and writes the whole state again, ~15% of a CPU step.)
    new_state = jax.lax.cond(finite, lambda: new_state, lambda: state)
    metrics = {'loss': loss_value, 'accuracy': accuracy, 'grad_norm': grad_norm,
               'param_norm': _tree_norm(params), 'finite': finite.astype(jnp.float32)}
    if schedule is not None:
      metrics['learning_rate'] = schedule(state.step)
    if 'stop' in batch:  # every process's stop request, reduced over the global batch
      metrics['stop'] = jnp.max(batch['stop'])
    return new_state, metrics

  return train_step


def jit_train_step(train_step, mesh: jax.sharding.Mesh, shardings: TrainState, layout: str):
  """train_step under jit: sharded in/out, the old state donated, axis rules and mesh in force."""
  rules = partitioning.get_rules(layout)
  batch = mesh_lib.batch_sharding(mesh)

  def step(state, data):
    with nn.logical_axis_rules(rules):
      return train_step(state, data)

  jitted = jax.jit(step, in_shardings=(shardings, batch),
                   out_shardings=(shardings, mesh_lib.replicated(mesh)), donate_argnums=(0,))

  def run(state, data):
    with jax.set_mesh(mesh):
      return jitted(state, data)
  run.jitted = jitted
  return run


def train_batch_spec(config, sharding: Optional[jax.sharding.Sharding] = None) -> Batch:
  """Shapes and dtypes of the global batches the run's step takes (what the pipeline ships)."""
  pp = device_pp.from_config(config)
  size, batch = config.image_size, config.batch_size
  spec = {'image': jax.ShapeDtypeStruct((batch, size, size, 3),
                                        jnp.uint8 if pp else jnp.float32, sharding=sharding),
          'labels': jax.ShapeDtypeStruct((batch, config.num_classes), jnp.float32,
                                         sharding=sharding)}
  if pp and pp.needs_positions:
    spec['position'] = jax.ShapeDtypeStruct((batch,), jnp.uint32, sharding=sharding)
  return spec


def train_step_from_config(config, setup, *, label_smoothing: float = 0.0):
  """The run's jitted train step: device preprocessing, loss, smoothing, micro-batches, EMA,
  schedule and mixup."""
  mixer = mixup.from_config(config.get('mixup'), setup.mesh, mesh_lib.BATCH_AXES)
  pp = device_pp.from_config(config)
  augment = device_pp.per_shard(pp, setup.mesh, mesh_lib.BATCH_AXES) if pp else None
  micro_batches = int(config.get('micro_batches') or 1)
  if micro_batches < 1:
    raise errors.UserError(
        f'config.micro_batches must be a positive integer, found {micro_batches}.')
  step = make_train_step(setup.model, setup.tx, loss=config.loss, label_smoothing=label_smoothing,
                         micro_batches=micro_batches, ema_decay=config.get('ema_decay'),
                         schedule=setup.schedule, mixer=mixer, augment=augment)
  return jit_train_step(step, setup.mesh, setup.shardings, config.layout)
