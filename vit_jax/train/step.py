"""One training step: a pure function of (state, batch), jitted once.

  train_step(state, batch) -> (state, metrics)
    images = augment(batch['image'], batch['position'])  # config.pp_device, on the accelerator
    images, labels = mixer(rng, images, labels)           # config.mixup
    (loss, metrics), grads = objective.loss' gradients    # or accumulated over micro-batches
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

import dataclasses
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from vit_jax import objectives
from vit_jax import param_names
from vit_jax.data import device_pp
from vit_jax.data import mixup
from vit_jax.models import sequences
from vit_jax.parallel import mesh as mesh_lib
from vit_jax.train import preemption
from vit_jax.train import options as options_lib
from vit_jax.train.state import TrainState

Batch = dict[str, jax.Array]
Mixer = Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]
Augment = Callable[[jax.Array, Optional[jax.Array]], jax.Array]  # (images, positions) -> images
# (params, inputs, dropout rng, extras) -> ((mean loss, {metric: mean}), gradients)
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


def gradient_fn(objective: objectives.Objective, *, compute_dtype=None,
                param_shardings=None) -> GradFn:
  """`(params, inputs, rng, extras) -> ((mean loss, {metric: mean}), gradients)` of an
  objective. With `compute_dtype` the weights are cast first (`cast_for_compute`)."""

  def forward(params, inputs, rng, extras):
    if compute_dtype is not None:
      params = cast_for_compute(params, compute_dtype, param_shardings)
    return objective.loss(params, inputs, rng, extras)

  return jax.value_and_grad(forward, has_aux=True)


def split_micro_batches(x: jax.Array, micro_batches: int) -> jax.Array:
  """[b, ...] -> [micro_batches, b / micro_batches, ...], micro-batch m holding rows m, m + M,
  m + 2M, ...: every device's contiguous share of the batch splits into its own share of every
  micro-batch, so no example moves between devices (contiguous slices would put each
  micro-batch on a subset of the devices and gather it there)."""
  return jnp.swapaxes(x.reshape(-1, micro_batches, *x.shape[1:]), 0, 1)


def accumulate_gradients(grad_fn: GradFn, params, inputs: Batch, rng, micro_batches: int,
                         extras=None):
  """((loss, metrics), gradients) averaged over `micro_batches` equal slices of `inputs`, one
  at a time: the activations of one slice are alive at once."""
  size = next(iter(inputs.values())).shape[0]
  if size % micro_batches:
    raise ValueError(f'Batch of {size} does not split into {micro_batches} '
                     'micro-batches.')  # the setup checks batch_size; this is a bug of ours
  extras = {} if extras is None else extras
  split = {k: split_micro_batches(v, micro_batches) for k, v in inputs.items()}
  shapes = jax.eval_shape(grad_fn, params, jax.tree.map(lambda x: x[0], split), rng, extras)

  def add(carry, micro):
    index, micro_inputs = micro
    values = grad_fn(params, micro_inputs, jax.random.fold_in(rng, index), extras)
    return jax.tree.map(jnp.add, carry, values), None

  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  totals, _ = jax.lax.scan(add, zeros, (jnp.arange(micro_batches), split))
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


@dataclasses.dataclass(frozen=True)
class StepOptions:
  """What a train step computes around its objective's loss and gradients."""

  micro_batches: int = 1  # gradients accumulated over this many slices (`accumulate_gradients`)
  ema_decay: Optional[float] = None  # the EMA of the parameters, when the state keeps one
  schedule: Optional[Callable[[jax.Array], jax.Array]] = None  # logged as `learning_rate`
  mixer: Optional[Mixer] = None  # mixup / CutMix of images and labels (config.mixup)
  augment: Optional[Augment] = None  # device preprocessing (config.pp_device)
  # A pmean over the data axes of (gradients, loss, metrics): an explicit data-parallel
  # (shard_map) variant of the step; GSPMD needs none.
  grad_reduce: Optional[Callable[[Any], Any]] = None
  compute_dtype: Any = None  # weights cast before the forward pass (`cast_for_compute`)...
  param_shardings: Any = None  # ...under these shardings
  guard: str = 'cond'  # a non-finite step dropped by 'cond' or a per-leaf 'select' (below)
  dropout_kind: str = 'threefry'  # `dropout_key`


