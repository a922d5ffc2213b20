"""The masked autoencoder's figure: each image, its masked input, its reconstruction.

Written as `reconstruction.png` into an MAE workdir at the end of its run and by
`python -m vit_jax.viz` for an MAE workdir. The masks are the training ones' kind (the
run's mask ratio; example i masked as the example at stream position i); the predicted patches
are shown in pixel space (with the per-patch normalised loss, each prediction takes its true
patch's mean and spread back, as the reference's demo shows them).
"""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from vit_jax import storage
from vit_jax.models import mae as mae_lib
from vit_jax.objectives import mae as mae_objective
from vit_jax.models import build
from vit_jax.viz import figures
from vit_jax.weights import transforms
from vit_jax.weights import trained_model
from vit_jax.weights import workdir_params

FILE = 'reconstruction.png'


def reconstruct(objective: mae_objective.MaskedAutoencoding, params, images: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
  """(masked input, reconstruction) of model-input images [b, h, w, 3], both in input space."""
  hidden, mixed = jax.jit(functools.partial(_reconstruct, objective))(
      params, jnp.asarray(images, jnp.float32))
  return np.asarray(hidden), np.asarray(mixed)


def _reconstruct(objective: mae_objective.MaskedAutoencoding, params, images: jax.Array
                 ) -> tuple[jax.Array, jax.Array]:
  """The figure's arrays as one compiled program (op by op, each op would compile alone)."""
  patch = objective.patch
  pred, mask = objective.reconstruct(params, images, jnp.arange(images.shape[0],
                                                                dtype=jnp.uint32))
  target = mae_lib.patchify(images, patch)
  if objective.fields.norm_pix_loss:
    mean = target.mean(-1, keepdims=True)
    std = jnp.sqrt(target.var(-1, keepdims=True, ddof=1) + 1e-6)
    pred = pred * std + mean
  grid = (images.shape[1] // patch, images.shape[2] // patch)
  masked = mask[..., None]
  blank = jnp.full_like(target, jnp.nan)
  hidden = mae_lib.unpatchify(jnp.where(masked > 0, blank, target), patch, grid)
  mixed = mae_lib.unpatchify(jnp.where(masked > 0, pred, target), patch, grid)
  return hidden, mixed


def write(objective: mae_objective.MaskedAutoencoding, params, images: np.ndarray, pp: str,
          path: str) -> str:
  """The figure of model-input `images` (made with the input transform `pp`) at `path`."""
  mean, std = (np.asarray(v, np.float32) for v in transforms.statistics(pp))
  hidden, mixed = reconstruct(objective, jax.device_get(params), images)
  show = lambda x: x * std + mean  # pylint: disable=unnecessary-lambda-assignment
  rows = [(show(a), np.nan_to_num(show(b), nan=0.5), show(c))
          for a, b, c in zip(images, hidden, mixed)]
  with storage.local_target(path) as local:
    figures.reconstruction_rows(rows, local)
  return path


def of_workdir(workdir: str) -> tuple[mae_objective.MaskedAutoencoding, dict, str]:
  """(objective, the full parameters with the decoder, input transform) of an MAE workdir."""
  config = trained_model.read_run_config(workdir)
  model, model_config = build.from_run_config(config)
  objective = mae_objective.MaskedAutoencoding(
      model, model_config, mae_objective.read(config, model_config),
      image_size=config.image_size, seed=config.seed)
  _, params = workdir_params.read(workdir)
  return objective, params, transforms.of_run(config)


def is_mae_workdir(path: str) -> bool:
  config = storage.path(path) / 'config.json'
  return (storage.path(path).is_dir() and config.exists()
          and trained_model.read_run_config(path).get('objective') == 'mae')


def for_workdir(workdir: str, images: np.ndarray, out: str) -> str:
  objective, params, pp = of_workdir(workdir)
  return write(objective, params, images, pp, os.path.join(out, FILE))
