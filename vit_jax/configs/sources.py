"""What a recipe reproduces: its source, the source's values, and where we differ on purpose.

Every recipe in `configs/` has `source(arg) -> Source` beside `get_config(arg)`. `values` are
transcribed from the paper table or reference file that `cite` names, keyed by our config field
(dotted: 'lr.base', 'model.stochastic_depth'); `peak_decay` is the fraction of a decayed weight
the source takes off in one step at its peak learning rate (PyTorch AdamW: lr * wd; big_vision:
wd), the one number that compares weight decay across codebases. `tests/test_recipes.py` holds
each recipe's config to its source field by field (`mismatches`).

  def source(arg='ViT-B_16') -> sources.Source:
    return sources.Source(cite='ViT paper, Table 3', values={'batch_size': 4096, 'wd': 0.03},
                          peak_decay=0.03 * 1e-3)
"""

import dataclasses
import math
from typing import Any, Mapping, Optional

import ml_collections

IMAGENET_TRAIN = 1_281_167  # images in ImageNet-1k's train split (epochs -> steps)


@dataclasses.dataclass(frozen=True)
class Source:
  """One recipe's published origin."""

  cite: str  # paper + table/section, or repository + file
  values: Mapping[str, Any]  # dotted config field -> the source's value
  peak_decay: Optional[float] = None  # per-step weight decay at peak lr (None: not stated)
  # Fields we set otherwise on purpose: field -> the reason and its expected effect.
  deviations: Mapping[str, str] = dataclasses.field(default_factory=dict)
  # What the source needs that is not here (a teacher network, a dataset): stated, not promised.
  gaps: tuple[str, ...] = ()
  # Fields the source sweeps: field -> the values it tried (the recipe's must be one of them).
  choices: Mapping[str, tuple] = dataclasses.field(default_factory=dict)
  result: str = ''  # the number the source reports for this setting, with where it is printed


def ours(why: str) -> Source:
  """A recipe of our own (digits, a folder of images): nothing published to hold it to."""
  return Source(cite=f'none: {why}', values={})


def value_at(config: ml_collections.ConfigDict, dotted: str) -> Any:
  node = config
  for key in dotted.split('.'):
    node = node[key]
  return node


def _equal(found: Any, expected: Any) -> bool:
  if isinstance(expected, float) or isinstance(found, float):
    return (found is not None and not isinstance(found, (str, tuple, list)) and
            math.isclose(float(found), float(expected), rel_tol=1e-9, abs_tol=1e-12))
  if isinstance(expected, (tuple, list)):
    return tuple(found) == tuple(expected) if isinstance(found, (tuple, list)) else False
  return found == expected


def mismatches(config: ml_collections.ConfigDict, source: Source,
               peak_decay: Optional[float]) -> list[str]:
  """'field: recipe X, source Y' for each reproduced field that differs (and the peak decay,
  `peak_decay` being the recipe's, from vit_jax.train.optimizer.peak_decay)."""
  found = []
  for field, expected in source.values.items():
    if field in source.deviations:
      found.append(f'{field}: listed both as reproduced and as a deviation')
      continue
    try:
      value = value_at(config, field)
    except (KeyError, AttributeError):
      found.append(f'{field}: not a config field')
      continue
    if not _equal(value, expected):
      found.append(f'{field}: recipe {value!r}, source {expected!r}')
  for field, allowed in source.choices.items():
    value = value_at(config, field)
    if not any(_equal(value, option) for option in allowed):
      found.append(f'{field}: recipe {value!r}, not one of the source\'s {tuple(allowed)}')
  if source.peak_decay is not None and not math.isclose(
      peak_decay or 0.0, source.peak_decay, rel_tol=1e-6, abs_tol=1e-15):
    found.append(f'peak weight decay per step: recipe {peak_decay!r}, source '
                 f'{source.peak_decay!r}')
  return found
