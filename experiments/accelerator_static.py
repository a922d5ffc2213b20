r"""What the accelerator path compiles to, read off the program on 8 simulated CPU devices.

1. FSDP collectives after SPMD partitioning (the CPU backend later widens bf16 collectives to
   float32; a GPU or TPU does not): weight gathers and gradient reductions by dtype, for a bf16
   model with the weights cast where they are stored (`cast_for_compute`) and for a float32 one.
2. Gradient accumulation under data parallelism: all-gathers in the step with strided micro-
   batches (ours) and with contiguous ones (the old split).
3. The non-finite guard: temporary bytes of the compiled step with a cond and with a per-leaf
   select, on 1 and 8 devices (CPU buffer assignment; GPU and TPU assign their own).

  python experiments/accelerator_static.py   # -> experiments/results/accelerator_static.md
"""

import collections
import glob
import os
import re
import sys
import tempfile

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from vit_jax import models  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.objectives import classification  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.parallel import partitioning  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.train import optimizer  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.train import options  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.train import state as state_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.train import step as step_lib  # pylint: disable=g-import-not-at-top,wrong-import-position

IMAGE = (32, 32, 3)
MODEL = dict(model_name='small', patches={'size': (8, 8)}, hidden_size=64, classifier='token',
             transformer=dict(mlp_dim=256, num_heads=4, num_layers=4, dropout_rate=0.0,
                              attention_dropout_rate=0.0), representation_size=None)


def compile_step(dtype, preset, devices, micro_batches=1, dump=None, **step_kwargs):
  vit = models.VisionTransformer(num_classes=10, dtype=dtype, **MODEL)
  mesh = mesh_lib.make_mesh((devices, 1, 1) if preset == 'dp' else (1, devices, 1),
                            jax.devices()[:devices])
  params = jax.eval_shape(lambda: vit.init(jax.random.key(0), jnp.zeros((1, *IMAGE)),
                                           train=False)['params'])
  opt = options.optimizer_with(optim={'name': 'adam'}, lr={'base': 1e-3, 'schedule': 'constant'})
  tx, _ = optimizer.build(opt, params, 10)
  state, shardings = state_lib.create(vit, tx, image_shape=IMAGE, seed=0, mesh=mesh,
                                      preset=preset)
  compute = None if dtype == 'float32' else jnp.bfloat16
  step = step_lib.make_train_step(classification.Classification(vit), tx, step_lib.StepOptions(
      micro_batches=micro_batches, compute_dtype=compute, param_shardings=shardings.params,
      **step_kwargs))
  rng = np.random.default_rng(0)
  batch = jax.device_put({'image': rng.uniform(-1, 1, (32, *IMAGE)).astype(np.float32),
                          'labels': np.eye(10, dtype=np.float32)[rng.integers(0, 10, 32)]},
                         mesh_lib.batch_sharding(mesh))
  options_ = {'xla_dump_to': dump, 'xla_dump_hlo_pass_re': 'spmd-partitioning'} if dump else {}
  with partitioning.use(mesh, preset):
    compiled = step_lib.jit_train_step(step, shardings, mesh).lower(state, batch).compile(
        compiler_options=options_)
  text = None
  if dump:
    (after,) = glob.glob(os.path.join(dump, '*jit_train_step*after_spmd-partitioning*.txt'))
    with open(after) as f:
      text = f.read()
  state_bytes = 3 * sum(4 * p.size for p in jax.tree.leaves(params))
  return compiled, text, state_bytes


def collectives(text, kind):
  """Counter of dtypes of `kind` collectives with at least two dimensions."""
  found = re.findall(rf'= (\w+)\[([0-9,]+)\][^ ]* {kind}\(', text)
  return collections.Counter(d for d, dims in found if ',' in dims)


def main():
  lines = ['# The accelerator path, read off the compiled step (8 simulated CPU devices)', '',
           f'Model: width {MODEL["hidden_size"]}, {MODEL["transformer"]["num_layers"]} layers, '
           f'{IMAGE[0]}x{IMAGE[1]} images in 8x8 patches, batch 32, Adam. JAX {jax.__version__}.',
           '', '## FSDP collectives after SPMD partitioning (weights and gradients, >= 2-D)', '',
           '| model dtype | all-gather dtypes | all-reduce dtypes |', '|---|---|---|']
  for dtype in ('bfloat16', 'float32'):
    with tempfile.TemporaryDirectory() as dump:
      _, text, _ = compile_step(dtype, 'fsdp', 8, dump=dump)
    lines.append(f'| {dtype} | {dict(collectives(text, "all-gather"))} | '
                 f'{dict(collectives(text, "all-reduce"))} |')
  lines += ['', 'The float32 entries of the bf16 model are the head (float32 by design): its '
            'kernel, its gradient, and the logits gradient of the batch.', '',
            '## Gradient accumulation under dp (micro_batches=2)', '',
            '| split | all-gathers in the partitioned step |', '|---|---|']
  strided = step_lib.split_micro_batches
  for name, split in (('strided (ours)', strided),
                      ('contiguous (before)', lambda x, m: x.reshape(m, -1, *x.shape[1:]))):
    step_lib.split_micro_batches = split
    with tempfile.TemporaryDirectory() as dump:
      _, text, _ = compile_step('bfloat16', 'dp', 8, micro_batches=2, dump=dump)
    lines.append(f'| {name} | {sum(collectives(text, "all-gather").values())} |')
  step_lib.split_micro_batches = strided
  lines += ['', '## The non-finite guard: temporary bytes of the compiled step (CPU)', '',
            '| devices | dtype | cond | select | state bytes (params + Adam) |',
            '|---|---|---|---|---|']
  for devices in (1, 8):
    for dtype in ('bfloat16', 'float32'):
      temps = {}
      for guard in ('cond', 'select'):
        compiled, _, state_bytes = compile_step(dtype, 'dp', devices, guard=guard)
        temps[guard] = compiled.memory_analysis().temp_size_in_bytes
      lines.append(f'| {devices} | {dtype} | {temps["cond"]:,} | {temps["select"]:,} | '
                   f'{state_bytes:,} |')
  lines += ['', 'On CPU neither guard keeps a steady extra state copy; the select is chosen off '
            'CPU because it has no conditional whose branches hold two states (what the GPU '
            'figure of the issue measured).']
  out = os.path.join(ROOT, 'experiments', 'results', 'accelerator_static.md')
  with open(out, 'w') as f:
    f.write('\n'.join(lines) + '\n')
  print('\n'.join(lines))


if __name__ == '__main__':
  main()
