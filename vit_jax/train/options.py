"""The run's config read once, at setup, into typed parts; everything below takes these.

Defaults live in `vit_jax/configs/common.py` alone: every field is read here by name, with no
fallback of its own, so a recipe that deletes a field fails here naming it. Values are checked
here too (a wrong one is a one-line `errors.UserError` naming the field), before anything builds.

  config (ml_collections)  --read-->  Options(model, optimizer, step, data, parallel, memory, ...)
"""

import dataclasses
import math
from typing import Any, Optional

from absl import logging
import ml_collections

from vit_jax import errors
from vit_jax.configs import common
from vit_jax.data import device_pp as device_pp_lib
from vit_jax.data import pp_spec
from vit_jax import objectives
from vit_jax.models import build
from vit_jax.models import vit
from vit_jax.parallel import distributed
from vit_jax.parallel import partitioning
from vit_jax.weights import trained_model
from vit_jax.weights import transforms

AUTO = 'auto'  # micro_batches / model.remat: the memory planner chooses (train/memory.py)
SCHEDULES = ('cosine', 'linear', 'rsqrt', 'constant')
OPTIMIZERS = ('adam', 'adamw', 'sgd', 'adafactor', 'lars')
WD_STYLES = ('lr_scaled', 'schedule_scaled')


@dataclasses.dataclass(frozen=True)
class Schedule:
  """The learning rate: linear warmup from 0 over `warmup_steps`, then `kind` from `base`."""

  base: float
  kind: str  # one of SCHEDULES
  warmup_steps: int
  end: float  # the final value of 'linear'
  timescale: float  # of 'rsqrt'


@dataclasses.dataclass(frozen=True)
class Optimizer:
  """What turns gradients into updates (vit_jax.train.optimizer)."""

  name: str  # one of OPTIMIZERS
  b1: float
  b2: float
  eps: float
  mu_dtype: Optional[str]
  momentum: float
  nesterov: bool
  schedule: Schedule
  wd: float
  wd_style: str  # one of WD_STYLES (vit_jax.train.optimizer)
  wd_mask: tuple[str, ...]
  grad_clip_norm: Optional[float]
  lr_mults: tuple[tuple[str, float], ...]
  frozen: tuple[str, ...]
  layerwise_lr_decay: Optional[float]
  trust_coefficient: float = 0.001  # LARS


@dataclasses.dataclass(frozen=True)
class StepSettings:
  """What the train step computes around the model's forward and backward pass."""

  loss: str
  label_smoothing: float
  micro_batches: Any  # an int, or AUTO until the planner chooses
  ema_decay: Optional[float]  # None: no EMA parameters kept
  mixup: Optional[str]  # 'mixup' | 'cutmix' | 'mixup_cutmix' | None
  mixup_alpha: float
  device_pp: Optional[device_pp_lib.DevicePreprocess]  # config.pp_device, parsed; None if empty
  guard: str = 'auto'  # the non-finite guard: 'cond' | 'select' | 'auto' (cond on CPU only)
  dropout_rng: str = 'auto'  # 'threefry' | 'rbg' | 'unsafe_rbg' | 'auto' (rbg off CPU)
  cutmix_alpha: float = 1.0  # CutMix's alpha with mixup='mixup_cutmix'

  @property
  def ema(self) -> bool:
    return self.ema_decay is not None


@dataclasses.dataclass(frozen=True)
class Naflex:
  """NaFlex input (pp_train's `naflex` op, config.naflex): sequences of `max_patches` tokens,
  `images_per_sequence` images packed in each (1: padded NaFlex), `sequences` per global step."""

  patch_size: int
  max_patches: int
  images_per_sequence: int
  sequences: int

  def batch_spec(self, channels: int = 3) -> dict[str, tuple]:
    """{key: (shape, dtype name)} of a global NaFlex batch, labels aside."""
    rows = self.sequences
    return {'patches': ((rows, self.max_patches, self.patch_size**2 * channels), 'float32'),
            'positions': ((rows, self.max_patches, 2), 'int32'),
            'segments': ((rows, self.max_patches), 'int32'),
            'grids': ((rows, self.images_per_sequence, 2), 'int32')}


@dataclasses.dataclass(frozen=True)
class Data:
  """The training input: host preprocessing, batch (its source: `Start.source`)."""

  pp_train: str
  batch_size: int  # global
  seed: int
  image_size: int
  num_classes: int
  repeated_aug: int = 1  # copies of each example in a row (DeiT's repeated augmentation)
  naflex: Optional[Naflex] = None  # NaFlex sequences instead of square images
  probe_stats_batches: int = 10  # a linear probe's batches for its head_norm statistics

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return (self.image_size, self.image_size, 3)


