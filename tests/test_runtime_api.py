"""The one function on JAX's private coordination-service client (parallel/runtime_api.py),
run against a real coordination service of one process, in a process of its own."""

import os
import socket
import subprocess
import sys

import jax
from jax._src import distributed  # the private names the seam reaches for
from jax._src.lib import _jax
import pytest

from vit_jax import errors
from vit_jax.parallel import runtime_api
from vit_jax.parallel import coordinator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_WORKER = r'''
import sys
import jax
jax.config.update('jax_cpu_collectives_implementation', 'gloo')
from vit_jax.parallel import runtime_api
try:
  runtime_api.KeyValueStore()
except RuntimeError as e:
  print('before:', e)
jax.distributed.initialize(f'localhost:{sys.argv[1]}', num_processes=1, process_id=0)
store = runtime_api.KeyValueStore()
store.set('vit_jax/heartbeat/0', '1')
store.set('vit_jax/heartbeat/0', '2')  # overwriting is allowed
store.set('vit_jax/heartbeat/3', 'done')
store.set('vit_jax/other/0', 'x')
print('entries:', sorted(store.entries('vit_jax/heartbeat').items()))
jax.distributed.shutdown()
'''


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def test_the_store_sets_overwrites_and_lists_a_directory():
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu')
  env.pop('XLA_FLAGS', None)
  done = subprocess.run([sys.executable, '-c', _WORKER, str(_free_port())], env=env,
                        capture_output=True, text=True, timeout=120, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  lines = done.stdout.splitlines()
  assert lines[0] == ('before: jax.distributed.initialize has not run: there is no coordination '
                      'service to talk to.')
  assert lines[1] == ("entries: [('vit_jax/heartbeat/0', '2'), ('vit_jax/heartbeat/3', 'done')]")



def test_a_jax_release_that_moved_the_private_names_refuses_the_feature_in_one_line(monkeypatch):
  """Every private JAX name sits behind runtime_api.py; when one is gone the feature is refused
  with a UserError naming it and the JAX version, not an AttributeError deep in a run."""
  monkeypatch.delattr(distributed, 'global_state')
  with pytest.raises(errors.UserError, match=rf'^The coordination key-value store .* is not '
                     rf'available with jax {jax.__version__}: it relies on a private JAX name'):
    runtime_api.KeyValueStore()
  with pytest.raises(runtime_api.PrivateApiMoved, match='in its own process is not available'):
    with coordinator.own_process(1.0):
      pass
  monkeypatch.delattr(_jax, 'get_distributed_runtime_service')
  with pytest.raises(runtime_api.PrivateApiMoved, match='in its own process is not available'):
    runtime_api.start_service('localhost:0', 1, 10, 10)
