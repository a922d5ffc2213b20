"""Evaluators: what a run measures, on a schedule, through one small interface (`base.Evaluator`).

`config.evals = {name: {'kind': ..., 'every': steps, <fields of that kind>}}`; any number at
once. Kinds: `classification` (top-1 and loss on a split; also ImageNet-v2), `real`
(ImageNet-ReaL), `fewshot` (the paper's linear probes), `segmentation` and `depth` (a dense
run's mIoU and RMSE; evaluators/dense.py). An entry without `batch_size` takes
`config.eval_batch_size`, else the training `batch_size`.
"""

from typing import Any, Optional

from absl import logging
import jax
import ml_collections

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


def entries(config: ml_collections.ConfigDict) -> dict[str, dict]:
  """`config.evals` as plain dicts, in the order the recipe declared them."""
  return {name: base.as_dict(entry) for name, entry in (config.get('evals') or {}).items()}


def build(name: str, entry: dict, context: base.Context, run_loss: str) -> base.Evaluator:
  kind = entry.get('kind')
  if kind not in KINDS:
    raise errors.UserError(f'config.evals.{name}.kind: expected one of {sorted(KINDS)}, found '
                           f'{kind!r}.')
  base.check_fields(name, entry, kind, KINDS[kind].FIELDS)
  return KINDS[kind](name, entry, context, run_loss=run_loss)


def from_config(config: ml_collections.ConfigDict, model, mesh,
                param_shardings) -> list[base.Evaluator]:
  """Every evaluator of the run, built and checked (datasets, splits, shots, fields)."""
  context = _context(config, model, mesh, param_shardings)
  return [build(name, entry, context, config.loss) for name, entry in entries(config).items()]


def _context(config: ml_collections.ConfigDict, model, mesh, param_shardings,
             image_size: Optional[int] = None) -> base.Context:
  return base.Context(model=model, mesh=mesh, param_shardings=param_shardings,
                      num_classes=config.num_classes,
                      batch_size=config.get('eval_batch_size') or config.batch_size,
                      image_size=image_size or config.image_size,
                      ignore_label=int(config.get('dense', {}).get('ignore_label', 255)))


def evaluate_checkpoint(config: ml_collections.ConfigDict, checkpoint_path: str, *,
                        skip_missing: bool = False) -> dict[str, float]:
  """Runs every evaluator of `config` once on a workdir's newest checkpoint or a released .npz.

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
  if not entries(config):
    raise errors.UserError('--mode=eval needs an evaluator in config.evals; found none.')
  if any(entry.get('kind') in ('segmentation', 'depth') for entry in entries(config).values()):
    return _evaluate_dense(config, checkpoint_path)
  # config.image_size unset: the checkpoint's own resolution (pp may name {image_size}).
  loaded = trained_model.load(checkpoint_path, image_size=config.image_size)
  size = loaded.image_size
  geometry.check_image_size(size, loaded.model_config)
  mesh, shardings = _placement(config, loaded.params)
  context = _context(config, loaded.model, mesh, shardings, image_size=size)
  built, missing, protocol = [], {}, {}
  for name, entry in entries(config).items():
    written = entry.get('pp') and pp_spec.at_resolution(entry['pp'], size)
    pp = written and transforms.take_statistics(written, loaded.pp)
    if pp and pp != entry['pp']:  # at the checkpoint's resolution, with its input statistics
      entry = {**entry, 'pp': pp}
      logging.info('%s: %s evaluates as %s', checkpoint_path, name, pp)
    protocol[name] = pp
    try:
      built.append(build(name, entry, context, config.loss))
    except sources.DatasetMissing as e:
      if not skip_missing:
        raise
      missing[name] = str(e)
  result: dict[str, Any] = _run_once(built, loaded.params, shardings, mesh, config.sharding)
  if skip_missing:
    result['missing'] = missing
    # How each number was measured, for a report to print beside it.
    result['protocol'] = {'image_size': size, 'averaged': loaded.averaged, 'pp': protocol}
  return result


def _evaluate_dense(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """The dense evaluators of `config` on a dense run's newest checkpoint (head included)."""
  model, params = dense_run.load(workdir)
  mesh, shardings = _placement(config, params)
  context = _context(config, model, mesh, shardings)
  built = [build(name, entry, context, config.loss) for name, entry in entries(config).items()]
  return _run_once(built, params, shardings, mesh, config.sharding)


def _placement(config: ml_collections.ConfigDict, params) -> tuple[Any, Any]:
  """(mesh, parameter shardings) of a --mode=eval run."""
  dcn = config.get('dcn_mesh')
  mesh = mesh_lib.make_mesh(tuple(config.mesh), dcn=None if dcn is None else tuple(dcn))
  return mesh, partitioning.param_shardings(params, mesh, config.sharding)


def _run_once(built: list, params, shardings, mesh, sharding: str) -> dict[str, Any]:
  """Every evaluator of `built` once on `params`, placed on `shardings`."""
  params = jax.device_put(params, shardings)
  result: dict[str, Any] = {}
  with partitioning.use(mesh, sharding):
    for evaluator in built:
      result.update(evaluator.run(params, step=0))
  return result