@dataclasses.dataclass(frozen=True)
class Parallel:
  mesh: tuple[int, ...]  # (data, fsdp, tensor); -1 takes the remaining devices
  sharding: str  # the parameter sharding preset (vit_jax.parallel.partitioning)
  dcn_mesh: Optional[tuple[int, ...]] = None  # slow-link groups per axis (parallel/mesh.py)
  replicated_max_mb: float = 1.0  # fsdp: a larger parameter left whole on every device...
  replicated_ok: tuple[str, ...] = ()  # ...is refused unless one of these patterns names it


@dataclasses.dataclass(frozen=True)
class Memory:
  """The memory planner's inputs (vit_jax.train.memory)."""

  check: bool  # config.check_memory: check the compiled step against the device's memory
  device_memory_gb: Optional[float]  # the per-device budget; None: what the device reports


@dataclasses.dataclass(frozen=True)
class Bookkeeping:
  log_every: int
  checkpoint_every: int
  keep_checkpoints: int
  keep_period: Optional[int]


@dataclasses.dataclass(frozen=True)
class Length:
  """How long the run trains: `total_steps`, or `total_epochs` over the training split."""

  total_steps: Optional[int]
  total_epochs: Optional[float]
  batch_size: int

  def steps(self, num_train_examples: Optional[int]) -> int:
    """The step count; an epoch count needs the training split's size."""
    if self.total_steps:
      return self.total_steps
    if not self.total_epochs:
      raise errors.UserError('Set config.total_steps, or config.total_epochs (found neither).')
    if not num_train_examples:
      raise errors.UserError(
          'config.total_epochs needs the training split\'s size (none was given).')
    return max(1, math.ceil(self.total_epochs * num_train_examples / self.batch_size))


@dataclasses.dataclass(frozen=True)
class Init:
  """The checkpoint a run starts from (`config.init_from`; None: a fresh start)."""

  path: Optional[str]
  dont_load: tuple[str, ...]  # parameter names kept from the fresh init
  pp_from_init: bool  # pp strings with the default value op take the checkpoint's statistics


@dataclasses.dataclass(frozen=True)
class Evals:
  """`config.evals` and what every evaluator shares (vit_jax.evaluators): a training run's, or
  a `--mode=eval` run's, whose image size may be unset (the checkpoint's own)."""

  entries: dict  # {name: plain dict}, in the order the recipe declared them
  batch_size: int  # the default global eval batch: eval_batch_size, else batch_size
  image_size: Optional[int]
  num_classes: Optional[int]
  loss: str  # the run's: a classification evaluator's loss
  ignore_label: int  # config.dense.ignore_label
  parallel: Parallel  # an eval run's mesh and sharding


@dataclasses.dataclass(frozen=True)
class Options:
  """Everything a run computes with, read from its config once."""

  model: vit.VisionTransformer  # a Flax module: itself a frozen dataclass of the model's fields
  model_config: ml_collections.ConfigDict  # the same fields, as the official configs spell them
  # model.remat as asked: a policy name, or AUTO. The policy trained with is `Setup.remat` (the
  # objective's model), which the planner sets for AUTO; `model` keeps the configured one.
  remat: str
  optimizer: Optimizer
  step: StepSettings
  data: Data
  parallel: Parallel
  memory: Memory
  bookkeeping: Bookkeeping
  length: Length
  init: Init
  evals: Evals
  objective: objectives.Spec = objectives.Spec('classification', None)

  def objective_context(self) -> objectives.Context:
    """What `objectives.build` makes the run's objective from."""
    pp = '|'.join(p for p in (self.data.pp_train, self.step.device_pp and
                              self.step.device_pp.spec) if p)
    return objectives.Context(
        model=self.model, model_config=self.model_config, loss=self.step.loss,
        label_smoothing=self.step.label_smoothing, image_size=self.data.image_size,
        num_classes=self.data.num_classes, seed=self.data.seed,
        input_pp=transforms.value_op_or_default(pp), load_checkpoint=trained_model.load)


def _positive(field: str, value, allow_none: bool = False) -> None:
  if value is None and allow_none:
    return
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
    raise errors.UserError(f'config.{field} must be positive, found {value!r}.')


