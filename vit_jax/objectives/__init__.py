"""Objectives: what a run trains its model for (`config.objective`).

  classification  the paper's supervised objective (objectives/classification.py)
  mae             masked-autoencoder pretraining, no labels (objectives/mae.py)
  distillation    DeiT's distillation token learning a teacher (objectives/distillation.py)
  dense           segmentation or depth from the patch maps (objectives/dense.py)

Each is one module with `read(config, model_config)` (its own config fields, checked: a typed
value or None), `build(fields, context) -> base.Objective` and `OBJECTIVE`, its class, whose
class methods say what a run freezes (`frozen_params(fields)`) and how a saved run is rebuilt
(`saved_backbone`); a new objective is one new file and one line in `MODULES`. The trainer
calls only `base.Objective`'s methods.
"""

import dataclasses
from typing import Any

import ml_collections

from vit_jax import errors
from vit_jax.objectives import base
from vit_jax.objectives import classification
from vit_jax.objectives import dense
from vit_jax.objectives import distillation
from vit_jax.objectives import mae

MODULES = {'classification': classification, 'mae': mae, 'distillation': distillation,
           'dense': dense}
Objective = base.Objective
Context = base.Context


@dataclasses.dataclass(frozen=True)
class Spec:
  """`config.objective` and its fields, read and checked (nothing loaded yet)."""

  name: str
  fields: Any


def read(config: ml_collections.ConfigDict, model_config: ml_collections.ConfigDict) -> Spec:
  name = config.objective
  if name not in MODULES:
    raise errors.UserError(f'config.objective={name!r}; expected one of {", ".join(MODULES)}.')
  return Spec(name, MODULES[name].read(config, model_config))


def frozen(spec: Spec, model_config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """Parameter names frozen beside config.frozen: what the objective freezes
  (`Objective.frozen_params`: a dense probe's backbone); everything but the head of a linear
  probe (`model.linear_probe`)."""
  own = MODULES[spec.name].OBJECTIVE.frozen_params(spec.fields)
  if own:
    return own
  if model_config.get('linear_probe'):
    return (r'(?!head/).*',)
  return ()


def build(spec: Spec, context: Context) -> Objective:
  return MODULES[spec.name].build(spec.fields, context)


def saved_backbone(name: str, params: Any, model_config: ml_collections.ConfigDict,
                   image_size: int) -> tuple[Any, ml_collections.ConfigDict, bool]:
  """A saved run of objective `name` as a plain ViT: `Objective.saved_backbone`."""
  return MODULES[name].OBJECTIVE.saved_backbone(params, model_config, image_size)
