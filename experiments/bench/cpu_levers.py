r"""CPU levers for our fp32 train step: each one's predicted and measured effect, same run.

Two kinds of lever, both timed against our default train step (ViT-S/16, fp32, batch 8, Adam):

- XLA:CPU flags. Each runs in its own process (flags are read once per process); the baseline is
  run first and last so the table shows the run-to-run drift beside the effects.
- Program changes that keep the parameter tree: the attention as it was (three q/k/v GEMMs and
  `jax.nn.dot_product_attention`), as it is now on CPU (one fused q/k/v GEMM, dots computed
  heads-major `[b, h, t, d]` with no transposes around them), the current module forced onto
  the `jax.nn.dot_product_attention` route, and the optimizer over one flat vector
  (`optax.flatten`). These are compiled in one process and timed in alternating rounds, so
  drift hits all of them alike.

Every variant's first loss is checked against the baseline's before it is timed.

  python experiments/bench/cpu_levers.py [--variant=S/16] [--rounds=7]

Results: experiments/results/cpu_levers.md and .json.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# (name, XLA_FLAGS, prediction written before measuring)
FLAG_LEVERS = [
    ('baseline (first)', '', 'reference'),
    ('oneDNN dot fusions', '--xla_cpu_experimental_onednn_fusion_type=dot',
     '+0-10%: oneDNN GEMMs, as PyTorch uses; isolated GEMMs already run at peak in XLA'),
    ('Eigen dots instead of YNNPACK', '--xla_cpu_experimental_ynn_fusion_type=-dot',
     '-10-20%: Eigen is slower on transposed (backward) GEMMs'),
    ('XNNPACK graph fusion', '--xla_cpu_experimental_xnn_graph_fusion_mode='
     'XNN_GRAPH_FUSION_MODE_GREEDY', '+0-10%: fewer, larger kernels'),
    ('YNNPACK elementwise + reduce', '--xla_cpu_experimental_ynn_fusion_type=+eltwise,+reduce',
     '+0-10%: elementwise work off the single-threaded loop emitters'),
    ('512-bit vectors in emitted loops', '--xla_cpu_prefer_vector_width=512',
     '+0-5%: the elementwise fusions are ~25% of the step'),
    ('concurrency scheduler off', '--xla_cpu_enable_concurrency_optimized_scheduler=false',
     '+-5%: changes which independent thunks overlap'),
    ('fast math (changes numerics)', '--xla_cpu_enable_fast_math=true',
     '+5-10%: cheaper tanh/exp; not a default, results differ in the last bits'),
    ('baseline (last)', '', 'drift check'),
]

# (name, program change, prediction). The first is the attention as it was before the change
# these levers motivated; the speed-ups are against it.
PROGRAM_LEVERS = [
    ('before: three q/k/v GEMMs + jax.nn.dot_product_attention', 'before', 'reference'),
    ('now: fused q/k/v GEMM + heads-major dots (the CPU default)', None,
     '+5-10%: one [b*t, w] x [w, 3w] GEMM, no transposes around the batched dots'),
    ('now, forced to the jax.nn.dot_product_attention route', 'fused',
     '+0-3%: the fused GEMM only'),
    ('now + flat optimizer (optax.flatten)', 'flat_optimizer',
     '+0-5%: Adam as a few large fusions instead of ~600 per-leaf ones'),
]


def _attention_class(change):
  """The attention module class for a program change (None: the current default)."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from vit_jax.models import attention  # pylint: disable=g-import-not-at-top

  if change == 'fused':
    class Fused(attention.MultiHeadAttention):
      implementation: str = 'fused'
    Fused.__name__ = 'MultiHeadAttention'
    return Fused
  if change != 'before':
    return attention.MultiHeadAttention

  class Before(attention.MultiHeadAttention):
    """Three `nn.DenseGeneral` projections and `jax.nn.dot_product_attention` ([b, t, h, d])."""

    @nn.compact
    def __call__(self, inputs_q, inputs_kv, *, deterministic):
      del deterministic  # no dropout in the benchmark
      width = inputs_q.shape[-1]
      project = lambda name, x: nn.DenseGeneral(  # pylint: disable=unnecessary-lambda-assignment
          features=(self.num_heads, width // self.num_heads), kernel_init=self.kernel_init,
          name=name)(x)
      x = jax.nn.dot_product_attention(project('query', inputs_q), project('key', inputs_kv),
                                       project('value', inputs_kv))
      return nn.DenseGeneral(features=width, axis=(-2, -1), kernel_init=self.kernel_init,
                             name='out')(x)

  Before.__name__ = 'MultiHeadAttention'
  return Before


def _build_step(variant: str, change, batch: int):
  """Our jitted train step for `variant` with one program change; returns (step, first loss)."""
  import jax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, HERE)
  import cpu_peers  # pylint: disable=g-import-not-at-top
  from vit_jax.models import attention  # pylint: disable=g-import-not-at-top
  from vit_jax.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from vit_jax.parallel import partitioning  # pylint: disable=g-import-not-at-top
  from vit_jax.train import optimizer  # pylint: disable=g-import-not-at-top
  from vit_jax.train import options  # pylint: disable=g-import-not-at-top
  from vit_jax.train import state as state_lib  # pylint: disable=g-import-not-at-top
  from vit_jax.train import step as step_lib  # pylint: disable=g-import-not-at-top
  from vit_jax.objectives import classification  # pylint: disable=g-import-not-at-top

  _, model, params, images, labels = cpu_peers.setup(variant, batch)
  opt_config = options.optimizer_with(optim={'name': 'adam'},
                                      lr={'base': 1e-4, 'schedule': 'constant'}, grad_clip_norm=0.0)
  tx, _ = optimizer.build(opt_config, params, 100)
  if change == 'flat_optimizer':
    tx = optax.flatten(tx)
  mesh = mesh_lib.make_mesh((1, 1, 1), jax.devices()[:1])
  data = {'image': jax.device_put(images), 'labels': jax.device_put(labels)}
  original = attention.MultiHeadAttention
  attention.MultiHeadAttention = _attention_class(change)
  try:  # the model is traced (and the class looked up) at the first call
    _, shardings = state_lib.abstract(model, tx, image_shape=(224, 224, 3), mesh=mesh,
                                      preset='dp')
    holder = [state_lib.with_params(params, tx, shardings, seed=0)]
    with partitioning.use(mesh, 'dp'):
      run = step_lib.jit_train_step(
          step_lib.make_train_step(classification.Classification(model), tx), shardings,
          mesh).lower(holder[0], data).compile()

    def step():
      holder[0], metrics = run(holder[0], data)
      return float(metrics['loss'])
    loss = step()
  finally:
    attention.MultiHeadAttention = original
  return step, loss


