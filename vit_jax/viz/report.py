"""All the figures for a checkpoint and some images, written into a folder (local or on an object store)."""

import dataclasses
import os
from typing import Optional, Sequence

import numpy as np

from vit_jax import storage
from vit_jax.weights import trained_model
from vit_jax.data import images as images_lib
from vit_jax.weights import preprocessing
from vit_jax.models import geometry
from vit_jax.viz import analysis
from vit_jax.viz import figures
from vit_jax.objectives import dense as dense_objective
from vit_jax.viz import dense as dense_viz
from vit_jax.viz import reconstruction


@dataclasses.dataclass
class Written:
  rollouts: list[str]
  head_maps: list[str]
  distance_png: str
  distance_csv: str
  posemb_png: Optional[str]  # None for a RoPE model
  filters_png: str
  reconstruction_png: Optional[str] = None  # an MAE workdir's (viz/reconstruction.py)
  dense_png: Optional[str] = None  # a dense run's predictions (viz/dense.py)


def run(checkpoint: str, images: Sequence[str], out: str, *, model_name: Optional[str] = None,
        image_size: Optional[int] = None) -> Written:
  """Computes every figure for `images` (paths) and writes them into `out`."""

  loaded = trained_model.load(checkpoint, model_name, image_size=image_size)
  size, config, params = loaded.image_size, loaded.model_config, loaded.params
  # The model sees the checkpoint's own input transform; the figures show the same crop in [-1, 1].
  inputs = np.stack([images_lib.load(path, loaded.pp) for path in images])
  pixels = np.stack([images_lib.load(path, preprocessing.for_display(loaded.pp))
                     for path in images])
  prefix = geometry.num_prefix_tokens(config)
  stride = geometry.patch_stride(config)[0]
  grid = geometry.patch_grid(config, size)
  with storage.local_dir(out) as folder:  # a URL: written here, uploaded at the end
    attention = np.concatenate([analysis.attention_weights(loaded.model, params, inputs[i:i + 8])
                                for i in range(0, len(pixels), 8)], axis=1)
    maps = analysis.rollout(attention, prefix).reshape(len(images), *grid)
    rollouts, heads = [], []
    for index, path in enumerate(images):
      stem = os.path.join(folder, os.path.splitext(os.path.basename(path))[0])
      np.save(f'{stem}_rollout.npy', maps[index])
      rollouts.append(figures.rollout_overlay(pixels[index], maps[index], f'{stem}_rollout.png'))
      output_row = (attention[:, index, :, 0, prefix:] if prefix
                    else attention[:, index, :, :, prefix:].mean(axis=2))
      heads.append(figures.head_maps(output_row.reshape(*output_row.shape[:2], *grid),
                                     f'{stem}_heads.png', 'attention of the output token per head'))

    distances = analysis.mean_attention_distance(attention, grid, stride, prefix)
    distance_png, distance_csv = figures.distance_scatter(
        distances, os.path.join(folder, 'attention_distance.png'),
        os.path.join(folder, 'attention_distance.csv'), size)

    posemb_png = None  # a RoPE model has no position table to compare
    if config.get('posemb') != 'rope':
      table, table_prefix = geometry.position_table(params, config, size)
      similarity = analysis.posemb_similarity(table, grid, table_prefix)
      posemb_png = figures.similarity_grid(similarity,
                                           os.path.join(folder, 'posemb_similarity.png'))
    # The first RGB filters: the patch embedding, or the ResNet root convolution of a hybrid.
    first_layer = params['conv_root' if 'conv_root' in params else 'embedding']['kernel']
    filters_png = figures.filter_components(
        analysis.embedding_components(np.asarray(first_layer)),
        os.path.join(folder, 'embedding_filters.png'))
    reconstruction_png = None
    if reconstruction.is_mae_workdir(checkpoint):
      reconstruction_png = reconstruction.for_workdir(checkpoint, inputs[:8], folder)
    dense_png = None
    if dense_objective.is_dense_workdir(checkpoint):
      dense_png = dense_viz.for_workdir(checkpoint, images[:8], folder)

  def named(local):  # a written file's name under `out`
    return local and os.path.join(os.fspath(out), os.path.relpath(local, folder))
  return Written([named(p) for p in rollouts], [named(p) for p in heads], named(distance_png),
                 named(distance_csv), named(posemb_png), named(filters_png),
                 named(reconstruction_png), named(dense_png))
