"""A dense run's predictions on image files (`python -m vit_jax.viz` with a dense workdir).

Each image keeps its own size (padded at the bottom and right to whole windows): the model
predicts by windows of its training size sliding over it, as the dense evaluators do
(evaluators/dense.py), and `dense.png` shows each image beside its predicted classes or depth.
"""

import os
from typing import Optional, Sequence

import jax
import numpy as np

from vit_jax import storage
from vit_jax.data import images as images_lib
from vit_jax.models import dense as dense_lib
from vit_jax.models import geometry
from vit_jax.weights import dense_run
from vit_jax.viz import figures
from vit_jax.weights import transforms
from vit_jax.weights import trained_model

FILE = 'dense.png'


def predict(model: dense_lib.DenseModel, params, image: np.ndarray, window: int,
            step: Optional[int] = None) -> np.ndarray:
  """Classes [h, w] or depth [h, w] of one model-input image [h, w, 3] of any size, by
  windows `step` apart (default: 2/3 of a window)."""
  stride = geometry.patch_stride(model.backbone)[0]
  height, width = image.shape[:2]
  padded_h, padded_w = (max(window, -(-side // stride) * stride) for side in (height, width))
  padded = np.zeros((1, padded_h, padded_w, 3), np.float32)
  padded[0, :height, :width] = image
  step = step or max(1, window * 2 // 3)
  out = jax.jit(lambda p, x: dense_lib.slide(
      lambda w: model.apply({'params': p}, w, train=False), x, (window, window),
      (step, step)))(params, padded)[0, :height, :width]
  out = np.asarray(out)
  return out.argmax(-1) if model.task == 'segmentation' else out


def for_workdir(workdir: str, paths: Sequence[str], out: str) -> str:
  """`out`/dense.png: each image and the dense run's prediction."""
  model, params = dense_run.load(workdir)
  config = trained_model.read_run_config(workdir)
  value = transforms.value_op_or_default(config.pp_train)
  mean, std = (np.asarray(v, np.float32) for v in transforms.statistics(value))
  strides = [tuple(e['stride']) for e in (config.get('evals') or {}).values()
             if e.get('stride')]  # the run's dense evaluator's windows, when it set them
  rows = []
  for path in paths:
    image = images_lib.apply(images_lib.open_rgb(path), value)
    rows.append((image * std + mean, None,
                 predict(model, jax.device_get(params), image, int(config.image_size),
                         strides[0][0] if strides else None)))
  target = os.path.join(out, FILE)
  with storage.local_target(target) as local:
    figures.dense_rows(rows, local, model.task)
  return target
