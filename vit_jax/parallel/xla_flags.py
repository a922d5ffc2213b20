"""The XLA and libtpu flags a training run wants, set in one place before JAX starts a backend.

XLA reads `XLA_FLAGS` (and libtpu `LIBTPU_INIT_ARGS`) once, when the first backend starts, so
`apply` runs in `vit_jax.main` before anything touches a device; the launchers export the same
values (`python -m vit_jax.parallel.xla_flags`) so every process of a job sees them. A flag the
user already set keeps the user's value: ours are appended only for names not yet present, and
applying twice adds nothing.

GPU: the latency-hiding scheduler overlaps collectives with compute; the pipelined all-gather,
reduce-scatter and all-reduce move a scanned layer's collectives into the previous iteration
(FSDP gathers and data-parallel gradient reductions overlap the backward pass of the layer
next to them), and while-loop double buffering lets them. XLA parses every backend's flags on
every backend (an unknown one aborts start-up, tested on CPU), so the GPU set is harmless off
GPU. TPU: the async collective fusion flags big_vision and MaxText pass to libtpu, set in
`LIBTPU_INIT_ARGS`, which only libtpu reads.
"""

import os
import sys
from typing import MutableMapping, Sequence

GPU_FLAGS = (
    '--xla_gpu_enable_latency_hiding_scheduler=true',
    '--xla_gpu_enable_pipelined_all_gather=true',
    '--xla_gpu_enable_pipelined_reduce_scatter=true',
    '--xla_gpu_enable_pipelined_all_reduce=true',
    '--xla_gpu_enable_while_loop_double_buffering=true',
)
TPU_FLAGS = (
    '--xla_tpu_enable_data_parallel_all_reduce_opt=true',
    '--xla_tpu_data_parallel_opt_different_sized_ops=true',
    '--xla_tpu_enable_async_collective_fusion=true',
    '--xla_tpu_enable_async_collective_fusion_fuse_all_gather=true',
    '--xla_tpu_enable_async_collective_fusion_multiple_steps=true',
    '--xla_tpu_overlap_compute_collective_tc=true',
    '--xla_enable_async_all_gather=true',
)
VARIABLES = {'XLA_FLAGS': GPU_FLAGS, 'LIBTPU_INIT_ARGS': TPU_FLAGS}


def _name(flag: str) -> str:
  return flag.split('=', 1)[0]


def appended(existing: str, flags: Sequence[str]) -> str:
  """`existing` with every flag of `flags` whose name it does not set yet appended."""
  present = {_name(f) for f in existing.split()}
  extra = [f for f in flags if _name(f) not in present]
  return ' '.join(existing.split() + extra)


def apply(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
  """Appends our flags to `XLA_FLAGS` and `LIBTPU_INIT_ARGS` in `environ`; returns the new
  values. Call before the first device is touched (XLA reads them once)."""
  for variable, flags in VARIABLES.items():
    environ[variable] = appended(environ.get(variable, ''), flags)
  return {variable: environ[variable] for variable in VARIABLES}


def main(argv: Sequence[str]) -> None:
  """Prints `export VAR='...'` lines with the current environment's flags and ours appended:
  `eval "$(python -m vit_jax.parallel.xla_flags)"` in a launcher."""
  del argv
  for variable, value in apply(dict(os.environ)).items():
    print(f"export {variable}='{value}'")


if __name__ == '__main__':
  main(sys.argv)
