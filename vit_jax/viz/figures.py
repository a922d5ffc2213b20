"""PNG figures (matplotlib, Agg): overlays, per-head maps, distance scatter, mosaics."""

import csv
from typing import Optional, Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
from PIL import Image  # pylint: disable=g-import-not-at-top,wrong-import-position


def _upsample(grid: np.ndarray, height: int, width: int) -> np.ndarray:
  image = Image.fromarray(np.asarray(grid, np.float32), mode='F')
  return np.asarray(image.resize((width, height), Image.BILINEAR))


def _unit(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float64)
  span = x.max() - x.min()
  return (x - x.min()) / span if span > 0 else np.zeros_like(x)


def rollout_overlay(image: np.ndarray, attention_grid: np.ndarray, path: str) -> str:
  """Input image [h, w, 3] in [-1, 1] beside it with the rollout map laid over it."""
  pixels = np.clip((np.asarray(image) + 1) / 2, 0, 1)
  heat = _unit(_upsample(attention_grid, *pixels.shape[:2]))
  fig, (left, right) = plt.subplots(1, 2, figsize=(6, 3))
  left.imshow(pixels)
  left.set_title('input')
  right.imshow(pixels)
  right.imshow(heat, cmap='inferno', alpha=0.6)
  right.set_title('attention rollout')
  for axis in (left, right):
    axis.axis('off')
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def head_maps(maps: np.ndarray, path: str, title: str) -> str:
  """[layers, heads, gh, gw] maps as a layers x heads grid of small heatmaps."""
  layers, heads = maps.shape[:2]
  fig, axes = plt.subplots(layers, heads, figsize=(1.2 * heads + 0.8, 1.2 * layers + 0.6),
                           squeeze=False)
  for layer in range(layers):
    for head in range(heads):
      axis = axes[layer, head]
      axis.imshow(maps[layer, head], cmap='viridis')
      axis.set_xticks([])
      axis.set_yticks([])
      if head == 0:
        axis.set_ylabel(f'layer {layer}', fontsize=7)
      if layer == 0:
        axis.set_title(f'head {head}', fontsize=7)
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)
  return path


def distance_scatter(distances: np.ndarray, path: str, csv_path: str,
                     image_pixels: int) -> tuple[str, str]:
  """[layers, heads] mean attention distances vs depth (paper Figure 7, right) + a CSV."""
  layers, heads = distances.shape
  fig, axis = plt.subplots(figsize=(5, 4))
  for head in range(heads):
    axis.scatter(np.arange(layers), distances[:, head], s=12, label=f'head {head}')
  axis.set_xlabel('network depth (layer)')
  axis.set_ylabel('mean attention distance (pixels)')
  axis.set_ylim(0, image_pixels)
  if heads <= 16:
    axis.legend(fontsize=6, ncol=2)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  with open(csv_path, 'w', newline='', encoding='utf-8') as f:
    writer = csv.writer(f)
    writer.writerow(['layer', 'head', 'mean_attention_distance_px'])
    for layer in range(layers):
      for head in range(heads):
        writer.writerow([layer, head, f'{distances[layer, head]:.4f}'])
  return path, csv_path


def similarity_grid(similarity: np.ndarray, path: str) -> str:
  """[gh, gw, gh, gw] cosine similarities as the paper's grid of small heatmaps, one per patch."""
  gh, gw = similarity.shape[:2]
  mosaic = np.full((gh * (gh + 1) - 1, gw * (gw + 1) - 1), np.nan)
  for row in range(gh):
    for col in range(gw):
      top, left = row * (gh + 1), col * (gw + 1)
      mosaic[top:top + gh, left:left + gw] = similarity[row, col]
  fig, axis = plt.subplots(figsize=(6, 5.4))
  shown = axis.imshow(mosaic, cmap='viridis', vmin=-1, vmax=1)
  axis.set_xlabel('input patch column')
  axis.set_ylabel('input patch row')
  axis.set_xticks([])
  axis.set_yticks([])
  fig.colorbar(shown, ax=axis, label='cosine similarity')
  axis.set_title('position embedding similarity')
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def filter_components(components: np.ndarray, path: str, columns: int = 7) -> str:
  """[n, ph, pw, 3] principal components of the embedding filters as small RGB images."""
  count = len(components)
  rows = max(1, -(-count // columns))
  fig, axes = plt.subplots(rows, columns, figsize=(columns * 0.9, rows * 0.9 + 0.4), squeeze=False)
  for index, axis in enumerate(axes.flat):
    axis.axis('off')
    if index < count:
      axis.imshow(_unit(components[index]) if components.shape[-1] == 3 else
                  _unit(components[index][..., 0]), interpolation='nearest')
  fig.suptitle('RGB embedding filters (first principal components)', fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path




def reconstruction_rows(rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]], path: str) -> str:
  """One row per image: (input, masked input, reconstruction), each [h, w, 3] in [0, 1]."""
  fig, axes = plt.subplots(len(rows), 3, figsize=(6, 2 * len(rows)), squeeze=False)
  for row, images in zip(axes, rows):
    for axis, image in zip(row, images):
      axis.imshow(np.clip(image, 0, 1))
  return _save_rows(fig, axes, ('input', 'masked', 'reconstruction'), path)


def _save_rows(fig, axes, titles: Sequence[str], path: str) -> str:
  """Titles every panel of a figure of image rows, without axes, and writes it to `path`."""
  for row in axes:
    for axis, title in zip(row, titles):
      axis.set_title(title, fontsize=8)
      axis.axis('off')
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def dense_rows(rows: list[tuple[np.ndarray, Optional[np.ndarray], np.ndarray]], path: str,
               task: str, ignore: int = 255) -> str:
  """One row per image: (input [h, w, 3] in [0, 1], ground truth or None, prediction); class
  maps in one palette (ignored pixels black), depth maps on one colour scale per row (near:
  bright)."""
  with_truth = rows[0][1] is not None
  titles = ('input', 'ground truth', 'prediction') if with_truth else ('input', 'prediction')
  fig, axes = plt.subplots(len(rows), len(titles), figsize=(2 * len(titles), 2 * len(rows)),
                           squeeze=False)
  palette = plt.get_cmap('tab20')
  for row, (image, truth, pred) in zip(axes, rows):
    row[0].imshow(np.clip(image, 0, 1))
    maps = [np.asarray(m) for m in ((truth, pred) if with_truth else (pred,))]
    if task == 'segmentation':
      for axis, labels in zip(row[1:], maps):
        colours = palette(labels % 20)[..., :3]
        colours[labels == ignore] = 0.0
        axis.imshow(colours)
    else:
      measured = maps[0][maps[0] > 0]
      low, high = (measured.min(), measured.max()) if measured.size else (0.0, 1.0)
      for axis, depth in zip(row[1:], maps):
        axis.imshow(np.where(depth > 0, depth, np.nan), cmap='magma_r', vmin=low, vmax=high)
  return _save_rows(fig, axes, titles, path)
