"""The checkpoint a run starts from (`config.init_from`): loaded once, checked against the run's
model (the family fields a file fixes) and its input statistics, and its input transform kept in
the workdir so that a resume needs no source."""

import dataclasses
from typing import Any, Optional

from absl import logging
import numpy as np

from vit_jax import errors
from vit_jax import storage
from vit_jax.models import vit
from vit_jax.train import options as options_lib
from vit_jax.weights import trained_model
from vit_jax.weights import transforms


@dataclasses.dataclass(frozen=True)
class Pretrained:
  """`config.init_from`, loaded and checked against the run's model."""

  path: str
  loaded: trained_model.TrainedModel
  dont_load: tuple[str, ...]  # parameter names kept from the fresh init


# Model fields a checkpoint fixes that its shapes may not show (foreign files, workdirs).
_FAMILY_FIELDS = ('activation', 'layer_norm_eps', 'pre_norm', 'qk_norm', 'num_registers',
                  'distilled', 'layerscale')


def _family_fields(model_config) -> dict[str, Any]:
  get = model_config.get
  return {'activation': vit.activation_name(get('activation'), get('gelu_approximate', True)),
          'layer_norm_eps': get('layer_norm_eps') or 1e-6, 'pre_norm': bool(get('pre_norm')),
          'qk_norm': bool(get('qk_norm')), 'num_registers': int(get('num_registers') or 0),
          'distilled': bool(get('distilled')), 'layerscale': get('layerscale') is not None}


def load(path: str, model_config, run_pp: str) -> trained_model.TrainedModel:
  """`config.init_from` loaded; a checkpoint whose family fields (activation, norms, tokens)
  differ from the run's model (`model_config`) is refused naming the flags that make them
  agree. `run_pp`: the run's host and device pp, joined."""
  loaded = trained_model.load(path)
  warn_on_other_statistics(path, loaded, run_pp)
  if path.endswith('.npz'):  # released files carry shapes only: the run's fields stand
    return loaded
  theirs, ours = _family_fields(loaded.model_config), _family_fields(model_config)
  differ = [f for f in _FAMILY_FIELDS if theirs[f] != ours[f]]
  if differ:
    value = lambda f: (loaded.model_config.get(f) if f == 'layerscale' else theirs[f])  # pylint: disable=unnecessary-lambda-assignment
    flags = ' '.join(f'--config.model.{f}={value(f)}' for f in differ)
    raise errors.UserError(
        f'config.init_from={path} has {", ".join(f"{f}={theirs[f]}" for f in differ)}'
        f' but the run\'s model has {", ".join(f"{f}={ours[f]}" for f in differ)}; '
        f'add {flags}')
  return loaded


def warn_on_other_statistics(path: str, loaded: trained_model.TrainedModel,
                              run_pp: str) -> None:
  """One line when the run feeds the checkpoint other input statistics than it was trained on."""
  theirs = transforms.statistics(loaded.pp)
  run_op = transforms.value_op(run_pp)
  if run_op is None:
    return
  ours = transforms.statistics(run_op)
  if not np.allclose(theirs, ours, atol=1e-3):
    logging.warning('config.init_from=%s was trained on inputs normalised with mean %s, std %s '
                    '(%s); this run uses mean %s, std %s: use normalize(%s, %s) in place of '
                    'value_range to keep them.', path, theirs[0], theirs[1],
                    loaded.pp, ours[0], ours[1], theirs[0], theirs[1])


SOURCE_PP_FILE = 'init_from_pp.txt'  # the init_from checkpoint's input transform, for resumes


def source_input_transform(init: options_lib.Init, workdir: str) -> Optional[str]:
  """The init_from checkpoint's input transform: kept in the workdir once the run has started
  (a resume needs no source), else read off the source's side files."""
  if not init.path or not init.pp_from_init:
    return None
  kept = storage.path(workdir) / SOURCE_PP_FILE
  if kept.exists():
    return kept.read_text(encoding='utf-8').strip()
  return trained_model.input_transform(init.path)
