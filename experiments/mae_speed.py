r"""MAE step against a supervised step of the same encoder, same batch, same run.

With 75% of the patches masked the encoder sees a quarter of the tokens; the decoder (8 x 512)
sees all of them. The issue's target: an MAE step at most 40% of a supervised one. Both steps are
the trainer's own (`step.make_train_step` on the run's objective), AdamW, float32 on CPU (the
model's compute dtype elsewhere), timed after a compile and a warm-up step.

  python experiments/mae_speed.py [--batch=8] [--steps=3] [--models=S,B]
      # -> experiments/results/mae_speed_<backend>.{md,json}
"""

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from vit_jax import objectives  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.configs import models as model_configs  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.models import vit  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.objectives import mae  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.train import optimizer  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.train import options  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.train import state as state_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.train import step as step_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top,wrong-import-position

SIZE = 224


def seconds_per_step(objective, batch, steps):
  tx, _ = optimizer.build(options.optimizer_with(optim={'name': 'adamw'}),
                          jax.eval_shape(lambda: objective.train_model.init(
                              jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 3)),
                              train=False)['params']), total_steps=100)
  mesh = mesh_lib.make_mesh((-1, 1, 1))
  state, shardings = state_lib.create(objective.train_model, tx, image_shape=(SIZE, SIZE, 3),
                                      seed=0, mesh=mesh, preset='dp')
  step = step_lib.jit_train_step(step_lib.make_train_step(objective, tx), shardings, mesh)
  rng = np.random.default_rng(0)
  data = {'image': rng.uniform(-1, 1, (batch, SIZE, SIZE, 3)).astype(np.float32),
          'labels': np.eye(1000, dtype=np.float32)[rng.integers(0, 1000, batch)],
          'position': np.arange(batch, dtype=np.uint32)}
  data = jax.device_put(data, mesh_lib.batch_sharding(mesh))
  cost = step.lower(state, data).compile().cost_analysis()
  flops = float((cost[0] if isinstance(cost, list) else cost).get('flops', float('nan')))
  state, metrics = step(state, data)  # compile and warm up
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = step(state, data)
  jax.block_until_ready(metrics)
  return (time.perf_counter() - start) / steps, flops


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--steps', type=int, default=3)
  parser.add_argument('--models', default='S,B')
  args = parser.parse_args()
  rows = []
  for size in args.models.split(','):
    config = model_configs.get_config(f'ViT-{size}_16')
    config.transformer.update(dropout_rate=0.0, attention_dropout_rate=0.0)
    model = vit.VisionTransformer(num_classes=1000, **config)
    supervised = objectives.classification.Classification(model)
    masked = mae.MaskedAutoencoding(model, config, mae.Fields(0.75, 512, 8, 16, 2048, True),
                                    image_size=SIZE, seed=0)
    base, base_flops = seconds_per_step(supervised, args.batch, args.steps)
    ours, our_flops = seconds_per_step(masked, args.batch, args.steps)
    rows.append(dict(model=f'ViT-{size}/16', batch=args.batch, supervised_s=base, mae_s=ours,
                     ratio=ours / base, flops_ratio=our_flops / base_flops))
    print(rows[-1], flush=True)
  backend = jax.default_backend()
  out = os.path.join(ROOT, 'experiments', 'results', f'mae_speed_{backend}')
  with open(out + '.json', 'w') as f:
    json.dump(rows, f, indent=1)
  lines = [f'# MAE step vs supervised step ({backend}, {SIZE} px, batch {args.batch}, mean of '
           f'{args.steps} steps after warm-up)', '',
           '| model | supervised s/step | MAE s/step | MAE / supervised (time) | '
           'MAE / supervised (compiled FLOPs) |', '|---|---|---|---|---|']
  lines += [f'| {r["model"]} | {r["supervised_s"]:.3f} | {r["mae_s"]:.3f} | {r["ratio"]:.2f} | '
            f'{r["flops_ratio"]:.2f} |' for r in rows]
  lines += ['', 'Target (issue): MAE / supervised <= 0.40. The FLOPs column is XLA\'s count of '
            'the compiled steps: the 8 x 512 decoder sees all 197 tokens, so for S/16 and B/16 '
            'it alone costs about as much as a quarter-token encoder pass or more; the ratio '
            'falls under 0.4 only for wider encoders (L, H), where the paper measured its '
            'speed-up.']
  with open(out + '.md', 'w') as f:
    f.write('\n'.join(lines) + '\n')


if __name__ == '__main__':
  main()