def _one_of(field: str, value, allowed) -> None:
  if value not in allowed:
    raise errors.UserError(f'config.{field}={value!r}; expected one of {", ".join(allowed)}.')


def read_schedule(config: ml_collections.ConfigDict) -> Schedule:
  lr = config.lr
  _one_of('lr.schedule', lr.schedule, SCHEDULES)
  if int(lr.warmup_steps) < 0:
    raise errors.UserError(f'config.lr.warmup_steps must be >= 0, found {lr.warmup_steps}.')
  return Schedule(base=float(lr.base), kind=lr.schedule, warmup_steps=int(lr.warmup_steps),
                  end=float(lr.end), timescale=float(lr.timescale))


def read_optimizer(config: ml_collections.ConfigDict, frozen: tuple[str, ...] = ()
                   ) -> Optimizer:
  """`frozen`: patterns the objective freezes beside config.frozen."""
  optim = config.optim
  _one_of('optim.name', optim.name, OPTIMIZERS)
  wd_mask = config.wd_mask
  decay = config.layerwise_lr_decay
  if decay is not None and not 0.0 < decay <= 1.0:
    raise errors.UserError(f'config.layerwise_lr_decay must be in (0, 1], found {decay}.')
  _positive('grad_clip_norm', config.grad_clip_norm or None, allow_none=True)
  _one_of('wd_style', config.wd_style, WD_STYLES)
  return Optimizer(
      name=optim.name, b1=float(optim.b1), b2=float(optim.b2), eps=float(optim.eps),
      mu_dtype=optim.mu_dtype, momentum=float(optim.momentum or 0.0),
      nesterov=bool(optim.nesterov), schedule=read_schedule(config), wd=float(config.wd or 0.0),
      wd_style=config.wd_style,
      wd_mask=(wd_mask,) if isinstance(wd_mask, str) else tuple(wd_mask),
      grad_clip_norm=float(config.grad_clip_norm) if config.grad_clip_norm else None,
      lr_mults=tuple((str(p), float(m)) for p, m in config.lr_mults),
      frozen=tuple(config.frozen) + tuple(frozen), layerwise_lr_decay=decay,
      trust_coefficient=float(optim.trust_coefficient))


def optimizer_with(**fields) -> Optimizer:
  """The default optimizer (configs/common.py) with `fields` of the config set, as a recipe
  would: `optimizer_with(optim={'name': 'sgd'}, lr={'base': 0.1}, grad_clip_norm=0.0)`."""
  config = common.get_config()
  config.update(fields)
  return read_optimizer(config)


def read_step(config: ml_collections.ConfigDict) -> StepSettings:
  micro_batches = config.micro_batches
  if micro_batches != AUTO:
    if isinstance(micro_batches, bool) or not isinstance(micro_batches, int) or micro_batches < 1:
      raise errors.UserError(
          f"config.micro_batches must be a positive integer or 'auto', found {micro_batches!r}.")
  mix = config.mixup
  if mix.kind is not None:
    _one_of('mixup.kind', mix.kind, ('mixup', 'cutmix', 'mixup_cutmix'))
    _positive('mixup.alpha', mix.alpha)
    _positive('mixup.cutmix_alpha', mix.cutmix_alpha)
  ema_decay = config.ema_decay
  if ema_decay is not None and not 0.0 < ema_decay < 1.0:
    raise errors.UserError(f'config.ema_decay must be in (0, 1) (or unset), found {ema_decay}.')
  pp = device_pp_lib.DevicePreprocess(config.pp_device or '', seed=int(config.seed))
  _one_of('nonfinite_guard', config.nonfinite_guard, ('auto', 'cond', 'select'))
  _one_of('dropout_rng', config.dropout_rng, ('auto', 'threefry', 'rbg', 'unsafe_rbg'))
  return StepSettings(loss=config.loss, label_smoothing=float(config.label_smoothing),
              micro_batches=micro_batches, ema_decay=ema_decay, mixup=mix.kind,
              mixup_alpha=float(mix.alpha), device_pp=pp if pp else None,
              guard=config.nonfinite_guard,
              dropout_rng=config.dropout_rng, cutmix_alpha=float(mix.cutmix_alpha))


def read_data(config: ml_collections.ConfigDict) -> Data:
  _positive('batch_size', config.batch_size)
  _positive('image_size', config.image_size)
  _positive('num_classes', config.num_classes)
  repeats = config.repeated_aug
  if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
    raise errors.UserError(f'config.repeated_aug must be a positive integer, found {repeats!r}.')
  _positive('probe_stats_batches', config.probe_stats_batches)
  return Data(pp_train=config.pp_train, batch_size=int(config.batch_size),
              seed=int(config.seed), image_size=int(config.image_size),
              num_classes=int(config.num_classes), repeated_aug=repeats,
              naflex=read_naflex(config), probe_stats_batches=int(config.probe_stats_batches))


