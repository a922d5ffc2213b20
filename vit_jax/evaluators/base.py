"""The evaluator interface, and what every kind shares.

An evaluator is built from one entry of `config.evals` (`{'kind': ..., 'every': steps, ...}`) and
a `Context` (model, mesh, parameter shardings); `run(params, step)` returns `{'<name>/<metric>':
value}`. Building checks everything a later evaluation would trip on (fields, datasets, splits,
shots), so a bad entry fails before the first training step.
"""

import dataclasses
import difflib
from typing import Any, Mapping

import jax

from vit_jax import errors
from vit_jax.data import pipeline
from vit_jax.data import sources
from vit_jax.parallel import mesh as mesh_lib

COMMON_FIELDS = ('kind', 'every', 'batch_size')


@dataclasses.dataclass(frozen=True)
class Context:
  """What evaluators run on: the model, its mesh and parameter shardings, the run's class count.
  Their steps trace under the run's `partitioning.use(mesh, config.sharding)`."""

  model: Any
  mesh: jax.sharding.Mesh
  param_shardings: Any
  num_classes: int
  batch_size: int  # the default global eval batch
  image_size: int  # the run's: a dense evaluator's default window
  ignore_label: int  # a segmentation run's (config.dense.ignore_label)

  def local_batch(self, global_batch: int) -> int:
    return mesh_lib.local_batch_size(global_batch, jax.process_count(), jax.device_count())


class Evaluator:
  """One named evaluation: `run(params, step)` -> `{'<name>/<metric>': float}`."""

  FIELDS: tuple[str, ...] = ()  # the kind's own config fields, besides COMMON_FIELDS
  TASK = ''  # a dense evaluator's: 'segmentation' | 'depth'
  figures = 0  # examples the run's end figure shows (`figure_rows`); 0: no figure

  def __init__(self, name: str, entry: Mapping[str, Any], context: Context):
    self.name, self.context = name, context
    self.every = int(entry.get('every') or 0)
    if self.every < 0:
      raise errors.UserError(f'config.evals.{name}.every must be >= 0 (0: at the end only), found '
                             f'{self.every}.')
    self.batch_size = int(entry.get('batch_size') or context.batch_size)

  def due(self, step: int, total_steps: int) -> bool:
    """At every `every` steps, and at the final step."""
    return step == total_steps or bool(self.every and step % self.every == 0)

  def run(self, params: Any, step: int) -> dict[str, float]:
    raise NotImplementedError

  def figure_rows(self, params: Any) -> list:
    """The rows of the evaluator's end-of-run figure (an evaluator with `figures` says)."""
    raise NotImplementedError

  def summary(self, metrics: Mapping[str, float]) -> str:
    """A short text of `metrics` for the progress line."""
    return ', '.join(f'{key} {value:.4g}' for key, value in metrics.items())


def check_fields(name: str, entry: Mapping[str, Any], kind: str, allowed: tuple[str, ...]):
  known = COMMON_FIELDS + allowed
  for field in entry:
    if field not in known:
      near = difflib.get_close_matches(field, known, n=3, cutoff=0.5)
      hint = f'; nearest: {", ".join(near)}' if near else f'; fields: {", ".join(known)}'
      raise errors.UserError(f'config.evals.{name}: kind {kind!r} has no field {field!r}{hint}.')


def source(name: str, field: str, data: Mapping[str, Any]) -> sources.Source:
  """A data source for an evaluator; its errors name the evaluator and the field."""
  if not data or not data.get('name') or not data.get('split'):
    raise errors.UserError(f'config.evals.{name}.{field} needs a dataset name and split; found '
                           f'{dict(data or {})}.')
  with errors.context(f'config.evals.{name}.{field}'):
    return sources.from_config(data)


def as_dict(entry) -> dict:
  """A nested field of an entry (a mapping, or a ConfigDict from a test) as a plain dict."""
  return entry.to_dict() if hasattr(entry, 'to_dict') else dict(entry)


def batches(source_: sources.Source, pp, local_batch: int, mesh) -> Any:
  """Global, padded batches (with `mask`) of a whole source, on `mesh`'s batch sharding."""
  dataset, _ = pipeline.eval_dataset(source_, pp, local_batch=local_batch,
                                     process_index=jax.process_index(),
                                     process_count=jax.process_count())
  return pipeline.eval_batches(dataset, mesh_lib.batch_sharding(mesh))
