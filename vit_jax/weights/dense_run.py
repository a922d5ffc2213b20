"""A dense run's workdir (`config.objective='dense'`: segmentation or depth) as its model and
parameters, for the evaluators and `viz` that read one; the one reader of such a run."""

from typing import Any

from vit_jax import errors
from vit_jax import storage
from vit_jax.models import build as build_lib
from vit_jax.models import dense as dense_lib
from vit_jax.objectives import dense as dense_objective
from vit_jax.weights import trained_model
from vit_jax.weights import workdir_params


def load(workdir: str) -> tuple[dense_lib.DenseModel, Any]:
  """(dense model, parameters with the head) of a dense run's workdir."""
  config = trained_model.read_run_config(workdir)
  if config.get('objective') != 'dense':
    raise errors.UserError(f'{workdir} is not a dense run (its objective is '
                           f'{config.get("objective")!r}); segmentation and depth need the '
                           'workdir of a run with config.objective=dense.')
  model, _ = build_lib.from_run_config(config)
  _, params = workdir_params.read(workdir)
  return dense_objective.build_model(model, dense_objective.read_fields(config),
                                     int(config.num_classes)), params


def is_dense_run(path: str) -> bool:
  return ((storage.path(path) / 'config.json').exists()
          and trained_model.read_run_config(path).get('objective') == 'dense')
