"""The errors that are a user's mistake: the CLIs print them as one line (`vit_jax.cli`).

Everything we raise for bad input (a config field, a file, a checkpoint, a dataset) is a
`UserError`, naming the field or file, what was expected and what was found. Any other
exception, from our code or a library's (a shape or sharding bug inside JAX or flax), is a bug
and keeps its traceback.
"""


import contextlib


class UserError(ValueError):
  """Bad input: a config field, a flag, a file or a checkpoint that cannot be used as given."""


class MissingFile(UserError, FileNotFoundError):
  """A file or directory the input names is not there."""


class Diverged(UserError, FloatingPointError):
  """Training produced non-finite values (a learning rate too high, bad data)."""


class OutOfSpace(UserError):
  """A file or checkpoint could not be written for lack of space where it goes."""


def out_of_space(error: BaseException) -> bool:
  """Whether `error`, or one it was raised from, is a write that found no space left (ENOSPC,
  or TensorStore's RESOURCE_EXHAUSTED when orbax writes arrays)."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if getattr(error, 'errno', None) == 28 or 'No space left on device' in str(error):
      return True
    error = error.__cause__ or error.__context__
  return False


@contextlib.contextmanager
def context(prefix: str):
  """Errors raised inside keep their class: a `UserError` (of any subclass) is raised again as
  the same class with `prefix: ` before its message, still one line; any other exception is a
  bug and keeps its traceback, with `prefix` added as a note. Never a change of kind."""
  try:
    yield
  except UserError as e:
    raise type(e)(f'{prefix}: {e}') from e
  except Exception as e:  # pylint: disable=broad-except
    e.add_note(f'(while reading {prefix})')
    raise
