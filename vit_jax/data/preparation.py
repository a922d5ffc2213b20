"""A dataset prepared once, however many processes start on the same data dir.

tfds builds a dataset in a temporary directory and renames it into place; two processes building
the same one race, and the second dies on the rename ("Destination ... already exists"). Here
process 0 prepares first and tells the others through the distributed runtime's key-value store
(success, or its error in one line); the others wait for that, with a bound, then find the
dataset in place (a data dir every host shares) or prepare their own copy (a data dir local to
each host). Processes of one host take a file lock in the data dir while they check and build,
so a host-local dir is also built once per host.
"""

import contextlib
import fcntl
import hashlib
import os
from typing import Callable, Iterator, Optional

import jax

from vit_jax import errors
from vit_jax.parallel import runtime_api

PREFIX = 'vit_jax/prepared'
WAIT_S = 3600  # how long other processes wait for process 0 to prepare a dataset
OK = 'ok'
_FAILED = 'failed: '


@contextlib.contextmanager
def _host_lock(data_dir: Optional[str], name: str) -> Iterator[None]:
  """An exclusive lock of this host's processes on `data_dir` (none for object stores)."""
  if not data_dir or '://' in data_dir:
    yield
    return
  os.makedirs(data_dir, exist_ok=True)
  lock_name = '.prepare.' + name.replace('/', '_') + '.lock'
  with open(os.path.join(data_dir, lock_name), 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def _prepare_here(name: str, data_dir: Optional[str], is_prepared: Callable[[], bool],
                  prepare: Callable[[], None]) -> None:
  with _host_lock(data_dir, name):
    if not is_prepared():
      prepare()


def once(name: str, data_dir: Optional[str], is_prepared: Callable[[], bool],
         prepare: Callable[[], None], *, wait_s: float = WAIT_S, store=None) -> None:
  """Makes `is_prepared()` true on this process, `prepare()` running once per data dir.

  `name` names the dataset (and version) in messages and keys. On one process: under the host
  lock. On many: process 0 first, the others after its verdict; a failure on process 0 is one
  line on every other process, and so is a wait past `wait_s`.
  """
  if jax.process_count() == 1:
    _prepare_here(name, data_dir, is_prepared, prepare)
    return
  store = store or runtime_api.KeyValueStore()
  key = f'{PREFIX}/' + hashlib.sha1(f'{name}|{data_dir}'.encode()).hexdigest()[:16]
  if jax.process_index() == 0:
    try:
      _prepare_here(name, data_dir, is_prepared, prepare)
    except BaseException as e:
      store.set(key, f'{type(e).__name__}: {e}'.splitlines()[0][:500])
      raise
    store.set(key, OK)
    return
  try:
    verdict = store.get(key, wait_s)
  except Exception as e:  # pylint: disable=broad-except  (the store's deadline error)
    raise errors.UserError(
        f'{name}: process 0 had not prepared it in {data_dir} after {wait_s:g} s; waiting '
        f'longer needs vit_jax.data.preparation.WAIT_S ({type(e).__name__}).') from None
  if verdict != OK:
    raise errors.UserError(f'{name}: process 0 could not prepare it in {data_dir}: {verdict}')
  _prepare_here(name, data_dir, is_prepared, prepare)  # a host-local data dir: ours to build


def agreed(name: str, compute: Callable[[], str], *, wait_s: float = WAIT_S, store=None) -> str:
  """`compute()` run on process 0 only, its result (a short string) handed to every process:
  a check every process needs but one should do (an image folder's decode check). A failure on
  process 0 is one line on the others; so is a wait past `wait_s`."""
  if jax.process_count() == 1:
    return compute()
  store = store or runtime_api.KeyValueStore()
  key = f'{PREFIX}/agreed/' + hashlib.sha1(name.encode()).hexdigest()[:16]
  if jax.process_index() == 0:
    try:
      result = compute()
    except BaseException as e:
      store.set(key, _FAILED + f'{type(e).__name__}: {e}'.splitlines()[0][:500])
      raise
    store.set(key, result)
    return result
  try:
    result = store.get(key, wait_s)
  except Exception as e:  # pylint: disable=broad-except  (the store's deadline error)
    raise errors.UserError(f'{name}: process 0 had not finished it after {wait_s:g} s '
                           f'({type(e).__name__}).') from None
  if result.startswith(_FAILED):
    raise errors.UserError(f'{name}: process 0 failed: {result[len(_FAILED):]}')
  return result
