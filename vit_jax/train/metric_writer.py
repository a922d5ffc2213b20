"""Metric writing: scalars to `<workdir>/metrics.jsonl` and TensorBoard events (process 0 only).

Both go through `vit_jax.storage`, so a workdir on an object store gets them too. The event file
is written here, not by `tf.summary`: TensorBoard's record framing and protos (from the
`tensorboard` package) around each scalar, the same records `tf.summary.scalar` writes, without
TensorFlow's file systems.
"""

import json
import os
import socket
import struct
import time
from typing import Iterable, Iterator, Mapping

from tensorboard.compat.proto import event_pb2
from tensorboard.compat.proto import summary_pb2
from tensorboard.compat.proto import tensor_pb2
from tensorboard.compat.proto import types_pb2
from tensorboard.summary.writer import record_writer

from vit_jax import storage

EVENTS_DIR = 'tensorboard'
EVENTS_PREFIX = 'events.out.tfevents.'


class _Bytes:
  """A file-like sink for TensorBoard's RecordWriter: collects one write's records."""

  def __init__(self):
    self.data = b''

  def write(self, data: bytes) -> None:
    self.data += data

  def flush(self) -> None:
    pass


def frame(records: Iterable[bytes]) -> bytes:
  """Records framed as in a TFRecord file (length, its masked CRC-32C, data, its masked
  CRC-32C), by TensorBoard's own writer."""
  sink = _Bytes()
  writer = record_writer.RecordWriter(sink)
  for record in records:
    writer.write(record)
  return sink.data


def read_records(data: bytes) -> Iterator[bytes]:
  """The records of an event file, up to one cut short by a kill (which is left out)."""
  offset = 0
  while offset + 12 <= len(data):
    (length,) = struct.unpack('<Q', data[offset:offset + 8])
    end = offset + 12 + length + 4
    if end > len(data):
      return
    yield data[offset + 12:offset + 12 + length]
    offset = end


def scalar_event(step: int, name: str, value: float) -> event_pb2.Event:
  """What `tf.summary.scalar` writes: a float tensor tagged for TensorBoard's scalars plugin."""
  tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[value])
  metadata = summary_pb2.SummaryMetadata(
      plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name='scalars'))
  return event_pb2.Event(
      wall_time=time.time(), step=step,
      summary=summary_pb2.Summary(value=[summary_pb2.Summary.Value(
          tag=name, tensor=tensor, metadata=metadata)]))


class MetricWriter:
  """Scalars to `<workdir>/metrics.jsonl` and a TensorBoard event file (process 0 only). The
  event file is named at the first write: a run that writes nothing leaves no file."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self.workdir = workdir
    self.jsonl_path = os.fspath(storage.path(workdir) / 'metrics.jsonl')
    self._rows = storage.AppendedFile(self.jsonl_path)
    self._events = None  # named at the first write

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    scalars = {k: float(v) for k, v in scalars.items()}
    self._rows.append(json.dumps({'step': int(step), **scalars}) + '\n')
    events = [scalar_event(int(step), name, value) for name, value in scalars.items()]
    if self._events is None:
      name = f'{EVENTS_PREFIX}{int(time.time())}.{socket.gethostname()}.{os.getpid()}.v2'
      self._events = storage.AppendedFile(storage.path(self.workdir) / EVENTS_DIR / name)
      events.insert(0, event_pb2.Event(wall_time=time.time(), file_version='brain.Event:2'))
    self._events.append(frame(e.SerializeToString() for e in events))
