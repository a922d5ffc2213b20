"""Where files live: local paths and object-store URLs (`gs://`, `s3://`) through one path type.

Every file a run, an evaluation, an export or `viz` reads or writes goes through here, as an
`etils.epath.Path` (the type orbax and tfds use too). Object stores are read and written through
fsspec (gcsfs for `gs://`, s3fs for `s3://`; `pip install 'vit_jax[cloud]'`), in every library
of the process: `EPATH_USE_TF` is set to false on import unless the user set it, so TensorFlow's
file systems, which know no `s3://` and no emulator, stay out of the write path. Folder listings
are not cached, so a process sees the files other processes wrote since it last looked.

Object stores have no append and no rename: a file is written whole (`write`), and an append
keeps the object's bytes after one read and writes it back whole (`AppendedFile`). Locally, a write goes to a temporary file
beside the target and is renamed over it, so a kill never leaves half a file. Checkpoints are
orbax's: it commits a step by writing its commit marker last, not by renaming a directory.

Checkpoint arrays go through TensorStore, which orbax (0.12) points only at local paths and
`gs://`: a training workdir on `s3://` is refused at startup (`check_workdir`); exports, figures
and reports may go to `s3://`. TensorStore itself writes to S3; what is missing is orbax's spec for
it (docs/cluster.md says what, and the test that pins it says when to lift the refusal).
"""

import contextlib
import importlib.metadata
import logging
import os
import socket
import tempfile
from typing import Iterator, Union

from etils import epath
import fsspec

from vit_jax import errors

os.environ.setdefault('EPATH_USE_TF', 'false')
# Folder listings are read fresh: other processes (the hosts of a run, a resumed run) change them.
for _protocol in ('gs', 'gcs', 's3', 's3a'):
  fsspec.config.conf.setdefault(_protocol, {}).setdefault('use_listings_cache', False)
# gcsfs asks the storage-control API whether a bucket is zonal and warns on every path when
# the credentials may not ask; the fallback it takes is the right one.
logging.getLogger('gcsfs').setLevel(logging.ERROR)

BACKENDS = {'gs': 'gcsfs', 's3': 's3fs'}  # scheme -> the fsspec package that reads it
CHECKPOINT_SCHEMES = ('gs',)  # what orbax's TensorStore layer writes to, besides local paths
PathLike = Union[str, os.PathLike]


def scheme(location: PathLike) -> str:
  """'gs', 's3', ... for a URL; '' for a local path."""
  text = os.fspath(location)
  return text.split('://', 1)[0] if '://' in text else ''


def is_remote(location: PathLike) -> bool:
  return bool(scheme(location))


def path(location: PathLike) -> epath.Path:
  """The path type for `location`: local paths made absolute, URLs whose backend is installed.
  A scheme no installed package reads is one line naming what to install."""
  text = os.fspath(location)
  kind = scheme(text)
  if not kind:
    return epath.Path(os.path.abspath(text))
  if kind not in BACKENDS:
    raise errors.UserError(
        f'{text}: no backend reads {kind}:// URLs (object stores read: '
        f'{", ".join(f"{k}://" for k in BACKENDS)}; other paths are local).')
  package = BACKENDS[kind]
  try:
    __import__(package)
  except ImportError as e:
    raise errors.UserError(
        f'{text}: {kind}:// paths need the {package} package, which is not installed '
        f"(pip install {package}, or pip install 'vit_jax[cloud]').") from e
  return epath.Path(text)


def _one_line(error: BaseException) -> str:
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return f'{type(error).__name__}: {lines[0] if lines else ""}'


def check_writable(location: PathLike) -> None:
  """Writes and removes a small object under `location` (at startup, before any compile): a
  bucket that does not exist or credentials that are missing become one line, the backend's."""
  if not is_remote(location):
    return
  probe = path(location) / f'.vit_jax_write_check.{socket.gethostname()}.{os.getpid()}'
  try:
    probe.write_text('ok')
    probe.unlink()
  except FileNotFoundError as e:  # the backends' word for a bucket that is not there
    raise errors.UserError(f'{os.fspath(location)}: cannot write there: its bucket was not found '
                           f'({_one_line(e)}).') from e
  except Exception as e:  # pylint: disable=broad-except  (the backend's own error types)
    raise errors.UserError(f'{os.fspath(location)}: cannot write there ({_one_line(e)}).') from e


