"""Metric writing: scalars to `<workdir>/metrics.jsonl` and TensorBoard events (process 0 only)."""

import json
import os
from typing import Mapping


class MetricWriter:
  """Scalars to `<workdir>/metrics.jsonl` and TensorBoard event files (process 0 only). The
  event file is opened at the first write: a run that writes nothing leaves no file."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self.workdir = workdir
    self.jsonl_path = os.path.join(workdir, 'metrics.jsonl')
    self._summary = None
    if enabled:
      os.makedirs(workdir, exist_ok=True)

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    if self._summary is None:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top  (host-side only)
      self._tf = tf
      self._summary = tf.summary.create_file_writer(os.path.join(self.workdir, 'tensorboard'))
    scalars = {k: float(v) for k, v in scalars.items()}
    with open(self.jsonl_path, 'a', encoding='utf-8') as f:
      f.write(json.dumps({'step': int(step), **scalars}) + '\n')
    with self._summary.as_default(step=int(step)):
      for name, value in scalars.items():
        self._tf.summary.scalar(name, value)
    self._summary.flush()

  def close(self) -> None:
    if self._summary is not None:
      self._summary.close()
