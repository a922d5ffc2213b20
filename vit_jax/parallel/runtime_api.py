"""The distributed runtime's key-value store and service, behind one small interface: the one
seam to JAX's private API.

JAX offers no public API for the coordination service's key-value store, nor for starting its
service elsewhere: `jax.distributed` keeps its client in the private
`jax._src.distributed.global_state` and starts the service through
`jax._src.lib._jax.get_distributed_runtime_service`. This module is the only place the project
reaches for either (`tests/test_runtime_api.py` runs it against a real one-process service).
A JAX release that moves them makes the feature that needs them refuse in one line naming the
JAX version (`PrivateApiMoved`), not fail deep in a run with an AttributeError.
"""

import contextlib
from typing import Any, Callable, Iterator

import jax

from vit_jax import errors


class PrivateApiMoved(errors.UserError):
  """This JAX release does not have the private name a feature relies on."""


def _private(feature: str, reach: Callable[[], Any]) -> Any:
  try:
    return reach()
  except (ImportError, AttributeError) as error:
    raise PrivateApiMoved(
        f'{feature} is not available with jax {jax.__version__}: it relies on a private JAX '
        f'name this release moved ({error}); use a jax release named in setup.py.') from None


def _distributed() -> Any:
  from jax._src import distributed  # pylint: disable=g-import-not-at-top  (private: see above)
  distributed.global_state.client  # pylint: disable=pointless-statement
  return distributed


def _client() -> Any:
  return _private('The coordination key-value store (multi-host preparation, watchdogs)',
                  lambda: _distributed().global_state.client)


def start_service(bind_address: str, num_processes: int, heartbeat_s: int, shutdown_s: int):
  """The coordination service, started in this process (vit_jax.parallel.coordinator)."""
  def reach():
    from jax._src.lib import _jax  # pylint: disable=g-import-not-at-top  (private: see above)
    return _jax.get_distributed_runtime_service
  start = _private('The coordination service in its own process', reach)
  return start(bind_address, num_processes, heartbeat_timeout=heartbeat_s,
               shutdown_timeout=shutdown_s)


@contextlib.contextmanager
def service_started_by(start: Callable[..., Any]) -> Iterator[None]:
  """Inside the block, `jax.distributed.initialize` starts its service with `start`
  (called as `get_distributed_runtime_service` is) instead of in this process."""
  runtime = _private('The coordination service in its own process',
                     lambda: _distributed()._jax)  # pylint: disable=protected-access
  original = runtime.get_distributed_runtime_service
  runtime.get_distributed_runtime_service = start
  try:
    yield
  finally:
    runtime.get_distributed_runtime_service = original


class KeyValueStore:
  """`set`, `get` and `entries` on the job's coordination service (after
  `jax.distributed.initialize`)."""

  def __init__(self):
    self._client = _client()
    if self._client is None:
      raise RuntimeError('jax.distributed.initialize has not run: there is no coordination '
                         'service to talk to.')

  def set(self, key: str, value: str) -> None:
    self._client.key_value_set(key, value, allow_overwrite=True)

  def get(self, key: str, timeout_s: float) -> str:
    """The value of `key`, waiting up to `timeout_s` for another process to set it (raises the
    runtime's deadline error past that)."""
    return self._client.blocking_key_value_get(key, int(timeout_s * 1000))

  def entries(self, prefix: str) -> dict[str, str]:
    """{key: value} of every key under `prefix` (a directory: `prefix/...`)."""
    return dict(self._client.key_value_dir_get(prefix))
