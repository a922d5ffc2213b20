"""What every command line (`main`, `infer`, `export`, `viz`) shares: a user's mistake is one line.

Bad flags, unknown config fields and the `errors.UserError`s our code raises for bad input are
printed as `error: ...` on stderr with exit status 2, without a traceback (`--traceback` shows
it); any other exception is a bug and keeps its traceback.
"""

import difflib
import os
import re
import sys
from typing import Callable

from absl import app
from absl import flags

from vit_jax import errors
from vit_jax.configs import common

_TRACEBACK = flags.DEFINE_bool('traceback', False, 'Show the full traceback of an error.')

# What every `--checkpoint` flag takes (vit_jax.weights.trained_model.load reads each).
CHECKPOINT_HELP = ('A training workdir, a released or exported .npz, or a timm / Hugging Face '
                   'checkpoint (a directory, or a .safetensors / .bin file).')

# Our own validation errors only: a ValueError or OSError from JAX, flax or another library is a
# bug (or an environment problem) and keeps its traceback.
USER_ERRORS = (errors.UserError, app.UsageError)


def fail(message: str) -> None:
  """Prints `error: message` (folded to one line) and exits with status 2."""
  text = ' '.join(line.strip() for line in str(message).strip().splitlines() if line.strip())
  print(f'error: {text}', file=sys.stderr, flush=True)
  sys.exit(2)


def _config_without_overrides(argv: list[str], name: str):
  """The config file flag `--name=path[:arg]` loaded alone, or None."""
  # Only to name a bad override (not loaded on the good path).
  from ml_collections.config_flags import config_flags  # pylint: disable=g-import-not-at-top
  for arg in argv:
    if arg.startswith((f'--{name}=', f'-{name}=')):
      try:
        return config_flags.ConfigFileFlagParser(name=name).parse(arg.split('=', 1)[1])
      except Exception:  # pylint: disable=broad-except
        return None
  return None


def _config_field_error(argv: list[str], error: Exception) -> str:
  """'--config.x.y=...: unknown field y; nearest: ...' for an override of a field that is absent."""
  overrides = [a.split('=', 1)[0].lstrip('-') for a in argv if re.match(r'--?\w+\.', a)]
  for override in overrides:
    field = override.split('.', 1)[-1]
    if field in common.RETIRED_FIELDS:
      return f'--{override}: config.{field} no longer exists: {common.RETIRED_FIELDS[field]}'
  missing = re.findall(r"'(\w+)'", str(error))
  for override in overrides:
    head, *path = override.split('.')
    if not path or (missing and path[-1] != missing[0] and missing[0] not in path):
      continue
    node = _config_without_overrides(argv, head)
    if node is None:
      continue
    for depth, key in enumerate(path):
      keys = list(node.keys()) if hasattr(node, 'keys') else []
      if key not in keys:
        near = difflib.get_close_matches(key, keys, n=3, cutoff=0.5)
        where = '.'.join([head, *path[:depth]])
        hint = f'nearest: {", ".join(near)}' if near else f'{where} has {sorted(keys)}'
        return f'--{override}: {where} has no field {key!r}; {hint}.'
      node = node[key]
  return f'unknown config field in {overrides}: {error}'


def _recipe_error(error: Exception):
  """A recipe's own `UserError` (a bad `--config=recipe.py:<arg>`), which ml_collections hands
  on with its traceback folded into the message: the recipe's one line, or None."""
  found = re.search(r'vit_jax\.errors\.\w+: (.*)$', str(error).strip())
  if found and 'Error whilst parsing config file' in str(error):
    return found.group(1)
  return None


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with its errors and config-override errors as one line."""
  for arg in argv[1:]:
    if arg.startswith('--config='):
      path = arg.split('=', 1)[1].split(':', 1)[0]
      if not os.path.isfile(path):
        fail(f'{arg}: no recipe file {path} (from {os.getcwd()}).')
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail(_recipe_error(e) or e)
  except (AttributeError, KeyError) as e:  # ml_collections: an override of an absent field
    fail(_config_field_error(argv, e))
  except (TypeError, ValueError) as e:  # ml_collections: an override of the wrong type
    fail(_recipe_error(e) or e)
  return []


def run(main: Callable[[list[str]], None]) -> None:
  """`app.run(main)` with user errors printed as one line (the traceback under --traceback)."""

  def guarded(argv):
    try:
      main(argv)
    except USER_ERRORS as e:
      if _TRACEBACK.value:
        raise
      fail(e)
    except OSError as e:  # a write that found the disk full is not a bug of ours
      if _TRACEBACK.value or not errors.out_of_space(e):
        raise
      fail(f'{e.filename or "a file"} could not be written: no space left on the device. Free '
           'space and run the same command again.')

  app.run(guarded, flags_parser=parse_flags)
