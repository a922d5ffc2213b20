"""Logical axes -> mesh axes: one table per sharding preset (`config.sharding`).

Parameters get logical axis names from their name (`PARAM_AXES`: full match, first row wins), so the
model's parameter tree stays the plain, released one; activations get logical names through
`nn.with_logical_constraint` inside the model. A preset (`RULES`) maps logical names to mesh
axes; changing how the model is split is choosing (or editing) a table, not the model.

- `dp`: parameters replicated, batch split over ('data', 'fsdp').
- `fsdp`: parameters and optimizer state split along their width ('embed') over 'fsdp'
  (ZeRO-3: gathered per layer when used), batch as in dp.
- `fsdp_tp`: fsdp plus Megatron tensor parallelism: attention heads and MLP hidden units (and
  the matching activations) split over 'tensor'.
A dimension that does not divide by its mesh axis size stays whole (replicated).
"""

import contextlib
from typing import Any, Iterator, Optional, Sequence

import flax.linen as nn
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import optax

from vit_jax import errors
from vit_jax import param_names
from vit_jax.parallel import mesh as mesh_lib

# Parameter name (full match, first row wins; vit_jax.param_names) -> logical axes of the
# (per-layer) parameter. Scanned parameters get a leading 'layers' axis on top.
PARAM_AXES: tuple[tuple[str, Optional[tuple[Optional[str], ...]]], ...] = (
    (r'(.*/)?embedding/kernel', (None, None, None, 'embed')),
    (r'(.*/)?(cls|dist|registers|probe|pos_embedding|mask_token)', (None, None, 'embed')),
    (r'.*/(query|key|value)/kernel', ('embed', 'heads', 'kv')),
    (r'.*/(query|key|value)/bias', ('heads', 'kv')),
    (r'.*/out/kernel', ('heads', 'kv', 'embed')),
    (r'.*/Dense_0/kernel', ('embed', 'mlp')),
    (r'.*/Dense_0/bias', ('mlp',)),
    (r'.*/Dense_1/kernel', ('mlp', 'embed')),
    (r'(.*/)?(pre_logits|head|head_dist|decoder_embed|decoder_pred)/kernel', ('embed', None)),
    # Dense heads (vit_jax.models.dense): Segmenter's projections, the multi-level decoder's
    # projections and 3x3 convolutions, the linear probe.
    (r'(.*/)?dense_head/(proj_patch|proj_classes)', ('embed', None)),
    (r'(.*/)?dense_head/(proj_dec|project_\d+|linear|predict)/kernel', ('embed', None)),
    (r'(.*/)?dense_head/(fuse|refine)/kernel', (None, None, 'embed', None)),
    (r'(.*/)?(LayerNorm_\d+|encoder_norm)/(scale|bias)|.*/(out|Dense_1)/bias|(.*/)?embedding/bias',
     ('embed',)),
    (r'.*', None),  # everything else (ResNet stem, head bias): replicated
)

_BATCH = mesh_lib.BATCH_AXES
RULES: dict[str, tuple[tuple[str, Any], ...]] = {
    'dp': (('batch', _BATCH),),
    'fsdp': (('batch', _BATCH), ('embed', 'fsdp')),
    'fsdp_tp': (('batch', _BATCH), ('embed', 'fsdp'), ('heads', 'tensor'), ('mlp', 'tensor'),
                ('act_heads', 'tensor'), ('act_mlp', 'tensor')),
}


def get_rules(preset: str) -> tuple[tuple[str, Any], ...]:
  if preset not in RULES:
    raise errors.UserError(
        f'config.sharding={preset!r} is not a preset; expected one of {sorted(RULES)}.')
  return RULES[preset]


