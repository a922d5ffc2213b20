"""Parameter names: '/'-joined paths and the one way to select parameters by them.

A parameter's name is its path in the tree joined by '/', e.g.
`Transformer/encoderblock_3/MlpBlock_0/Dense_0/kernel`. Every selection in the project (the
weight-decay mask, lr multipliers, frozen parameters, `dont_load`, the sharding table) is a list
of regexes over these names with one meaning: a pattern selects a name when it matches the
*whole* name (`re.fullmatch`), and the first pattern that matches wins.
"""

import functools
import re
from typing import Any, Callable, Mapping, Optional, Sequence, TypeVar

import flax

from vit_jax import errors

T = TypeVar('T')


def flatten(tree: Mapping[str, Any]) -> dict[str, Any]:
  """Nested dict -> {'a/b/c': leaf} (FrozenDicts too)."""
  return flax.traverse_util.flatten_dict(flax.core.unfreeze(tree), sep='/')


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  """{'a/b/c': leaf} -> nested dict."""
  return flax.traverse_util.unflatten_dict(dict(flat), sep='/')


@functools.lru_cache(maxsize=512)
def _compile(pattern: str) -> re.Pattern:
  try:
    return re.compile(pattern)
  except re.error as e:
    raise errors.UserError(f'Not a valid parameter-name regex: {pattern!r} ({e}).') from e


def first_match(patterns: Sequence[str], name: str) -> Optional[int]:
  """Index of the first pattern that matches all of `name`, else None."""
  for index, pattern in enumerate(patterns):
    if _compile(pattern).fullmatch(name):
      return index
  return None


def matches(patterns: Sequence[str], name: str) -> bool:
  """True when some pattern matches all of `name`."""
  return first_match(patterns, name) is not None


def lookup(table: Sequence[tuple[str, T]], name: str, default: T = None) -> T:
  """The value of the first (pattern, value) row whose pattern matches all of `name`."""
  index = first_match([pattern for pattern, _ in table], name)
  return default if index is None else table[index][1]


def map_names(tree: Mapping[str, Any], fn: Callable[[str, Any], Any]) -> dict[str, Any]:
  """A tree like `tree` with each leaf replaced by `fn(name, leaf)`."""
  return unflatten({name: fn(name, leaf) for name, leaf in flatten(tree).items()})


def select(tree: Mapping[str, Any], patterns: Sequence[str]) -> dict[str, Any]:
  """A tree of bools: True where a pattern matches the parameter's whole name."""
  return map_names(tree, lambda name, _: matches(patterns, name))
