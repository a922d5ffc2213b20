"""What a training run's checkpoints hold, and reading their parameters alone.

`<workdir>/checkpoints/<step>/` (written by `vit_jax.train.checkpointer` with orbax) holds items:
- `params`: `{'params': tree[, 'ema_params': tree]}`, so a model loads without the optimizer;
- `train_state`: `{'step', 'opt_state', 'rng'}`: the rest of the TrainState;
- `data`: the data-iterator position (JSON); `config`: the run's config (JSON).
Workdirs written before parameters had an item of their own hold one `state` item (the whole
TrainState); their parameters are read from it with a partial restore.

Reading needs neither the optimizer, the data nor the training code: shapes and dtypes come from
the saved metadata and every array is restored as numpy on the host.
"""

import logging
from typing import Any, Callable, Optional, TypeVar

from etils import epath
import jax
import numpy as np
import orbax.checkpoint as ocp

from vit_jax import errors
from vit_jax import storage

PARAMS = 'params'
TRAIN_STATE = 'train_state'
DATA = 'data'
CONFIG = 'config'
ITEM_NAMES = (PARAMS, TRAIN_STATE, DATA, CONFIG)
LABELS_FILE = 'labels.txt'  # beside config.json: the class names, one a line, in label order
T = TypeVar('T')


def checkpoints_dir(workdir: str) -> epath.Path:
  """`<workdir>/checkpoints` as an absolute path (orbax needs one; gs://... is left alone)."""
  return storage.path(workdir) / 'checkpoints'


def _as_numpy(metadata: Any) -> Any:
  """Restore arguments that bring every array of a metadata tree back as a host numpy array."""
  return jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata)


def _tree(metadata: Any) -> Any:
  """The plain tree of an item's metadata (orbax wraps it differently across versions)."""
  metadata = getattr(metadata, 'item_metadata', metadata)
  return getattr(metadata, 'tree', metadata)


def _restore_params(step_dir: epath.Path) -> Any:
  reader = ocp.PyTreeCheckpointer()
  if not (step_dir / PARAMS).exists():
    raise errors.UserError(f'holds no {PARAMS!r} item')
  meta = _tree(reader.metadata(step_dir / PARAMS))
  item = reader.restore(step_dir / PARAMS,
                        args=ocp.args.PyTreeRestore(restore_args=_as_numpy(meta)))
  ema = item.get('ema_params')
  return ema if ema else item['params']


def newest_restorable(directory, steps, restore: Callable[[int], T]) -> Optional[tuple[int, T]]:
  """(step, restore(step)) for the newest of `steps` that restores; each failure is logged and
  the step before it tried. None when none restores."""
  for step in sorted(steps, reverse=True):
    try:
      return step, restore(step)
    except Exception as e:  # pylint: disable=broad-except
      logging.warning('Checkpoint %s/%d cannot be restored (%s: %s); trying the previous one.',
                      directory, step, type(e).__name__, str(e).splitlines()[0][:300])
  return None


def read(workdir: str) -> tuple[int, Any]:
  """(step, parameters) of the newest checkpoint under `workdir` that restores.

  EMA parameters when the run kept them. FileNotFoundError when there is none.
  """
  directory = checkpoints_dir(workdir)
  if not directory.exists():
    raise errors.MissingFile(f'{workdir} holds no checkpoints/ folder: the run saved no step yet.')
  manager = ocp.CheckpointManager(directory, item_names=ITEM_NAMES,
                                  options=ocp.CheckpointManagerOptions(read_only=True))
  try:
    found = newest_restorable(directory, manager.all_steps(),
                              lambda step: _restore_params(directory / str(step)))
  finally:
    manager.close()
  if found is None:
    raise errors.MissingFile(f'No restorable checkpoint under {directory}.')
  return found

