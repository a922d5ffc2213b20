"""Image files on the host, without TensorFlow: the extensions we read, listing, loading, and the
eval preprocessing ops run with PIL (the same strings the tf.data pipeline runs)."""

import os

import numpy as np
from PIL import Image

from vit_jax import errors
from vit_jax.data import pp_spec

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp')


def example_photo() -> str:
  """Path of a photograph that ships with scikit-learn (no download)."""
  import sklearn.datasets  # pylint: disable=g-import-not-at-top  (slow to import; used rarely)
  return os.path.join(os.path.dirname(sklearn.datasets.__file__), 'images', 'china.jpg')


def is_image_file(name: str) -> bool:
  return name.lower().endswith(IMAGE_EXTENSIONS)


def image_paths(path: str, limit: int) -> list[str]:
  """`path` itself, or up to `limit` image files under the folder `path` (sorted)."""
  if os.path.isdir(path):
    found = sorted(os.path.join(root, name) for root, _, names in os.walk(path)
                   for name in names if is_image_file(name))
    if not found:
      raise errors.UserError(f'No images ({", ".join(IMAGE_EXTENSIONS)}) under {path}.')
    return found[:limit]
  if not os.path.exists(path):
    raise errors.MissingFile(f'Image not found: {path}')
  return [path]


_PIL_METHODS = {'nearest': Image.NEAREST, 'bilinear': Image.BILINEAR, 'bicubic': Image.BICUBIC,
                'lanczos': Image.LANCZOS, 'lanczos3': Image.LANCZOS, 'box': Image.BOX,
                'hamming': Image.HAMMING, 'area': Image.BOX}


def _pair(size) -> tuple[int, int]:
  return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _resize(image: Image.Image, size, method: str = 'bilinear') -> Image.Image:
  height, width = _pair(size)
  return image.resize((width, height), _PIL_METHODS[method])


def _resize_small(image: Image.Image, size: int, method: str = 'bilinear',
                  floor: bool = False) -> Image.Image:
  scale = size / min(image.height, image.width)  # the host op's rounding
  rounded = (lambda x: int(x + 1e-4)) if floor else round
  return _resize(image, (rounded(image.height * scale), rounded(image.width * scale)), method)


def _central_crop(image: Image.Image, size) -> Image.Image:
  height, width = _pair(size)
  top, left = (image.height - height) // 2, (image.width - width) // 2
  return image.crop((left, top, left + width, top + height))


def _value_range(pixels: np.ndarray, vmin=-1, vmax=1, in_min=0, in_max=255) -> np.ndarray:
  return vmin + (pixels - in_min) * (vmax - vmin) / (in_max - in_min)


def _normalize(pixels: np.ndarray, mean=pp_spec.IMAGENET_MEAN,
               std=pp_spec.IMAGENET_STD) -> np.ndarray:
  return (pixels / 255.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


_GEOMETRY = {'resize': _resize, 'resize_small': _resize_small, 'central_crop': _central_crop}
_VALUES = {'value_range': _value_range, 'normalize': _normalize}
_IGNORED = ('decode', 'onehot', 'keep')  # nothing to do for one image file


def apply(image: Image.Image, pp: str) -> np.ndarray:
  """Runs the image ops of an eval string (the host ops' meaning) on a PIL image -> float32
  [h, w, 3]. `resize`, `resize_small` and `central_crop` work on the uint8 image; then
  `value_range` or `normalize` map [0, 255] to the model's inputs."""
  pixels = None
  for name, args, kwargs in map(pp_spec.parse_op, pp_spec.ops(pp)):
    if name in _IGNORED:
      continue
    if name in _GEOMETRY and pixels is None:
      image = _GEOMETRY[name](image, *args, **kwargs)
    elif name in _VALUES and pixels is None:
      pixels = _VALUES[name](np.asarray(image, np.float32), *args, **kwargs)
    else:
      raise errors.UserError(
          f'Preprocessing {pp!r}: op {name!r} is not an eval op for one image '
          f'(resize, resize_small, central_crop, then value_range or normalize).')
  if pixels is None:
    raise errors.UserError(f'Preprocessing {pp!r} ends without value_range or normalize.')
  return pixels.astype(np.float32)


def open_rgb(path: str) -> Image.Image:
  """An image file as an RGB PIL image; one line naming the file when it is missing or bad."""
  if not os.path.exists(path):
    raise errors.MissingFile(f'Image not found: {path}')
  try:
    with Image.open(path) as image:
      return image.convert('RGB')
  except OSError as e:
    raise errors.UserError(f'Cannot decode image {path}: {e}') from e


def load(path: str, pp: str) -> np.ndarray:
  """An image file through an eval preprocessing string -> float32 [h, w, 3]."""
  return apply(open_rgb(path), pp)

