r"""Benchmark harness: train and inference throughput, MFU, compile time, memory predicted and
measured, one row at a time.

A row is one configuration of the run's own train step (`vit_jax.train.setup` + the memory
planner's compile, `vit_jax.train.memory.measure`): variant, batch per device, dtype, sharding
layout, remat, scan, attention implementation, dropout, device RandAugment. Each row runs in its
own process (a failing or out-of-memory row is recorded and the sweep goes on) and is appended to
`<out>/<tag>.jsonl` as soon as it is done; the Markdown table is rewritten after every row.

For each row: the step's first loss is checked against a plain-JAX float32 reference on the same
weights and batch (rows without dropout or RandAugment; correctness first), then the train step
and the forward pass are timed on synthetic on-device batches (no input pipeline, no host sync
inside the timed loop). MFU is the analytic FLOPs (`vit_jax.flops`, training = 3 x forward) over
the device's dense peak (PEAKS by device kind; on CPU the best matmul rate measured in the same
run). Memory: the planner's prediction (arguments + outputs - donated + temporaries + code) and,
on GPU/TPU, the measured `peak_bytes_in_use`.

  python experiments/bench/harness.py --variants=B/16 --batches=256,512 --dtypes=bfloat16 \
      --remat=none,dots --tag=bench_h200
  python experiments/bench/harness.py --rows=rows.json --tag=gpu_check   # rows from a file
  python experiments/bench/harness.py --tiny ...   # every variant as a 2-layer width-32 model

TensorFlow is not imported.
"""

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from typing import Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

# Dense peak FLOP/s per device (bf16 / fp32 tensor-core, no sparsity), matched in this order
# against `device_kind` (the PCIe and NVL H100s before the SXM part; TPU v5e reports 'v5 lite').
PEAKS = (
    ('H100 PCIe', {'bfloat16': 756e12, 'float32': 378e12}),
    ('H100 NVL', {'bfloat16': 835e12, 'float32': 418e12}),
    ('H100', {'bfloat16': 989e12, 'float32': 494e12}),  # SXM
    ('H200', {'bfloat16': 989e12, 'float32': 494e12}),
    ('A100', {'bfloat16': 312e12, 'float32': 156e12}),
    ('TPU v5 lite', {'bfloat16': 197e12}), ('TPU v5e', {'bfloat16': 197e12}),
    ('TPU v5p', {'bfloat16': 459e12}), ('TPU v5', {'bfloat16': 459e12}),
    ('TPU v6 lite', {'bfloat16': 918e12}), ('TPU v6e', {'bfloat16': 918e12}),
    ('TPU v4', {'bfloat16': 275e12}),
)
LAYOUT_MESH = {'dp': (-1, 1, 1), 'fsdp': (1, -1, 1), 'fsdp_tp': (1, -1, 2)}
DEFAULTS = dict(name='', variant='B/16', batch_per_device=256, dtype='bfloat16', layout='dp',
                remat='none', scan=True, attention='auto', dropout=0.0, randaug=False,
                image_size=224, iters=10, check=True)
TINY = dict(hidden_size=32, patches=dict(size=(8, 8)),
            transformer=dict(mlp_dim=64, num_heads=2, num_layers=2))


def peak_for(kind: str, dtype: str):
  """(peak FLOP/s per device, source) from PEAKS, or None for an unknown device."""
  for name, peaks in PEAKS:
    if name in kind:
      return (peaks[dtype], f'{name} datasheet') if dtype in peaks else None
  return None


def _config(row: dict, tiny: bool):
  from vit_jax.configs import common  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  config = common.get_config()
  config.model_name = 'ViT-' + row['variant'].replace('/', '_')  # B/16 -> ViT-B_16
  model = config.model
  model.dtype, model.remat, model.scan = row['dtype'], row['remat'], row['scan']
  model.attention_impl = row['attention']
  model.transformer.dropout_rate = row['dropout']
  if tiny:
    model.hidden_size, model.patches.size = TINY['hidden_size'], TINY['patches']['size']
    model.transformer.update(TINY['transformer'])
  config.num_classes, config.image_size = 1000, row['image_size']
  config.batch_size = row['batch_per_device'] * jax.device_count()
  config.pp_device = ('randaug(2, 15)|value_range(-1, 1)' if row['randaug'] else '')
  config.optim.name, config.lr.schedule, config.lr.base = 'adam', 'constant', 1e-4
  config.grad_clip_norm, config.total_steps = 0.0, 100
  config.mesh, config.sharding = LAYOUT_MESH[row['layout']], row['layout']
  return config


