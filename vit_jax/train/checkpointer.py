"""Training checkpoints with orbax: async, atomic, keep-N, restore onto any mesh, fall back.

Each `<workdir>/checkpoints/<step>/` holds the items `vit_jax.weights.workdir_params` describes: the
parameters (and EMA) on their own, the rest of the TrainState, the data position and the config.
The state is restored onto whatever shardings the caller asks for (another mesh or device count
reshards on restore). orbax writes a step to a temporary directory and renames it when complete
(on `gs://`, where nothing is renamed, it writes a commit marker last), so a crash mid-save leaves
the previous checkpoints as they were; old steps are removed only after a new one is finalized.
A damaged newest checkpoint is reported and the one before it used (the damaged step is written
anew when the run reaches it again); a run whose checkpoints all
fail to restore stops with one line and never starts over (`workdir_params.newest_restorable`).
A save that finds no space left is one line (`errors.OutOfSpace`) naming the step a restart
resumes from.
"""

import contextlib
import os
import shutil
from typing import NamedTuple, Optional

from absl import logging
import jax
import orbax.checkpoint as ocp

from vit_jax import errors
from vit_jax import storage
from vit_jax.weights import workdir_params
from vit_jax.train.state import TrainState


def _size(count: int) -> str:
  for unit in ('bytes', 'KB', 'MB', 'GB'):
    if count < 1024 or unit == 'GB':
      return f'{count:.0f} {unit}' if unit == 'bytes' else f'{count:.1f} {unit}'
    count /= 1024


class Restored(NamedTuple):
  step: int
  state: TrainState
  data_state: dict
  config: dict


def _params_item(state: TrainState) -> dict:
  item = {'params': state.params}
  if state.ema_params is not None:
    item['ema_params'] = state.ema_params
  return item


def _rest_item(state: TrainState) -> dict:
  return {'step': state.step, 'opt_state': state.opt_state, 'rng': state.rng}


class Checkpointer:
  """Saves and restores (state, data position, config) under `<workdir>/checkpoints`."""

  def __init__(self, workdir: str, *, max_to_keep: int = 3, keep_period: Optional[int] = None,
               async_save: bool = True):
    self.directory = workdir_params.checkpoints_dir(workdir)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, keep_period=keep_period, create=True,
        enable_async_checkpointing=async_save, cleanup_tmp_directories=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=workdir_params.ITEM_NAMES)
    self._saving = None  # (step, bytes) of the save in flight: its errors surface later
    self._failed = False
    # Steps the restore passed over as damaged: each is replaced when the run saves it again.
    self.damaged: set[int] = set()

  def save(self, step: int, state: TrainState, data_state: dict, config: dict, *,
           wait: bool = False) -> None:
    """Starts saving (asynchronously unless `wait`); the arrays are copied before returning.
    A save that finds no space left stops the run with one line (`errors.OutOfSpace`). A step
    the restore found damaged is deleted first, then written anew."""
    if step in self.damaged:
      logging.warning('Replacing the damaged checkpoint of step %d in %s.', step, self.directory)
      self._manager.delete(step)
      self.damaged.discard(step)
    with self._space_checked():
      self._manager.save(step, args=ocp.args.Composite(**{
          workdir_params.PARAMS: ocp.args.StandardSave(_params_item(state)),
          workdir_params.TRAIN_STATE: ocp.args.StandardSave(_rest_item(state)),
          workdir_params.DATA: ocp.args.JsonSave(data_state),
          workdir_params.CONFIG: ocp.args.JsonSave(config)}), force=True)
      self._saving = (step, sum(leaf.nbytes for leaf in jax.tree.leaves(state)))
      if wait:
        self._manager.wait_until_finished()

  @contextlib.contextmanager
  def _space_checked(self):
    """Turns a write that found no space (now, or in the save in flight) into one line."""
    try:
      yield
    except Exception as error:  # pylint: disable=broad-except
      if not errors.out_of_space(error):
        raise
      self._failed = True
      found = self._out_of_space_error()
      try:  # its other writers end (and log) before the one line is printed
        self._manager.close()
      except Exception:  # pylint: disable=broad-except
        pass
      raise found from error

  def _out_of_space_error(self) -> errors.OutOfSpace:
    step, needed = self._saving or (None, 0)
    free = ''
    if not storage.is_remote(self.directory):
      free = f', {_size(shutil.disk_usage(os.fspath(self.directory)).free)} free there'
    kept = [s for s in self._manager.all_steps() if s != step]
    resume = (f'a restart resumes from step {max(kept)}' if kept else
              'no earlier checkpoint: a restart begins anew')
    return errors.OutOfSpace(
        f'The checkpoint of step {step} could not be written to {self.directory}: no space left '
        f'on the device (its arrays alone take {_size(needed)}{free}). Free space or '
        f'use another --workdir; {resume}, and the incomplete step is never restored.')

  def steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def _restore_step(self, step: int, abstract_state: TrainState) -> Restored:
    workdir_params.check_readable(self.directory / str(step))
    workdir_params.check_fits(self.directory / str(step), _params_item(abstract_state))
    restored = self._manager.restore(step, args=ocp.args.Composite(**{
        workdir_params.PARAMS: ocp.args.StandardRestore(_params_item(abstract_state)),
        workdir_params.TRAIN_STATE: ocp.args.StandardRestore(_rest_item(abstract_state)),
        workdir_params.DATA: ocp.args.JsonRestore(),
        workdir_params.CONFIG: ocp.args.JsonRestore()}))
    params, rest = restored[workdir_params.PARAMS], restored[workdir_params.TRAIN_STATE]
    state = TrainState(step=rest['step'], params=params['params'], opt_state=rest['opt_state'],
                       rng=rest['rng'], ema_params=params.get('ema_params'))
    return Restored(step, state, dict(restored[workdir_params.DATA]),
                    dict(restored[workdir_params.CONFIG]))

  def restore(self, abstract_state: TrainState, *,
              delays_s: tuple[float, ...] = workdir_params.RETRY_DELAYS_S) -> Optional[Restored]:
    """The newest checkpoint that restores; None when there is none. A damaged one is passed
    over for the one before; when checkpoints exist and none restores, or one does not fit the
    model, the run stops with one line (`workdir_params.newest_restorable`), nothing changed.

    `abstract_state` is a tree of `jax.ShapeDtypeStruct`s with the target shardings.
    """
    steps = self.steps()
    found = workdir_params.newest_restorable(
        self.directory, steps, lambda step: self._restore_step(step, abstract_state),
        delays_s=delays_s)
    if found is None:
      return None
    self.damaged = {step for step in steps if step > found[0]}  # the others raise
    return found[1]

  def reached_preemption(self, step: int) -> bool:
    """True when JAX's preemption sync point is reached (a cluster notice seen by all hosts)."""
    return self._manager.reached_preemption(step)

  def close(self) -> None:
    if self._failed:  # the error has been raised; the manager's threads hold it still
      try:
        self._manager.close()
      except Exception:  # pylint: disable=broad-except
        pass
      return
    with self._space_checked():
      self._manager.wait_until_finished()
    self._manager.close()
