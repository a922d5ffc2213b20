r"""What RandAugment on the devices costs against the ViT-B/16 training step it feeds.

Compiles, on synthetic on-device batches (no TensorFlow imported):
  step          the train step fed float images (augmentation done elsewhere: the TF path)
  step + aug    the same step fed uint8 images and positions, `--spec` run inside it
  aug           `--spec` alone on the uint8 batch
  aug, then step  the two as separate programs, one after the other ("just before" the step)
and reports XLA's cost analysis (FLOPs, bytes accessed) and the measured median time of each,
and the ratios aug / step and (step + aug - step) / step. Under `vmap` a `lax.switch` becomes a
select, so every RandAugment op is computed for every image and layer: the per-op rows show
what each costs on the batch.

  python experiments/device_augment.py [--variant=B/16 --batch=8 --image_size=224] \
      [--tag=cpu] [--out=experiments/results]
"""

import argparse
import json
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from vit_jax import models  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.configs import models as model_configs  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.data import device_pp  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.objectives import classification  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.data import device_randaugment as ra  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.models import geometry  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.parallel import partitioning  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.train import optimizer  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.train import options  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.train import state as state_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.train import step as step_lib  # pylint: disable=g-import-not-at-top,wrong-import-position

TARGET = 0.03  # the device augmentation's share of the step, at most


def _cost(compiled) -> dict[str, float]:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  return {'flops': float(cost.get('flops', 0.0)),
          'bytes': float(cost.get('bytes accessed', 0.0))}


def _program(fn, args, donate_first: bool = False):
  """(cost analysis of jit(fn)(*args), a function that runs it once and waits, the compiled
  program)."""
  jitted = jax.jit(fn, donate_argnums=(0,) if donate_first else ())
  compiled = jitted.lower(*args).compile()
  holder = list(args)

  def once():
    out = compiled(*holder)
    if donate_first:
      holder[0] = out[0]
    jax.block_until_ready(out)

  once()  # warm-up
  return _cost(compiled), once, compiled


