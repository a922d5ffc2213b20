"""One way to select parameters: full-match regexes over '/'-joined names, first pattern wins."""

import numpy as np
import pytest

from vit_jax import param_names

TREE = {'head': {'kernel': np.zeros(2), 'bias': np.zeros(1)},
        'Transformer': {'encoderblock_0': {'MlpBlock_0': {'Dense_0': {'kernel': np.zeros(3)}}},
                        'encoder_norm': {'scale': np.zeros(4)}}}


def test_flatten_and_unflatten_are_inverse():
  flat = param_names.flatten(TREE)
  assert sorted(flat) == ['Transformer/encoder_norm/scale',
                          'Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel',
                          'head/bias', 'head/kernel']
  assert param_names.flatten(param_names.unflatten(flat)).keys() == flat.keys()


def test_a_pattern_must_match_the_whole_name():
  assert param_names.matches([r'head/.*'], 'head/kernel')
  assert not param_names.matches([r'head'], 'head/kernel')  # a prefix is not enough
  assert not param_names.matches([r'kernel'], 'head/kernel')  # nor a suffix
  assert param_names.matches([r'.*/kernel'], 'head/kernel')
  assert not param_names.matches([r'.*/kernel'], 'kernel')


def test_first_matching_pattern_wins():
  table = ((r'head/.*', 0.1), (r'.*/kernel', 2.0), (r'.*', 1.0))
  assert param_names.lookup(table, 'head/kernel') == 0.1
  assert param_names.lookup(table, 'Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel') == 2.0
  assert param_names.lookup(table, 'head/bias') == 0.1
  assert param_names.lookup(((r'x', 1),), 'head/bias', default='none') == 'none'
  assert param_names.first_match([r'a', r'.*'], 'b') == 1


def test_select_and_map_names_build_trees():
  mask = param_names.select(TREE, [r'.*/kernel'])
  assert mask['head'] == {'kernel': True, 'bias': False}
  assert mask['Transformer']['encoder_norm']['scale'] is False
  sizes = param_names.map_names(TREE, lambda name, leaf: (name, leaf.size))
  assert sizes['head']['bias'] == ('head/bias', 1)


def test_a_bad_regex_is_named():
  with pytest.raises(ValueError, match=r"Not a valid parameter-name regex: '\(\['"):
    param_names.matches([r'(['], 'head/kernel')
