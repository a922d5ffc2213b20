"""The optimizer, with optax, from the run's `options.Optimizer`: schedule, clipping, weight
decay, per-parameter learning rates and frozen parameters.

Every field and its default is in vit_jax/configs/common.py; what they mean:
  optim.name            'adam' | 'adamw' (the same: decay is always our own) | 'sgd' | 'adafactor'
                        | 'lars' (MoCo v3's and MAE's linear-probe LARS: the decayed gradient of
                        each matrix scaled by trust_coefficient * |p| / |g + wd p|, then
                        momentum; vectors skip the scaling)
  optim.b1, b2, eps     Adam moments; optim.mu_dtype 'bfloat16' halves mu
  optim.momentum        SGD and LARS momentum (0: none); optim.nesterov
  optim.trust_coefficient  LARS's (0.001)
  lr.base               peak learning rate
  lr.schedule           'cosine' | 'linear' | 'rsqrt' | 'constant', after warmup
  lr.warmup_steps       linear warmup from 0; lr.end: linear's final value; lr.timescale: rsqrt's
  wd, wd_mask           weight decay of the parameters wd_mask selects (kernels)
  wd_style              how wd enters each step (`peak_decay` gives the step's factor at peak):
                        'lr_scaled': p -= lr_t * wd * p, as PyTorch's and optax's AdamW and
                          the ViT paper's Adam (MAE and DeiT's 0.05, the paper's 0.03-0.3);
                        'schedule_scaled': p -= (lr_t / lr.base) * wd * p, as big_vision
                          (its 1e-4: the factor at peak is wd itself)
  grad_clip_norm        global-norm clipping of what trains (unset or 0: none)
  lr_mults              ((regex, multiplier), ...)
  frozen                (regex, ...): `optax.set_to_zero` through `multi_transform`, as
                        big_vision's optax.py: no optimizer state for frozen parameters, and the
                        gradient clip sees only what trains
  layerwise_lr_decay    d: block i of L gets d^(L - i), the stem d^(L + 1), the head 1
Parameter names are '/'-joined paths ('Transformer/encoderblock_3/MlpBlock_0/Dense_0/kernel');
`wd_mask`, `lr_mults`, `frozen` and the layer roles select them as vit_jax.param_names does:
full match, first pattern wins.
"""

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vit_jax import errors
from vit_jax import param_names
from vit_jax.models import stacking
from vit_jax.train import options

Schedule = Callable[[jax.Array], jax.Array]


def make_schedule(lr: options.Schedule, total_steps: int) -> Schedule:
  """Warmup then decay, as a function of the step."""
  if lr.warmup_steps > total_steps:
    raise errors.UserError(
        f'lr.warmup_steps={lr.warmup_steps} exceeds the {total_steps} training steps.')
  decay_steps = max(total_steps - lr.warmup_steps, 1)
  if lr.kind == 'cosine':
    decay = optax.cosine_decay_schedule(lr.base, decay_steps)
  elif lr.kind == 'linear':
    decay = optax.linear_schedule(lr.base, lr.end, decay_steps)
  elif lr.kind == 'rsqrt':
    decay = lambda step: lr.base / jnp.sqrt(1.0 + step / lr.timescale)  # pylint: disable=unnecessary-lambda-assignment
  else:
    decay = optax.constant_schedule(lr.base)
  if not lr.warmup_steps:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, lr.base, lr.warmup_steps), decay],
                              [lr.warmup_steps])


def peak_decay(opt: options.Optimizer) -> float:
  """The fraction of a decayed weight taken off in one step at the peak learning rate: the number
  to compare across codebases (PyTorch AdamW lr * wd; big_vision wd)."""
  if opt.wd_style == 'schedule_scaled':
    return opt.wd
  return opt.wd * opt.schedule.base


def _base_transform(opt: options.Optimizer) -> optax.GradientTransformation:
  if opt.name in ('adam', 'adamw'):
    return optax.scale_by_adam(b1=opt.b1, b2=opt.b2, eps=opt.eps,
                               mu_dtype=jnp.dtype(opt.mu_dtype) if opt.mu_dtype else None)
  if opt.name in ('sgd', 'lars'):
    return (optax.trace(decay=opt.momentum, nesterov=opt.nesterov) if opt.momentum
            else optax.identity())
  return optax.scale_by_factored_rms()  # adafactor


