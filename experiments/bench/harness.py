r"""Benchmark harness: training and inference throughput, step time, MFU, compile time, memory.

For each variant x batch x dtype x layout: compiles our sharded train step and forward on all
local devices, checks the step's loss equals a plain-JAX reference on the same weights and batch
(correctness first), then times them on synthetic on-device batches (no input pipeline, no host
syncs inside the timed loop). MFU uses the analytic FLOPs (`vit_jax.flops`, training = 3 x
forward; checked against XLA's cost analysis, reported beside it) over the device's peak: the
known dense peak for GPUs/TPUs, and on CPU the best matmul rate measured in the same run.

  python experiments/bench/harness.py --variants=Ti/16,S/16 --batches=8 --dtypes=float32 \
      --layouts=dp [--tag=harness_cpu]
  python experiments/bench/harness.py --variants=B/16 --batches=256,512 --dtypes=bfloat16 \
      --remat=none,dots --tag=h200            # on a GPU host

Results: experiments/results/bench_<tag>.md and .json. TensorFlow is not imported.
"""

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from vit_jax import flops as flops_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax import models  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.models import geometry  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.configs import models as model_configs  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.parallel import partitioning  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.train import optimizer  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.train import options  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.train import state as state_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.train import step as step_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
import plain_jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import timing  # pylint: disable=g-import-not-at-top,wrong-import-position

# Dense peak FLOP/s per device by device_kind substring (bf16 / fp32 tensor-core rates).
PEAKS = {'H200': {'bfloat16': 989e12, 'float32': 494e12}, 'H100': {'bfloat16': 989e12,
                                                                   'float32': 494e12},
         'A100': {'bfloat16': 312e12, 'float32': 156e12}, 'TPU v5': {'bfloat16': 197e12},
         'TPU v4': {'bfloat16': 275e12}}
LAYOUT_MESH = {'dp': (-1, 1, 1), 'fsdp': (1, -1, 1), 'fsdp_tp': (1, -1, 2)}


def device_peak(dtype: str) -> tuple[float, str]:
  kind = jax.devices()[0].device_kind
  for name, peaks in PEAKS.items():
    if name in kind and dtype in peaks:
      return peaks[dtype] * jax.device_count(), f'{name} datasheet'
  # CPU (or unknown): the best dense matmul rate measured now, on all devices.
  def matmul(m, k, n):
    a, b = jnp.ones((m, k), dtype), jnp.ones((k, n), dtype)
    product = jax.jit(jnp.matmul)
    return lambda: product(a, b).block_until_ready()
  best = timing.best_matmul_rate(matmul, [(2048, 2048, 2048)])
  return best * jax.device_count(), 'measured matmul'


