"""The optimizer from config, with optax: schedule, clipping, weight decay, per-group lr.

Config fields (an ml_collections ConfigDict or dict; defaults in brackets):
  optim.name            'adam' | 'adamw' (the same: decay is always our own) | 'sgd' | 'adafactor'
  optim.b1, b2, eps     Adam moments [0.9, 0.999, 1e-8]; optim.mu_dtype 'bfloat16' halves mu
  optim.momentum        SGD momentum [0.9]; optim.nesterov [False]
  lr.base               peak learning rate
  lr.schedule           'cosine' | 'linear' | 'rsqrt' | 'constant' ['cosine'], after warmup
  lr.warmup_steps       linear warmup from 0 [0]
  lr.end                final value of the linear decay [0.0]; lr.timescale for rsqrt [10_000]
  wd                    weight decay [0.0]; wd_mask regex [r'.*/kernel$'] (kernels only)
  wd_decoupled          False: AdamW style, p -= lr_t * wd * p (the paper's 0.1);
                        True: big_vision style, p -= (lr_t / lr.base) * wd * p (its 1e-4)
  grad_clip_norm        global-norm clipping [None]
  lr_mults              ((regex, multiplier), ...) [()]
  frozen                (regex, ...) [()]: `optax.set_to_zero` through `multi_transform`, as
                        big_vision's optax.py: no optimizer state for frozen parameters, and the
                        gradient clip sees only what trains
  layerwise_lr_decay    d: block i of L gets d^(L - i), the stem d^(L + 1), the head 1 [None]
Parameter names are '/'-joined paths ('Transformer/encoderblock_3/MlpBlock_0/Dense_0/kernel');
`wd_mask`, `lr_mults` and `frozen` select them as vit_jax.param_names does: full match, first
pattern wins.
"""

import re
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vit_jax import errors
from vit_jax import param_names

Schedule = Callable[[jax.Array], jax.Array]


def _get(config: Any, path: str, default: Any = None) -> Any:
  node = config
  for key in path.split('.'):
    if node is None:
      return default
    node = node.get(key, None) if hasattr(node, 'get') else getattr(node, key, None)
  return default if node is None else node


def make_schedule(config: Any, total_steps: int) -> Schedule:
  """Warmup then decay, as a function of the step."""
  base = float(_get(config, 'lr.base'))
  warmup = int(_get(config, 'lr.warmup_steps', 0))
  kind = _get(config, 'lr.schedule', 'cosine')
  if warmup > total_steps:
    raise errors.UserError(f'lr.warmup_steps={warmup} exceeds the {total_steps} training steps.')
  decay_steps = max(total_steps - warmup, 1)
  if kind == 'cosine':
    decay = optax.cosine_decay_schedule(base, decay_steps)
  elif kind == 'linear':
    decay = optax.linear_schedule(base, float(_get(config, 'lr.end', 0.0)), decay_steps)
  elif kind == 'rsqrt':
    timescale = float(_get(config, 'lr.timescale', 10_000))
    decay = lambda step: base / jnp.sqrt(1.0 + step / timescale)  # pylint: disable=unnecessary-lambda-assignment
  elif kind == 'constant':
    decay = optax.constant_schedule(base)
  else:
    raise errors.UserError(
        f'Unknown lr.schedule {kind!r}; expected cosine, linear, rsqrt or constant.')
  if not warmup:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, base, warmup), decay], [warmup])


def _core(config: Any) -> optax.GradientTransformation:
  name = _get(config, 'optim.name', 'adam')
  if name in ('adam', 'adamw'):
    mu_dtype = _get(config, 'optim.mu_dtype')
    return optax.scale_by_adam(b1=_get(config, 'optim.b1', 0.9), b2=_get(config, 'optim.b2', 0.999),
                               eps=_get(config, 'optim.eps', 1e-8),
                               mu_dtype=jnp.dtype(mu_dtype) if mu_dtype else None)
  if name == 'sgd':
    momentum = _get(config, 'optim.momentum', 0.9)
    return optax.trace(decay=momentum, nesterov=_get(config, 'optim.nesterov', False)) \
        if momentum else optax.identity()
  if name == 'adafactor':
    return optax.scale_by_factored_rms()
  raise errors.UserError(f'Unknown optim.name {name!r}; expected adam, adamw, sgd or adafactor.')