def _timed(programs: dict, iters: int) -> dict[str, dict[str, float]]:
  """Median seconds of each program, the programs' runs interleaved (drift hits all alike)."""
  seconds = {name: [] for name in programs}
  for _ in range(iters):
    for name, (_, once, _) in programs.items():
      start = time.perf_counter()
      once()
      seconds[name].append(time.perf_counter() - start)
  return {name: {**cost, 'seconds': float(np.median(seconds[name]))}
          for name, (cost, _, _) in programs.items()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--variant', default='B/16')
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--image_size', type=int, default=224)
  parser.add_argument('--spec', default='randaug(2, 10)|value_range(-1, 1)')
  parser.add_argument('--dtype', default='float32')
  parser.add_argument('--iters', type=int, default=7)
  parser.add_argument('--tag', default='cpu')
  parser.add_argument('--out', default=os.path.join(HERE, 'results'))
  args = parser.parse_args()

  config = model_configs.get_config(args.variant)
  model = models.VisionTransformer(num_classes=1000, dtype=jnp.dtype(args.dtype), **config)
  mesh = mesh_lib.make_mesh((-1, 1, 1))
  opt = options.optimizer_with(optim={'name': 'adam'}, lr={'base': 1e-4, 'schedule': 'constant'},
                               grad_clip_norm=1.0)
  size = args.image_size
  tx, _ = optimizer.build(opt, geometry.abstract_params(model, size), 100)
  state, shardings = state_lib.create(model, tx, image_shape=(size, size, 3), seed=0, mesh=mesh,
                                      preset='dp')
  sharding = mesh_lib.batch_sharding(mesh)
  rng = np.random.default_rng(0)
  uint8 = jax.device_put(rng.integers(0, 256, (args.batch, size, size, 3), dtype=np.uint8),
                         sharding)
  positions = jax.device_put(np.arange(args.batch, dtype=np.uint32), sharding)
  labels = jax.device_put(np.eye(1000, dtype=np.float32)[rng.integers(0, 1000, args.batch)],
                          sharding)
  pp = device_pp.DevicePreprocess(args.spec)
  augment = device_pp.per_shard(pp, mesh, mesh_lib.BATCH_AXES)
  floats = jax.jit(augment)(uint8, positions)

  def jitted_step(**kwargs):
    return step_lib.jit_train_step(step_lib.make_train_step(
        classification.Classification(model), tx, step_lib.StepOptions(**kwargs)), shardings,
        mesh)

  with partitioning.use(mesh, 'dp'):
    programs = {'step': _program(jitted_step(), (state, {'image': floats, 'labels': labels}),
                                 donate_first=True)}
    state, _ = state_lib.create(model, tx, image_shape=(size, size, 3), seed=0, mesh=mesh,
                                preset='dp')
    programs['step + aug'] = _program(
        jitted_step(augment=augment),
        (state, {'image': uint8, 'labels': labels, 'position': positions}), donate_first=True)
    programs['aug'] = _program(augment, (uint8, positions))
    # The augmentation as its own program just before the float step (two dispatches).
    state, _ = state_lib.create(model, tx, image_shape=(size, size, 3), seed=0, mesh=mesh,
                                preset='dp')
    step_cost, _, step_compiled = _program(
        jitted_step(), (state, {'image': floats, 'labels': labels}), donate_first=True)
    aug_compiled = programs['aug'][2]
    holder = [state_lib.create(model, tx, image_shape=(size, size, 3), seed=0, mesh=mesh,
                               preset='dp')[0]]

    def separate():
      images = aug_compiled(uint8, positions)
      holder[0], metrics = step_compiled(holder[0], {'image': images, 'labels': labels})
      jax.block_until_ready(metrics)
    separate()
    programs['aug, then step'] = ({k: programs['aug'][0][k] + step_cost[k] for k in step_cost},
                                  separate, None)
    rows = _timed(programs, args.iters)
    op_programs = {}
    keys = ra.example_keys(0, positions)
    level = jnp.float32(10.0)
    signs = jnp.ones(args.batch)
    for name in ra.OPS:
      if name in ra.table.GEOMETRIC:
        batched = lambda x, k, s, name=name: jax.vmap(  # pylint: disable=unnecessary-lambda-assignment
            lambda i, g: ra.geometric(i, name, level, g))(x, s)
      elif name == 'Cutout':
        batched = lambda x, k, s: jax.vmap(lambda i, key: ra.cutout(i, level, key))(x, k)  # pylint: disable=unnecessary-lambda-assignment
      else:
        batched = lambda x, k, s, op=ra.PIXEL_OPS[name]: jax.vmap(lambda i: op(i, level))(x)  # pylint: disable=unnecessary-lambda-assignment
      op_programs[name] = _program(batched, (uint8, keys, signs))
    ops = _timed(op_programs, args.iters)

  step, fused, aug = rows['step'], rows['step + aug'], rows['aug']
  separate = rows['aug, then step']
  ratios = {
      'aug_flops_share': aug['flops'] / step['flops'],
      'aug_bytes_share': aug['bytes'] / step['bytes'],
      'aug_time_share': aug['seconds'] / step['seconds'],
      'fused_time_increase': fused['seconds'] / step['seconds'] - 1,
      'separate_time_increase': separate['seconds'] / step['seconds'] - 1,
  }
  result = {'machine': f'{platform.processor() or platform.machine()}, {os.cpu_count()} cores',
            'device': jax.devices()[0].device_kind, 'devices': jax.device_count(),
            'jax': jax.__version__, 'variant': args.variant, 'batch': args.batch,
            'image_size': size, 'dtype': args.dtype, 'spec': args.spec, 'rows': rows,
            'ops': ops, 'ratios': ratios, 'target': TARGET}
  os.makedirs(args.out, exist_ok=True)
  name = f'device_augment_{args.tag}'
  with open(os.path.join(args.out, f'{name}.json'), 'w', encoding='utf-8') as f:
    json.dump(result, f, indent=2)

  def line(label, r):
    return (f'| {label} | {r["flops"] / 1e9:.2f} | {r["bytes"] / 1e9:.3f} | '
            f'{r["seconds"] * 1e3:.1f} |')
  lines = [f'# Device augmentation against the {args.variant} train step '
           f'({result["device"]} x {result["devices"]}, {result["machine"]})', '',
           f'`python experiments/device_augment.py --variant={args.variant} --batch={args.batch} '
           f'--image_size={size} --tag={args.tag}`; batch {args.batch} at {size} px, '
           f'{args.dtype}; `{args.spec}`. FLOPs and bytes from XLA\'s cost analysis of each '
           'compiled program; time is the median of the runs, the programs\' runs interleaved.', '',
           '| program | GFLOPs | GB accessed | ms |', '|---|---|---|---|',
           line('train step (float input)', step), line('train step + augmentation inside', fused),
           line('augmentation alone', aug),
           line('augmentation, then the step (two programs)', separate), '',
           f'- augmentation / step: **{ratios["aug_flops_share"]:.2%} of the FLOPs, '
           f'{ratios["aug_bytes_share"]:.2%} of the bytes, {ratios["aug_time_share"]:.2%} of the '
           f'time** (target <= {TARGET:.0%})',
           f'- the step with the augmentation inside takes {ratios["fused_time_increase"]:+.2%} '
           f'longer than without; as a program before it, {ratios["separate_time_increase"]:+.2%}',
           '',
           'Each RandAugment op alone on the batch (every one runs for every image and layer '
           'under vmap):', '', '| op | GFLOPs | GB accessed | ms |', '|---|---|---|---|']
  lines += [line(op, r) for op, r in ops.items()]
  with open(os.path.join(args.out, f'{name}.md'), 'w', encoding='utf-8') as f:
    f.write('\n'.join(lines) + '\n')
  print('\n'.join(lines))


if __name__ == '__main__':
  main()
