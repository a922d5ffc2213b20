r"""Side by side on this CPU: our train step and forward vs Hugging Face PyTorch and plain JAX.

Same machine, same run, same sizes, same weights (the PyTorch model is our Hugging Face export),
same thread count, fp32, Adam. Each measurement runs in its own process so that peak memory
(max RSS) is its own; JAX rows also report XLA's compiled memory analysis. Before timing, the
three implementations' losses on the same batch are compared (correctness first).

The same run also measures this machine's ceiling: the best fp32 matmul rate that JAX or PyTorch
reaches on it (a 2048^3 product and the model's largest GEMM). Dividing a step's analytic FLOPs
(`vit_jax.flops`) by that rate gives the fastest any implementation could run the step, hence
the largest ratio over PyTorch that is possible at all; the table prints it beside the target.

  python experiments/bench/cpu_peers.py [--variants=S/16,B/16] [--batch=8] [--iters=5]

Results: experiments/results/bench_cpu.md and .json.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import timing  # pylint: disable=g-import-not-at-top,wrong-import-position

ROOT = os.path.dirname(os.path.dirname(HERE))
IMPLS = ('ours', 'plain_jax', 'torch_hf')


def setup(variant: str, batch: int, seed: int = 0):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from vit_jax import models  # pylint: disable=g-import-not-at-top
  from vit_jax.configs import models as model_configs  # pylint: disable=g-import-not-at-top
  config = model_configs.get_config(variant)
  model = models.VisionTransformer(num_classes=1000, **config)
  params = jax.jit(model.init, static_argnames='train')(
      jax.random.key(seed), jnp.zeros((1, 224, 224, 3)), train=False)['params']
  rng = np.random.default_rng(seed)
  params = jax.tree.map(np.asarray, params)
  params['head']['kernel'] = (0.02 * rng.standard_normal(params['head']['kernel'].shape)).astype(
      np.float32)
  images = rng.uniform(-1, 1, (batch, 224, 224, 3)).astype(np.float32)
  labels = np.eye(1000, dtype=np.float32)[rng.integers(0, 1000, batch)]
  return config, model, params, images, labels


def measure_peak(variants: list[str], batch: int, threads: int) -> dict:
  """The best dense fp32 matmul rate of JAX and of PyTorch on this machine, same threads."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from vit_jax.configs import models as model_configs  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(threads)
  shapes = [(2048, 2048, 2048)]
  for variant in variants:  # the MLP's [batch*tokens, width] x [width, mlp_dim] GEMM
    config = model_configs.get_config(variant)
    tokens = (224 // config.patches.size[0])**2 + 1
    shapes.append((batch * tokens, config.hidden_size, config.transformer.mlp_dim))

  def jax_matmul(m, k, n):
    a, b = jnp.ones((m, k), jnp.float32), jnp.ones((k, n), jnp.float32)
    product = jax.jit(jnp.matmul)
    return lambda: product(a, b).block_until_ready()

  def torch_matmul(m, k, n):
    a, b = torch.ones(m, k), torch.ones(k, n)
    return lambda: torch.matmul(a, b)

  rates = {'jax': timing.best_matmul_rate(jax_matmul, shapes),
           'torch': timing.best_matmul_rate(torch_matmul, shapes)}
  return {'impl': 'peak', 'gflops_jax': rates['jax'] / 1e9,
          'gflops_torch': rates['torch'] / 1e9, 'gflops': max(rates.values()) / 1e9,
          'shapes': shapes}


def measure_one(impl: str, mode: str, variant: str, batch: int, iters: int, threads: int) -> dict:
  """One (implementation, train|infer, variant) measurement in this process."""
  config, model, params, images, labels = setup(variant, batch)
  result = {'impl': impl, 'mode': mode, 'variant': variant, 'batch': batch}
  if impl == 'torch_hf':
    import torch  # pylint: disable=g-import-not-at-top
    from transformers import ViTForImageClassification  # pylint: disable=g-import-not-at-top
    from vit_jax.export import hf  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as folder:
      hf.export(params, config, 1000, 224, folder)
      net = ViTForImageClassification.from_pretrained(folder)
    pixels = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    targets = torch.from_numpy(labels)
    loss_fn = lambda: torch.nn.functional.cross_entropy(net(pixel_values=pixels).logits, targets)  # pylint: disable=unnecessary-lambda-assignment
    if mode == 'train':
      net.train()
      opt = torch.optim.Adam(net.parameters(), lr=1e-4)
      with torch.no_grad():
        result['loss'] = float(loss_fn())

      def step():
        opt.zero_grad(set_to_none=True)
        loss_fn().backward()
        opt.step()
    else:
      net.eval()

      def step():
        with torch.no_grad():
          net(pixel_values=pixels)
  else:
    import jax  # pylint: disable=g-import-not-at-top
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    import optax  # pylint: disable=g-import-not-at-top
    sys.path.insert(0, HERE)
    import plain_jax  # pylint: disable=g-import-not-at-top
    layers, patch = config.transformer.num_layers, config.patches.size[0]
    if impl == 'plain_jax':
      forward = lambda p, x: plain_jax.forward(p, x, patch, layers)  # pylint: disable=unnecessary-lambda-assignment
    else:
      forward = lambda p, x: model.apply({'params': p}, x, train=False)  # pylint: disable=unnecessary-lambda-assignment
    loss = lambda p, x, y: -jnp.mean(jnp.sum(y * jax.nn.log_softmax(forward(p, x)), -1))  # pylint: disable=unnecessary-lambda-assignment
    result['loss'] = float(jax.jit(loss)(params, images, labels))
    if mode == 'train':
      if impl == 'plain_jax':
        tx = optax.adam(1e-4)

        def train(p, s, x, y):
          value, grads = jax.value_and_grad(loss)(p, x, y)
          updates, s = tx.update(grads, s, p)
          return optax.apply_updates(p, updates), s, value
        jitted = jax.jit(train)
        state = [jax.device_put(params), tx.init(params)]
        compiled = jitted.lower(state[0], state[1], images, labels).compile()

        def step():
          state[0], state[1], value = jitted(state[0], state[1], images, labels)
          value.block_until_ready()
      else:
        from vit_jax.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
        from vit_jax.parallel import partitioning  # pylint: disable=g-import-not-at-top
        from vit_jax.train import optimizer  # pylint: disable=g-import-not-at-top
        from vit_jax.train import options  # pylint: disable=g-import-not-at-top
        from vit_jax.train import state as state_lib  # pylint: disable=g-import-not-at-top
        from vit_jax.train import step as step_lib  # pylint: disable=g-import-not-at-top
        from vit_jax.objectives import classification  # pylint: disable=g-import-not-at-top
        opt_config = options.optimizer_with(optim={'name': 'adam'},
                                            lr={'base': 1e-4, 'schedule': 'constant'},
                                            grad_clip_norm=0.0)
        tx, _ = optimizer.build(opt_config, params, 100)
        mesh = mesh_lib.make_mesh((1, 1, 1), jax.devices()[:1])
        _, shardings = state_lib.abstract(model, tx, image_shape=(224, 224, 3), mesh=mesh,
                                          preset='dp')
        train_state = state_lib.with_params(params, tx, shardings, seed=0)
        run = step_lib.jit_train_step(
            step_lib.make_train_step(classification.Classification(model), tx), shardings, mesh)
        data = {'image': jax.device_put(images), 'labels': jax.device_put(labels)}
        with partitioning.use(mesh, 'dp'):
          compiled = run.lower(train_state, data).compile()
        run = compiled
        holder = [train_state]

        def step():
          holder[0], metrics = run(holder[0], data)
          metrics['loss'].block_until_ready()
    else:
      jitted = jax.jit(forward)
      device_params = jax.device_put(params)
      compiled = jitted.lower(device_params, images).compile()

      def step():
        jitted(device_params, images).block_until_ready()
    analysis = compiled.memory_analysis()
    result['xla_bytes'] = int(analysis.temp_size_in_bytes + analysis.argument_size_in_bytes +
                              analysis.output_size_in_bytes)
  result['seconds'] = timing.median_seconds(step, warmup=2, iters=iters)
  result['images_per_s'] = batch / result['seconds']
  result['max_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  return result


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--variants', default='S/16,B/16')
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--iters', type=int, default=5)
  parser.add_argument('--threads', type=int, default=os.cpu_count())
  parser.add_argument('--one', default=None, help=argparse.SUPPRESS)  # impl:mode:variant
  parser.add_argument('--out', default=os.path.join(ROOT, 'experiments', 'results'))
  args = parser.parse_args()
  variants = args.variants.split(',')
  if args.one == 'peak':
    print(json.dumps(measure_peak(variants, args.batch, args.threads)))
    return
  if args.one:
    impl, mode, variant = args.one.split(':')
    print(json.dumps(measure_one(impl, mode, variant, args.batch, args.iters, args.threads)))
    return

  def run_one(which: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, f'--one={which}', f'--variants={args.variants}',
                           f'--batch={args.batch}', f'--iters={args.iters}',
                           f'--threads={args.threads}'], capture_output=True, text=True,
                          cwd=ROOT, check=False)
    if proc.returncode:
      raise RuntimeError(f'{which} failed:\n{proc.stderr[-3000:]}')
    return json.loads(proc.stdout.strip().splitlines()[-1])

  peak = run_one('peak')
  print(peak, flush=True)
  rows = []
  for variant in variants:
    for mode in ('train', 'infer'):
      for impl in IMPLS:
        rows.append(run_one(f'{impl}:{mode}:{variant}'))
        print(rows[-1], flush=True)

  from vit_jax import flops as flops_lib  # pylint: disable=g-import-not-at-top
  from vit_jax.configs import models as model_configs  # pylint: disable=g-import-not-at-top
  targets = {'train': 1.5, 'infer': 1.7}
  summary = []
  for variant in variants:
    forward = flops_lib.forward_flops(model_configs.get_config(variant), 224)
    for mode in ('train', 'infer'):
      by_impl = {r['impl']: r for r in rows if r['variant'] == variant and r['mode'] == mode}
      losses = [by_impl[i]['loss'] for i in IMPLS if 'loss' in by_impl[i]]
      agree = max(losses) - min(losses) <= 1e-3 * abs(losses[0]) if losses else None
      step_flops = (3 if mode == 'train' else 1) * forward * args.batch
      rate = {i: step_flops / by_impl[i]['seconds'] / 1e9 for i in IMPLS}
      summary.append({
          'variant': variant, 'mode': mode,
          'ours_img_s': round(by_impl['ours']['images_per_s'], 2),
          'torch_img_s': round(by_impl['torch_hf']['images_per_s'], 2),
          'plain_jax_img_s': round(by_impl['plain_jax']['images_per_s'], 2),
          'vs_torch': round(by_impl['ours']['images_per_s'] / by_impl['torch_hf']['images_per_s'], 2),
          'vs_plain_jax': round(by_impl['ours']['images_per_s'] /
                                by_impl['plain_jax']['images_per_s'], 2),
          'target_vs_torch': targets[mode],
          # The fastest possible step runs every FLOP at the measured peak matmul rate.
          'ceiling_vs_torch': round(peak['gflops'] / rate['torch_hf'], 2),
          'peak_fraction': {i: round(rate[i] / peak['gflops'], 3) for i in IMPLS},
          'ours_rss_mb': round(by_impl['ours']['max_rss_mb']),
          'torch_rss_mb': round(by_impl['torch_hf']['max_rss_mb']),
          'plain_jax_rss_mb': round(by_impl['plain_jax']['max_rss_mb']),
          'ours_xla_mb': round(by_impl['ours']['xla_bytes'] / 2**20),
          'plain_jax_xla_mb': round(by_impl['plain_jax']['xla_bytes'] / 2**20),
          'losses_agree': agree})
  machine = f'{platform.machine()}, {os.cpu_count()} cores, {args.threads} threads'
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, 'bench_cpu.json'), 'w') as f:
    json.dump({'machine': machine, 'batch': args.batch, 'image_size': 224, 'dtype': 'float32',
               'peak': peak, 'rows': rows, 'summary': summary}, f, indent=2)
  pct = lambda x: f'{100 * x:.0f}%'  # pylint: disable=unnecessary-lambda-assignment
  lines = [f'# CPU side by side ({machine}), fp32, batch {args.batch}, 224px, Adam', '',
           f'Measured fp32 matmul peak in this run: **{peak["gflops"]:.0f} GFLOP/s** (JAX '
           f'{peak["gflops_jax"]:.0f}, PyTorch {peak["gflops_torch"]:.0f}). "ceiling" is the '
           'largest ratio over PyTorch any implementation could reach: peak / PyTorch\'s '
           'achieved FLOP rate.', '',
           '| variant | mode | ours img/s | PyTorch (HF) img/s | plain JAX img/s | ours / PyTorch | '
           'target | ceiling | ours / plain JAX | % of peak (ours / torch / plain) | '
           'peak RSS MB (ours / torch / plain) | XLA MB (ours / plain) | losses agree |',
           '|' + '---|' * 13]
  lines += [f'| {s["variant"]} | {s["mode"]} | {s["ours_img_s"]} | {s["torch_img_s"]} | '
            f'{s["plain_jax_img_s"]} | {s["vs_torch"]}x | {s["target_vs_torch"]}x | '
            f'{s["ceiling_vs_torch"]}x | {s["vs_plain_jax"]}x | '
            f'{" / ".join(pct(s["peak_fraction"][i]) for i in ("ours", "torch_hf", "plain_jax"))} | '
            f'{s["ours_rss_mb"]} / {s["torch_rss_mb"]} / {s["plain_jax_rss_mb"]} | '
            f'{s["ours_xla_mb"]} / {s["plain_jax_xla_mb"]} | {s["losses_agree"]} |'
            for s in summary]
  with open(os.path.join(args.out, 'bench_cpu.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')
  print('\n'.join(lines))


if __name__ == '__main__':
  main()
