"""Scanned <-> per-layer parameter tree converters."""

import numpy as np

from vit_jax.models import stacking


def _per_layer(depth):
  tree = {'Transformer': {f'encoderblock_{i}': {'LayerNorm_0': {'scale': np.full(3, float(i))}}
                          for i in range(depth)}, 'head': {'bias': np.zeros(2)}}
  tree['Transformer']['encoder_norm'] = {'scale': np.ones(3)}
  return tree


def test_stack_orders_layers_by_index_not_by_name():
  stacked = stacking.stack_encoder_blocks(_per_layer(12))
  scale = stacked['Transformer']['encoderblock']['LayerNorm_0']['scale']
  assert scale.shape == (12, 3)
  np.testing.assert_array_equal(scale[:, 0], np.arange(12))  # encoderblock_10 after _9
  assert set(stacked['Transformer']) == {'encoderblock', 'encoder_norm'}
  assert stacking.num_encoder_layers(stacked) == 12


def test_round_trip_and_idempotence():
  tree = _per_layer(3)
  back = stacking.unstack_encoder_blocks(stacking.stack_encoder_blocks(tree))
  assert set(back['Transformer']) == set(tree['Transformer'])
  for i in range(3):
    np.testing.assert_array_equal(back['Transformer'][f'encoderblock_{i}']['LayerNorm_0']['scale'],
                                  np.full(3, float(i)))
  assert stacking.unstack_encoder_blocks(tree)['Transformer'].keys() == tree['Transformer'].keys()
  stacked = stacking.stack_encoder_blocks(tree)
  assert stacking.stack_encoder_blocks(stacked)['Transformer'].keys() == stacked['Transformer'].keys()
  assert 'encoderblock_0' in tree['Transformer']  # inputs are not modified
