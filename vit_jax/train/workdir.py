"""The run directory on the training side: one run per workdir, its config, metrics on resume.

`<workdir>/config.json` (and `labels.txt`, the class names) is written before the first step; a workdir that holds a run of another
config is refused (or wiped with `overwrite`). On resume from step S, the metric rows and
TensorBoard events a killed run wrote past S are dropped, so every step appears once.
"""

import glob
import json
import os
import shutil

from absl import logging
import flax

from vit_jax import errors
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
  A run that saved no step (it stopped at startup, e.g. on a memory plan that did not fit) holds
  nothing to lose: its config is replaced."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, 'config.json')
  if os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      saved = json.load(f)
    changed = changed_fields(saved, config_dict_)
    saved_steps = os.path.join(workdir, 'checkpoints')
    if changed and not (os.path.isdir(saved_steps) and os.listdir(saved_steps)):
      logging.warning('%s: replacing the config of a run that saved no step (fields: %s).',
                      workdir, changed)
    elif changed:
      if not overwrite:
        raise errors.UserError(
            f'{workdir} holds a run with a different config (fields: {changed}). '
            'Use another --workdir, or --overwrite to start it afresh.')
      logging.warning('Overwriting the run in %s (its config differs).', workdir)
      for name in RUN_FILES:
        target = os.path.join(workdir, name)
        if os.path.isdir(target):
          shutil.rmtree(target)
        elif os.path.exists(target):
          os.remove(target)
  tmp = path + '.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    json.dump(config_dict_, f, indent=2)
  os.replace(tmp, path)


def write_labels(workdir: str, class_names) -> None:
  """`labels.txt`: the class names in label order, one a line (read by infer and the exports)."""
  if not class_names:
    return
  path = os.path.join(workdir, workdir_params.LABELS_FILE)
  with open(path + '.tmp', 'w', encoding='utf-8') as f:
    f.writelines(f'{name}\n' for name in class_names)
  os.replace(path + '.tmp', path)


def _trim_jsonl(path: str, step: int) -> int:
  if not os.path.exists(path):
    return 0
  with open(path, encoding='utf-8') as f:
    lines = [line for line in f if line.strip()]
  kept = []
  for line in lines:
    try:
      if json.loads(line)['step'] <= step:
        kept.append(line)
    except (json.JSONDecodeError, KeyError):  # a row cut short by the kill
      continue
  if len(kept) < len(lines):  # else the file stays as it is
    tmp = path + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
      f.writelines(kept)
    os.replace(tmp, path)
  return len(lines) - len(kept)


def _trim_events(folder: str, step: int) -> int:
  """Rewrites the TensorBoard event files without the events past `step`."""
  files = sorted(glob.glob(os.path.join(folder, 'events.out.tfevents.*')))
  if not files:
    return 0
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (host-side only)
  dropped = 0
  for path in files:
    records, changed = [], False
    try:
      for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
        event = tf.compat.v1.Event.FromString(record)
        if event.step > step:
          changed = True
          dropped += 1
        else:
          records.append(record)
    except tf.errors.DataLossError:  # a record cut short by the kill
      changed = True
    if changed:
      with tf.io.TFRecordWriter(path + '.tmp') as writer:
        for record in records:
          writer.write(record)
      os.replace(path + '.tmp', path)
  return dropped


def metrics_at(workdir: str, step: int) -> dict:
  """Every metric logged at `step` in `metrics.jsonl` ({name: value}; empty without rows)."""
  path, found = os.path.join(workdir, 'metrics.jsonl'), {}
  if os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      for line in f:
        row = json.loads(line) if line.strip() else {}
        if row.get('step') == step:
          found.update({k: v for k, v in row.items() if k != 'step'})
  return found


def drop_metrics_after(workdir: str, step: int) -> None:
  """Removes metric rows and TensorBoard events past `step` (written before a kill)."""
  rows = _trim_jsonl(os.path.join(workdir, 'metrics.jsonl'), step)
  events = _trim_events(os.path.join(workdir, 'tensorboard'), step)
  if rows or events:
    logging.info('Resuming at step %d: dropped %d metric rows and %d events past it.', step,
                 rows, events)
