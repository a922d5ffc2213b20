r"""A written model of step time for ViT-H/14 and ViT-G/14 on 8, 64 and 512 accelerators.

Step time = max(compute, exposed communication) + non-overlapped share of communication, from:
- compute: training FLOPs (`vit_jax.flops`, 3 x forward) x global batch / (devices x peak x MFU);
- communication per device per step, by layout (ring algorithms, (n-1)/n factors):
  dp:       all-reduce of fp32 gradients: 2 x 4P bytes, over the slowest link in the group;
  fsdp:     all-gather of bf16 params twice (forward, backward) + reduce-scatter of fp32
            gradients: (2 x 2P + 4P) bytes over the slowest link;
  fsdp_tp:  tensor parallelism inside a node (tp = 8 over NVLink): 4 all-reduces of bf16
            activations per layer [local batch x tokens x width], plus fsdp of P / tp over the
            nodes (inter-node links);
- memory per device: fp32 params + Adam (2 x fp32) + fp32 grads = 16 bytes/param, divided by
  the number of devices sharding them (dp: 1, fsdp: n, fsdp_tp: n), plus activations.

Assumptions (not yet measured on accelerators; replace them with the harness's measured MFU
and bandwidths): H100/H200-class GPUs, bf16 dense peak 989
TFLOP/s at 45% MFU, NVLink 450 GB/s per direction within an 8-GPU node, 50 GB/s per GPU across
nodes (8 x 400 Gb/s NICs), 70% of communication overlapped with compute. Global batch 4096, 224px.

  python experiments/scaling_model.py   # writes experiments/results/scaling_model.md
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vit_jax import flops  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax.configs import models as model_configs  # pylint: disable=g-import-not-at-top,wrong-import-position

PEAK, MFU = 989e12, 0.45
NVLINK, INTER_NODE = 450e9, 50e9
OVERLAP = 0.7
GLOBAL_BATCH, IMAGE = 4096, 224
NODE = 8
MEMORY_GB = 141


def params_count(config) -> float:
  d, t = config.hidden_size, config.transformer
  return t.num_layers * (4 * d * d + 2 * d * t.mlp_dim) + (IMAGE // 14) ** 2 * d


def estimate(config, devices: int, layout: str) -> dict:
  p = params_count(config)
  compute = flops.train_flops(config, IMAGE) * GLOBAL_BATCH / (devices * PEAK * MFU)
  link = NVLINK if devices <= NODE else INTER_NODE
  ring = (devices - 1) / devices
  local_batch = GLOBAL_BATCH / devices
  tokens = (IMAGE // config.patches.size[0]) ** 2 + 1
  activations = local_batch * tokens * config.hidden_size * config.transformer.num_layers * 2 * 12
  if layout == 'dp':
    comm = 2 * 4 * p * ring / link
    state_bytes = 16 * p
  elif layout == 'fsdp':
    comm = (2 * 2 * p + 4 * p) * ring / link
    state_bytes = 16 * p / devices
  else:
    tp = min(NODE, devices)
    groups = devices // tp
    tp_bytes = 4 * 2 * local_batch * tp * tokens * config.hidden_size * config.transformer.num_layers
    comm = tp_bytes * (tp - 1) / tp / NVLINK / tp
    if groups > 1:
      comm += (2 * 2 + 4) * (p / tp) * (groups - 1) / groups / INTER_NODE
    state_bytes = 16 * p / devices
    activations /= tp
  exposed = max(0.0, comm - OVERLAP * compute) if comm > 0 else 0.0
  step = compute + exposed
  memory_gb = (state_bytes + activations) / 1e9
  return {'compute_s': compute, 'comm_s': comm, 'step_s': step,
          'img_s': GLOBAL_BATCH / step, 'memory_gb': memory_gb,
          'fits': memory_gb < MEMORY_GB}


def main():
  lines = ['# Step-time model (global batch 4096, 224px, bf16, Adam; see experiments/scaling.md)',
           '', '| model | devices | layout | compute s | communication s | step s | images/s | '
           'memory GB/device | fits 141 GB |', '|---|---|---|---|---|---|---|---|---|']
  for name in ('ViT-H_14', 'ViT-G_14'):
    config = model_configs.get_config(name)
    for devices in (8, 64, 512):
      for layout in ('dp', 'fsdp', 'fsdp_tp'):
        e = estimate(config, devices, layout)
        lines.append(f'| {name} | {devices} | {layout} | {e["compute_s"]:.2f} | {e["comm_s"]:.2f} | '
                     f'{e["step_s"]:.2f} | {e["img_s"]:,.0f} | {e["memory_gb"]:.0f} | '
                     f'{"yes" if e["fits"] else "no"} |')
  out = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results', 'scaling_model.md')
  os.makedirs(os.path.dirname(out), exist_ok=True)
  with open(out, 'w') as f:
    f.write('\n'.join(lines) + '\n')
  print('\n'.join(lines))


if __name__ == '__main__':
  main()
