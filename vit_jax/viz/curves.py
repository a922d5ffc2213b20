"""Training curves: `metrics.jsonl` read back and drawn as a PNG (loss and accuracy vs step)."""

import io
import json
import math
from typing import Optional

from vit_jax import storage


def read_jsonl(path: str) -> list[dict]:
  path = storage.path(path)
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text(encoding='utf-8').splitlines()
          if line.strip()]


def plot_curves(jsonl_path: str, png_path: str) -> Optional[str]:
  """Training loss/accuracy and eval accuracy against step, as a PNG."""
  rows = read_jsonl(jsonl_path)
  if not rows:
    return None
  # matplotlib is slow to import and needs its headless backend set first.
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
  # Accuracies: training and eval top-1, and the few-shot probes' seed means (an MAE run's).
  fewshot = sorted({k for r in rows for k in r if k.startswith('fewshot/') and k.endswith('shot')})
  for key, label in (('train/accuracy', 'train accuracy'), ('eval/accuracy', 'eval accuracy'),
                     *((k, k[len('fewshot/'):]) for k in fewshot)):
    if series(key):
      right.plot(*series(key), label=label, marker=None if key.startswith('train') else 'o')
  right.set_xlabel('step')
  right.set_ylabel('accuracy')
  right.set_ylim(0, 1)
  right.grid(alpha=0.3)
  if right.lines:
    right.legend()
  final = series('eval/accuracy')
  if final:
    fig.suptitle(f'final eval accuracy {final[1][-1]:.4f}')
  fig.tight_layout()
  png = io.BytesIO()
  fig.savefig(png, format='png', dpi=100)
  plt.close(fig)
  storage.write(png_path, png.getvalue())
  return png_path
