"""Evaluation on a whole split: padded batches, masked sums, exact for any size and device count."""

from typing import Any, Optional

import jax
import ml_collections

from vit_jax import trained_model
from vit_jax.data import pipeline
from vit_jax.data import preprocess
from vit_jax.data import sources
from vit_jax.models import geometry
from vit_jax.parallel import mesh as mesh_lib
from vit_jax.parallel import partitioning
from vit_jax.train import step as step_lib


class Evaluation:
  """Loss and top-1 of `model` on `config.eval_data` with `config.pp_eval`."""

  def __init__(self, config: ml_collections.ConfigDict, model, mesh: jax.sharding.Mesh,
               param_shardings: Any):
    self._config, self._mesh = config, mesh
    self.source = sources.from_config(config.eval_data)
    self._pp = preprocess.parse(config.pp_eval, num_classes=config.num_classes)
    self._local_batch = pipeline.local_batch_size(
        config.get('eval_batch_size') or config.batch_size, jax.process_count(),
        jax.device_count())
    self._step = step_lib.jit_eval_step(step_lib.make_eval_step(model, mesh, loss=config.loss),
                                        mesh, param_shardings, config.layout)

  def run(self, params: Any) -> dict[str, float]:
    dataset, _ = pipeline.eval_dataset(self.source, self._pp, local_batch=self._local_batch,
                                       process_index=jax.process_index(),
                                       process_count=jax.process_count())
    totals = None
    for batch in pipeline.eval_batches(dataset, mesh_lib.batch_sharding(self._mesh)):
      sums = self._step(params, batch)
      totals = sums if totals is None else jax.tree.map(lambda a, b: a + b, totals, sums)
    totals = jax.device_get(totals)
    count = float(totals['count'])
    return {'eval/loss': float(totals['loss_sum']) / count,
            'eval/accuracy': float(totals['correct']) / count, 'eval/examples': count}


def from_config(config: ml_collections.ConfigDict, model, mesh,
                param_shardings) -> Optional[Evaluation]:
  """The run's evaluation, or None when the config names no `eval_data`."""
  if not config.get('eval_data') or not config.eval_data.get('name'):
    return None
  return Evaluation(config, model, mesh, param_shardings)


def evaluate_checkpoint(config: ml_collections.ConfigDict, checkpoint_path: str) -> dict[str, float]:
  """Evaluates a workdir's newest checkpoint or a released .npz on `config.eval_data`.

  A workdir brings its own model (its saved config); an .npz's architecture is read off its
  shapes, its position embeddings resampled to `config.image_size`.
  """
  if not config.get('eval_data') or not config.eval_data.get('name'):
    raise ValueError('--mode=eval needs config.eval_data (name, split); found none.')
  loaded = trained_model.load(checkpoint_path, image_size=config.image_size)
  geometry.check_image_size(config.image_size, loaded.model_config)
  mesh = mesh_lib.make_mesh(tuple(config.mesh))
  shardings = partitioning.param_shardings(loaded.params, mesh, config.layout)
  evaluation = Evaluation(config, loaded.model, mesh, shardings)
  return evaluation.run(jax.device_put(loaded.params, shardings))
