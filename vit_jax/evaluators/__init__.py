"""Evaluators: what a run measures, on a schedule, through one small interface (`base.Evaluator`).

`config.evals = {name: {'kind': ..., 'every': steps, <fields of that kind>}}`, any number at
once, read once into `options.Evals` (vit_jax.train.options): all this package takes. Kinds:
`classification` (top-1 and loss on a split; also ImageNet-v2), `real` (ImageNet-ReaL),
`fewshot` (the paper's linear probes), `segmentation` and `depth` (a dense run's mIoU and RMSE;
evaluators/dense.py). An entry without `batch_size` takes
`config.eval_batch_size`, else the training `batch_size`.
"""

from typing import Any, Optional

from absl import logging
import jax

from vit_jax import errors
from vit_jax.weights import dense_run
from vit_jax.weights import trained_model
from vit_jax.data import pp_spec
from vit_jax.data import sources
from vit_jax.evaluators import base
from vit_jax.evaluators import classification
from vit_jax.evaluators import dense
from vit_jax.evaluators import fewshot
from vit_jax.weights import transforms
from vit_jax.models import geometry
from vit_jax.parallel import mesh as mesh_lib
from vit_jax.parallel import partitioning

KINDS = {'classification': classification.Classification, 'real': classification.Real,
         'fewshot': fewshot.FewShot, 'segmentation': dense.Segmentation, 'depth': dense.Depth}


def build(name: str, entry: dict, context: base.Context, run_loss: str) -> base.Evaluator:
  kind = entry.get('kind')
  if kind not in KINDS:
    raise errors.UserError(f'config.evals.{name}.kind: expected one of {sorted(KINDS)}, found '
                           f'{kind!r}.')
  base.check_fields(name, entry, kind, KINDS[kind].FIELDS)
  return KINDS[kind](name, entry, context, run_loss=run_loss)


def build_all(evals, model, mesh, param_shardings) -> list[base.Evaluator]:
  """Every evaluator of `evals` (options.Evals), built and checked (datasets, splits, shots,
  fields)."""
  context = _context(evals, model, mesh, param_shardings)
  return [build(name, entry, context, evals.loss) for name, entry in evals.entries.items()]


def _context(evals, model, mesh, param_shardings,
             image_size: Optional[int] = None) -> base.Context:
  return base.Context(model=model, mesh=mesh, param_shardings=param_shardings,
                      num_classes=evals.num_classes, batch_size=evals.batch_size,
                      image_size=image_size or evals.image_size,
                      ignore_label=evals.ignore_label)


def evaluate_checkpoint(evals, checkpoint_path: str, *,
                        skip_missing: bool = False) -> dict[str, float]:
  """Runs every evaluator of `evals` (options.Evals) once on a workdir's newest checkpoint or a
  released .npz.

  A workdir brings its own model (its saved config); an .npz's architecture is read off its
  shapes, its position embeddings resampled to `config.image_size`. A checkpoint trained on
  other input statistics (a timm or Hugging Face file, a run that normalised) is fed them where an
  evaluator has the default value_range(-1, 1). With `skip_missing`, an
  evaluator whose dataset is not prepared is left out and named in the result's
  `'missing'` entry ({evaluator: the error}) instead of stopping the others, and the result's
  `'protocol'` says how the numbers were measured (resolution, averaged weights, each pp).
  `config.image_size` unset evaluates at the checkpoint's own resolution; an evaluator's pp may
  name `{image_size}` and `{resize_size}` (vit_jax.data.pp_spec.at_resolution).
  """
  if not evals.entries:
    raise errors.UserError('--mode=eval needs an evaluator in config.evals; found none.')
  if any(entry.get('kind') in ('segmentation', 'depth') for entry in evals.entries.values()):
    return _evaluate_dense(evals, checkpoint_path)
  # config.image_size unset: the checkpoint's own resolution (pp may name {image_size}).
  loaded = trained_model.load(checkpoint_path, image_size=evals.image_size)
  size = loaded.image_size
  geometry.check_image_size(size, loaded.model_config)
  mesh, shardings = _placement(evals, loaded.params)
  context = _context(evals, loaded.model, mesh, shardings, image_size=size)
  built, missing, protocol = [], {}, {}
  for name, entry in evals.entries.items():
    written = entry.get('pp') and pp_spec.at_resolution(entry['pp'], size)
    pp = written and transforms.take_statistics(written, loaded.pp)
    if pp and pp != entry['pp']:  # at the checkpoint's resolution, with its input statistics
      entry = {**entry, 'pp': pp}
      logging.info('%s: %s evaluates as %s', checkpoint_path, name, pp)
    protocol[name] = pp
    try:
      built.append(build(name, entry, context, evals.loss))
    except sources.DatasetMissing as e:
      if not skip_missing:
        raise
      missing[name] = str(e)
  result: dict[str, Any] = _run_once(built, loaded.params, shardings, mesh,
                                     evals.parallel.sharding)
  if skip_missing:
    result['missing'] = missing
    # How each number was measured, for a report to print beside it.
    result['protocol'] = {'image_size': size, 'averaged': loaded.averaged, 'pp': protocol}
  return result


def _evaluate_dense(evals, workdir: str) -> dict[str, float]:
  """The dense evaluators of `evals` on a dense run's newest checkpoint (head included)."""
  model, params = dense_run.load(workdir)
  mesh, shardings = _placement(evals, params)
  built = build_all(evals, model, mesh, shardings)
  return _run_once(built, params, shardings, mesh, evals.parallel.sharding)


def _placement(evals, params) -> tuple[Any, Any]:
  """(mesh, parameter shardings) of a --mode=eval run."""
  parallel = evals.parallel
  mesh = mesh_lib.make_mesh(parallel.mesh, dcn=parallel.dcn_mesh)
  return mesh, partitioning.param_shardings(params, mesh, parallel.sharding)


def _run_once(built: list, params, shardings, mesh, sharding: str) -> dict[str, Any]:
  """Every evaluator of `built` once on `params`, placed on `shardings`."""
  params = jax.device_put(params, shardings)
  result: dict[str, Any] = {}
  with partitioning.use(mesh, sharding):
    for evaluator in built:
      result.update(evaluator.run(params, step=0))
  return result
