"""The distributed runtime's key-value store, behind one small interface.

JAX offers no public API for the coordination service's key-value store: `jax.distributed`
keeps its client in the private `jax._src.distributed.global_state`. This module is the one
place the project reaches for it, so a JAX release that moves it breaks one function, which
`tests/test_coordination.py` runs against a real (one-process) coordination service.
"""

from typing import Any


def _client() -> Any:
  from jax._src import distributed  # pylint: disable=g-import-not-at-top  (private: see above)
  return distributed.global_state.client


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