def _batch(setup, spec, rng):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from vit_jax.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  sharding = mesh_lib.batch_sharding(setup.mesh)
  batch = {}
  for key, s in spec.items():
    if key == 'image':
      value = (rng.integers(0, 256, s.shape).astype(np.uint8) if s.dtype == jnp.uint8
               else rng.uniform(-1, 1, s.shape).astype(np.float32))
    elif key == 'labels':
      value = np.eye(s.shape[1], dtype=np.float32)[rng.integers(0, s.shape[1], s.shape[0])]
    elif key == 'position':
      value = np.arange(s.shape[0], dtype=np.uint32)
    else:
      value = np.zeros(s.shape, s.dtype)
    batch[key] = jax.device_put(value, sharding)
  return batch


def versions() -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import jaxlib  # pylint: disable=g-import-not-at-top
  out = {'jax': jax.__version__, 'jaxlib': jaxlib.__version__,
         'xla_flags': os.environ.get('XLA_FLAGS', ''), 'backend': jax.default_backend(),
         'device_kind': jax.devices()[0].device_kind, 'devices': jax.device_count()}
  try:
    from jax._src.lib import cuda_versions  # pylint: disable=g-import-not-at-top
    out['cudnn'] = cuda_versions.cudnn_get_version() if cuda_versions else None
  except Exception:  # pylint: disable=broad-except
    out['cudnn'] = None
  return out