def read_naflex(config: ml_collections.ConfigDict) -> Optional[Naflex]:
  """The NaFlex input of a run whose pp_train has a `naflex(patch_size, max_patches)` op."""
  ops = [pp_spec.parse_op(text) for text in pp_spec.ops(config.pp_train)]
  found = [(args, kwargs) for name, args, kwargs in ops if name == 'naflex']
  if not found:
    return None
  args, kwargs = found[0]
  patch_size, max_patches = (args[i] if len(args) > i else kwargs.get(name)
                             for i, name in enumerate(('patch_size', 'max_patches')))
  for field, value in (('patch_size', patch_size), ('max_patches', max_patches)):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise errors.UserError(f'pp_train naflex: {field} must be a positive integer (a sequence '
                             f'must hold at least one patch), found {value!r}.')
  fields = config.get('naflex') or {}
  per_sequence = fields.get('images_per_sequence', 1)
  if isinstance(per_sequence, bool) or not isinstance(per_sequence, int) or per_sequence < 1:
    raise errors.UserError('config.naflex.images_per_sequence must be a positive integer, found '
                           f'{per_sequence!r}.')
  sequences = fields.get('sequences') or int(config.batch_size)
  if per_sequence == 1 and sequences != config.batch_size:
    raise errors.UserError(f'config.naflex.sequences={sequences} with one image per sequence '
                           f'must equal batch_size={config.batch_size}; pack images '
                           '(images_per_sequence > 1) to use fewer sequences.')
  _positive('naflex.sequences', sequences)
  if config.get('pp_device') or (config.get('mixup') and config.mixup.get('kind')):
    raise errors.UserError('pp_device and mixup are square-only (batched image ops); a NaFlex '
                           'run (pp_train naflex) augments on the host: drop them.')
  return Naflex(patch_size=patch_size, max_patches=max_patches,
                images_per_sequence=per_sequence, sequences=int(sequences))


def read_parallel(config: ml_collections.ConfigDict) -> Parallel:
  _one_of('sharding', config.sharding, tuple(partitioning.RULES))
  dcn = config.dcn_mesh
  _positive('replicated_max_mb', config.replicated_max_mb)
  allowed = config.replicated_ok
  return Parallel(mesh=tuple(config.mesh), sharding=config.sharding,
                  dcn_mesh=None if dcn is None else tuple(dcn),
                  replicated_max_mb=float(config.replicated_max_mb),
                  replicated_ok=(allowed,) if isinstance(allowed, str) else tuple(allowed))


def read_memory(config: ml_collections.ConfigDict) -> Memory:
  _positive('device_memory_gb', config.device_memory_gb, allow_none=True)
  return Memory(check=bool(config.check_memory), device_memory_gb=config.device_memory_gb)


def read_bookkeeping(config: ml_collections.ConfigDict) -> Bookkeeping:
  for field in ('log_every', 'checkpoint_every', 'keep_checkpoints'):
    _positive(field, config[field])
  _positive('keep_period', config.keep_period, allow_none=True)
  return Bookkeeping(log_every=int(config.log_every),
                     checkpoint_every=int(config.checkpoint_every),
                     keep_checkpoints=int(config.keep_checkpoints), keep_period=config.keep_period)


def read_length(config: ml_collections.ConfigDict) -> Length:
  """`total_steps=0` counts as unset, so a recipe in steps can be switched to epochs from the
  command line (`--config.total_steps=0 --config.total_epochs=90`)."""
  steps, epochs = config.total_steps, config.total_epochs
  if steps not in (None, 0):
    _positive('total_steps', steps)
  if epochs not in (None, 0):
    _positive('total_epochs', epochs)
  _positive('batch_size', config.batch_size)
  if steps and epochs:
    raise errors.UserError(f'Set one of config.total_steps ({steps}) and '
                           f'config.total_epochs ({epochs}); set the other to 0.')
  return Length(total_steps=int(steps) if steps else None,
                total_epochs=float(epochs) if epochs else None,
                batch_size=int(config.batch_size))


