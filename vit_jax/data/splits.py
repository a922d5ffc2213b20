"""Split names with slices, as tfds writes them: 'train', 'train[:98%]', 'validation[100:200]'."""

import re

from vit_jax import errors

_SLICE = re.compile(r'^(\w+)(?:\[(-?\d*%?):(-?\d*%?)\])?$')


def slice_split(split: str, sizes: dict[str, int]) -> tuple[str, int, int]:
  """'train[10%:90%]' or 'train[:500]' -> (split name, start, stop) given split sizes."""
  match = _SLICE.match(split.replace(' ', ''))
  if not match:
    raise errors.UserError(f'Cannot parse split {split!r}; expected e.g. "train", "train[:98%]", '
                           '"validation[100:200]".')
  name, start, stop = match.groups()
  if name not in sizes:
    raise errors.UserError(f'Split {name!r} not found; available splits: {sorted(sizes)}.')
  size = sizes[name]

  def bound(text, default):
    if not text:
      return default
    value = round(size * int(text[:-1]) / 100) if text.endswith('%') else int(text)
    return max(0, min(size, value + size if value < 0 else value))

  return name, bound(start, 0), bound(stop, size)
