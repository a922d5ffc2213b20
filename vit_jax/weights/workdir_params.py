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

import json
import logging
import os
import time
from typing import Any, Callable, Optional, TypeVar

from etils import epath
import jax
import numpy as np
import orbax.checkpoint as ocp
import tensorstore as ts

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
    raise FileNotFoundError(f'{step_dir} holds no {PARAMS!r} item')  # damaged: passed over
  meta = _tree(reader.metadata(step_dir / PARAMS))
  item = reader.restore(step_dir / PARAMS,
                        args=ocp.args.PyTreeRestore(restore_args=_as_numpy(meta)))
  ema = item.get('ema_params')
  return ema if ema else item['params']


class Unrestorable(errors.UserError):
  """Checkpoints exist and none of them restores: the run stops rather than start over."""


class Mismatch(errors.UserError):
  """A checkpoint's parameters do not fit the model that is to restore them."""


# TensorStore's status codes (the first word of its errors) and the exceptions that say a
# checkpoint's own files are missing or damaged: that step is passed over for the one before.
DAMAGE_CODES = ('DATA_LOSS', 'OUT_OF_RANGE', 'NOT_FOUND')
DAMAGE_TYPES = (FileNotFoundError, KeyError, json.JSONDecodeError)
# A store that did not answer this time: the same read is tried again after a pause.
TRANSIENT_CODES = ('UNAVAILABLE', 'DEADLINE_EXCEEDED', 'ABORTED')
TRANSIENT_TYPES = (ConnectionError, TimeoutError)
RETRY_DELAYS_S = (2.0, 8.0, 30.0)  # between the tries of a read that met a transient error


def failure_kind(error: BaseException) -> str:
  """'damaged' (this checkpoint's files), 'transient' (the store, this time) or 'other' (a
  mismatch, out of memory, a bug: nothing an older checkpoint or a retry would fix)."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    code = str(error).split(':', 1)[0].strip()
    if isinstance(error, DAMAGE_TYPES) or code in DAMAGE_CODES:
      return 'damaged'
    if isinstance(error, TRANSIENT_TYPES) or code in TRANSIENT_CODES:
      return 'transient'
    error = error.__cause__ or error.__context__
  return 'other'


def _first_line(error: BaseException) -> str:
  return f'{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ""}'


def newest_restorable(directory, steps, restore: Callable[[int], T], *,
                      delays_s: tuple[float, ...] = RETRY_DELAYS_S
                      ) -> Optional[tuple[int, T]]:
  """(step, restore(step)) for the newest of `steps` that restores; None when there are none.

  A step whose files are damaged is logged and the one before it tried; a transient storage
  error is retried after each of `delays_s`, then raised; anything else (a mismatch, out of
  memory, a bug) is raised at once. When steps exist and none restores: `Unrestorable`, naming
  each step and why, with nothing changed.
  """
  passed_over = []
  for step in sorted(steps, reverse=True):
    for attempt in range(len(delays_s) + 1):
      try:
        return step, restore(step)
      except errors.UserError:
        raise
      except Exception as e:  # pylint: disable=broad-except
        kind = failure_kind(e)
        if kind == 'transient' and attempt < len(delays_s):
          logging.warning('Checkpoint %s/%d: the store did not answer (%s); trying again in '
                          '%.0f s.', directory, step, _first_line(e), delays_s[attempt])
          time.sleep(delays_s[attempt])
          continue
        if kind != 'damaged':
          raise
        logging.warning('Checkpoint %s/%d is damaged (%s); trying the previous one.',
                        directory, step, _first_line(e))
        passed_over.append(f'step {step}: {_first_line(e)}')
        break
  if passed_over:
    raise Unrestorable(
        f'{directory} holds checkpoints and none of them restores ({"; ".join(passed_over)}). '
        'Nothing was changed. To start the run afresh on purpose, run the same command with '
        '--overwrite (it deletes the run in the workdir); to keep the damaged files, copy '
        'them elsewhere first.')
  return None


def check_readable(step_dir: epath.Path) -> None:
  """Opens the array items of a step and lists their keys: a damaged OCDBT manifest raises its
  DATA_LOSS here, a missing one FileNotFoundError, before orbax starts its concurrent reads (the
  reads of a failed restore that finish after orbax closes its event loop print "Event loop is
  closed" tracebacks of TensorStore's)."""
  for item in (PARAMS, TRAIN_STATE):
    url = os.fspath(step_dir / item)
    base = (url if storage.is_remote(url) else f'file://{url}').rstrip('/') + '/'
    kvstore = ts.KvStore.open({'driver': 'ocdbt', 'base': base}).result()
    if not kvstore.list().result():
      raise FileNotFoundError(f'{url}: no OCDBT manifest (no arrays)')


def check_fits(step_dir: epath.Path, params_item: Any) -> None:
  """Refuses (`Mismatch`, naming parameters) a checkpoint whose saved parameters have other
  shapes than `params_item`'s (the model's, as saved: {'params': ..., ...}). Names present on
  one side only are left to the restore: a damaged item lists fewer of them."""
  saved = _tree(ocp.PyTreeCheckpointer().metadata(step_dir / PARAMS))
  flat = lambda tree: {'/'.join(str(getattr(k, 'key', getattr(k, 'idx', k))) for k in path):  # pylint: disable=unnecessary-lambda-assignment
                       tuple(leaf.shape) for path, leaf in
                       jax.tree_util.tree_flatten_with_path(tree)[0] if hasattr(leaf, 'shape')}
  theirs, ours = flat(saved), flat(params_item)
  problems = [f'{name} saved as {theirs[name]}, the model has {ours[name]}'
              for name in sorted(set(theirs) & set(ours)) if theirs[name] != ours[name]]
  if problems:
    more = f' (and {len(problems) - 3} more)' if len(problems) > 3 else ''
    raise Mismatch(
        f'Checkpoint {step_dir} does not fit this run\'s model: {"; ".join(problems[:3])}{more}. '
        'The config or the code changed since it was saved: run the config it was saved with, '
        'use another --workdir, or --overwrite to start afresh (it deletes the run).')


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
    raise errors.MissingFile(f'{workdir} holds no checkpoint yet: the run saved no step.')
  return found

