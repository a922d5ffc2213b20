"""The fine-tuning and distillation recipes, shrunk to the digits, train (tests/shrunk.py): each
starts where its users start, from a shrunk pretraining run (the digits classifier; the MAE
encoder), which is itself checked here. Every recipe in configs/ that trains is covered here or
in test_recipe_training_scratch.py."""

import pytest

import shrunk

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


def test_deit_with_the_old_decay_reading_fails_the_check(digits_data_dir, pretrained, tmp_path):
  """DeiT's wd 0.05 read big_vision's way (what `wd_decoupled=True` did before the fix: 5% of
  every weight per step at peak): the check refuses it, the kernels gone."""
  config = shrunk.shrink(shrunk.recipe('deit_distill', 'B'), digits_data_dir, tmp_path)
  config.wd_style = 'schedule_scaled'
  config.distill.teacher = pretrained['digits'][0]
  problems = shrunk.train_and_check(config, str(tmp_path / 'run'))
  assert any(problem.startswith('kernel norm x0.0') for problem in problems), problems
