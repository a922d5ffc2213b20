"""What the user sees of a run: progress, TensorBoard events, metrics.jsonl, a curves PNG."""

import json
import math
import os
import sys
import time
from typing import Mapping, Optional



class MetricWriter:
  """Scalars to `<workdir>/metrics.jsonl` and TensorBoard event files (process 0 only)."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self.jsonl_path = os.path.join(workdir, 'metrics.jsonl')
    self._summary = None
    if enabled:
      os.makedirs(workdir, exist_ok=True)
      import tensorflow as tf  # pylint: disable=g-import-not-at-top  (host-side only)
      self._tf = tf
      self._summary = tf.summary.create_file_writer(os.path.join(workdir, 'tensorboard'))

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
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


def read_jsonl(path: str) -> list[dict]:
  if not os.path.exists(path):
    return []
  with open(path, encoding='utf-8') as f:
    return [json.loads(line) for line in f if line.strip()]


def plot_curves(jsonl_path: str, png_path: str) -> Optional[str]:
  """Training loss/accuracy and eval accuracy against step, as a PNG."""
  rows = read_jsonl(jsonl_path)
  if not rows:
    return None
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  def series(key):
    points = [(r['step'], r[key]) for r in rows if key in r and math.isfinite(r[key])]
    return ([p[0] for p in points], [p[1] for p in points]) if points else None

  fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
  for key, label in (('train/loss', 'train loss'), ('eval/loss', 'eval loss')):
    if series(key):
      left.plot(*series(key), label=label, marker='.' if key.startswith('eval') else None)
  left.set_xlabel('step')
  left.set_ylabel('loss')
  left.set_yscale('log')
  left.legend()
  for key, label in (('train/accuracy', 'train accuracy'), ('eval/accuracy', 'eval accuracy')):
    if series(key):
      right.plot(*series(key), label=label, marker='o' if key.startswith('eval') else None)
  right.set_xlabel('step')
  right.set_ylabel('accuracy')
  right.set_ylim(0, 1)
  right.grid(alpha=0.3)
  right.legend()
  final = series('eval/accuracy')
  if final:
    fig.suptitle(f'final eval accuracy {final[1][-1]:.4f}')
  fig.tight_layout()
  fig.savefig(png_path, dpi=100)
  plt.close(fig)
  return png_path


class Progress:
  """A progress bar on a terminal; plain log lines every `every` steps otherwise."""

  def __init__(self, total_steps: int, start_step: int, global_batch: int, every: int,
               enabled: bool = True):
    self.total, self.batch, self.every = total_steps, global_batch, every
    self.enabled = enabled
    self._start_time, self._start_step = time.time(), start_step
    self._bar = None
    if enabled and sys.stdout.isatty():
      import tqdm  # pylint: disable=g-import-not-at-top
      self._bar = tqdm.tqdm(total=total_steps, initial=start_step, unit='step', dynamic_ncols=True)

  def update(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    elapsed = max(time.time() - self._start_time, 1e-9)
    done = step - self._start_step
    images_per_s = done * self.batch / elapsed
    eta = (self.total - step) * elapsed / max(done, 1)
    fields = {'loss': scalars.get('train/loss', float('nan')),
              'acc': scalars.get('train/accuracy', float('nan'))}
    if self._bar is not None:
      self._bar.n = step
      self._bar.set_postfix(loss=f'{fields["loss"]:.4f}', acc=f'{fields["acc"]:.3f}',
                            img_s=f'{images_per_s:.0f}')
      self._bar.refresh()
    else:
      print(f'step {step}/{self.total}  loss {fields["loss"]:.4f}  acc {fields["acc"]:.3f}  '
            f'{images_per_s:.0f} img/s  ETA {eta:.0f}s', flush=True)

  def note(self, text: str) -> None:
    if not self.enabled:
      return
    if self._bar is not None:
      self._bar.write(text)
    else:
      print(text, flush=True)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
