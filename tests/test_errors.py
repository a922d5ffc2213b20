"""Errors keep their kind: a user's mistake stays one line, a bug of ours keeps its traceback."""

import traceback

import pytest

from vit_jax import errors
from vit_jax.data import device_pp
from vit_jax.data import sources
from vit_jax.evaluators import base


def test_context_prefixes_a_user_error_and_keeps_its_class():
  with pytest.raises(errors.MissingFile, match=r'^config.evals.x.data: no such folder$'):
    with errors.context('config.evals.x.data'):
      raise errors.MissingFile('no such folder')


def test_context_leaves_a_bug_as_it_was_with_a_note():
  with pytest.raises(ZeroDivisionError) as raised:
    with errors.context('config.pp_device'):
      _ = 1 / 0
  assert not isinstance(raised.value, errors.UserError)
  assert raised.value.__notes__ == ['(while reading config.pp_device)']
  assert '_ = 1 / 0' in ''.join(traceback.format_tb(raised.tb))  # the line of the bug


def test_an_evaluator_on_a_folder_with_no_root_is_one_user_line():
  with pytest.raises(errors.UserError) as raised:
    base.source('eval', 'data', {'name': 'folder', 'split': 'val', 'root': None})
  assert str(raised.value).startswith('config.evals.eval.data: ')
  assert '\n' not in str(raised.value)


def test_a_missing_dataset_stays_a_dataset_missing(tmp_path):
  with pytest.raises(sources.DatasetMissing, match='config.evals.v2.data: '):
    base.source('v2', 'data', {'name': 'imagenet_v2', 'split': 'test',
                               'data_dir': str(tmp_path)})


def test_a_bug_inside_a_data_source_keeps_its_traceback(monkeypatch):
  def broken(data):
    del data
    return {}['planted']  # a KeyError of ours, not the user's
  monkeypatch.setattr(sources, 'from_config', broken)
  with pytest.raises(KeyError) as raised:
    base.source('eval', 'data', {'name': 'digits', 'split': 'test'})
  assert not isinstance(raised.value, errors.UserError)
  assert "return {}['planted']" in ''.join(traceback.format_tb(raised.tb))


def test_a_bug_inside_a_device_pp_op_keeps_its_traceback(monkeypatch):
  def broken(*args, **kwargs):
    del args, kwargs
    raise ValueError('planted: a bug of ours, not bad input')
  monkeypatch.setitem(device_pp.OPS, 'flip_lr', (broken, True))
  with pytest.raises(ValueError, match='planted') as raised:
    device_pp.DevicePreprocess('flip_lr', seed=0)
  assert not isinstance(raised.value, errors.UserError)


def test_a_bad_device_op_argument_is_one_user_line():
  with pytest.raises(errors.UserError, match=r'config.pp_device: random_erase: bad probability'):
    device_pp.DevicePreprocess('value_range(-1, 1)|random_erase(2.0)', seed=0)
