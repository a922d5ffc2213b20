"""Image files on the host, without TensorFlow: the extensions we read, listing, loading."""

import os

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp')


def is_image_file(name: str) -> bool:
  return name.lower().endswith(IMAGE_EXTENSIONS)


def image_paths(path: str, limit: int) -> list[str]:
  """`path` itself, or up to `limit` image files under the folder `path` (sorted)."""
  if os.path.isdir(path):
    found = sorted(os.path.join(root, name) for root, _, names in os.walk(path)
                   for name in names if is_image_file(name))
    if not found:
      raise ValueError(f'No images ({", ".join(IMAGE_EXTENSIONS)}) under {path}.')
    return found[:limit]
  if not os.path.exists(path):
    raise FileNotFoundError(f'Image not found: {path}')
  return [path]


def load_image(path: str, image_size: int) -> np.ndarray:
  """RGB image resized to [image_size, image_size, 3] with values in [-1, 1]."""
  if not os.path.exists(path):
    raise FileNotFoundError(f'Image not found: {path}')
  try:
    with Image.open(path) as image:
      image = image.convert('RGB').resize((image_size, image_size), Image.BILINEAR)
  except OSError as e:
    raise ValueError(f'Cannot decode image {path}: {e}') from e
  return np.asarray(image, np.float32) / 127.5 - 1.0