def check_workdir(location: PathLike) -> None:
  """A training workdir: a local path or a URL orbax checkpoints to, and writable."""
  kind = scheme(location)
  if kind and kind not in CHECKPOINT_SCHEMES:
    path(location)  # a missing package is named first
    raise errors.UserError(
        f'{os.fspath(location)}: checkpoints cannot be written to {kind}:// (orbax '
        f'{importlib.metadata.version("orbax-checkpoint")} writes arrays through TensorStore '
        f'to local paths and '
        f'{", ".join(f"{k}://" for k in CHECKPOINT_SCHEMES)} only); use one of those for '
        '--workdir.')
  check_writable(location)


def write(target: PathLike, data: Union[bytes, str]) -> None:
  """Writes the whole file: on an object store one object; locally a temporary file renamed
  over the target, so a reader (or a kill) never sees half of it."""
  target = path(target)
  payload = data.encode('utf-8') if isinstance(data, str) else data
  if is_remote(target):
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(payload)
    return
  os.makedirs(os.fspath(target.parent), exist_ok=True)
  tmp = f'{os.fspath(target)}.tmp'
  with open(tmp, 'wb') as f:
    f.write(payload)
  os.replace(tmp, os.fspath(target))


class AppendedFile:
  """A file that grows by appends (metric rows, event records). Locally each append goes to the
  end of the file. Object stores have no append: the object is read once, kept here, and each
  append writes it back whole (metric rows and scalar events: kilobytes)."""

  def __init__(self, target: PathLike):
    self.path = path(target)
    self._contents = None  # an object's bytes, after the first append

  def append(self, data: Union[bytes, str]) -> None:
    payload = data.encode('utf-8') if isinstance(data, str) else data
    if not is_remote(self.path):
      os.makedirs(os.fspath(self.path.parent), exist_ok=True)
      with open(os.fspath(self.path), 'ab') as f:
        f.write(payload)
      return
    if self._contents is None:
      self._contents = self.path.read_bytes() if self.path.exists() else b''
    self._contents += payload
    write(self.path, self._contents)


def read_text(source: PathLike) -> str:
  return path(source).read_text(encoding='utf-8')


def remove(target: PathLike) -> None:
  """Removes a file or a folder with everything in it; nothing if it is not there."""
  target = path(target)
  if target.is_dir():
    target.rmtree()
  elif target.exists():
    target.unlink()


@contextlib.contextmanager
def local_dir(out: PathLike) -> Iterator[str]:
  """A local folder to write `out`'s files into, for writers that take only local paths
  (safetensors, `save_pretrained`, matplotlib, ONNX). For a URL, the files are uploaded when the
  block ends without an error; a local `out` is written in place."""
  if not is_remote(out):
    os.makedirs(os.fspath(out), exist_ok=True)
    yield os.fspath(out)
    return
  path(out)  # a missing package is named before the work
  with tempfile.TemporaryDirectory(prefix='vit_jax_upload_') as staging:
    yield staging
    upload(staging, out)


@contextlib.contextmanager
def local_target(out: PathLike) -> Iterator[str]:
  """A local path to write the file or folder `out` to; for a URL it is uploaded when the block
  ends without an error."""
  if not is_remote(out):
    yield os.fspath(out)
    return
  path(out)
  with tempfile.TemporaryDirectory(prefix='vit_jax_upload_') as staging:
    local = os.path.join(staging, path(out).name)
    yield local
    upload(local, out)


def upload(local: str, target: PathLike) -> None:
  """Writes the local file, or every file under the local folder, to `target`."""
  if os.path.isfile(local):
    with open(local, 'rb') as f:
      write(target, f.read())
    return
  for folder, _, names in os.walk(local):
    for name in names:
      with open(os.path.join(folder, name), 'rb') as f:
        write(path(target) / os.path.relpath(os.path.join(folder, name), local), f.read())