def _layer_index(path: str) -> Optional[int]:
  """Block index; -1 for stacked blocks, -2 for the stem, None for the head side."""
  match = re.search(r'encoderblock_(\d+)/', path)
  if match:
    return int(match.group(1))
  if re.search(r'encoderblock/', path):
    return -1  # stacked: one multiplier per layer along axis 0
  if re.search(r'^(embedding|cls|Transformer/posembed_input|conv_root|gn_root|block\d+)/?', path):
    return -2  # stem: below the first block
  return None  # head, pre_logits, encoder_norm, MAP head: full lr


def lr_multipliers(config: Any, params: Any) -> Optional[Any]:
  """Per-parameter lr multipliers (arrays for stacked layers), or None when all are 1."""
  mults = tuple(_get(config, 'lr_mults', ()) or ())
  decay = _get(config, 'layerwise_lr_decay')
  if not mults and not decay:
    return None
  num_layers = None
  if decay:
    flat = param_names.flatten(params)
    blocks = {int(m.group(1)) for p in flat for m in [re.search(r'encoderblock_(\d+)/', p)] if m}
    stacked = [leaf.shape[0] for p, leaf in flat.items() if 'encoderblock/' in p]
    num_layers = len(blocks) if blocks else (stacked[0] if stacked else 0)

  def value(path, leaf):
    mult = np.float32(param_names.lookup(mults, path, 1.0))
    if decay:
      layer = _layer_index(path)
      if layer == -1:
        per_layer = decay ** (num_layers - np.arange(num_layers, dtype=np.float32))
        return (mult * per_layer).reshape((num_layers,) + (1,) * (len(leaf.shape) - 1))
      if layer == -2:
        mult = mult * decay ** (num_layers + 1)
      elif layer is not None:
        mult = mult * decay ** (num_layers - layer)
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


def build(config: Any, params: Any, total_steps: int) -> tuple[optax.GradientTransformation,
                                                                 Schedule]:
  """(optax transformation, lr schedule) for `params` (arrays or ShapeDtypeStructs)."""
  schedule = make_schedule(config, total_steps)
  base = float(_get(config, 'lr.base'))
  parts = []
  clip = _get(config, 'grad_clip_norm')
  if clip:
    parts.append(optax.clip_by_global_norm(float(clip)))
  parts.append(_core(config))
  wd = float(_get(config, 'wd', 0.0))
  if wd:
    pattern = _get(config, 'wd_mask', r'.*/kernel$')
    patterns = (pattern,) if isinstance(pattern, str) else tuple(pattern)
    mask = param_names.select(params, patterns)
    rate = wd / base if _get(config, 'wd_decoupled', False) else wd
    parts.append(optax.add_decayed_weights(rate, mask=mask))
  multipliers = lr_multipliers(config, params)
  if multipliers is not None:
    parts.append(_scale_by_tree(multipliers))
  parts.append(optax.scale_by_learning_rate(schedule))
  tx = optax.chain(*parts)
  frozen = tuple(_get(config, 'frozen', ()) or ())
  if frozen:
    labels = param_names.map_names(
        params, lambda name, _: 'frozen' if param_names.matches(frozen, name) else 'trained')
    if 'trained' not in set(param_names.flatten(labels).values()):
      raise errors.UserError(
          f'config.frozen={frozen} selects every parameter: nothing would train.')
    tx = optax.multi_transform({'trained': tx, 'frozen': optax.set_to_zero()}, labels)
  return tx, schedule
