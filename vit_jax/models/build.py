"""A model from a run config: the variant named by `model_name` with `config.model` overrides."""

import dataclasses
import difflib

import ml_collections

from vit_jax.configs import models as model_configs
from vit_jax.models.vit import VisionTransformer


def _unknown(field: str, known) -> ValueError:
  near = difflib.get_close_matches(field.rsplit('.', 1)[-1], sorted(known), n=3)
  hint = f'did you mean {", ".join(near)}?' if near else f'known: {sorted(known)}.'
  return ValueError(f'Unknown field {field}; {hint}')


def _set_fields(overrides) -> dict:
  """The fields a config actually sets: unset (None) entries and empty groups dropped."""
  overrides = overrides.to_dict() if hasattr(overrides, 'to_dict') else dict(overrides)
  out = {}
  for key, value in overrides.items():
    if isinstance(value, dict):
      value = _set_fields(value)
      if not value:
        continue
    if value is not None:
      out[key] = value
  return out


def model_config_from(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The variant's fields with `config.model` overrides applied (nested for `transformer`)."""
  model_config = model_configs.get_config(config.model_name)
  overrides = _set_fields(config.get('model') or {})
  if overrides.get('remat') == 'auto':  # the memory planner's to choose (train/memory.py)
    del overrides['remat']
  transformer = overrides.pop('transformer', None) or {}
  for key, value in transformer.items():
    if key not in model_config.transformer:
      raise _unknown(f'model.transformer.{key}', model_config.transformer)
    model_config.transformer[key] = value
  allowed = {f.name for f in dataclasses.fields(VisionTransformer)} - {
      'num_classes', 'parent', 'name'}
  for key, value in overrides.items():
    if key not in allowed:
      raise _unknown(f'model.{key}', allowed)
    if isinstance(value, dict) and isinstance(model_config.get(key), ml_collections.ConfigDict):
      model_config[key].update(value)
    else:
      model_config[key] = value
  return model_config


def from_run_config(config: ml_collections.ConfigDict) -> tuple[VisionTransformer,
                                                                  ml_collections.ConfigDict]:
  """(model with `config.num_classes` outputs, its model config)."""
  model_config = model_config_from(config)
  return VisionTransformer(num_classes=config.num_classes, **model_config), model_config
