"""Loading a trained model needs only the model: workdirs (new and old layout) and files."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

import tiny_recipe
from vit_jax import checkpoint
from vit_jax.weights import trained_model
from vit_jax.train import loop
from vit_jax.train import checkpointer
from vit_jax.train import setup as setup_lib


@pytest.fixture(scope='module')
def run(digits_data_dir, tmp_path_factory):
  """A 4-step run with EMA; returns (workdir, config, its final params and EMA params)."""
  workdir = str(tmp_path_factory.mktemp('run'))
  config = tiny_recipe.get_config(digits_data_dir)
  config.total_steps, config.checkpoint_every, config.ema_decay = 4, 2, 0.5
  loop.train_and_evaluate(config, workdir)
  restored = checkpointer.Checkpointer(workdir).restore(
      setup_lib.from_config(config).abstract_state)
  state = jax.tree.map(np.asarray, jax.device_get(restored.state))
  return workdir, config, state


def _equal(a, b):
  jax.tree.map(np.testing.assert_array_equal, checkpoint.canonicalize(a), checkpoint.canonicalize(b))


def test_a_workdir_loads_its_ema_parameters(run):
  workdir, _, state = run
  loaded = trained_model.load(workdir)
  _equal(loaded.params, state.ema_params)
  assert not np.array_equal(state.ema_params['head']['kernel'], state.params['head']['kernel'])
  assert (loaded.num_classes, loaded.image_size, loaded.model_config.hidden_size) == (10, 16, 16)


def test_loading_needs_neither_the_datasets_nor_the_step_count(run, tmp_path):
  """An epoch-based run whose datasets are absent here (the bug that started the house issue)."""
  workdir = str(tmp_path / 'elsewhere')
  shutil.copytree(run[0], workdir)
  path = os.path.join(workdir, 'config.json')
  config = json.load(open(path, encoding='utf-8'))
  config['total_steps'], config['total_epochs'] = None, 12
  for source in (config['data'], config['evals']['eval']['data']):
    source.update(name='imagenet21k', data_dir=str(tmp_path / 'no_such_dir'))
  json.dump(config, open(path, 'w', encoding='utf-8'))
  _equal(trained_model.load(workdir).params, run[2].ema_params)


def test_a_run_that_never_started_is_named(tmp_path):
  (tmp_path / 'empty').mkdir()
  with pytest.raises(FileNotFoundError, match='has no config.json'):
    trained_model.load(str(tmp_path / 'empty'))
  with pytest.raises(FileNotFoundError, match='Checkpoint not found'):
    trained_model.load(str(tmp_path / 'missing'))


def test_a_run_without_checkpoints_is_named(run, tmp_path):
  workdir = tmp_path / 'nockpt'
  workdir.mkdir()
  shutil.copy(os.path.join(run[0], 'config.json'), workdir / 'config.json')
  with pytest.raises(FileNotFoundError, match='holds no checkpoints'):
    trained_model.load(str(workdir))
