"""Fit before you run: the compiled train step's memory per device against the device's.

`measure` compiles the run's train step for a (micro_batches, remat) pair on abstract inputs and
reads XLA's `memory_analysis()`: per device, the parameters and optimizer state (the sharded
state), the batch, and the temporaries (activations kept for the backward pass and XLA's
scratch). `resolve`, when asked, turns `micro_batches='auto'` and `model.remat='auto'` into the
first pair that fits the budget (fewest micro-batches first, then the lightest remat policy) and refuses,
with the numbers, a plan that cannot fit, before any array is allocated.
"""

import copy
import dataclasses
import math
from typing import Any, Optional

import jax
import ml_collections
import numpy as np

from vit_jax import errors
from vit_jax.parallel import mesh as mesh_lib
from vit_jax.train import setup as setup_lib
from vit_jax.train import step as step_lib

AUTO = 'auto'
REMAT_ORDER = ('none', 'dots', 'dots_no_batch', 'full')  # least recomputation first
GIB = 2**30


@dataclasses.dataclass
class Plan:
  """Bytes per device of one (micro_batches, remat) choice."""

  micro_batches: int
  remat: str
  parameters: int
  optimizer_state: int  # the optimizer state, and the EMA parameters when kept
  batch: int
  temporaries: int
  generated_code: int
  total: int  # arguments + outputs - donated (aliased) + temporaries + code
  budget: Optional[int] = None

  @property
  def fits(self) -> bool:
    return self.budget is None or self.total <= self.budget

  def table(self) -> str:
    rows = [('parameters', self.parameters), ('optimizer state', self.optimizer_state),
            ('batch', self.batch), ('activations and temporaries', self.temporaries),
            ('generated code', self.generated_code), ('total', self.total)]
    if self.budget is not None:
      rows.append(('device memory', self.budget))
    lines = [f'Memory plan per device: micro_batches={self.micro_batches}, remat={self.remat!r}']
    lines += [f'  {name:<28} {_size(value):>12}' for name, value in rows]
    return '\n'.join(lines)


def device_budget(config: ml_collections.ConfigDict) -> Optional[int]:
  """Bytes one device may use: `config.device_memory_gb` when set, else what the device
  reports (`memory_stats()['bytes_limit']` on GPU and TPU); None on CPU without the field."""
  given = config.get('device_memory_gb')
  if given is not None:
    if not given > 0:
      raise errors.UserError(f'config.device_memory_gb must be positive, found {given}.')
    return int(given * GIB)
  stats = jax.local_devices()[0].memory_stats()
  return int(stats['bytes_limit']) if stats and 'bytes_limit' in stats else None


def _per_device_bytes(tree: Any, shardings: Any) -> int:
  def one(leaf, sharding):
    if leaf is None or not hasattr(leaf, 'shape'):
      return 0
    shape = sharding.shard_shape(leaf.shape) if sharding is not None else leaf.shape
    return math.prod(shape) * np.dtype(leaf.dtype).itemsize
  return int(sum(jax.tree.leaves(jax.tree.map(one, tree, shardings,
                                              is_leaf=lambda x: x is None))))


def with_choice(config: ml_collections.ConfigDict, micro_batches: int,
                remat: str) -> ml_collections.ConfigDict:
  """A copy of `config` with these micro-batches and this remat policy."""
  config = copy.deepcopy(config)
  with config.unlocked():
    config.micro_batches = micro_batches
    config.model.remat = remat
  return config


def _schedule_steps(config: ml_collections.ConfigDict) -> int:
  """A step count for building the optimizer (memory does not depend on it)."""
  warmup = int((config.get('lr') or {}).get('warmup_steps') or 0)
  return max(int(config.get('total_steps') or 0), warmup + 1)


def measure(config: ml_collections.ConfigDict, micro_batches: int, remat: str,
            budget: Optional[int] = None) -> Plan:
  """Compiles the train step of `config` with this choice (no array allocated) and reads its
  memory analysis."""
  config = with_choice(config, micro_batches, remat)
  setup = setup_lib.build_setup(config, total_steps=_schedule_steps(config))
  train_step = step_lib.train_step_from_config(config, setup)
  batch_sharding = mesh_lib.batch_sharding(setup.mesh)
  batch = step_lib.train_batch_spec(config, batch_sharding)
  with jax.set_mesh(setup.mesh):
    compiled = train_step.jitted.lower(setup.abstract_state, batch).compile()
  analysis = compiled.memory_analysis()
  state, shardings = setup.abstract_state, setup.shardings
  parameters = _per_device_bytes(state.params, shardings.params)
  optimizer_state = _per_device_bytes(state.opt_state, shardings.opt_state)
  if state.ema_params is not None:
    optimizer_state += _per_device_bytes(state.ema_params, shardings.ema_params)
  batch_bytes = _per_device_bytes(batch, {key: batch_sharding for key in batch})
  total = (analysis.argument_size_in_bytes + analysis.output_size_in_bytes
           - analysis.alias_size_in_bytes + analysis.temp_size_in_bytes
           + analysis.generated_code_size_in_bytes)
  return Plan(micro_batches, remat, parameters, optimizer_state, batch_bytes,
              int(analysis.temp_size_in_bytes), int(analysis.generated_code_size_in_bytes),
              int(total), budget)


def _micro_batch_counts(config: ml_collections.ConfigDict) -> list[int]:
  """1, 2, 4, ... while each micro-batch still splits over every device."""
  counts, count = [], 1
  while config.batch_size % count == 0 and (config.batch_size // count) % jax.device_count() == 0:
    counts.append(count)
    count *= 2
  return counts


def resolve(config: ml_collections.ConfigDict) -> tuple[ml_collections.ConfigDict, Optional[Plan]]:
  """(config with 'auto' fields chosen, its plan). Only when asked (an 'auto' field, or
  `check_memory=True` to check the configured choice against the budget) is the step compiled
  here; otherwise (config, None). A plan that cannot fit raises a ValueError with
  the numbers of the smallest one."""
  auto_micro = config.get('micro_batches') == AUTO
  auto_remat = (config.get('model') or {}).get('remat') == AUTO
  budget = device_budget(config)
  if not (auto_micro or auto_remat or config.get('check_memory')):
    return config, None  # nothing asked: no compile beyond the trainer's own
  micro_choices = _micro_batch_counts(config) if auto_micro else [int(config.micro_batches or 1)]
  model_remat = (config.get('model') or {}).get('remat')
  remat_choices = REMAT_ORDER if auto_remat else [model_remat or 'none']
  smallest = None
  for micro_batches in micro_choices:
    for remat in remat_choices:
      plan = measure(config, micro_batches, remat, budget)
      if plan.fits:
        return with_choice(config, micro_batches, remat), plan
      if smallest is None or plan.total < smallest.total:
        smallest = plan
  raise errors.UserError(
      f'No plan fits in {_size(budget)} per device: the smallest tried '
      f'(micro_batches={smallest.micro_batches}, remat={smallest.remat!r}) needs '
      f'{_size(smallest.total)} ({_size(smallest.total - budget)} over: parameters '
      f'{_size(smallest.parameters)}, optimizer state {_size(smallest.optimizer_state)}, batch '
      f'{_size(smallest.batch)}, temporaries {_size(smallest.temporaries)}). Shard the state '
      '(--config.layout=fsdp), lower batch_size, or add devices.')


def _size(num_bytes: int) -> str:
  return (f'{num_bytes / GIB:.2f} GiB' if abs(num_bytes) >= GIB / 10
          else f'{num_bytes / 2**20:.2f} MiB')
