"""What the user sees while a run goes: a progress bar on a terminal, log lines elsewhere."""

import sys
import time
from typing import Mapping


class Progress:
  """A progress bar on a terminal; plain log lines every `every` steps otherwise."""

  def __init__(self, total_steps: int, start_step: int, global_batch: int, every: int,
               enabled: bool = True):
    self.total, self.batch, self.every = total_steps, global_batch, every
    self.enabled = enabled
    self._start_time, self._start_step = time.time(), start_step
    self._bar = None
    if enabled and sys.stdout.isatty():
      import tqdm  # pylint: disable=g-import-not-at-top  (only on a terminal)
      self._bar = tqdm.tqdm(total=total_steps, initial=start_step, unit='step', dynamic_ncols=True)

  def update(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    elapsed = max(time.time() - self._start_time, 1e-9)
    done = step - self._start_step
    images_per_s = done * self.batch / elapsed
    eta = (self.total - step) * elapsed / max(done, 1)
    fields = {'loss': scalars.get('train/loss', float('nan'))}
    if 'train/accuracy' in scalars:  # objectives without labels have none
      fields['acc'] = scalars['train/accuracy']
    if self._bar is not None:
      self._bar.n = step
      self._bar.set_postfix(**{k: f'{v:.4f}' if k == 'loss' else f'{v:.3f}'
                               for k, v in fields.items()}, img_s=f'{images_per_s:.0f}')
      self._bar.refresh()
    else:
      acc = f'  acc {fields["acc"]:.3f}' if 'acc' in fields else ''
      print(f'step {step}/{self.total}  loss {fields["loss"]:.4f}{acc}  '
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
