"""One process of the two-process training test: 4 CPU devices here, 8 in the job.

  python tests/multihost_worker.py PROCESS_ID NUM_PROCESSES PORT OUT_JSON
"""

import json
import os
import sys

os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=4'
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
sys.path.insert(0, os.path.dirname(__file__))

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

import engine_setup  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.data import pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.parallel import distributed  # pylint: disable=g-import-not-at-top,wrong-import-position


def main():
  process_id, num_processes, port, out = (int(sys.argv[1]), int(sys.argv[2]), sys.argv[3],
                                          sys.argv[4])
  distributed.initialize(f'localhost:{port}', num_processes, process_id, cpu_collectives='gloo')
  assert jax.device_count() == 8 and jax.local_device_count() == 4

  def local_slice(batch):
    start, stop = pipeline.process_range(len(batch['image']), process_id, num_processes)
    return {k: v[start:stop] for k, v in batch.items()}

  results = {}
  for sizes in ((8, 1, 1), (2, 2, 2)):
    losses, params = engine_setup.train(sizes, local_batches=local_slice)
    results[str(sizes)] = {'losses': losses,
                           'params': {k: np.asarray(v).tolist() for k, v in
                                      engine_setup.flat_params(params).items()}}
  if process_id == 0:
    with open(out, 'w') as f:
      json.dump(results, f)
  jax.distributed.shutdown()


if __name__ == '__main__':
  main()