@dataclasses.dataclass(frozen=True)
class Start:
  """What a run reads before the rest: the fields its training data and its init checkpoint
  decide (`resolve`)."""

  source: dict  # config.data, plain
  num_classes: Optional[int]  # None: the training source's class count
  init: Init


def read_start(config: ml_collections.ConfigDict) -> Start:
  num_classes = config.num_classes
  if num_classes is not None:
    _positive('num_classes', num_classes)
  return Start(source=config.data.to_dict(), num_classes=num_classes, init=read_init(config))


def read_init(config: ml_collections.ConfigDict) -> Init:
  return Init(path=config.init_from or None, dont_load=tuple(config.dont_load),
              pp_from_init=bool(config.pp_from_init))


def read_evals(config: ml_collections.ConfigDict) -> Evals:
  """`config.evals` with what its evaluators share; also what `--mode=eval` reads."""
  entries = config.evals.to_dict()  # plain dicts, in declared order
  _positive('eval_batch_size', config.eval_batch_size, allow_none=True)
  _positive('batch_size', config.batch_size)
  return Evals(entries=entries, batch_size=int(config.eval_batch_size or config.batch_size),
               image_size=config.image_size, num_classes=config.num_classes, loss=config.loss,
               ignore_label=int(config.dense.ignore_label), parallel=read_parallel(config))


def read_distributed(config: ml_collections.ConfigDict) -> distributed.Timeouts:
  """`config.distributed`: the multi-host runtime's timeouts, in seconds."""
  given = config.distributed
  fields = [field.name for field in dataclasses.fields(distributed.Timeouts)]
  unknown = sorted(set(given) - set(fields))
  if unknown:
    raise errors.UserError(
        f'Unknown field(s) config.distributed.{unknown}; known: {sorted(fields)}.')
  for field in fields:
    if given.get(field) is not None and int(given[field]) <= 0:
      raise errors.UserError(f'config.distributed.{field} must be a positive number of seconds, '
                             f'found {given[field]}.')
  return distributed.Timeouts(**{field: None if given.get(field) is None else int(given[field])
                                 for field in fields})


def resolve(config: ml_collections.ConfigDict, *, num_classes: int,
            source_pp: Optional[str]) -> ml_collections.ConfigDict:
  """The config a run trains with, the user's left as given: the class count its training data
  decided, and, with `source_pp` (the init_from checkpoint's input transform), every pp string
  whose value op is the default value_range(-1, 1) taking the checkpoint's statistics instead
  (fine-tuning feeds a checkpoint the statistics it was trained on). This is what `read` reads
  and what the workdir's config.json saves."""
  resolved = config.copy_and_resolve_references()
  with resolved.unlocked():
    resolved.num_classes = num_classes
  if not source_pp:
    return resolved
  targets = [(resolved, field, field) for field in ('pp_train', 'pp_device')]
  targets += [(entry, 'pp', f'evals.{name}.pp') for name, entry in resolved.evals.items()]
  changed = []
  for target, field, name in targets:
    if target.get(field):
      taken = transforms.take_statistics(target[field], source_pp)
      if taken != target[field]:
        target[field] = taken
        changed.append(name)
  if changed:
    logging.info('config.init_from=%s: %s take its input statistics, %s (pp_from_init=False '
                 'keeps value_range(-1, 1)).', config.init_from, ', '.join(changed),
                 transforms.value_op(source_pp))
  return resolved


def refuse_retired(config: ml_collections.ConfigDict) -> None:
  """A field that no longer exists, set in a recipe: one line saying what replaces it."""
  for field, replacement in common.RETIRED_FIELDS.items():
    if field in config:
      raise errors.UserError(f'config.{field} no longer exists: {replacement}')


def read(config: ml_collections.ConfigDict) -> Options:
  """The whole config, read and checked."""
  refuse_retired(config)
  model, model_config = build.from_run_config(config)
  step, data = read_step(config), read_data(config)
  if step.micro_batches != AUTO and data.batch_size % step.micro_batches:
    raise errors.UserError(f'config.batch_size={data.batch_size} does not split into '
                           f'config.micro_batches={step.micro_batches} equal micro-batches.')
  objective = objectives.read(config, model_config)
  return Options(model=model, model_config=model_config,
                 remat=config.model.remat or model.remat,
                 optimizer=read_optimizer(config, objectives.frozen(objective, model_config)),
                 step=step, data=data, parallel=read_parallel(config),
                 memory=read_memory(config), bookkeeping=read_bookkeeping(config),
                 length=read_length(config), init=read_init(config), evals=read_evals(config),
                 objective=objective)
