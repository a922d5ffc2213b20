"""Everything a run derives from its options before any array exists: mesh, optimizer, step count
and the abstract (sharded) state. No dataset is opened here; the step count of a run measured in
epochs takes the training split's size as an argument.
"""

import dataclasses
from typing import Optional

import jax
import optax

from vit_jax import errors
from vit_jax import objectives
from vit_jax.models import geometry
from vit_jax.parallel import mesh as mesh_lib
from vit_jax.parallel import partitioning
from vit_jax.train import optimizer
from vit_jax.train import options as options_lib
from vit_jax.train import state as state_lib


@dataclasses.dataclass(frozen=True)
class Setup:
  options: options_lib.Options
  mesh: jax.sharding.Mesh
  total_steps: int
  tx: optax.GradientTransformation
  schedule: optimizer.Schedule
  abstract_state: state_lib.TrainState  # of ShapeDtypeStructs carrying their shardings
  shardings: state_lib.TrainState
  objective: objectives.Objective

  @property
  def model(self):
    """The module the state's parameters belong to (the objective's `train_model`)."""
    return self.objective.train_model

  @property
  def remat(self) -> str:
    """The remat policy the step trains with: `options.remat`, or the planner's choice for
    'auto' (train/memory.py). The objective's model holds it, and nothing else."""
    return self.objective.model.remat

  def eval_param_shardings(self):
    """Shardings of `objective.eval_params(params)`: what evaluators take."""
    abstract = jax.eval_shape(self.objective.eval_params, self.abstract_state.params)
    return partitioning.param_shardings(abstract, self.mesh, self.options.parallel.sharding)


def _check_naflex(naflex: options_lib.Naflex, options: options_lib.Options) -> None:
  """A NaFlex run's sequences split over the devices and match the model's patches."""
  devices = jax.device_count()
  if naflex.sequences % devices or naflex.sequences % jax.process_count():
    raise errors.UserError(f'config.naflex.sequences={naflex.sequences} (sequences per step) must '
                           f'be a multiple of the device count ({devices}) and the process '
                           f'count ({jax.process_count()}).')
  patch = tuple(options.model.patches['size'])
  if patch != (naflex.patch_size, naflex.patch_size):
    raise errors.UserError(f'pp_train naflex patch_size={naflex.patch_size} differs from the '
                           f'model\'s patches.size={patch}.')


def build_setup(options: options_lib.Options, total_steps: int) -> Setup:
  """Mesh, objective (a teacher loaded), optimizer and abstract state; fails early, naming the
  config field."""
  data = options.data
  mesh = mesh_lib.make_mesh(options.parallel.mesh, dcn=options.parallel.dcn_mesh)
  mesh_lib.local_batch_size(data.batch_size, jax.process_count(), jax.device_count())
  if data.naflex is not None:
    _check_naflex(data.naflex, options)
  geometry.check_image_size(data.image_size, options.model_config)
  objective = objectives.build(options.objective, options.objective_context())
  model = objective.train_model
  abstract_params = geometry.abstract_params(model, data.image_size)
  tx, schedule = optimizer.build(options.optimizer, abstract_params, total_steps)
  abstract_state, shardings = state_lib.abstract(
      model, tx, image_shape=data.image_shape, mesh=mesh,
      preset=options.parallel.sharding, ema=options.step.ema)
  parallel = options.parallel
  partitioning.check_coverage(abstract_state.params, shardings.params, mesh, parallel.sharding,
                              max_replicated_mb=parallel.replicated_max_mb,
                              allowed=parallel.replicated_ok)
  return Setup(options, mesh, total_steps, tx, schedule, abstract_state, shardings, objective)


def from_config(config, *, num_train_examples: Optional[int] = None) -> Setup:
  """`build_setup` of a config (a ConfigDict) read once (options.read), counted in steps or
  epochs: what a tool that builds no input (the planner, benchmarks) starts from."""
  options = options_lib.read(config)
  return build_setup(options, options.length.steps(num_train_examples))
