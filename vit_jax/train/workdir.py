"""The run directory on the training side: one run per workdir, its config, metrics on resume.

`<workdir>/config.json` (and `labels.txt`, the class names) is written before the first step; a workdir that holds a run of another
config is refused (or wiped with `overwrite`). On resume from step S, the metric rows and
TensorBoard events a killed run wrote past S are dropped, so every step appears once.
"""

import json

from absl import logging
import flax
from tensorboard.compat.proto import event_pb2

from vit_jax import errors
from vit_jax import storage
from vit_jax.train import metric_writer
from vit_jax.configs import common
from vit_jax.weights import workdir_params

RUN_FILES = ('checkpoints', 'tensorboard', 'metrics.jsonl', 'config.json', 'curves.png',
             workdir_params.LABELS_FILE)


def config_dict(config) -> dict:
  """The config as plain JSON data (what `config.json` holds)."""
  return json.loads(config.to_json_best_effort())


def changed_fields(saved: dict, new: dict) -> list[str]:
  """Dotted names of the fields that differ. A field the saved config lacks and the new one
  leaves unset (None or empty) or at its default (configs/common.py) is a field added to the
  code since the run began: not a change."""
  missing = object()
  flatten = lambda tree: flax.traverse_util.flatten_dict(tree, sep='.', keep_empty_nodes=True)  # pylint: disable=unnecessary-lambda-assignment
  flat_saved, flat_new = flatten(saved), flatten(new)
  defaults = flatten(config_dict(common.get_config()))
  changed = []
  for key in set(flat_saved) | set(flat_new):
    old_value, new_value = flat_saved.get(key, missing), flat_new.get(key, missing)
    added_unset = old_value is missing and (
        new_value is None or new_value is flax.traverse_util.empty_node
        or new_value == defaults.get(key, missing))
    if old_value != new_value and not added_unset:
      changed.append(key)
  return sorted(changed)


def claim(workdir: str, config_dict_: dict, overwrite: bool) -> None:
  """Creates `workdir`, refuses one that holds another config's run, writes `config.json`.
  `overwrite` deletes the run found there (any config) to start afresh. A run that saved no
  step (it stopped at startup, e.g. on a memory plan that did not fit) holds nothing to lose: its
  config is replaced. The same config is left as it is, byte for byte."""
  root = storage.path(workdir)
  root.mkdir(parents=True, exist_ok=True)
  path = root / 'config.json'
  if path.exists():
    text = path.read_text(encoding='utf-8')
    saved = common.upgrade_saved(json.loads(text))
    changed = changed_fields(saved, config_dict_)
    saved_steps = root / 'checkpoints'
    holds_steps = saved_steps.is_dir() and any(saved_steps.iterdir())
    if overwrite and holds_steps:
      logging.warning('Overwriting the run in %s (--overwrite).', workdir)
      for name in RUN_FILES:
        storage.remove(root / name)
    elif changed and not holds_steps:
      logging.warning('%s: replacing the config of a run that saved no step (fields: %s).',
                      workdir, changed)
    elif changed:
      raise errors.UserError(
          f'{workdir} holds a run with a different config (fields: {changed}). '
          'Use another --workdir, or --overwrite to start it afresh.')
    elif text == json.dumps(config_dict_, indent=2):
      return  # the same run: nothing to write
  storage.write(path, json.dumps(config_dict_, indent=2))


def write_labels(workdir: str, class_names) -> None:
  """`labels.txt`: the class names in label order, one a line (read by infer and the exports)."""
  if class_names:
    storage.write(storage.path(workdir) / workdir_params.LABELS_FILE,
                  ''.join(f'{name}\n' for name in class_names))


def _rows(path) -> list[str]:
  return [line + '\n' for line in path.read_text(encoding='utf-8').splitlines() if line.strip()]


def _trim_jsonl(path, step: int) -> int:
  if not path.exists():
    return 0
  lines = _rows(path)
  kept = []
  for line in lines:
    try:
      if json.loads(line)['step'] <= step:
        kept.append(line)
    except (json.JSONDecodeError, KeyError):  # a row cut short by the kill
      continue
  if len(kept) < len(lines):  # else the file stays as it is
    storage.write(path, ''.join(kept))
  return len(lines) - len(kept)


def _trim_events(folder, step: int) -> int:
  """Rewrites the TensorBoard event files without the events past `step` (or cut short)."""
  if not folder.is_dir():
    return 0
  dropped = 0
  for path in sorted(folder.glob(f'{metric_writer.EVENTS_PREFIX}*')):
    data = path.read_bytes()
    records = list(metric_writer.read_records(data))
    kept = [r for r in records if event_pb2.Event.FromString(r).step <= step]
    dropped += len(records) - len(kept)
    encoded = metric_writer.frame(kept)
    if encoded != data:
      storage.write(path, encoded)
  return dropped


def metrics_at(workdir: str, step: int) -> dict:
  """Every metric logged at `step` in `metrics.jsonl` ({name: value}; empty without rows)."""
  path, found = storage.path(workdir) / 'metrics.jsonl', {}
  if path.exists():
    for line in _rows(path):
      row = json.loads(line)
      if row.get('step') == step:
        found.update({k: v for k, v in row.items() if k != 'step'})
  return found


def drop_metrics_after(workdir: str, step: int) -> None:
  """Removes metric rows and TensorBoard events past `step` (written before a kill)."""
  root = storage.path(workdir)
  rows = _trim_jsonl(root / 'metrics.jsonl', step)
  events = _trim_events(root / metric_writer.EVENTS_DIR, step)
  if rows or events:
    logging.info('Resuming at step %d: dropped %d metric rows and %d events past it.', step,
                 rows, events)