def program_levers(variant: str, batch: int, rounds: int) -> list[dict]:
  steps = [(name, *_build_step(variant, change, batch), prediction)
           for name, change, prediction in PROGRAM_LEVERS]
  reference_loss = steps[0][2]
  for name, _, loss, _ in steps:
    if abs(loss - reference_loss) > 1e-4 * abs(reference_loss):
      raise AssertionError(f'{name}: loss {loss} != baseline {reference_loss}')
  for _, step, _, _ in steps:  # warm-up
    step()
  times = {name: [] for name, *_ in steps}
  for _ in range(rounds):
    for name, step, _, _ in steps:
      start = time.perf_counter()
      step()
      times[name].append(time.perf_counter() - start)
  return [{'lever': name, 'kind': 'program', 'prediction': prediction, 'loss': loss,
           'seconds': statistics.median(times[name]), 'images_per_s':
           batch / statistics.median(times[name])} for name, _, loss, prediction in steps]


def flag_lever(variant: str, batch: int, flags: str, iters: int) -> dict:
  env = dict(os.environ, XLA_FLAGS=flags)
  proc = subprocess.run([sys.executable, os.path.join(HERE, 'cpu_peers.py'),
                         f'--one=ours:train:{variant}', f'--batch={batch}', f'--iters={iters}'],
                        capture_output=True, text=True, cwd=ROOT, env=env, check=False)
  if proc.returncode:
    raise RuntimeError(f'XLA_FLAGS={flags!r} failed:\n{proc.stderr[-3000:]}')
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--variant', default='S/16')
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--rounds', type=int, default=7)
  parser.add_argument('--program', action='store_true', help=argparse.SUPPRESS)
  parser.add_argument('--out', default=os.path.join(ROOT, 'experiments', 'results'))
  args = parser.parse_args()
  if args.program:
    print(json.dumps(program_levers(args.variant, args.batch, args.rounds)))
    return

  rows = []
  for name, flags, prediction in FLAG_LEVERS:
    result = flag_lever(args.variant, args.batch, flags, args.rounds)
    rows.append({'lever': name, 'kind': 'xla_flag', 'flags': flags, 'prediction': prediction,
                 'loss': result['loss'], 'seconds': result['seconds'],
                 'images_per_s': result['images_per_s']})
    print(rows[-1], flush=True)
  proc = subprocess.run([sys.executable, __file__, '--program', f'--variant={args.variant}',
                         f'--batch={args.batch}', f'--rounds={args.rounds}'],
                        capture_output=True, text=True, cwd=ROOT, check=False)
  if proc.returncode:
    raise RuntimeError(f'program levers failed:\n{proc.stderr[-3000:]}')
  program = json.loads(proc.stdout.strip().splitlines()[-1])
  rows += program

  flag_base = rows[0]['seconds']
  program_base = program[0]['seconds']
  for row in rows:
    row['speedup'] = (flag_base if row['kind'] == 'xla_flag' else program_base) / row['seconds']
  machine = f'{platform.machine()}, {os.cpu_count()} cores'
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, 'cpu_levers.json'), 'w') as f:
    json.dump({'machine': machine, 'variant': args.variant, 'batch': args.batch,
               'rows': rows}, f, indent=2)
  lines = [f'# CPU levers ({machine}): our {args.variant} train step, fp32, batch {args.batch}',
           '', 'Speed-up is against the first baseline of the same kind (flags: own process '
           'each; program changes: one process, alternating rounds).', '',
           '| lever | kind | predicted | img/s | measured speed-up | loss |', '|' + '---|' * 6]
  lines += [f'| {r["lever"]} | {r["kind"]} | {r["prediction"]} | {r["images_per_s"]:.2f} | '
            f'{r["speedup"]:.2f}x | {r["loss"]:.5f} |' for r in rows]
  with open(os.path.join(args.out, 'cpu_levers.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')
  print('\n'.join(lines))


if __name__ == '__main__':
  main()
