"""Converters between the per-layer and the scanned (stacked) encoder parameter trees.

Per-layer (`scan=False`, the released layout): `Transformer/encoderblock_{i}/...`.
Scanned (`scan=True`, big_vision's layout): `Transformer/encoderblock/...`, each leaf with a
leading `[num_layers]` axis.
"""

import re
from typing import Any, Mapping

import jax
import numpy as np

_BLOCK = re.compile(r'^encoderblock_(\d+)$')


def _is_stacked(encoder: Mapping[str, Any]) -> bool:
  return 'encoderblock' in encoder


def block_index(name: str) -> int:
  """The layer of a per-layer block parameter ('Transformer/encoderblock_3/...' -> 3)."""
  return int(name.split('/')[1].rsplit('_', 1)[1])


def num_encoder_layers(params: Mapping[str, Any]) -> int:
  """Depth of the encoder in either layout."""
  encoder = params['Transformer']
  if _is_stacked(encoder):
    return int(jax.tree_util.tree_leaves(encoder['encoderblock'])[0].shape[0])
  return sum(1 for name in encoder if _BLOCK.match(name))


def stack_encoder_blocks(params: Mapping[str, Any]) -> dict[str, Any]:
  """Per-layer tree -> scanned tree (no-op if already scanned). Other entries are kept."""
  params = dict(params)
  encoder = dict(params['Transformer'])
  if _is_stacked(encoder):
    return params
  depth = num_encoder_layers(params)
  blocks = [encoder.pop(f'encoderblock_{i}') for i in range(depth)]
  xp = np if all(isinstance(x, np.ndarray) for x in jax.tree_util.tree_leaves(blocks)) else jax.numpy
  encoder['encoderblock'] = jax.tree_util.tree_map(lambda *layers: xp.stack(layers), *blocks)
  params['Transformer'] = encoder
  return params


def unstack_encoder_blocks(params: Mapping[str, Any]) -> dict[str, Any]:
  """Scanned tree -> per-layer tree (no-op if already per-layer). Other entries are kept."""
  params = dict(params)
  encoder = dict(params['Transformer'])
  if not _is_stacked(encoder):
    return params
  depth = num_encoder_layers(params)
  stacked = encoder.pop('encoderblock')
  for i in range(depth):
    encoder[f'encoderblock_{i}'] = jax.tree_util.tree_map(lambda leaf, i=i: leaf[i], stacked)
  params['Transformer'] = encoder
  return params
