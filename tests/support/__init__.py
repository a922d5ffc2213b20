"""Helpers the tests share: random parameters, a tiny ViT config, an image folder on disk.

Imported as `support` (pytest.ini puts `tests/` on the path); fixtures stay in conftest.py.
"""

import jax
import ml_collections
import numpy as np
from PIL import Image


def randomize(params, seed: int = 0, scale: float = 0.5):
  """Replaces every leaf with normal noise, so zero-initialised heads and cls count in tests."""
  leaves, treedef = jax.tree_util.tree_flatten(params)
  rng = np.random.default_rng(seed)
  noisy = [(scale * rng.standard_normal(np.shape(x))).astype(np.float32) for x in leaves]
  return jax.tree_util.tree_unflatten(treedef, noisy)


def tiny_vit_config(**overrides):
  """A 2-layer, width-16 ViT config with 4x4 patches; `overrides` replace top-level fields."""
  config = ml_collections.ConfigDict(dict(
      model_name='tiny', patches={'size': (4, 4)}, hidden_size=16,
      transformer=dict(mlp_dim=24, num_heads=4, num_layers=2, dropout_rate=0.0,
                       attention_dropout_rate=0.0),
      classifier='token', representation_size=None))
  config.update(overrides)
  return config


def write_image_folder(root, counts, size=(24, 20), seed=0, fmt='png'):
  """root/<split>/<class>/*.png with `counts` = {split: {class: n}}; pixel values encode ids."""
  rng = np.random.default_rng(seed)
  paths = []
  for split, classes in counts.items():
    for class_name, n in classes.items():
      folder = root / split / class_name
      folder.mkdir(parents=True, exist_ok=True)
      for i in range(n):
        pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        path = folder / f'{i:04d}.{fmt}'
        Image.fromarray(pixels).save(path)
        paths.append(path)
  return paths
