"""The fine-tuning and distillation recipes, shrunk to the digits, train (tests/shrunk.py): each
starts where its users start, from a shrunk pretraining run (the digits classifier; the MAE
encoder), which is itself checked here. Every recipe in configs/ that trains is covered here or
in test_recipe_training_scratch.py."""

import numpy as np
import pytest

import shrunk
from vit_jax import param_names
from vit_jax.weights import trained_model
from vit_jax.weights import workdir_params

pytestmark = pytest.mark.slow

# recipe -> the shrunk run it starts from (`init_from`), as its users start from a released one.
INIT_FROM = {'finetune': 'digits', 'vtab': 'digits', 'naflex_finetune': 'digits',
             'mae_finetune': 'mae_pretrain'}


@pytest.fixture(scope='module')
def pretrained(digits_data_dir, tmp_path_factory):
  """{recipe: (workdir, what shows it did not learn)} of the digits classifier and the MAE
  pretraining, shrunk: the runs the fine-tuning recipes start from (and DeiT's teacher)."""
  runs = {}
  for name, arg in (('digits', None), ('mae_pretrain', 'B')):
    folder = tmp_path_factory.mktemp(name)
    workdir = str(folder / 'run')
    runs[name] = (workdir, shrunk.train_and_check(
        shrunk.shrink(shrunk.recipe(name, arg), digits_data_dir, folder), workdir))
  return runs


@pytest.mark.parametrize('name', ['digits', 'mae_pretrain'])
def test_the_pretraining_recipes_train_shrunk(name, pretrained):
  assert pretrained[name][1] == []


@pytest.mark.parametrize('name,arg', [('finetune', 'cifar10'),
                                      ('finetune', 'imagenet2012,512,polyak'),
                                      ('vtab', 'clevr_count'), ('naflex_finetune', None),
                                      ('mae_finetune', 'H'), ('deit_distill', 'B')])
def test_recipe_trains_shrunk(name, arg, digits_data_dir, pretrained, tmp_path):
  config = shrunk.shrink(shrunk.recipe(name, arg), digits_data_dir, tmp_path,
                         shrunk.STEPS_OF.get(name, shrunk.STEPS))
  if config.objective == 'distillation':  # DeiT's teacher: a trained classifier of the data
    config.distill.teacher = pretrained['digits'][0]
  if name in INIT_FROM:
    config.init_from = pretrained[INIT_FROM[name]][0]
  assert shrunk.train_and_check(config, str(tmp_path / 'run')) == [], (name, arg)


def test_the_mae_linear_probe_trains_its_head_alone(digits_data_dir, pretrained, tmp_path):
  """MAE's linear probe on the shrunk MAE encoder: the head learns (loss below the constant
  predictor's, top-1 above chance), every encoder weight ends as it was loaded, and head_norm
  holds the features' measured statistics, not its initial 0 and 1. Batch 256, the batch the
  source's rule (lr = 0.1 x batch / 256) is stated at: the head's bias takes plain momentum-SGD
  steps at the written lr 6.4, whose noise at batch 32 swamps the head."""
  config = shrunk.shrink(shrunk.recipe('mae_linprobe', 'B'), digits_data_dir, tmp_path,
                         shrunk.STEPS_OF['mae_linprobe'])
  config.batch_size = 256
  config.init_from = pretrained['mae_pretrain'][0]
  workdir = str(tmp_path / 'run')
  assert shrunk.train_and_check(config, workdir) == []
  probed = param_names.flatten(workdir_params.read(workdir)[1])
  encoder = param_names.flatten(trained_model.load(config.init_from).params)
  shared = [name for name in encoder if name in probed and not name.startswith('head')]
  assert len([name for name in shared if name.startswith('Transformer/encoderblock')]) > 10
  for name in shared:
    np.testing.assert_array_equal(probed[name], encoder[name], err_msg=name)
  assert not np.allclose(probed['head_norm/mean'], 0.0)
  assert not np.allclose(probed['head_norm/var'], 1.0)


def test_deit_with_the_old_decay_reading_fails_the_check(digits_data_dir, pretrained, tmp_path):
  """DeiT's wd 0.05 read big_vision's way (what `wd_decoupled=True` did before the fix: 5% of
  every weight per step at peak): the check refuses it, the kernels gone."""
  config = shrunk.shrink(shrunk.recipe('deit_distill', 'B'), digits_data_dir, tmp_path)
  config.wd_style = 'schedule_scaled'
  config.distill.teacher = pretrained['digits'][0]
  problems = shrunk.train_and_check(config, str(tmp_path / 'run'))
  assert any(problem.startswith('kernel norm x0.0') for problem in problems), problems
