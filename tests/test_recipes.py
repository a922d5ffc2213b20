"""The recipes in configs/: they load, name real models and carry the published settings."""

import importlib.util
import json
import os

import pytest
import tensorflow as tf

from vit_jax import errors
from vit_jax.configs import common
from vit_jax.configs import sources
from vit_jax.data import preprocess
from vit_jax.models import build
from vit_jax.models import geometry
from vit_jax.train import input_checks
from vit_jax.train import optimizer
from vit_jax.train import options
from vit_jax.train import workdir

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs')


def _module(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(CONFIGS, f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _recipe(name, *args):
  return _module(name).get_config(*args)


# Every recipe file with the arguments that select its settings (each size, dataset, variant).
SOURCED = [('digits', ()), ('digits', ('mae',)), ('smoke', ('i1k_s16',)), ('finetune', ('cifar10',)),
           ('finetune', ('cifar100',)), ('finetune', ('imagenet2012',)),
           ('finetune', ('imagenet2012,512,polyak',)), ('finetune', ('oxford_iiit_pet',)),
           ('finetune', ('oxford_flowers102',)), ('finetune', ('folder',)),
           ('pretrain_i21k', ()), ('pretrain_i21k', ('ViT-L_16',)),
           ('pretrain_i21k', ('ViT-B_16,big_vision',)), ('i1k_s16', ()), ('i1k_scratch', ()),
           ('i1k_scratch', ('ViT-L_16',)), ('mae_pretrain', ('B',)),
           ('mae_pretrain', ('L,1600',)), ('mae_pretrain', ('H',)), ('mae_finetune', ('B',)),
           ('mae_finetune', ('L',)), ('mae_finetune', ('H',)),
           ('mae_linprobe', ('B',)), ('mae_linprobe', ('H',)), ('deit_distill', ('Ti',)),
           ('deit_distill', ('B',)), ('dense', ('digits_segmentation',)),
           ('dense', ('ade20k_linear',)), ('dense', ('ade20k_segmenter',)),
           ('dense', ('nyu_linear',)), ('naflex_finetune', ()), ('paper_evals', ()),
           ('vtab', ('clevr_count',))]


def _peak_decay(config):
  return optimizer.peak_decay(options.read_optimizer(config))


def test_every_recipe_file_is_held_to_a_source():
  names = {f[:-3] for f in os.listdir(CONFIGS) if f.endswith('.py')}
  assert names == {name for name, _ in SOURCED}


@pytest.mark.parametrize('name,args', SOURCED)
def test_recipe_matches_its_source_field_by_field(name, args):
  """Each reproduced field, and the weight decay taken off per step at peak, equal the source's;
  a field moved away from it is caught (every one of them, in turn)."""
  module = _module(name)
  config, source = module.get_config(*args), module.source(*args)
  assert source.cite
  assert sources.mismatches(config, source, _peak_decay(config)) == []
  for field, value in source.values.items():
    moved = module.get_config(*args)
    parent, _, leaf = field.rpartition('.')
    node = sources.value_at(moved, parent) if parent else moved
    with node.ignore_type():
      node[leaf] = ('x' if value is None or isinstance(value, (bool, str, tuple))
                    else value * 2 + 1)
    assert sources.mismatches(moved, source, None if source.peak_decay is None
                              else _peak_decay(config)), (name, field)


def test_weight_decay_of_the_pytorch_references_is_lr_scaled():
  """The numbers the references print: MAE-B pretraining takes 1.2e-4 of a weight per step at
  peak (AdamW lr 2.4e-3 x 0.05), MAE-B fine-tuning 1e-4, DeiT-B 5e-5, the paper's ImageNet-21k
  Adam 3e-5 (0.03 x 1e-3), big_vision's S/16 1e-4."""
  for (name, arg), expected in ((('mae_pretrain', 'B'), 1.2e-4), (('mae_finetune', 'B'), 1e-4),
                                (('deit_distill', 'B'), 5e-5), (('pretrain_i21k', 'ViT-B_16'), 3e-5),
                                (('i1k_s16', '90'), 1e-4), (('i1k_scratch', 'ViT-B_16'), 9e-4)):
    assert _peak_decay(_recipe(name, arg)) == pytest.approx(expected, rel=1e-9), name
  assert _recipe('mae_finetune', 'H').model.stochastic_depth == 0.3  # FINETUNE.md's ViT-Huge
  assert _recipe('mae_finetune', 'L').model.stochastic_depth == 0.2


def test_the_retired_decay_field_is_refused_with_its_replacement(tmp_path):
  config = _recipe('digits')
  with config.ignore_type():
    config.wd_decoupled = True
  with pytest.raises(errors.UserError, match="wd_decoupled no longer exists: use "
                     "config.wd_style='schedule_scaled'"):
    options.read(config)


def test_a_run_saved_with_the_retired_field_resumes_with_its_meaning(tmp_path):
  """A config.json written before the rename: wd_decoupled=True reads as schedule_scaled, so
  the same recipe resumes; a recipe whose decay changed meaning is a changed field."""
  config = workdir.config_dict(_recipe('digits'))
  old = dict(config)
  old.pop('wd_style')
  old['wd_decoupled'] = True
  (tmp_path / 'config.json').write_text(json.dumps(old))
  (tmp_path / 'checkpoints' / '100').mkdir(parents=True)
  workdir.claim(str(tmp_path), config, overwrite=False)  # same run: accepted
  assert json.loads((tmp_path / 'config.json').read_text())['wd_style'] == 'schedule_scaled'
  old['wd_decoupled'] = False
  (tmp_path / 'config.json').write_text(json.dumps(old))
  with pytest.raises(errors.UserError, match=r"different config \(fields: \['wd_style'\]\)"):
    workdir.claim(str(tmp_path), config, overwrite=False)


@pytest.mark.parametrize('name,args', [('digits', ()), ('finetune', ('cifar10',)),
                                       ('finetune', ('oxford_iiit_pet',)),
                                       ('pretrain_i21k', ()), ('pretrain_i21k', ('ViT-L_16',)),
                                       ('i1k_s16', ()), ('mae_pretrain', ('L,1600',)),
                                       ('mae_finetune', ()), ('deit_distill', ('S',))])
def test_recipe_builds_its_model_pipeline_and_optimizer(name, args):
  config = _recipe(name, *args)
  if config.objective == 'distillation':
    config.distill.teacher = 'teacher.npz'  # read at setup, not here
  read = options.read(config)  # every field read and checked once
  geometry.check_image_size(config.image_size, read.model_config)
  train_pp = preprocess.parse(config.pp_train, num_classes=config.num_classes)
  # What the host hands on suits the device preprocessing (uint8) or the model (float).
  jpeg = tf.io.encode_jpeg(tf.zeros([300, 400, 3], tf.uint8))
  example = train_pp({'image': jpeg, 'label': tf.constant(0, tf.int64)},
                     tf.constant([0, 0], tf.int64))
  input_checks.check_host_output(example, read.step.device_pp,
                         read.objective.name != 'mae')
  for entry in options.read_evals(config).entries.values():
    preprocess.parse(entry['pp'], num_classes=config.num_classes)
  shapes = geometry.abstract_params(read.model, config.image_size)
  steps = options.read_length(config).steps(1_281_167)
  tx, schedule = optimizer.build(read.optimizer, shapes, steps)
  assert tx is not None and float(schedule(steps)) <= float(config.lr.base)


def _entries(config):
  return options.read_evals(config).entries


def test_paper_fine_tuning_settings():
  for dataset, steps in (('cifar10', 10_000), ('cifar100', 10_000), ('imagenet2012', 20_000),
                         ('oxford_iiit_pet', 500), ('oxford_flowers102', 500)):
    config = _recipe('finetune', dataset)
    assert (config.total_steps, config.batch_size, config.image_size) == (steps, 512, 384)
    assert (config.optim.name, config.optim.momentum, config.wd, config.grad_clip_norm,
            config.lr.schedule) == ('sgd', 0.9, 0.0, 1.0, 'cosine')
    assert config.lr.base in (0.001, 0.003, 0.01, 0.03)
  with pytest.raises(errors.UserError, match="unknown dataset 'mnist'"):
    _recipe('finetune', 'mnist')


def test_pretraining_settings():
  i21k = _recipe('pretrain_i21k')
  assert (i21k.batch_size, i21k.lr.base, i21k.lr.warmup_steps, i21k.lr.schedule, i21k.wd,
          i21k.total_epochs, i21k.loss) == (4096, 1e-3, 10_000, 'linear', 0.03, 90, 'sigmoid_xent')
  assert build.model_config_from(i21k).representation_size == 768
  assert build.model_config_from(i21k).transformer.dropout_rate == 0.1
  s16 = _recipe('i1k_s16')
  model = build.model_config_from(s16)
  assert (model.classifier, model.posemb, s16.mixup.alpha, s16.wd, s16.wd_style) == (
      'gap', 'sincos2d', 0.2, 1e-4, 'schedule_scaled')
  assert s16.pp_device == 'randaug(2, 10)|value_range(-1, 1)'  # RandAugment on the devices
  assert options.read_length(s16).steps(1_268_356) == 111_477  # ceil(90 epochs x 1,268,356 / 1024)


def test_imagenet_recipes_evaluate_minival_val_real_and_v2():
  for config in (_recipe('i1k_s16'), _recipe('finetune', 'imagenet2012')):
    entries = _entries(config)
    found = {name: (e['kind'], e['data']['name'], e['data']['split'], e['data']['label_key'])
             for name, e in entries.items()}
    assert found == {
        'minival': ('classification', 'imagenet2012', 'train[99%:]', 'label'),
        'val': ('classification', 'imagenet2012', 'validation', 'label'),
        'real': ('real', 'imagenet2012_real', 'validation', 'real_label'),
        'v2': ('classification', 'imagenet_v2', 'test', 'label')}
    assert len({e['pp'] for e in entries.values()}) == 1  # the ImageNet eval input for all
  cifar = _entries(_recipe('finetune', 'cifar10'))
  assert list(cifar) == ['eval', 'minival']  # minival: where a learning-rate sweep chooses
  assert (cifar['eval']['data']['split'], cifar['minival']['data']['split']) == (
      'test', 'train[98%:]')


def test_pretraining_is_watched_by_few_shot_probes():
  entries = _entries(_recipe('pretrain_i21k'))
  assert entries['fewshot']['shots'] == (1, 5, 10, 25)
  assert {k: (d['name'], d['train_split'], d['test_split'])
          for k, d in entries['fewshot']['datasets'].items()} == {
              'imagenet': ('imagenet2012', 'train[:10%]', 'validation'),
              'cifar100': ('cifar100', 'train', 'test'),
              'pets': ('oxford_iiit_pet', 'train', 'test')}
  assert entries['fewshot_flowers']['shots'] == (1, 5)
  assert entries['fewshot']['every'] == 10_000
  digits = _entries(_recipe('digits'))
  assert digits['fewshot']['shots'] == (1, 5, 10) and list(digits) == ['eval', 'fewshot']


ALL_RECIPES = [('digits', ()), ('finetune', ('cifar10',)), ('finetune', ('folder',)),
               ('pretrain_i21k', ()), ('i1k_s16', ()), ('vtab', ('clevr_count',))]


@pytest.mark.parametrize('name,args', ALL_RECIPES)
def test_every_source_field_is_settable_in_every_recipe(name, args):
  """`--config.data.root=...`, `--config.evals.eval.data.strict=...` and so on exist everywhere."""
  fields = set(common.data_source('x', 'y').keys())
  config = _recipe(name, *args)
  sources = [config.data] + [entry['data'] for entry in config.evals.values() if 'data' in entry]
  for source in sources:
    assert fields <= set(source.keys()), (name, sorted(fields - set(source.keys())))


def test_folder_recipe_takes_its_classes_and_eval_folder_from_one_flag():
  config = _recipe('finetune', 'folder,224')
  assert config.num_classes is None and config.image_size == 224
  assert '224' in config.pp_train and '224' in config.evals.eval.pp
  config.data.root = '/data/pets'
  assert config.evals.eval.data.root == '/data/pets' and config.evals.eval.data.split == 'val'
  with pytest.raises(ValueError, match='must be a number of pixels'):
    _recipe('finetune', 'folder,big')
