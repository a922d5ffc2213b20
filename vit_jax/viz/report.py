"""All the figures for a checkpoint and some images, written into a folder."""

import dataclasses
import os
from typing import Optional, Sequence

import numpy as np


@dataclasses.dataclass
class Written:
  rollouts: list[str]
  head_maps: list[str]
  distance_png: str
  distance_csv: str
  posemb_png: str
  filters_png: str


def image_paths(image: str, limit: int) -> list[str]:
  from vit_jax.data import sources  # pylint: disable=g-import-not-at-top
  if os.path.isdir(image):
    found = sorted(os.path.join(root, name) for root, _, names in os.walk(image)
                   for name in names if name.lower().endswith(sources.IMAGE_EXTENSIONS))
    if not found:
      raise ValueError(f'No images ({", ".join(sources.IMAGE_EXTENSIONS)}) under {image}.')
    return found[:limit]
  if not os.path.exists(image):
    raise FileNotFoundError(f'Image not found: {image}')
  return [image]


def run(checkpoint: str, images: Sequence[str], out: str, *, model_name: Optional[str] = None,
        image_size: Optional[int] = None) -> Written:
  """Computes every figure for `images` (paths) and writes them into `out`."""
  from vit_jax import load  # pylint: disable=g-import-not-at-top
  from vit_jax.models import posemb as posemb_lib  # pylint: disable=g-import-not-at-top
  from vit_jax.models import resnet  # pylint: disable=g-import-not-at-top
  from vit_jax.viz import analysis  # pylint: disable=g-import-not-at-top
  from vit_jax.viz import figures  # pylint: disable=g-import-not-at-top

  loaded = load.load_model(checkpoint, model_name, image_size=image_size)
  size, config, params = loaded.image_size, loaded.model_config, loaded.params
  pixels = np.stack([load.load_image(path, size) for path in images])
  prefix = int(config.classifier in ('token', 'token_unpooled'))
  stride = config.patches.size[0] * resnet.stem_stride(config)
  grid = (size // stride, size // stride)
  os.makedirs(out, exist_ok=True)

  attention = np.concatenate([analysis.attention_weights(loaded.model, params, pixels[i:i + 8])
                              for i in range(0, len(pixels), 8)], axis=1)
  maps = analysis.rollout(attention, prefix).reshape(len(images), *grid)
  rollouts, heads = [], []
  for index, path in enumerate(images):
    stem = os.path.join(out, os.path.splitext(os.path.basename(path))[0])
    np.save(f'{stem}_rollout.npy', maps[index])
    rollouts.append(figures.rollout_overlay(pixels[index], maps[index], f'{stem}_rollout.png'))
    output_row = (attention[:, index, :, 0, prefix:] if prefix
                  else attention[:, index, :, :, prefix:].mean(axis=2))
    heads.append(figures.head_maps(output_row.reshape(*output_row.shape[:2], *grid),
                                   f'{stem}_heads.png', 'attention of the output token per head'))

  distances = analysis.mean_attention_distance(attention, grid, stride, prefix)
  distance_png, distance_csv = figures.distance_scatter(
      distances, os.path.join(out, 'attention_distance.png'),
      os.path.join(out, 'attention_distance.csv'), size)

  encoder = params['Transformer']
  if 'posembed_input' in encoder:
    table, table_prefix = np.asarray(encoder['posembed_input']['pos_embedding']), prefix
  else:  # fixed sincos2d: no cls row in the table
    table, table_prefix = posemb_lib.posemb_sincos_2d(*grid, config.hidden_size), 0
  similarity = analysis.posemb_similarity(table, grid, table_prefix)
  posemb_png = figures.similarity_grid(similarity, os.path.join(out, 'posemb_similarity.png'))
  # The first RGB filters: the patch embedding, or the ResNet root convolution of a hybrid.
  first_layer = params['conv_root' if 'conv_root' in params else 'embedding']['kernel']
  filters_png = figures.filter_components(
      analysis.embedding_components(np.asarray(first_layer)),
      os.path.join(out, 'embedding_filters.png'))
  return Written(rollouts, heads, distance_png, distance_csv, posemb_png, filters_png)