@contextlib.contextmanager
def use(mesh: Mesh, preset: str) -> Iterator[None]:
  """The mesh and the preset's logical axis rules, in force for what is traced inside: entered
  once around a run (training, `--mode=eval`), never per step."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(get_rules(preset)):
    yield


def logical_axes(path: str, ndim: int) -> tuple[Optional[str], ...]:
  """Logical axes of the parameter at `path` ('Transformer/encoderblock_0/...') with `ndim` dims."""
  axes = param_names.lookup(PARAM_AXES, path)
  if axes is None:
    return (None,) * ndim
  if ndim == len(axes) + 1:  # stacked by nn.scan
    return ('layers', *axes)
  if ndim != len(axes):
    raise errors.UserError(f'Parameter {path} has {ndim} dims; the axis table expects '
                           f'{len(axes)} ({axes}).')
  return axes


def _mesh_spec(axes: Sequence[Optional[str]], shape: Sequence[int], rules, mesh: Mesh) -> P:
  table = dict(rules)
  spec = []
  used = set()
  for logical, size in zip(axes, shape):
    mesh_axes = table.get(logical) if logical else None
    names = (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes or ())
    names = tuple(n for n in names if n not in used)
    pieces = 1
    for name in names:
      pieces *= mesh.shape[name]
    if not names or pieces == 1 or size % pieces:
      spec.append(None)  # unsharded: no rule, trivial axis, or not divisible
      continue
    used.update(names)
    spec.append(names[0] if len(names) == 1 else names)
  return P(*spec)


def param_shardings(params: Any, mesh: Mesh, preset: str) -> Any:
  """A NamedSharding per parameter (arrays or ShapeDtypeStructs) for `preset` on `mesh`."""
  rules = get_rules(preset)
  return param_names.map_names(params, lambda path, leaf: NamedSharding(
      mesh, _mesh_spec(logical_axes(path, len(leaf.shape)), leaf.shape, rules, mesh)))


def check_coverage(params: Any, shardings: Any, mesh: Mesh, preset: str, *,
                   max_replicated_mb: float = 1.0, allowed: Sequence[str] = ()) -> None:
  """Under fsdp/fsdp_tp, refuses a parameter larger than `max_replicated_mb` per device that is
  left whole on every device (no PARAM_AXES row names it, or its dims do not divide), unless a
  pattern of `allowed` names it: at ViT-g scale an unplanned copy per device decides whether a
  model fits (MaxText's assert_params_sufficiently_sharded, as a startup check)."""
  if preset == 'dp' or mesh.shape.get('fsdp', 1) == 1:
    return
  shardings = param_names.flatten(shardings)
  found = []
  for path, leaf in param_names.flatten(params).items():
    size_mb = leaf.size * leaf.dtype.itemsize / 2**20
    whole = all(axis is None for axis in shardings[path].spec)
    if whole and size_mb > max_replicated_mb and not param_names.matches(allowed, path):
      why = ('no row of PARAM_AXES names it' if param_names.lookup(PARAM_AXES, path) is None
             else f'its dims {tuple(leaf.shape)} do not divide over the mesh')
      found.append(f'{path} ({size_mb:.1f} MiB: {why})')
  if found:
    more = f' and {len(found) - 3} more' if len(found) > 3 else ''
    raise errors.UserError(
        f'config.sharding={preset!r} would copy whole onto every device: {"; ".join(found[:3])}'
        f'{more}. Add a row for it to PARAM_AXES in vit_jax/parallel/partitioning.py, or allow '
        'it with --config.replicated_ok=\'("<regex>",)\' (config.replicated_max_mb: the size '
        'allowed without).')


def opt_state_shardings(tx: optax.GradientTransformation, opt_state: Any, params: Any,
                        param_sharding: Any, mesh: Mesh) -> Any:
  """Shardings for an optimizer state: each copy of the parameter tree inside it (optax's
  `tree_map_params`) follows the parameters where the shapes agree (not the factored rows and
  columns of Adafactor); counts, scalars and the rest are replicated."""
  replicated = mesh_lib.replicated(mesh)
  masked = lambda x: isinstance(x, optax.MaskedNode)  # pylint: disable=unnecessary-lambda-assignment

  def sharding_of(leaf, param, sharding):
    if masked(leaf):
      return leaf
    return sharding if leaf.shape == param.shape else replicated
  return optax.tree_utils.tree_map_params(
      tx, sharding_of, opt_state, params, param_sharding,
      transform_non_params=lambda _: replicated, is_leaf=masked)
