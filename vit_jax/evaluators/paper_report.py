"""A paper-style report of one checkpoint's evaluations: `report.md` and `report.json`.

Rows: ImageNet top-1 (`val`), ImageNet-ReaL (`real`), ImageNet-v2 (`v2`), few-shot accuracies per
dataset and shot count (`fewshot*` evaluators), dense evaluators' mIoU, pixel accuracy and
delta1 (in %) and RMSE and AbsRel (as measured, not %), and the VTAB-1k groups when
experiments/vtab.py has written `vtab.json` into the same directory. Beside each, the paper's
number for the model the config names (`config.paper_model`), where the paper gives one and
our number was measured as the paper measured it (resolution, preprocessing, averaged weights);
otherwise "not comparable: <why>".
Evaluations whose dataset is not prepared are listed with the command that prepares it.
"""

import json
import os
from typing import Mapping, Optional

from vit_jax import errors
from vit_jax import storage

# Table 2 of the paper (fine-tuned models; top-1 %, VTAB: mean over the 19 tasks).
PAPER = {
    'ViT-H/14 (JFT)': {'val/accuracy': 88.55, 'real/accuracy': 90.72, 'vtab/mean': 77.63},
    'ViT-L/16 (JFT)': {'val/accuracy': 87.76, 'real/accuracy': 90.54, 'vtab/mean': 76.28},
    'ViT-L/16 (I21k)': {'val/accuracy': 85.30, 'real/accuracy': 88.62, 'vtab/mean': 72.72},
}
# How Table 2's ImageNet numbers were measured (Appendix B.1.1): at the fine-tuning resolution
# (512 px for ViT-L/16, 518 for ViT-H/14), the whole image resized to it (the official eval
# input), on Polyak-averaged weights (0.9999).
PAPER_RESOLUTION = {'ViT-H/14 (JFT)': 518, 'ViT-L/16 (JFT)': 512, 'ViT-L/16 (I21k)': 512}
MEASURED_AT_RESOLUTION = ('val/accuracy', 'real/accuracy', 'v2/accuracy')
ROWS = (('val/accuracy', 'ImageNet top-1'), ('real/accuracy', 'ImageNet-ReaL top-1'),
        ('v2/accuracy', 'ImageNet-v2 top-1'))
# Dense evaluators' metrics: (suffix, description, scale to the table's value).
DENSE = (('miou', 'segmentation mIoU', 100), ('pixel_accuracy', 'segmentation pixel accuracy',
                                               100),
         ('rmse', 'depth RMSE (m, not %)', 1), ('absrel', 'depth AbsRel (not %)', 1),
         ('delta1', 'depth delta<1.25', 100))


def rows(results: Mapping[str, float], vtab: Optional[dict]) -> list[tuple[str, str, float]]:
  """(key, description, value in %) for everything measured, in the report's order."""
  out = [(key, text, 100 * results[key]) for key, text in ROWS if key in results]
  for key in sorted(k for k in results if k.startswith('fewshot') and k.endswith('shot')):
    dataset, shots = key.split('/', 1)[1].rsplit('_', 1)
    out.append((key, f'{dataset} {shots[:-4]}-shot linear probe', 100 * results[key]))
  for key in sorted(results):
    name, _, metric = key.partition('/')
    for suffix, text, scale in DENSE:
      if metric == suffix:
        out.append((key, f'{name}: {text}', scale * results[key]))
  for group in ('natural', 'specialized', 'structured'):
    if vtab and vtab['groups'].get(group) is not None:
      out.append((f'vtab/{group}', f'VTAB-1k {group}', 100 * vtab['groups'][group]))
  if vtab and vtab.get('mean') is not None:
    note = '' if vtab.get('complete') else ' (not all 19 tasks)'
    out.append(('vtab/mean', f'VTAB-1k mean{note}', 100 * vtab['mean']))
  return out


def comparable(key: str, paper_model: str, protocol: Mapping) -> Optional[str]:
  """None when the row `key` was measured as the paper measured it, else why not."""
  if key not in MEASURED_AT_RESOLUTION:
    return None
  size, expected = protocol.get('image_size'), PAPER_RESOLUTION[paper_model]
  if size != expected:
    return f'measured at {size} px, the paper at {expected} px'
  pp = (protocol.get('pp') or {}).get(key.split('/')[0]) or ''
  if not pp.startswith(f'decode|resize({expected})|'):
    return f'preprocessing {pp!r}, the paper resizes the whole image to {expected} px'
  if protocol.get('averaged') is False:
    return 'weights not averaged (the paper: Polyak averaging, 0.9999)'
  return None


def _averaged(value: Optional[bool]) -> str:
  return {True: 'yes', False: 'no', None: 'as released'}[value]


def write(workdir: str, checkpoint: str, results: Mapping[str, float],
          missing: Mapping[str, str], paper_model: Optional[str] = None,
          protocol: Optional[Mapping] = None) -> str:
  """Writes `<workdir>/report.md` and `report.json`; returns the Markdown path."""
  root = storage.path(workdir)
  vtab_path = root / 'vtab.json'
  vtab = json.loads(vtab_path.read_text(encoding='utf-8')) if vtab_path.exists() else None
  if paper_model and paper_model not in PAPER:
    raise errors.UserError(f'config.paper_model: expected one of {sorted(PAPER)}, found '
                           f'{paper_model!r}.')
  paper = PAPER.get(paper_model or '', {})
  table = rows(results, vtab)
  protocol = protocol or {}
  size, pps = protocol.get('image_size'), protocol.get('pp') or {}
  lines = [f'# Evaluation of {checkpoint}', '',
           f'Measured at {size} px; averaged (EMA/Polyak) weights: '
           f'{_averaged(protocol.get("averaged"))}.', '',
           '| evaluation | ours (%) | preprocessing | paper (%)'
           f'{f", {paper_model}" if paper_model else ""} |', '|---|---|---|---|']
  verdicts = {}
  for key, text, value in table:
    theirs = '-'
    if key in paper:
      verdicts[key] = comparable(key, paper_model, protocol)
      theirs = (f'{paper[key]:.2f}' if verdicts[key] is None
                else f'not comparable: {verdicts[key]}')
    pp = pps.get(key.split('/')[0], '')
    lines.append(f'| {text} | {value:.2f} | `{pp}` | {theirs} |' if pp else
                 f'| {text} | {value:.2f} | - | {theirs} |')
  if missing:
    lines += ['', 'Not run: datasets not prepared (prepare them, then run again):', '']
    lines += [f'- {name}: {why}' for name, why in missing.items()]
  lines.append('')
  storage.write(root / 'report.json', json.dumps(
      {'checkpoint': checkpoint, 'paper_model': paper_model, 'results': dict(results),
       'protocol': dict(protocol),
       'rows': [{'key': k, 'evaluation': t, 'ours': v, 'paper': paper.get(k),
                 'not_comparable': verdicts.get(k)} for k, t, v in table],
       'vtab': vtab, 'missing': dict(missing)}, indent=2))
  storage.write(root / 'report.md', '\n'.join(lines))
  return os.fspath(root / 'report.md')
