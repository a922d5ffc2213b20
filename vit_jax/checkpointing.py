"""Training checkpoints with orbax: async, atomic, keep-N, restore onto any mesh, fall back.

Each checkpoint `<workdir>/checkpoints/<step>/` holds three items:
- `state`: the TrainState (params, optimizer state, step, rng, EMA), restored onto whatever
  shardings the caller asks for (another mesh or device count reshards on restore);
- `data`: the data-iterator position (JSON), so the input continues exactly;
- `config`: the run's config (JSON).
orbax writes a step to a temporary directory and renames it when complete, so a crash mid-save
leaves the previous checkpoints as they were; old steps are removed only after a new one is
finalized. A newest checkpoint that still fails to restore is reported and the one before it used.
"""

import logging
import os
import signal
import threading
from typing import Any, Optional

from etils import epath
import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Saves and restores (state, data position, config) under `<workdir>/checkpoints`."""

  def __init__(self, workdir: str, *, max_to_keep: int = 3, keep_period: Optional[int] = None,
               async_save: bool = True):
    if '://' not in workdir:  # orbax needs absolute local paths (gs://... is left alone)
      workdir = os.path.abspath(workdir)
    self.directory = epath.Path(workdir) / 'checkpoints'
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, keep_period=keep_period, create=True,
        enable_async_checkpointing=async_save, cleanup_tmp_directories=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=('state', 'data', 'config'))

  def save(self, step: int, state: Any, data_state: dict, config: dict, *,
           wait: bool = False) -> None:
    """Starts saving (asynchronously unless `wait`); the arrays are copied before returning."""
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state),
        config=ocp.args.JsonSave(config)), force=True)
    if wait:
      self._manager.wait_until_finished()

  def steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def restore(self, abstract_state: Any) -> Optional[tuple[int, Any, dict, dict]]:
    """(step, state, data_state, config) of the newest checkpoint that restores, else None.

    `abstract_state` is a tree of `jax.ShapeDtypeStruct`s with the target shardings.
    """
    for step in reversed(self.steps()):
      try:
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore(),
            config=ocp.args.JsonRestore()))
        return step, restored.state, dict(restored.data), dict(restored.config)
      except Exception as e:  # pylint: disable=broad-except
        logging.warning('Checkpoint %s/%d cannot be restored (%s: %s); trying the previous one.',
                        self.directory, step, type(e).__name__, str(e).splitlines()[0][:300])
    return None

  def reached_preemption(self, step: int) -> bool:
    """True when the cluster signalled a preemption (multi-host agreement through JAX)."""
    return self._manager.reached_preemption(step)

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


class StopSignal:
  """Turns SIGTERM/SIGINT into a flag the loop polls, so it can save before exiting."""

  def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
    self._event = threading.Event()
    self.signal_name = None
    self._previous = {}
    if threading.current_thread() is threading.main_thread():
      for sig in signals:
        self._previous[sig] = signal.signal(sig, self._handle)

  def _handle(self, signum, frame):
    del frame
    self.signal_name = signal.Signals(signum).name
    logging.warning('%s received: saving a checkpoint at the end of this step.', self.signal_name)
    self._event.set()

  @property
  def requested(self) -> bool:
    return self._event.is_set()

  def restore_handlers(self) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def latest_params_from_workdir(workdir: str, abstract_state: Any) -> tuple[Any, dict]:
  """(params or EMA params as numpy, config) from a workdir's newest valid checkpoint."""
  checkpointer = Checkpointer(workdir, async_save=False)
  try:
    restored = checkpointer.restore(abstract_state)
  finally:
    checkpointer.close()
  if restored is None:
    raise FileNotFoundError(f'No restorable checkpoint under {os.path.join(workdir, "checkpoints")}.')
  _, state, _, config = restored
  params = state.ema_params if getattr(state, 'ema_params', None) is not None else state.params
  return jax.device_get(params), config
