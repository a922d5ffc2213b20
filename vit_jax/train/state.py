"""TrainState and its sharded creation: initialised directly into its shards, never whole."""

from typing import Any, Optional

import flax
import jax
import jax.numpy as jnp
import optax

from vit_jax.parallel import mesh as mesh_lib
from vit_jax.parallel import partitioning


@flax.struct.dataclass
class TrainState:
  """Everything a step changes. `rng` is raw key data (uint32[2]): portable through checkpoints."""

  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array
  ema_params: Optional[Any] = None


def state_shardings(abstract_state: TrainState, tx: optax.GradientTransformation,
                    mesh: jax.sharding.Mesh, preset: str) -> TrainState:
  """Shardings for every leaf of a state: params by the sharding preset's table, optimizer state and EMA
  like their parameters, counters and rng replicated."""
  params = partitioning.param_shardings(abstract_state.params, mesh, preset)
  replicated = mesh_lib.replicated(mesh)
  return TrainState(
      step=replicated, params=params,
      opt_state=partitioning.opt_state_shardings(tx, abstract_state.opt_state,
                                                 abstract_state.params, params, mesh),
      rng=replicated,
      ema_params=None if abstract_state.ema_params is None else params)


def _initializer(model, tx, image_shape, ema):
  def init(rng):
    init_rng, state_rng = jax.random.split(rng)
    params = model.init(init_rng, jnp.zeros((1, *image_shape), jnp.float32), train=False)['params']
    return TrainState(step=jnp.zeros([], jnp.int32), params=params, opt_state=tx.init(params),
                      rng=state_rng, ema_params=params if ema else None)
  return init


def abstract(model, tx: optax.GradientTransformation, *, image_shape: tuple[int, ...],
             mesh: jax.sharding.Mesh, preset: str, ema: bool = False
             ) -> tuple[TrainState, TrainState]:
  """(state of ShapeDtypeStructs carrying their shardings, shardings): no memory used."""
  shapes = jax.eval_shape(_initializer(model, tx, image_shape, ema), jax.random.PRNGKey(0))
  shardings = state_shardings(shapes, tx, mesh, preset)
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      shapes, shardings), shardings


def create(model, tx: optax.GradientTransformation, *, image_shape: tuple[int, ...], seed: int,
           mesh: jax.sharding.Mesh, preset: str,
           ema: bool = False) -> tuple[TrainState, TrainState]:
  """(state, shardings): initialised by a jit whose outputs are already sharded, so no host or
  device ever holds the whole model (a ViT-G initialises on devices that each hold a slice)."""
  _, shardings = abstract(model, tx, image_shape=image_shape, mesh=mesh, preset=preset,
                          ema=ema)
  init = _initializer(model, tx, image_shape, ema)
  return jax.jit(init, out_shardings=shardings)(jax.random.PRNGKey(seed)), shardings


def with_params(params: Any, tx: optax.GradientTransformation, shardings: TrainState, *,
                seed: int, ema: bool = False) -> TrainState:
  """A fresh state around given (e.g. pretrained) parameters, placed on `shardings`."""
  params = jax.device_put(params, shardings.params)

  def init(params, rng):
    return TrainState(step=jnp.zeros([], jnp.int32), params=params, opt_state=tx.init(params),
                      rng=jax.random.split(rng)[1], ema_params=params if ema else None)
  return jax.jit(init, out_shardings=shardings)(params, jax.random.PRNGKey(seed))
