r"""Per-device memory of the train state and step under the dp / fsdp / fsdp_tp layouts.

Builds the sharded TrainState of a ViT (Adam) on 8 simulated CPU devices and compiles one train
step per layout, reporting the per-device bytes of parameters + optimizer state (from the shard
shapes) and XLA's `compiled.memory_analysis()` of the step, with ratios against dp.

  python experiments/sharding_memory.py [--model=ViT-B_16] [--batch=16]
"""

import argparse
import json
import os

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position

from vit_jax import models  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.models import geometry  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.objectives import classification  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.parallel import partitioning  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.train import optimizer  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.train import options  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.train import state as state_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.train import step as step_lib  # pylint: disable=g-import-not-at-top,wrong-import-position

LAYOUTS = {'dp': (8, 1, 1), 'fsdp': (1, 8, 1), 'fsdp_tp': (1, 4, 2)}


def measure(model_name: str, batch: int, image_size: int):
  model = models.get_model(model_name, num_classes=1000, scan=True)
  config = options.optimizer_with(optim={'name': 'adam'}, lr={'base': 1e-3})
  abstract_params = geometry.abstract_params(model, image_size)
  tx, _ = optimizer.build(config, abstract_params, 100)
  rows = []
  for layout, sizes in LAYOUTS.items():
    mesh = mesh_lib.make_mesh(sizes)
    image_shape = (image_size, image_size, 3)

    def init(rng):
      params = model.init(rng, jnp.zeros((1, *image_shape)), train=False)['params']
      return state_lib.TrainState(step=jnp.zeros([], jnp.int32), params=params,
                                  opt_state=tx.init(params), rng=jax.random.PRNGKey(0))

    abstract = jax.eval_shape(init, jax.random.key(0))
    shardings = state_lib.state_shardings(abstract, tx, mesh, layout)
    state_bytes = sum(
        int(jnp.prod(jnp.array(s.shard_shape(x.shape)))) * x.dtype.itemsize
        for x, s in zip(jax.tree.leaves(abstract), jax.tree.leaves(shardings)))
    step = step_lib.jit_train_step(
        step_lib.make_train_step(classification.Classification(model), tx), shardings, mesh)
    data = {'image': jax.ShapeDtypeStruct((batch, *image_shape), jnp.float32,
                                          sharding=mesh_lib.batch_sharding(mesh)),
            'labels': jax.ShapeDtypeStruct((batch, 1000), jnp.float32,
                                           sharding=mesh_lib.batch_sharding(mesh))}
    abstract_sharded = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, shardings)
    with partitioning.use(mesh, layout):
      analysis = step.lower(abstract_sharded, data).compile().memory_analysis()
    rows.append({'layout': layout, 'mesh': dict(zip(mesh_lib.MESH_AXES, sizes)),
                 'state_bytes_per_device': state_bytes,
                 'step_argument_bytes': analysis.argument_size_in_bytes,
                 'step_temp_bytes': analysis.temp_size_in_bytes})
    print(rows[-1], flush=True)
  base = rows[0]['state_bytes_per_device']
  for row in rows:
    row['state_vs_dp'] = round(row['state_bytes_per_device'] / base, 3)
  return rows


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--model', default='ViT-B_16')
  parser.add_argument('--batch', type=int, default=16)
  parser.add_argument('--image_size', type=int, default=224)
  parser.add_argument('--out', default=os.path.join(os.path.dirname(__file__), 'results'))
  args = parser.parse_args()
  rows = measure(args.model, args.batch, args.image_size)
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, 'sharding_memory.json'), 'w') as f:
    json.dump({'model': args.model, 'batch': args.batch, 'devices': 8, 'rows': rows}, f, indent=2)
  mib = lambda b: f'{b / 2**20:,.1f}'  # pylint: disable=unnecessary-lambda-assignment
  lines = [f'# {args.model}, Adam, global batch {args.batch}, 8 simulated CPU devices', '',
           '| layout | mesh (data, fsdp, tensor) | params + opt state / device (MiB) | vs dp | '
           'step arguments (MiB) | step temporaries (MiB) |', '|---|---|---|---|---|---|']
  lines += [f'| {r["layout"]} | {tuple(r["mesh"].values())} | {mib(r["state_bytes_per_device"])} '
            f'| {r["state_vs_dp"]} | {mib(r["step_argument_bytes"])} | '
            f'{mib(r["step_temp_bytes"])} |' for r in rows]
  with open(os.path.join(args.out, 'sharding_memory.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')
  print('\n'.join(lines))


if __name__ == '__main__':
  main()
