"""Fit before you run: the compiled train step's memory per device against the device's.

`measure` compiles the run's train step for a (micro_batches, remat) pair on abstract inputs and
reads XLA's `memory_analysis()`: per device, the parameters and optimizer state (the sharded
state), the batch, and the temporaries (activations kept for the backward pass and XLA's
scratch). `resolve` is how every run gets its train step: it compiles the configured pair (or,
for `micro_batches='auto'` and `model.remat='auto'`, the first pair that fits the budget: fewest
micro-batches first, then the lightest remat policy), checks it against the device's memory and
refuses, with the numbers, a step that cannot fit, before any array is allocated. The compiled
step of the chosen pair is the executable the run trains with: one compile, checked.
"""

import dataclasses
import math
import os
from typing import Any, Optional

import jax
import numpy as np

from vit_jax import errors
from vit_jax.parallel import mesh as mesh_lib
from vit_jax.parallel import partitioning
from vit_jax.train import options as options_lib
from vit_jax.train import setup as setup_lib
from vit_jax.train import step as step_lib

AUTO = options_lib.AUTO
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
  compiled: Any = None  # the compiled train step: call it as the step (state, batch)

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

  def verdict(self) -> str:
    """The plan's last line: 'fits: ...', 'does not fit: <how much over, what to change>', or
    that no budget is known."""
    if self.budget is None:
      return ('no verdict: no device memory is known here; set --config.device_memory_gb=<GiB '
              'per device> to check against it.')
    if self.fits:
      return f'fits: {_size(self.total)} of {_size(self.budget)} per device.'
    return (f'does not fit: {_size(self.total)} needed, {_size(self.budget)} per device '
            f'({_size(self.total - self.budget)} over). Shard the state '
            '(--config.sharding=fsdp), let the planner choose (--config.micro_batches=auto '
            '--config.model.remat=auto), lower batch_size, or add devices.')


def device_budget(memory: options_lib.Memory) -> Optional[int]:
  """Bytes one device may use: `config.device_memory_gb` when set, else what the device
  reports (`memory_stats()['bytes_limit']` on GPU and TPU), else, for CPU devices, the host's
  physical memory shared among its local devices; None when nothing says."""
  if memory.device_memory_gb is not None:
    return int(memory.device_memory_gb * GIB)
  device = jax.local_devices()[0]
  stats = device.memory_stats()
  if stats and 'bytes_limit' in stats:
    return int(stats['bytes_limit'])
  if device.platform == 'cpu' and hasattr(os, 'sysconf'):
    try:
      host = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
    except (ValueError, OSError):  # a platform without these names
      return None
    return host // jax.local_device_count()
  return None


def _per_device_bytes(tree: Any, shardings: Any) -> int:
  def one(leaf, sharding):
    if leaf is None or not hasattr(leaf, 'shape'):
      return 0
    shape = sharding.shard_shape(leaf.shape) if sharding is not None else leaf.shape
    return math.prod(shape) * np.dtype(leaf.dtype).itemsize
  return int(sum(jax.tree.leaves(jax.tree.map(one, tree, shardings,
                                              is_leaf=lambda x: x is None))))


def with_choice(setup: setup_lib.Setup, micro_batches: int, remat: str) -> setup_lib.Setup:
  """`setup` with these micro-batches and this remat policy (neither changes the state). The
  policy goes into the objective's model, the one place the step reads it (`Setup.remat`)."""
  options = setup.options
  objective = setup.objective.with_model(options.model.clone(remat=remat))
  step = dataclasses.replace(options.step, micro_batches=micro_batches)
  return dataclasses.replace(setup, objective=objective,
                             options=dataclasses.replace(options, step=step))


def measure(setup: setup_lib.Setup, budget: Optional[int] = None) -> Plan:
  """Compiles the train step of `setup` (no array allocated) and reads its memory analysis."""
  options = setup.options
  train_step = step_lib.for_run(setup)
  batch_sharding = mesh_lib.batch_sharding(setup.mesh)
  batch = step_lib.train_batch_spec(options.data, options.step, batch_sharding, setup.objective)
  with partitioning.use(setup.mesh, options.parallel.sharding):
    extras = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype, sharding=s),
        setup.objective.extras(),
        setup.objective.extras_shardings(setup.mesh, options.parallel.sharding))
    compiled = train_step.lower(setup.abstract_state, batch, extras).compile()
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
  return Plan(options.step.micro_batches, setup.remat, parameters, optimizer_state,
              batch_bytes, int(analysis.temp_size_in_bytes),
              int(analysis.generated_code_size_in_bytes), int(total), budget, compiled)


def _micro_batch_counts(batch_size: int) -> list[int]:
  """1, 2, 4, ... while each micro-batch still splits over every device."""
  counts, count = [], 1
  while batch_size % count == 0 and (batch_size // count) % jax.device_count() == 0:
    counts.append(count)
    count *= 2
  return counts


def resolve(setup: setup_lib.Setup) -> tuple[setup_lib.Setup, Plan]:
  """(setup with 'auto' fields chosen, its plan: the compiled step the run trains with). The
  budget is the device's (`device_budget`) unless `check_memory=False`, which keeps the one
  compile and drops the check. A step that cannot fit raises a UserError with the numbers of
  the smallest plan tried."""
  options = setup.options
  auto_micro = options.step.micro_batches == AUTO
  auto_remat = options.remat == AUTO
  budget = device_budget(options.memory) if options.memory.check else None
  micro_choices = (_micro_batch_counts(options.data.batch_size) if auto_micro
                   else [options.step.micro_batches])
  remat_choices = REMAT_ORDER if auto_remat else [options.remat]
  smallest = None
  for micro_batches in micro_choices:
    for remat in remat_choices:
      chosen = with_choice(setup, micro_batches, remat)
      plan = measure(chosen, budget)
      if plan.fits:
        return chosen, plan
      if smallest is None or plan.total < smallest.total:
        smallest = plan
  if not (auto_micro or auto_remat):
    raise errors.UserError(f'The train step {smallest.verdict()}')
  raise errors.UserError(
      f'No plan fits in {_size(budget)} per device: the smallest tried '
      f'(micro_batches={smallest.micro_batches}, remat={smallest.remat!r}) needs '
      f'{_size(smallest.total)} ({_size(smallest.total - budget)} over: parameters '
      f'{_size(smallest.parameters)}, optimizer state {_size(smallest.optimizer_state)}, batch '
      f'{_size(smallest.batch)}, temporaries {_size(smallest.temporaries)}). Shard the state '
      '(--config.sharding=fsdp), lower batch_size, or add devices.')


def _size(num_bytes: int) -> str:
  return (f'{num_bytes / GIB:.2f} GiB' if abs(num_bytes) >= GIB / 10
          else f'{num_bytes / 2**20:.2f} MiB')
