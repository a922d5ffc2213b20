"""Two real processes on localhost (4 CPU devices each, gloo collectives) train like one."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

import engine_setup


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one_process_on_eight_devices(tmp_path):
  port, out = _free_port(), tmp_path / 'result.json'
  worker = os.path.join(os.path.dirname(__file__), 'multihost_worker.py')
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  procs = [subprocess.Popen([sys.executable, worker, str(i), '2', str(port), str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  logs = [p.communicate(timeout=600)[0] for p in procs]
  assert all(p.returncode == 0 for p in procs), '\n'.join(log[-3000:] for log in logs)
  results = json.loads(out.read_text())

  assert jax.device_count() == 8
  for sizes in ((8, 1, 1), (2, 2, 2)):
    losses, params = engine_setup.train(sizes)
    multi = results[str(sizes)]
    np.testing.assert_allclose(multi['losses'], losses, rtol=1e-5)
    engine_setup.assert_params_close(
        {k: np.asarray(v) for k, v in multi['params'].items()},
        engine_setup.flat_params(params))
