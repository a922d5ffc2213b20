"""The figures a run writes when it ends (process 0), plugged into the trainer by the command
layer (`loop.train_and_evaluate(..., figures=write)`), so that `train/` needs no plotting:

  curves.png            every run that ends without failure: its logged metrics
  reconstruction.png    a run whose objective's `end_figure` is 'reconstruction' (MAE), when it
                        completes: its first training images, masked and reconstructed
  <evaluator>.png       'predictions' (dense): each dense evaluator with `figures`, its inputs,
                        ground truth and predictions
"""

import os
from typing import Any, Optional

from vit_jax import storage
from vit_jax.data import pipeline
from vit_jax.data import preprocess
from vit_jax.viz import curves
from vit_jax.viz import figures
from vit_jax.viz import reconstruction
from vit_jax.weights import transforms


def write(run: Any, state: Any, completed: bool) -> dict[str, Optional[str]]:
  """{'plot': curves.png, 'figures': the objective's figure(s) or None} of a finished `run`
  (a `train.run.Run`; `state`, its last train state)."""
  folder = storage.path(run.workdir)
  plot = curves.plot_curves(run.writer.jsonl_path, os.fspath(folder / 'curves.png'))
  kind = run.setup.objective.end_figure if completed else None
  figure = None
  if kind == 'predictions':
    params = state.ema_params if state.ema_params is not None else state.params
    written = []
    for evaluator in run.evaluators:
      if evaluator.figures:
        path = os.fspath(folder / f'{evaluator.name}.png')
        with storage.local_target(path) as local:
          figures.dense_rows(evaluator.figure_rows(params), local, evaluator.TASK)
        written.append(path)
    figure = ', '.join(written) or None
  elif kind == 'reconstruction' and run.train_source is not None:
    pp = transforms.of_run(run.config_dict)
    dataset, _ = pipeline.eval_dataset(run.train_source,
                                       preprocess.parse(f'decode|{pp}|keep("image")'),
                                       local_batch=8)
    images = next(dataset.as_numpy_iterator())['image']
    figure = reconstruction.write(run.setup.objective, state.params, images, pp,
                                  os.fspath(folder / reconstruction.FILE))
  return {'plot': plot, 'figures': figure}
