"""One training step: a pure function of (state, batch), jitted once.

  train_step(state, batch) -> (state, metrics)
    images = augment(batch['image'], batch['position'])  # config.pp_device, on the accelerator
    images, labels = mixer(rng, images, labels)           # config.mixup
    loss, accuracy, grads = gradients(...)                # or accumulate_gradients over micro-batches
    state = apply_update(...)                             # optax, EMA; a non-finite step is dropped

Dropout and mixup randomness is `fold_in(state.rng, step)` (dropout bits from an `rbg` key
derived from it off CPU: `dropout_key`). A step whose loss or gradient is not finite leaves the
state unchanged and reports `finite = 0`, so the loop stops naming the step while the state (and
the last checkpoint) stay good. On accelerators the weights are cast to the compute dtype where
they are stored (`cast_for_compute`), so FSDP gathers bf16; micro-batches are strided slices
that stay on every device (`split_micro_batches`). `jit_train_step` adds the shardings and the
donation of the old state and nothing else: the mesh and the logical axis rules are entered once
around the run (`partitioning.use`). The eval step lives with the evaluators.
"""

from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from vit_jax import losses
from vit_jax import param_names
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


# The weights the model computes with in its compute dtype (param_names patterns): matrices of
# the encoder and the MAP head, the patch embedding, the position embedding and the prefix
# tokens. Norms, biases, the head and the ResNet stem (standardised in float32) keep float32.
COMPUTE_DTYPE_PARAMS = (r'embedding/kernel', r'cls', r'dist', r'registers',
                        r'Transformer/posembed_input/pos_embedding',
                        r'(Transformer|MAPHead_0)/.*kernel')


def cast_for_compute(params, dtype, shardings=None):
  """The weights the model casts to `dtype` anyway, cast here instead, under their own sharding:
  FSDP then gathers them in `dtype` (bf16) whatever the partitioner would infer, and their
  gradients, which the bf16 matmuls emit in bf16, are reduced in it. Numerically the model's
  own cast; only where the collectives happen and what they move can change."""
  flat_shardings = param_names.flatten(shardings) if shardings is not None else {}

  def cast(name, leaf):
    if not param_names.matches(COMPUTE_DTYPE_PARAMS, name) or leaf.dtype == dtype:
      return leaf
    leaf = leaf.astype(dtype)
    if name in flat_shardings:
      leaf = jax.lax.with_sharding_constraint(leaf, flat_shardings[name])
    return leaf
  return param_names.map_names(params, cast)


def dropout_key(rng: jax.Array, kind: str) -> jax.Array:
  """The dropout key: `rng` itself (threefry), or an rbg key drawn from it. rbg bits come from
  the hardware generator (XLA's RngBitGenerator), far cheaper than threefry's hash on GPU/TPU;
  the state keeps its threefry key, so checkpoints resume either way."""
  if kind == 'threefry':
    return rng
  return jax.random.wrap_key_data(jax.random.bits(rng, (4,), jnp.uint32), impl=kind)


def gradient_fn(model: nn.Module, loss: str, label_smoothing: float, *,
                compute_dtype=None, param_shardings=None) -> GradFn:
  """The mean loss and accuracy of a batch, and the loss's gradients. With `compute_dtype` the
  weights are cast first (`cast_for_compute`)."""
  loss_fn = losses.get_loss(loss)

  def forward(params, images, labels, rng):
    if compute_dtype is not None:
      params = cast_for_compute(params, compute_dtype, param_shardings)
    logits = model.apply({'params': params}, images, train=True, rngs={'dropout': rng})
    per_example = loss_fn(logits, labels, label_smoothing)
    return jnp.mean(per_example), jnp.mean(losses.correct(logits, labels))

  return jax.value_and_grad(forward, has_aux=True)


def split_micro_batches(x: jax.Array, micro_batches: int) -> jax.Array:
  """[b, ...] -> [micro_batches, b / micro_batches, ...], micro-batch m holding rows m, m + M,
  m + 2M, ...: every device's contiguous share of the batch splits into its own share of every
  micro-batch, so no example moves between devices (contiguous slices would put each
  micro-batch on a subset of the devices and gather it there)."""
  return jnp.swapaxes(x.reshape(-1, micro_batches, *x.shape[1:]), 0, 1)


def accumulate_gradients(grad_fn: GradFn, params, images, labels, rng, micro_batches: int):
  """(loss, accuracy, gradients) averaged over `micro_batches` equal slices, one at a time:
  the activations of one slice are alive at once."""
  if images.shape[0] % micro_batches:
    raise ValueError(f'Batch of {images.shape[0]} does not split into {micro_batches} '
                     'micro-batches.')  # the setup checks batch_size; this is a bug of ours
  split = lambda x: split_micro_batches(x, micro_batches)  # pylint: disable=unnecessary-lambda-assignment

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
                    grad_reduce: Optional[Callable[[Any], Any]] = None,
                    compute_dtype=None, param_shardings=None, guard: str = 'cond',
                    dropout_kind: str = 'threefry'):
  """The pure train step. `grad_reduce` (a pmean) reduces gradients and metrics in an explicit
  data-parallel (shard_map) variant; GSPMD needs none. `compute_dtype` and `param_shardings`:
  see `cast_for_compute`; `guard`: 'cond' or 'select' (see below); `dropout_kind`: see
  `dropout_key`."""
  grad_fn = gradient_fn(model, loss, label_smoothing, compute_dtype=compute_dtype,
                        param_shardings=param_shardings)

  def train_step(state: TrainState, batch: Batch):
    dropout_rng, mix_rng = jax.random.split(jax.random.fold_in(state.rng, state.step))
    dropout_rng = dropout_key(dropout_rng, dropout_kind)
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
    # A non-finite step changes nothing but the flag: the loop raises, naming the step. A cond
    # is cheapest on CPU (a select reads and writes the whole state again, ~15% of a CPU step)
    # but keeps a second copy of the state in temporaries; a per-leaf select does not.
    if guard == 'cond':
      new_state = jax.lax.cond(finite, lambda: new_state, lambda: state)
    else:
      new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
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


def accelerator_choices(step: options_lib.Step, model: nn.Module) -> dict:
  """`make_train_step`'s backend-dependent arguments for the run's options: the compute dtype
  weights are gathered in (`cast_for_compute`; None for float32), the guard and the dropout
  key kind, with 'auto' resolved for this backend."""
  on_cpu = jax.default_backend() == 'cpu'
  dtype = jnp.dtype(model.compute_dtype)
  return dict(
      compute_dtype=None if dtype == jnp.float32 else dtype,
      guard=('cond' if on_cpu else 'select') if step.guard == 'auto' else step.guard,
      dropout_kind=('threefry' if on_cpu else 'rbg') if step.dropout_rng == 'auto'
      else step.dropout_rng)


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
      ema_decay=step.ema_decay, schedule=setup.schedule, mixer=mixer, augment=augment,
      param_shardings=setup.shardings.params, **accelerator_choices(step, setup.model))
  return jit_train_step(pure, setup.shardings, setup.mesh)
