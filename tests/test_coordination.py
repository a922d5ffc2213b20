"""The one function on JAX's private coordination-service client (parallel/coordination.py),
run against a real coordination service of one process, in a process of its own."""

import os
import socket
import sys

import preloaded

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_WORKER = r'''
import sys
import jax
jax.config.update('jax_cpu_collectives_implementation', 'gloo')
from vit_jax.parallel import coordination
try:
  coordination.KeyValueStore()
except RuntimeError as e:
  print('before:', e)
jax.distributed.initialize(f'localhost:{sys.argv[1]}', num_processes=1, process_id=0)
store = coordination.KeyValueStore()
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
  done = preloaded.run([sys.executable, '-c', _WORKER, str(_free_port())], env=env,
                       capture_output=True, text=True, timeout=120, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  lines = done.stdout.splitlines()
  assert lines[0] == ('before: jax.distributed.initialize has not run: there is no coordination '
                      'service to talk to.')
  assert lines[1] == ("entries: [('vit_jax/heartbeat/0', '2'), ('vit_jax/heartbeat/3', 'done')]")