def make_train_step(objective: objectives.Objective, tx: optax.GradientTransformation,
                    options: StepOptions = StepOptions()):
  """The pure train step `(state, batch, extras={}) -> (state, metrics)` of an objective
  (`vit_jax.objectives`), its optimizer and its `options`."""
  grad_fn = gradient_fn(objective, compute_dtype=options.compute_dtype,
                        param_shardings=options.param_shardings)
  micro_batches, augment, mixer = options.micro_batches, options.augment, options.mixer

  def train_step(state: TrainState, batch: Batch, extras=None):
    extras = {} if extras is None else extras
    dropout_rng, mix_rng = jax.random.split(jax.random.fold_in(state.rng, state.step))
    dropout_rng = dropout_key(dropout_rng, options.dropout_kind)
    if 'image' in batch:
      images = batch['image']
      if augment is not None:
        images = augment(images, batch.get('position'))
      inputs = {'image': images}
    else:  # NaFlex sequences (models.sequences): augmented on the host, never mixed
      images, inputs = None, {key: batch[key] for key in sequences.KEYS}
    if objective.needs_labels:
      inputs['labels'] = batch['labels']
      if mixer is not None and images is not None:
        inputs['image'], inputs['labels'] = mixer(mix_rng, images, batch['labels'])
    if objective.needs_positions:
      inputs['position'] = batch['position']
    for key in objective.targets:  # per-pixel targets (dense tasks)
      inputs[key] = batch[key]
    if micro_batches == 1:
      (loss_value, measured), grads = grad_fn(state.params, inputs, dropout_rng, extras)
    else:
      (loss_value, measured), grads = accumulate_gradients(
          grad_fn, state.params, inputs, dropout_rng, micro_batches, extras)
    if options.grad_reduce is not None:
      grads, loss_value, measured = options.grad_reduce((grads, loss_value, measured))
    new_state = apply_update(tx, state, grads, options.ema_decay)
    grad_norm = _tree_norm(grads)
    finite = jnp.isfinite(loss_value) & jnp.isfinite(grad_norm)
    # A non-finite step changes nothing but the flag: the loop raises, naming the step. A cond
    # is cheapest on CPU (a select reads and writes the whole state again, ~15% of a CPU step)
    # but keeps a second copy of the state in temporaries; a per-leaf select does not.
    if options.guard == 'cond':
      new_state = jax.lax.cond(finite, lambda: new_state, lambda: state)
    else:
      new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
    metrics = {'loss': loss_value, **measured, 'grad_norm': grad_norm,
               'param_norm': _tree_norm(new_state.params), 'finite': finite.astype(jnp.float32)}
    if options.schedule is not None:
      metrics['learning_rate'] = options.schedule(state.step)
    if preemption.STOP_KEY in batch:  # every process's stop request, over the global batch
      metrics[preemption.STOP_KEY] = jnp.max(batch[preemption.STOP_KEY])
    return new_state, metrics

  return train_step


def jit_train_step(train_step, shardings: TrainState, mesh: jax.sharding.Mesh,
                   extras_shardings=None):
  """`train_step` under jit: the state on its shardings (the old one donated), the batch split
  over the batch axes, metrics replicated; with `extras_shardings` the step takes the extras
  (a teacher) as a third argument, on those shardings."""
  batch = mesh_lib.batch_sharding(mesh)
  out = (shardings, mesh_lib.replicated(mesh))
  if extras_shardings is None:
    def two_arguments(state, batch_):
      return train_step(state, batch_)
    two_arguments.__name__ = 'train_step'  # the program's name: jit_train_step
    return jax.jit(two_arguments, in_shardings=(shardings, batch), out_shardings=out,
                   donate_argnums=(0,))
  return jax.jit(train_step, in_shardings=(shardings, batch, extras_shardings),
                 out_shardings=out, donate_argnums=(0,))


