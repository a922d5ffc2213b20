"""Everything a run derives from its config before any array exists: mesh, model, optimizer,
step count and the abstract (sharded) state. No dataset is opened here; the step count of a run
measured in epochs takes the training split's size as an argument.
"""

import dataclasses
import math
from typing import Any, Optional

import jax
import ml_collections

from vit_jax import errors
from vit_jax.data import pipeline
from vit_jax.models import build
from vit_jax.models import geometry
from vit_jax.parallel import mesh as mesh_lib
from vit_jax.train import optimizer
from vit_jax.train import state as state_lib


@dataclasses.dataclass
class Setup:
  config: ml_collections.ConfigDict
  model: Any
  model_config: ml_collections.ConfigDict
  mesh: jax.sharding.Mesh
  total_steps: int
  tx: Any
  schedule: Any
  abstract_state: Any
  shardings: Any

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return (self.config.image_size, self.config.image_size, 3)


def _positive(field: str, value, unset=(None,)) -> None:
  if value not in unset and not value > 0:
    raise errors.UserError(f'config.{field} must be positive, found {value}.')


def num_steps(config: ml_collections.ConfigDict, num_train_examples: Optional[int]) -> int:
  """`total_steps`, or `total_epochs` over a split of `num_train_examples` at `batch_size`.

  `total_steps=0` counts as unset, so a recipe in steps can be switched to epochs from the
  command line (`--config.total_steps=0 --config.total_epochs=90`).
  """
  _positive('total_steps', config.get('total_steps'), unset=(None, 0))
  _positive('total_epochs', config.get('total_epochs'), unset=(None, 0))
  _positive('batch_size', config.get('batch_size'))
  if config.get('total_steps') and config.get('total_epochs'):
    raise errors.UserError(f'Set one of config.total_steps ({config.total_steps}) and '
                           f'config.total_epochs ({config.total_epochs}); set the other to 0.')
  if config.get('total_steps'):
    return int(config.total_steps)
  if config.get('total_epochs'):
    if not num_train_examples:
      raise errors.UserError(
          'config.total_epochs needs the training split\'s size (none was given).')
    return max(1, math.ceil(config.total_epochs * num_train_examples / config.batch_size))
  raise errors.UserError('Set config.total_steps, or config.total_epochs (found neither).')


def build_setup(config: ml_collections.ConfigDict, *, num_train_examples: Optional[int] = None,
                total_steps: Optional[int] = None) -> Setup:
  """Mesh, model, optimizer and abstract state; fails early, naming the config field."""
  mesh = mesh_lib.make_mesh(tuple(config.mesh))
  pipeline.local_batch_size(config.batch_size, jax.process_count(), jax.device_count())
  model, model_config = build.from_run_config(config)
  geometry.check_image_size(config.image_size, model_config)
  total_steps = total_steps or num_steps(config, num_train_examples)
  abstract_params = geometry.abstract_params(model, config.image_size)
  tx, schedule = optimizer.build(config, abstract_params, total_steps)
  image_shape = (config.image_size, config.image_size, 3)
  abstract_state, shardings = state_lib.abstract(
      model, tx, image_shape=image_shape, mesh=mesh, layout=config.layout,
      ema=bool(config.get('ema_decay')))
  return Setup(config, model, model_config, mesh, total_steps, tx, schedule, abstract_state,
               shardings)
