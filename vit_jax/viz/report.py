"""All the figures for a checkpoint and some images, written into a folder (local or on an object store)."""

import dataclasses
import os
from typing import Optional, Sequence

import numpy as np

from vit_jax import storage
from vit_jax.weights import trained_model
from vit_jax.data import images as images_lib
from vit_jax.data import naflex
from vit_jax.weights import transforms
from vit_jax.models import geometry
from vit_jax.viz import analysis
from vit_jax.viz import figures
from vit_jax.weights import dense_run
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


def _square(loaded: trained_model.TrainedModel, images: Sequence[str]) -> list[tuple]:
  """(display pixels, attention [layers, 1, heads, t, t], grid) per image at the model's square
  input: the checkpoint's own input transform; the figures show the same crop in [-1, 1]."""
  inputs = np.stack([images_lib.load(path, loaded.pp) for path in images])
  pixels = [images_lib.load(path, transforms.for_display(loaded.pp)) for path in images]
  attention = np.concatenate([analysis.attention_weights(loaded.model, loaded.params,
                                                         inputs[i:i + 8])
                              for i in range(0, len(inputs), 8)], axis=1)
  grid = geometry.patch_grid(loaded.model_config, loaded.image_size)
  return [(pixels[i], attention[:, i:i + 1], grid) for i in range(len(images))]


def _native(loaded: trained_model.TrainedModel, images: Sequence[str],
            max_patches: int) -> list[tuple]:
  """The same at each image's own aspect ratio: a NaFlex sequence of at most `max_patches`
  patches (`infer --naflex`), its attention reordered to [prefix tokens, the image's patches]
  (padding dropped) so the square analysis applies on the image's own grid."""
  patch = geometry.patch_stride(loaded.model_config)[0]
  prefix = geometry.num_prefix_tokens(loaded.model_config)
  value = transforms.value_op_or_default(loaded.pp)
  display = transforms.value_op(transforms.for_display(loaded.pp))
  out = []
  for path in images:
    seqs = naflex.image_files([path], value, patch, max_patches)
    rows, columns = (int(v) for v in np.asarray(seqs.grids)[0, 0])
    order = np.r_[np.arange(max_patches, max_patches + prefix), np.arange(rows * columns)]
    attention = analysis.attention_weights(loaded.model, loaded.params, seqs)
    attention = attention[..., order, :][..., order]
    pixels = naflex.image_file(path, display, patch, max_patches)
    out.append((pixels, attention, (rows, columns)))
  return out


def run(checkpoint: str, images: Sequence[str], out: str, *, model_name: Optional[str] = None,
        image_size: Optional[int] = None, naflex: Optional[int] = None) -> Written:
  """Computes every figure for `images` (paths) and writes them into `out`; with `naflex`
  (a patch budget) each image keeps its aspect ratio, as a NaFlex sequence."""

  loaded = trained_model.load(checkpoint, model_name, image_size=image_size)
  naflex = naflex or transforms.naflex_budget(loaded.pp)  # a NaFlex checkpoint's own budget
  size, config, params = loaded.image_size, loaded.model_config, loaded.params
  prefix = geometry.num_prefix_tokens(config)
  stride = geometry.patch_stride(config)[0]
  with storage.local_dir(out) as folder:  # a URL: written here, uploaded at the end
    per_image = _native(loaded, images, naflex) if naflex else _square(loaded, images)
    rollouts, heads, distances = [], [], []
    for path, (pixels, attention, grid) in zip(images, per_image):
      stem = os.path.join(folder, os.path.splitext(os.path.basename(path))[0])
      rollout = analysis.rollout(attention, prefix).reshape(*grid)
      np.save(f'{stem}_rollout.npy', rollout)
      rollouts.append(figures.rollout_overlay(pixels, rollout, f'{stem}_rollout.png'))
      output_row = (attention[:, 0, :, 0, prefix:] if prefix
                    else attention[:, 0, :, :, prefix:].mean(axis=2))
      heads.append(figures.head_maps(output_row.reshape(*output_row.shape[:2], *grid),
                                     f'{stem}_heads.png', 'attention of the output token per head'))
      distances.append(analysis.mean_attention_distance(attention, grid, stride, prefix))
    distances = np.mean(distances, axis=0)  # over the images (each on its own grid)
    distance_png, distance_csv = figures.distance_scatter(
        distances, os.path.join(folder, 'attention_distance.png'),
        os.path.join(folder, 'attention_distance.csv'), size)

    posemb_png = None  # a RoPE model has no position table to compare
    if config.get('posemb') != 'rope':
      table, table_prefix = geometry.position_table(params, config, size)
      similarity = analysis.posemb_similarity(table, geometry.patch_grid(config, size),
                                              table_prefix)
      posemb_png = figures.similarity_grid(similarity,
                                           os.path.join(folder, 'posemb_similarity.png'))
    # The first RGB filters: the patch embedding, or the ResNet root convolution of a hybrid.
    first_layer = params['conv_root' if 'conv_root' in params else 'embedding']['kernel']
    filters_png = figures.filter_components(
        analysis.embedding_components(np.asarray(first_layer)),
        os.path.join(folder, 'embedding_filters.png'))
    reconstruction_png = None
    if reconstruction.is_mae_workdir(checkpoint):
      inputs = np.stack([images_lib.load(path, loaded.pp) for path in images[:8]])
      reconstruction_png = reconstruction.for_workdir(checkpoint, inputs, folder)
    dense_png = None
    if dense_run.is_dense_run(checkpoint):
      dense_png = dense_viz.for_workdir(checkpoint, images[:8], folder)

  def named(local):  # a written file's name under `out`
    return local and os.path.join(os.fspath(out), os.path.relpath(local, folder))
  return Written([named(p) for p in rollouts], [named(p) for p in heads], named(distance_png),
                 named(distance_csv), named(posemb_png), named(filters_png),
                 named(reconstruction_png), named(dense_png))