def bench_one(variant, batch, dtype, layout, remat, scan, iters, image_size=224):
  config = model_configs.get_config(variant)
  model = models.VisionTransformer(num_classes=1000, dtype=jnp.dtype(dtype), remat=remat,
                                   scan=scan, **config)
  mesh = mesh_lib.make_mesh(LAYOUT_MESH[layout])
  opt = options.optimizer_with(optim={'name': 'adam'}, lr={'base': 1e-4, 'schedule': 'constant'},
                               grad_clip_norm=0.0)
  image_shape = (image_size, image_size, 3)
  abstract_params = geometry.abstract_params(model, image_size)
  tx, _ = optimizer.build(opt, abstract_params, 100)
  state, shardings = state_lib.create(model, tx, image_shape=image_shape, seed=0, mesh=mesh,
                                      preset=layout)
  rng = np.random.default_rng(0)
  head = jax.device_put(0.02 * rng.standard_normal(
      state.params['head']['kernel'].shape).astype(np.float32),
                        shardings.params['head']['kernel'])
  state = state.replace(params={**state.params, 'head': {**state.params['head'], 'kernel': head}})
  sharding = mesh_lib.batch_sharding(mesh)
  data = {'image': jax.device_put(jnp.asarray(rng.uniform(-1, 1, (batch, *image_shape)),
                                              jnp.float32), sharding),
          'labels': jax.device_put(jnp.eye(1000, dtype=jnp.float32)[rng.integers(0, 1000, batch)],
                                   sharding)}

  # Correctness first: our loss vs the plain-JAX reference (float32) on the same weights.
  params_host = jax.device_get(models.unstack_encoder_blocks(state.params))
  ref_logits = jax.jit(lambda p, x: plain_jax.forward(
      p, x, config.patches.size[0], config.transformer.num_layers))(params_host, data['image'])
  ref_loss = float(-jnp.mean(jnp.sum(data['labels'] * jax.nn.log_softmax(ref_logits), -1)))

  train = step_lib.jit_train_step(step_lib.make_train_step(model, tx), shardings, mesh)
  start = time.perf_counter()
  with partitioning.use(mesh, layout):
    compiled_train = train.lower(state, data).compile()
  compile_train = time.perf_counter() - start
  train = compiled_train
  state, metrics = train(state, data)
  loss = float(metrics['loss'])
  tolerance = 1e-4 if dtype == 'float32' else 3e-2
  if abs(loss - ref_loss) > tolerance * abs(ref_loss):
    raise AssertionError(f'{variant} {dtype} {layout}: step loss {loss} != reference {ref_loss}')

  holder = [state]

  def train_once():
    holder[0], m = train(holder[0], data)
    m['loss'].block_until_ready()

  forward = jax.jit(lambda p, x: model.apply({'params': p}, x, train=False),
                    in_shardings=(shardings.params, sharding))
  start = time.perf_counter()
  with jax.set_mesh(mesh):
    compiled_forward = forward.lower(holder[0].params, data['image']).compile()
  compile_forward = time.perf_counter() - start

  def infer_once():
    with jax.set_mesh(mesh):
      forward(holder[0].params, data['image']).block_until_ready()

  train_s = timing.median_seconds(train_once, iters=iters)
  infer_s = timing.median_seconds(infer_once, iters=iters)
  peak, peak_source = device_peak(dtype)
  analytic = flops_lib.forward_flops(config, image_size)
  cost = compiled_forward.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  xla_forward = float(cost.get('flops', 0.0)) * jax.device_count() / batch
  memory = compiled_train.memory_analysis()
  return {
      'variant': variant, 'batch': batch, 'dtype': dtype, 'layout': layout, 'remat': remat,
      'scan': scan, 'devices': jax.device_count(), 'device_kind': jax.devices()[0].device_kind,
      'loss': loss, 'reference_loss': ref_loss,
      'train_step_s': train_s, 'train_img_s': batch / train_s,
      'infer_s': infer_s, 'infer_img_s': batch / infer_s,
      'gflops_per_image_fwd': analytic / 1e9, 'xla_gflops_per_image_fwd': xla_forward / 1e9,
      'train_mfu': 3 * analytic * batch / train_s / peak,
      'infer_mfu': analytic * batch / infer_s / peak,
      'peak_tflops': peak / 1e12, 'peak_source': peak_source,
      'compile_train_s': compile_train, 'compile_infer_s': compile_forward,
      'train_peak_bytes_per_device': int(memory.temp_size_in_bytes + memory.argument_size_in_bytes
                                         + memory.output_size_in_bytes),
  }


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--variants', default='Ti/16,S/16')
  parser.add_argument('--batches', default='8')
  parser.add_argument('--dtypes', default='float32')
  parser.add_argument('--layouts', default='dp')
  parser.add_argument('--remat', default='none')
  parser.add_argument('--scan', default='false')
  parser.add_argument('--iters', type=int, default=5)
  parser.add_argument('--tag', default='harness_cpu')
  parser.add_argument('--out', default=os.path.join(ROOT, 'experiments', 'results'))
  args = parser.parse_args()
  rows = []
  for variant in args.variants.split(','):
    for batch in (int(b) for b in args.batches.split(',')):
      for dtype in args.dtypes.split(','):
        for layout in args.layouts.split(','):
          for remat in args.remat.split(','):
            for scan in (s == 'true' for s in args.scan.split(',')):
              rows.append(bench_one(variant, batch, dtype, layout, remat, scan, args.iters))
              print(json.dumps(rows[-1]), flush=True)
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, f'bench_{args.tag}.json'), 'w') as f:
    json.dump(rows, f, indent=2)
  lines = [f'# Harness ({rows[0]["device_kind"]} x {rows[0]["devices"]}; peak: '
           f'{rows[0]["peak_source"]})', '',
           '| variant | batch | dtype | layout | remat | scan | train img/s | step s | train MFU '
           '| infer img/s | infer MFU | GFLOPs/img fwd (XLA) | compile s (train/infer) | '
           'train MiB/device | loss = reference |', '|' + '---|' * 15]
  lines += [f'| {r["variant"]} | {r["batch"]} | {r["dtype"]} | {r["layout"]} | {r["remat"]} | '
            f'{r["scan"]} | {r["train_img_s"]:.1f} | {r["train_step_s"]:.3f} | '
            f'{100 * r["train_mfu"]:.1f}% | {r["infer_img_s"]:.1f} | {100 * r["infer_mfu"]:.1f}% | '
            f'{r["gflops_per_image_fwd"]:.2f} ({r["xla_gflops_per_image_fwd"]:.2f}) | '
            f'{r["compile_train_s"]:.1f} / {r["compile_infer_s"]:.1f} | '
            f'{r["train_peak_bytes_per_device"] / 2**20:,.0f} | '
            f'{r["loss"]:.4f} = {r["reference_loss"]:.4f} |' for r in rows]
  with open(os.path.join(args.out, f'bench_{args.tag}.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')
  print('\n'.join(lines))


if __name__ == '__main__':
  main()