def needs_positions(step: options_lib.StepSettings, objective) -> bool:
  """Whether batches carry each example's stream position (device pp randomness, MAE masks)."""
  return bool(step.device_pp and step.device_pp.needs_positions) or objective.needs_positions


def train_batch_spec(data: options_lib.Data, step: options_lib.StepSettings,
                     sharding: Optional[jax.sharding.Sharding] = None,
                     objective=None) -> Batch:
  """Shapes and dtypes of the global batches the run's step takes: what the pipeline ships,
  and the stop flags (vit_jax.train.preemption)."""
  objective = objective or objectives.base.Objective(None)
  pp, batch = step.device_pp, data.batch_size
  if data.naflex is not None:  # sequences (packed: labels per image slot)
    naflex = data.naflex
    spec = {key: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
            for key, (shape, dtype) in naflex.batch_spec().items()}
    batch = naflex.sequences
    labels = ((batch, data.num_classes) if naflex.images_per_sequence == 1 else
              (batch, naflex.images_per_sequence, data.num_classes))
  else:
    spec = {'image': jax.ShapeDtypeStruct((batch, *data.image_shape),
                                          jnp.uint8 if pp else jnp.float32, sharding=sharding)}
    labels = (batch, data.num_classes)
  spec[preemption.STOP_KEY] = jax.ShapeDtypeStruct((batch,), jnp.float32, sharding=sharding)
  if objective.needs_labels:
    spec['labels'] = jax.ShapeDtypeStruct(labels, jnp.float32, sharding=sharding)
  if needs_positions(step, objective):
    spec['position'] = jax.ShapeDtypeStruct((batch,), jnp.uint32, sharding=sharding)
  for key, (shape, dtype) in objective.target_spec(batch, data.image_shape).items():
    spec[key] = jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
  return spec


def accelerator_choices(step: options_lib.StepSettings, model: nn.Module) -> dict:
  """`StepOptions`' backend-dependent fields for the run's options: the compute dtype
  weights are gathered in (`cast_for_compute`; None for float32), the guard and the dropout
  key kind, with 'auto' resolved for this backend."""
  on_cpu = jax.default_backend() == 'cpu'
  dtype = jnp.dtype(model.compute_dtype)
  return dict(
      compute_dtype=None if dtype == jnp.float32 else dtype,
      guard=('cond' if on_cpu else 'select') if step.guard == 'auto' else step.guard,
      dropout_kind=('threefry' if on_cpu else 'rbg') if step.dropout_rng == 'auto'
      else step.dropout_rng)


def device_augment(setup) -> Optional[Augment]:
  """The run's device preprocessing (`config.pp_device`) per shard of the batch; None without."""
  pp = setup.options.step.device_pp
  return device_pp.per_shard(pp, setup.mesh, mesh_lib.BATCH_AXES) if pp else None


def for_run(setup):
  """The run's train step (a `setup.Setup`: its objective, optimizer, options and mesh),
  jitted: `(state, batch, extras) -> (state, metrics)` with `setup.objective.extras()` placed
  on their shardings (`place_extras`)."""
  step = setup.options.step
  mixer = (mixup.per_shard_mixer(step.mixup, step.mixup_alpha, setup.mesh,
                                 mesh_lib.BATCH_AXES, cutmix_alpha=step.cutmix_alpha)
           if step.mixup else None)
  augment = device_augment(setup)
  pure = make_train_step(setup.objective, setup.tx, StepOptions(
      micro_batches=step.micro_batches, ema_decay=step.ema_decay, schedule=setup.schedule,
      mixer=mixer, augment=augment, param_shardings=setup.shardings.params,
      **accelerator_choices(step, setup.options.model)))
  return jit_train_step(pure, setup.shardings, setup.mesh, setup.objective.extras_shardings(
      setup.mesh, setup.options.parallel.sharding))


def place_extras(setup) -> dict:
  """The objective's extras (a teacher's parameters) on the devices, once per run."""
  objective = setup.objective
  return jax.device_put(objective.extras(), objective.extras_shardings(
      setup.mesh, setup.options.parallel.sharding))