def _trust_ratio(opt: options.Optimizer, params: Any) -> optax.GradientTransformation:
  """LARS's layer-wise scaling, of matrices only (MAE's util/lars.py: p.ndim > 1); a zero
  parameter or update norm leaves the update as it is."""
  matrices = jax.tree.map(lambda p: len(p.shape) > 1, params)
  return optax.masked(optax.scale_by_trust_ratio(trust_coefficient=opt.trust_coefficient,
                                                 eps=0.0), matrices)


# Where a parameter sits in depth, for layer-wise decay: (name pattern, role), first match wins.
# Blocks carry their index in the name (per-layer) or along axis 0 (stacked, scan=True); the
# stem is below the first block; anything else (final norm, pooling heads, the head) is on top.
_LAYER_ROLES = (
    (r'Transformer/encoderblock_\d+/.*', 'block'),
    (r'Transformer/encoderblock/.*', 'stacked'),
    (r'(embedding|cls|dist|registers|Transformer/posembed_input|conv_root|gn_root|block\d+)'
     r'(/.*)?', 'stem'),
)


def lr_multipliers(opt: options.Optimizer, params: Any) -> Optional[Any]:
  """Per-parameter lr multipliers (arrays for stacked layers), or None when all are 1."""
  decay = opt.layerwise_lr_decay
  if not opt.lr_mults and not decay:
    return None
  depth = stacking.num_encoder_layers(params) if decay else 0

  def value(path, leaf):
    mult = np.float32(param_names.lookup(opt.lr_mults, path, 1.0))
    role = param_names.lookup(_LAYER_ROLES, path) if decay else None
    if role == 'stacked':
      per_layer = decay ** (depth - np.arange(depth, dtype=np.float32))
      return (mult * per_layer).reshape((depth,) + (1,) * (len(leaf.shape) - 1))
    if role == 'block':
      mult = mult * decay ** (depth - stacking.block_index(path))
    elif role == 'stem':
      mult = mult * decay ** (depth + 1)
    return np.float32(mult)

  return param_names.map_names(params, value)


def _scale_by_tree(multipliers: Any) -> optax.GradientTransformation:
  """Updates times per-parameter multipliers (frozen parameters' masked nodes pass through)."""
  masked = lambda x: isinstance(x, optax.MaskedNode)  # pylint: disable=unnecessary-lambda-assignment

  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda u, m: u if masked(u) else u * m.astype(u.dtype), updates,
                        multipliers, is_leaf=masked), state
  return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def build(opt: options.Optimizer, params: Any, total_steps: int
          ) -> tuple[optax.GradientTransformation, Schedule]:
  """(optax transformation, lr schedule) for `params` (arrays or ShapeDtypeStructs)."""
  schedule = make_schedule(opt.schedule, total_steps)
  parts = []
  if opt.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(opt.grad_clip_norm))
  if opt.wd:  # LARS decays before its trust ratio: the ratio is of the decayed gradient
    rate = opt.wd / opt.schedule.base if opt.wd_style == 'schedule_scaled' else opt.wd
    decay = optax.add_decayed_weights(rate, mask=param_names.select(params, opt.wd_mask))
    parts += [decay, _trust_ratio(opt, params)] if opt.name == 'lars' else []
  elif opt.name == 'lars':
    parts.append(_trust_ratio(opt, params))
  parts.append(_base_transform(opt))
  if opt.wd and opt.name != 'lars':
    parts.append(decay)
  multipliers = lr_multipliers(opt, params)
  if multipliers is not None:
    parts.append(_scale_by_tree(multipliers))
  parts.append(optax.scale_by_learning_rate(schedule))
  tx = optax.chain(*parts)
  if opt.frozen:
    labels = param_names.map_names(
        params, lambda name, _: 'frozen' if param_names.matches(opt.frozen, name) else 'trained')
    if 'trained' not in set(param_names.flatten(labels).values()):
      raise errors.UserError(
          f'config.frozen={opt.frozen} selects every parameter: nothing would train.')
    tx = optax.multi_transform({'trained': tx, 'frozen': optax.set_to_zero()}, labels)
  return tx, schedule