def run_row(row: dict, tiny: bool) -> dict:
  """Measures one row in this process."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from vit_jax import flops as flops_lib  # pylint: disable=g-import-not-at-top
  from vit_jax import models  # pylint: disable=g-import-not-at-top
  from vit_jax.models import attention  # pylint: disable=g-import-not-at-top
  from vit_jax.parallel import partitioning  # pylint: disable=g-import-not-at-top
  from vit_jax.train import memory  # pylint: disable=g-import-not-at-top
  from vit_jax.train import setup as setup_lib  # pylint: disable=g-import-not-at-top
  from vit_jax.train import state as state_lib  # pylint: disable=g-import-not-at-top
  from vit_jax.train import step as step_lib  # pylint: disable=g-import-not-at-top
  import plain_jax  # pylint: disable=g-import-not-at-top
  import timing  # pylint: disable=g-import-not-at-top

  config = _config(row, tiny)
  setup = setup_lib.from_config(config)
  options, model = setup.options, setup.options.model
  start = time.perf_counter()
  plan = memory.measure(setup)  # the run's own compile of its train step, and its prediction
  compile_train = time.perf_counter() - start
  state, _ = state_lib.create(model, setup.tx, image_shape=options.data.image_shape,
                              seed=0, mesh=setup.mesh, preset=options.parallel.sharding)
  rng = np.random.default_rng(0)
  head = state.params['head']['kernel']
  state = state.replace(params={**state.params, 'head': {**state.params['head'], 'kernel': (
      jax.device_put(0.02 * rng.standard_normal(head.shape).astype(np.float32), head.sharding))}})
  spec = step_lib.train_batch_spec(options.data, options.step)
  batch = _batch(setup, spec, rng)
  batch_size = options.data.batch_size

  reference_loss = None
  if row['check'] and not row['dropout'] and not row['randaug']:
    params_host = jax.device_get(models.unstack_encoder_blocks(state.params))
    config_model = options.model_config
    logits = jax.jit(lambda p, x: plain_jax.forward(
        p, x, config_model.patches.size[0], config_model.transformer.num_layers))(
            params_host, batch['image'])
    reference_loss = float(-jnp.mean(jnp.sum(batch['labels'] * jax.nn.log_softmax(logits), -1)))
  holder = {'state': state}
  with partitioning.use(setup.mesh, options.parallel.sharding):
    holder['state'], metrics = plan.compiled(holder['state'], batch, {})
    loss = float(metrics['loss'])
    if reference_loss is not None:
      tolerance = 1e-4 if row['dtype'] == 'float32' else 3e-2
      if abs(loss - reference_loss) > tolerance * abs(reference_loss):
        raise AssertionError(f'step loss {loss} != reference {reference_loss}')

    def train_once():
      holder['state'], m = plan.compiled(holder['state'], batch, {})
      m['loss'].block_until_ready()
    train_s = timing.median_seconds(train_once, iters=row['iters'])

    images = batch['image']
    if images.dtype == jnp.uint8:
      images = (images.astype(jnp.float32) / 127.5 - 1.0)
    forward = jax.jit(lambda p, x: model.apply({'params': p}, x, train=False))
    start = time.perf_counter()
    compiled_forward = forward.lower(holder['state'].params, images).compile()
    compile_infer = time.perf_counter() - start
    infer_s = timing.median_seconds(
        lambda: compiled_forward(holder['state'].params, images).block_until_ready(),
        iters=row['iters'])
  stats = jax.local_devices()[0].memory_stats() or {}
  measured_peak = stats.get('peak_bytes_in_use')

  kind = jax.devices()[0].device_kind
  found = peak_for(kind, row['dtype'])
  if found is None:  # CPU or unknown: the best dense matmul rate measured now
    def matmul(m, k, n):
      a, b = jnp.ones((m, k), row['dtype']), jnp.ones((k, n), row['dtype'])
      product = jax.jit(jnp.matmul)
      return lambda: product(a, b).block_until_ready()
    found = (timing.best_matmul_rate(matmul, [(1024, 1024, 1024)]), 'measured matmul')
  peak, peak_source = found[0] * jax.device_count(), found[1]
  analytic = flops_lib.forward_flops(options.model_config, row['image_size'])
  return {
      **row, **versions(), 'tiny': tiny, 'batch': batch_size,
      'attention_used': attention.choose(row['attention'], model.compute_dtype,
                                         model.hidden_size // model.transformer['num_heads']),
      'loss': loss, 'reference_loss': reference_loss,
      'train_step_s': train_s, 'train_img_s': batch_size / train_s,
      'train_img_s_per_device': batch_size / train_s / jax.device_count(),
      'infer_s': infer_s, 'infer_img_s': batch_size / infer_s,
      'gflops_per_image_fwd': analytic / 1e9,
      'train_mfu': 3 * analytic * batch_size / train_s / peak,
      'infer_mfu': analytic * batch_size / infer_s / peak,
      'peak_tflops': peak / 1e12, 'peak_source': peak_source,
      'compile_train_s': compile_train, 'compile_infer_s': compile_infer,
      'predicted_bytes_per_device': plan.total, 'measured_peak_bytes': measured_peak,
      'prediction_error': (None if not measured_peak else plan.total / measured_peak - 1),
  }


def _cell(value, fmt='{:.1f}'):
  return '-' if value is None else fmt.format(value)


def table(rows: list[dict]) -> str:
  ok = [r for r in rows if 'error' not in r]
  head = ok[0] if ok else {}
  lines = [f'# {head.get("device_kind", "?")} x {head.get("devices", "?")} '
           f'(jax {head.get("jax", "?")}, cuDNN {head.get("cudnn")}; peak: '
           f'{head.get("peak_source", "?")})', '',
           f'XLA_FLAGS: `{head.get("xla_flags", "")}`', '',
           '| variant | batch/dev | dtype | layout | remat | scan | attention | dropout | '
           'randaug | train img/s/dev | train MFU | infer img/s | compile s | predicted MiB | '
           'measured MiB | loss (reference) |', '|' + '---|' * 16]
  for r in rows:
    if 'error' in r:
      lines.append(f'| {r["variant"]} | {r["batch_per_device"]} | {r["dtype"]} | {r["layout"]} '
                   f'| {r["remat"]} | {r["scan"]} | {r["attention"]} | {r["dropout"]} | '
                   f'{r["randaug"]} | failed: {r["error"][-120:]!r} |' + ' |' * 6)
      continue
    measured = r['measured_peak_bytes']
    lines.append(
        f'| {r["variant"]} | {r["batch_per_device"]} | {r["dtype"]} | {r["layout"]} | '
        f'{r["remat"]} | {r["scan"]} | {r["attention"]} ({r["attention_used"]}) | '
        f'{r["dropout"]} | {r["randaug"]} | {r["train_img_s_per_device"]:.1f} | '
        f'{100 * r["train_mfu"]:.1f}% | {r["infer_img_s"]:.1f} | {r["compile_train_s"]:.1f} | '
        f'{r["predicted_bytes_per_device"] / 2**20:,.0f} | '
        f'{_cell(measured and measured / 2**20, "{:,.0f}")} | '
        f'{r["loss"]:.4f} ({_cell(r["reference_loss"], "{:.4f}")}) |')
  return '\n'.join(lines) + '\n'


def compare(rows: list[dict]) -> str:
  """The gpu_check comparisons, from rows named by experiments/gpu_check.sh: ratios between
  rows measured in the same sweep, and the targets."""
  by_name = {r['name']: r for r in rows if 'error' not in r and r.get('name')}
  lines = ['', '## Comparisons', '']

  def ratio(label, a, b, key='train_img_s'):
    if a in by_name and b in by_name:
      lines.append(f'- {label}: {by_name[a][key] / by_name[b][key]:.2f}x '
                   f'({by_name[a][key]:.0f} vs {by_name[b][key]:.0f} {key})')
  ratio('cuDNN over XLA attention (B/16, 256/GPU, train)', 'b16_256', 'b16_256_xla')
  ratio('remat dots over none (B/16, 512/GPU, train)', 'b16_512_dots', 'b16_512')
  ratio('dropout 0.1 over none (B/16, 256/GPU, train)', 'b16_256_dropout', 'b16_256')
  if 'b16_256' in by_name and 'b16_256_randaug' in by_name:
    plain, augmented = (by_name[n]['train_step_s'] for n in ('b16_256', 'b16_256_randaug'))
    lines.append(f'- device RandAugment share of the step (B/16, 256/GPU): '
                 f'{100 * (augmented - plain) / augmented:.1f}%')
  best = max((r for r in by_name.values() if r['variant'] == 'B/16'),
             key=lambda r: r['train_img_s_per_device'], default=None)
  if best is not None:
    lines.append(f'- best B/16 train: {best["train_img_s_per_device"]:.0f} img/s per device, '
                 f'{100 * best["train_mfu"]:.1f}% MFU ({best["name"]}); JAX-Toolbox reports '
                 '1,459 img/s per H100 (~16% MFU); goal >= 50% MFU')
    inference = max(r['infer_img_s'] for r in by_name.values() if r['variant'] == 'B/16')
    lines.append(f'- B/16 inference: {inference:.0f} img/s (goal >= 10,000 per device)')
  errors = [abs(r['prediction_error']) for r in by_name.values()
            if r.get('prediction_error') is not None]
  if errors:
    lines.append(f'- memory planner vs measured peak: worst {100 * max(errors):.1f}% over '
                 f'{len(errors)} rows (goal within 10%)')
  return '\n'.join(lines) + '\n'


def sweep(rows: list[dict], out: str, tag: str, tiny: bool, timeout_s: int,
          budget_s: Optional[float] = None) -> list[dict]:
  """Each row in its own process; results appended to <out>/<tag>.jsonl as they come. With a
  budget, a row whose estimate (`estimate_s`, else the timeout) does not fit in what is left of
  it is not started (recorded as skipped), and no row runs past it."""
  os.makedirs(out, exist_ok=True)
  jsonl, md = os.path.join(out, f'{tag}.jsonl'), os.path.join(out, f'{tag}.md')
  open(jsonl, 'w').close()
  done, start = [], time.monotonic()
  for row in rows:
    left = None if budget_s is None else budget_s - (time.monotonic() - start)
    estimate = row.get('estimate_s') or timeout_s
    command = [sys.executable, os.path.abspath(__file__), '--row', json.dumps(row)]
    command += ['--tiny'] if tiny else []
    limit = timeout_s if left is None else max(1, min(timeout_s, int(left)))
    if left is not None and estimate > left:
      record = {**row, 'error': f'skipped: estimated {estimate:.0f} s, {max(left, 0):.0f} s of '
                                f'the {budget_s:.0f} s budget left'}
    else:
      record = _run_one(row, command, limit)
    done.append(record)
    with open(jsonl, 'a') as f:
      f.write(json.dumps(record) + '\n')
    with open(md, 'w') as f:
      f.write(table(done) + compare(done))
    print(json.dumps(record), flush=True)
  return done


def _run_one(row: dict, command: list[str], limit_s: int) -> dict:
  try:
    result = subprocess.run(command, capture_output=True, text=True, timeout=limit_s,
                            check=False)
  except subprocess.TimeoutExpired:
    return {**row, 'error': f'timed out after {limit_s} s'}
  lines = [l for l in result.stdout.splitlines() if l.startswith('ROW ')]
  if result.returncode == 0 and lines:
    return json.loads(lines[-1][4:])
  return {**row, 'error': (result.stderr or result.stdout)[-2000:] or
                          f'exit status {result.returncode} and no output'}


def failures(done: list[dict]) -> list[str]:
  """One line per row that failed or was skipped: its name and the last line of its error."""
  lines = []
  for record in done:
    if 'error' in record:
      last = [l for l in record['error'].strip().splitlines() if l.strip()] or ['(empty)']
      lines.append(f"row {record.get('name') or record.get('variant')} failed: {last[-1].strip()}")
  return lines


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--row', help='one row as JSON: measure it in this process')
  parser.add_argument('--rows', help='a JSON file with a list of rows (fields: DEFAULTS)')
  parser.add_argument('--variants', default='B/16')
  parser.add_argument('--batches', default='256', help='batch per device')
  parser.add_argument('--dtypes', default='bfloat16')
  parser.add_argument('--sharding', default='dp', help='sharding presets, as config.sharding: '
                      'dp,fsdp,fsdp_tp')
  parser.add_argument('--remat', default='none')
  parser.add_argument('--attention', default='auto')
  parser.add_argument('--iters', type=int, default=10)
  parser.add_argument('--tiny', action='store_true', help='2-layer width-32 models')
  parser.add_argument('--timeout', type=int, default=900, help='seconds per row')
  parser.add_argument('--budget', type=float, default=None,
                      help='seconds for the whole sweep: a row whose estimate does not fit in '
                           'what is left is not started')
  parser.add_argument('--tag', default='bench')
  parser.add_argument('--out', default=os.path.join(ROOT, 'experiments', 'results'))
  args = parser.parse_args()
  if args.row:
    from vit_jax.parallel import xla_flags  # pylint: disable=g-import-not-at-top
    xla_flags.apply()  # as vit_jax.main does, before JAX starts
    print('ROW ' + json.dumps(run_row({**DEFAULTS, **json.loads(args.row)}, args.tiny)),
          flush=True)
    return
  if args.rows:
    with open(args.rows) as f:
      rows = [{**DEFAULTS, 'iters': args.iters, **r} for r in json.load(f)]
  else:
    rows = [{**DEFAULTS, 'variant': v, 'batch_per_device': int(b), 'dtype': d, 'layout': l,
             'remat': r, 'attention': a, 'iters': args.iters}
            for v, b, d, l, r, a in itertools.product(
                args.variants.split(','), args.batches.split(','), args.dtypes.split(','),
                args.sharding.split(','), args.remat.split(','), args.attention.split(','))]
  failed = failures(sweep(rows, args.out, args.tag, args.tiny, args.timeout, args.budget))
  if failed:  # the table is incomplete: say which rows and why, and exit non-zero
    print('\n'.join(failed), file=sys.stderr, flush=True)
    sys.exit(1)


if __name__ == '__main__':
  main()
