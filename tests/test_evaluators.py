"""Evaluators: few-shot probes against an independent NumPy solution, ReaL against a hand count,
the same numbers on 1 and 8 devices, config errors before the first step, the old config form."""

import importlib.util
import json
import os
import re

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from vit_jax import checkpoint
from vit_jax import evaluators
from vit_jax import models
from vit_jax.configs import common
from vit_jax.data import preprocess
from vit_jax.data import sources
from vit_jax.evaluators import fewshot
from vit_jax.evaluators import paper_report
from vit_jax.models import vit
from vit_jax.parallel import mesh as mesh_lib
from vit_jax.parallel import partitioning
from vit_jax.train import options

from support import randomize
from support import tiny_vit_config
import tiny_recipe

PP = 'decode|resize(16)|value_range(-1, 1)'
SEED = np.zeros(2, np.int64)  # preprocessing seed (PP draws nothing)


def _primal_predictions(x, labels, e, classes, l2):
  """Ridge regression in its textbook form: W = (XᵀX + λI)⁻¹ XᵀY, with a bias column."""
  x = np.hstack([x, np.ones((len(x), 1))])
  e = np.hstack([e, np.ones((len(e), 1))])
  y = 2.0 * np.eye(classes)[labels] - 1.0
  w = np.linalg.solve(x.T @ x + l2 * np.eye(x.shape[1]), x.T @ y)
  return np.argmax(e @ w, -1)


@pytest.mark.parametrize('n,d', [(12, 40), (60, 8)])  # the X Xᵀ and the Xᵀ X route
def test_ridge_equals_the_textbook_solution(rng, n, d):
  x, e = rng.standard_normal((n, d)), rng.standard_normal((200, d))
  labels = np.arange(n) % 4
  l2s = (2.0 ** -10, 1.0, 2.0 ** 10)
  got = fewshot.ridge_predictions(x, labels, e, 4, l2s)
  for i, l2 in enumerate(l2s):
    np.testing.assert_array_equal(got[i], _primal_predictions(x, labels, e, 4, l2))


def test_probe_picks_the_l2_on_held_out_examples_only(rng):
  classes, shots = 3, 4
  pool_x = rng.standard_normal((classes * shots, 5))
  pool_y = np.repeat(np.arange(classes), shots)
  held_x, held_y = rng.standard_normal((30, 5)), rng.integers(0, classes, 30)
  test_x, test_y = rng.standard_normal((50, 5)), rng.integers(0, classes, 50)
  l2s = tuple(2.0 ** i for i in range(-4, 5))
  result = fewshot.probe(np.vstack([pool_x, held_x]), np.concatenate([pool_y, held_y]), test_x,
                         test_y, (classes, shots), num_classes=classes, shots=(shots,),
                         l2_regs=l2s, prefix='p/d')
  held_acc = [np.mean(_primal_predictions(pool_x, pool_y, held_x, classes, l2) == held_y)
              for l2 in l2s]
  best = l2s[int(np.argmax(held_acc))]
  assert result[f'p/d_{shots}shot_selected_l2'] == best
  expected = np.mean(_primal_predictions(pool_x, pool_y, test_x, classes, best) == test_y)
  assert result[f'p/d_{shots}shot_selected'] == pytest.approx(expected)


def test_shots_are_a_pure_function_of_seed_and_dataset():
  labels = np.repeat(np.arange(3), 20)
  names = ['a', 'b', 'c']
  pool, held = fewshot.select_shots(labels, names, shots=5, holdout=2, seed=0, dataset='x')
  again = fewshot.select_shots(labels, names, shots=5, holdout=2, seed=0, dataset='x')
  other = fewshot.select_shots(labels, names, shots=5, holdout=2, seed=0, dataset='y')
  np.testing.assert_array_equal(pool, again[0])
  np.testing.assert_array_equal(held, again[1])
  assert not np.array_equal(pool, other[0])
  assert all((labels[pool[c]] == c).all() for c in range(3))
  assert not set(pool.ravel()) & set(held)
  with pytest.raises(ValueError, match=r"class 'b' \(label 1\) has 3 training examples; "
                                       r'5 shots \+ 2 held out per class need 7'):
    fewshot.select_shots(np.array([0] * 9 + [1] * 3 + [2] * 9), names, shots=5, holdout=2,
                         seed=0, dataset='x')


def _model_and_params(classes=10, representation_size=None):
  model = models.VisionTransformer(num_classes=classes,
                                   **tiny_vit_config(representation_size=representation_size))
  params = model.init(jax.random.key(0), np.zeros((1, 16, 16, 3), np.float32),
                      train=False)['params']
  return model, randomize(params, seed=1)


def _evaluators(config, model, params, mesh_shape):
  mesh = mesh_lib.make_mesh(mesh_shape, jax.devices()[:int(np.prod(mesh_shape))])
  shardings = partitioning.param_shardings(params, mesh, config.sharding)
  built = evaluators.build_all(options.read_evals(config), model, mesh, shardings)
  return built, jax.device_put(params, shardings)


def _fewshot_config(data_dir, **fields):
  config = tiny_recipe.get_config(data_dir)
  del config.evals['eval']
  config.evals.fs = common.fewshot_eval(
      {'digits': common.fewshot_dataset('digits', 'train[:200]', 'test[:60]', image_size=16,
                                        data_dir=data_dir)}, PP, shots=(1, 3), holdout_per_class=2)
  config.evals.fs.batch_size = 32
  config.evals.fs.update(fields)
  return config


def test_selected_l2_variant_equals_numpy_on_the_same_features_on_1_and_8_devices(
    digits_data_dir):
  config = _fewshot_config(digits_data_dir, representation='pre_logits', protocol='selected_l2')
  model, params = _model_and_params(representation_size=12)
  results = []
  for shape in ((1, 1, 1), (8, 1, 1)):
    (evaluator,), placed = _evaluators(config, model, params, shape)
    results.append(evaluator.run(placed, step=0))
  assert results[0] == pytest.approx(results[1], abs=1e-9)

  # The same probe, computed independently: features by a plain apply, shots re-drawn.
  image_pp = preprocess.parse(PP)

  def features_and_labels(split):
    source = sources.digits_source(split, image_size=16, data_dir=digits_data_dir)
    examples = [source.lookup(i) for i in range(source.num_examples)]
    images = np.stack([image_pp(ex, SEED)['image'].numpy() for ex in examples])
    pre_logits = vit.representations(model, params, images)['pre_logits']
    return np.asarray(pre_logits), np.array([int(ex['label']) for ex in examples])

  train_x, train_y = features_and_labels('train[:200]')
  test_x, test_y = features_and_labels('test[:60]')
  pool, held = fewshot.select_shots(train_y, [str(i) for i in range(10)], shots=3, holdout=2,
                                    seed=0, dataset='digits')
  for k in (1, 3):
    l2 = results[0][f'fs/digits_{k}shot_selected_l2']
    shots = pool[:, :k].ravel()
    expected = np.mean(_primal_predictions(train_x[shots], train_y[shots], test_x, 10, l2) ==
                       test_y)
    assert results[0][f'fs/digits_{k}shot_selected'] == pytest.approx(expected, abs=1e-9), k
    held_acc = {v: np.mean(_primal_predictions(train_x[shots], train_y[shots], train_x[held], 10,
                                               v) == train_y[held])
                for v in config.evals.fs.l2_regs}
    assert held_acc[l2] == max(held_acc.values())


def _big_vision_fewshot(train_x, train_y, test_x, test_y, num_classes, shots, seed, l2_reg):
  """big_vision's `fewshot_lsr` evaluator restated in NumPy from reading it: per class, the
  training indices permuted by default_rng(seed) in label order, the first `shots` of each;
  features whitened by the shots' mean and std + 1e-5 (the test set too); a constant 100
  feature; targets 2 * onehot - 1; W = (XᵀX + λI)⁻¹ XᵀY; top-1 accuracy."""
  rng = np.random.default_rng(seed)
  class_indices = [rng.permutation(np.where(train_y == c)[0]) for c in range(num_classes)]
  idx = np.concatenate([indices[:shots] for indices in class_indices])
  x, y = train_x[idx].astype(np.float64), train_y[idx]
  mean, std = x.mean(axis=0, keepdims=True), x.std(axis=0, keepdims=True) + 1e-5
  x = np.pad((x - mean) / std, ((0, 0), (0, 1)), constant_values=100.0)
  t = np.pad((test_x - mean) / std, ((0, 0), (0, 1)), constant_values=100.0)
  targets = 2.0 * np.eye(num_classes)[y] - 1.0
  w = np.linalg.solve(x.T @ x + l2_reg * np.eye(x.shape[1]), x.T @ targets)
  return np.mean(np.argmax(t @ w, axis=1) == test_y)


def test_default_protocol_equals_big_vision_restated_in_numpy(digits_data_dir):
  """The published protocol (seeds 0-2, fixed L2 2^10, standardised features, bias 100) on
  digits features of a random ViT: the same numbers as the NumPy restatement, per seed."""
  config = _fewshot_config(digits_data_dir, representation='pre_logits')
  assert config.evals.fs.protocol == 'fixed_l2' and config.evals.fs.l2_reg == 2.0 ** 10
  model, params = _model_and_params(representation_size=12)
  (evaluator,), placed = _evaluators(config, model, params, (1, 1, 1))
  result = evaluator.run(placed, step=0)

  image_pp = preprocess.parse(PP)

  def features_and_labels(split):
    source = sources.digits_source(split, image_size=16, data_dir=digits_data_dir)
    examples = [source.lookup(i) for i in range(source.num_examples)]
    images = np.stack([image_pp(ex, SEED)['image'].numpy() for ex in examples])
    return (np.asarray(vit.representations(model, params, images)['pre_logits']),
            np.array([int(ex['label']) for ex in examples]))

  train_x, train_y = features_and_labels('train[:200]')
  test_x, test_y = features_and_labels('test[:60]')
  for k in (1, 3):
    per_seed = [_big_vision_fewshot(train_x, train_y, test_x, test_y, 10, k, seed, 2.0 ** 10)
                for seed in (0, 1, 2)]
    for seed, expected in enumerate(per_seed):
      assert result[f'fs/digits_{k}shot-seed-{seed}'] == pytest.approx(expected, abs=1e-3)
    assert result[f'fs/digits_{k}shot'] == pytest.approx(np.mean(per_seed), abs=1e-3)


def test_protocols_differ_on_the_same_features(rng):
  """Standardisation and the nearly free bias change the answer: the two protocols are not the
  same number under two names."""
  x = rng.standard_normal((40, 6)) * np.array([100, 1, 1, 0.01, 5, 1]) + 30
  y = np.arange(40) % 4
  e = rng.standard_normal((300, 6)) * np.array([100, 1, 1, 0.01, 5, 1]) + 30
  ours = fewshot.standardized_predictions(x, y, e, 4, 2.0 ** 10)
  plain = fewshot.ridge_predictions(x, y, e, 4, (2.0 ** 10,))[0]
  assert np.mean(ours != plain) > 0.05


REAL_LABELS = [[0], [1, 2], [], [3], [0, 3], [], [2]]  # hand-made, two images unlabelled


def _tiny_real(data_dir):
  """A tfds dataset shaped like imagenet2012_real: images and a `real_label` list each."""
  rng = np.random.default_rng(3)
  tfds.dataset_builders.store_as_tfds_dataset(
      name='tiny_real', version='1.0.0', data_dir=data_dir, file_format='array_record',
      features=tfds.features.FeaturesDict({
          'image': tfds.features.Image(shape=(16, 16, 3)),
          'real_label': tfds.features.Sequence(tfds.features.ClassLabel(num_classes=4))}),
      split_datasets={'validation': [
          (i, {'image': rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), 'real_label': labels})
          for i, labels in enumerate(REAL_LABELS)]})


def test_real_counts_top1_in_the_label_set_and_skips_unlabelled(tmp_path):
  _tiny_real(str(tmp_path))
  model, params = _model_and_params(classes=4)
  config = tiny_recipe.get_config(None)
  del config.evals['eval']
  config.num_classes = 4
  data = common.data_source('tiny_real', 'validation')
  data.data_dir = str(tmp_path)
  config.evals.real = common.classification_eval(
      data, PP + '|onehot|keep("image", "labels")', kind='real')
  config.evals.real.batch_size = 8  # 7 images: one padded slot (and 8 devices, one each)
  results = []
  for shape in ((1, 1, 1), (8, 1, 1)):
    (evaluator,), placed = _evaluators(config, model, params, shape)
    results.append(evaluator.run(placed, step=0))
  assert results[0] == results[1]

  source = sources.tfds_source('tiny_real', 'validation', data_dir=str(tmp_path),
                               label_key='real_label')
  image_pp = preprocess.parse(PP)
  examples = [source.lookup(i) for i in range(7)]  # in the dataset's (shuffled) order
  images = np.stack([image_pp(ex, SEED)['image'].numpy() for ex in examples])
  label_sets = [set(ex['label'].numpy().tolist()) for ex in examples]
  assert sorted(map(sorted, label_sets)) == sorted(REAL_LABELS)
  top1 = np.argmax(np.asarray(model.apply({"params": params}, images, train=False)), -1)
  hits = sum(int(int(top1[i]) in labels) for i, labels in enumerate(label_sets) if labels)
  assert results[0] == {'real/accuracy': hits / 5, 'real/examples': 5.0}


@pytest.mark.parametrize('field,value,message', [
    ('kind', 'fewshots', re.escape("config.evals.fs.kind: expected one of ['classification', "
                                   "'depth', 'fewshot', 'real', 'segmentation'], found "
                                   "'fewshots'.")),
    ('shotz', (1,), "config.evals.fs: kind 'fewshot' has no field 'shotz'; nearest: shots."),
    ('shots', (1, 200), r"config.evals.fs.datasets.digits \(digits:train\[:200\]\): class '0' "
                        r'\(label 0\) has \d+ training examples; 200 shots need 200'),
    ('representation', 'logits', "config.evals.fs.representation: the model has no output "
                                  "'logits'; it has \\['pooled', 'pre_logits'\\]."),
])
def test_bad_entries_fail_when_built(digits_data_dir, field, value, message):
  config = _fewshot_config(digits_data_dir)
  config.evals.fs[field] = value
  model, params = _model_and_params()
  with pytest.raises(ValueError, match=message):
    _evaluators(config, model, params, (1, 1, 1))


def test_missing_dataset_and_split_name_the_evaluator(digits_data_dir, tmp_path):
  config = _fewshot_config(digits_data_dir)
  config.evals.fs.datasets.digits.test_split = 'valid'
  model, params = _model_and_params()
  with pytest.raises(ValueError, match=r"config.evals.fs.datasets.digits: Split 'valid' not "
                                       r"found; available splits: \['test', 'train'\]"):
    _evaluators(config, model, params, (1, 1, 1))
  config = tiny_recipe.get_config(None)
  del config.evals['eval']
  data = common.data_source('imagenet_v2', 'test')
  data.data_dir = str(tmp_path)
  config.evals.v2 = common.classification_eval(data, PP)
  with pytest.raises(ValueError, match="config.evals.v2.data: tfds dataset 'imagenet_v2' is not "
                                       'prepared'):
    _evaluators(config, model, params, (1, 1, 1))


def test_an_evaluator_without_a_batch_size_takes_eval_batch_size_then_batch_size(
    digits_data_dir):
  config = tiny_recipe.get_config(digits_data_dir)
  model, params = _model_and_params()
  config.eval_batch_size = None
  assert config.evals.eval.batch_size is None
  built, _ = _evaluators(config, model, params, (1, 1, 1))
  assert built[0].batch_size == config.batch_size == 32
  config.eval_batch_size = 16
  built, _ = _evaluators(config, model, params, (1, 1, 1))
  assert built[0].batch_size == 16


def test_paper_report_lists_what_ran_beside_the_paper_and_what_is_missing(digits_data_dir,
                                                                          tmp_path):
  """configs/paper_evals.py with ImageNet top-1 and the ImageNet probe pointed at digits (the
  only data here); the other datasets are absent and listed; VTAB groups come from vtab.json."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  spec = importlib.util.spec_from_file_location('paper_evals',
                                                os.path.join(root, 'configs', 'paper_evals.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  empty = str(tmp_path / 'no_data')
  for entry in config.evals.values():
    for data in ([entry.data] if 'data' in entry else list(entry.datasets.values())):
      data.data_dir = empty
  assert config.image_size is None  # each checkpoint at its own resolution (16 px here)
  config.num_classes, config.batch_size = 10, 32
  config.evals.val.data.update(name='digits', split='test[:60]', image_size=16,
                               data_dir=digits_data_dir)
  assert config.evals.val.pp == module.IMAGENET_PP  # resize({image_size}): the whole image
  config.evals.fewshot_imagenet.datasets.imagenet.update(
      name='digits', train_split='train[:200]', test_split='test[:60]', image_size=16,
      data_dir=digits_data_dir)
  config.evals.fewshot_imagenet.update(pp=PP, shots=(1, 3), holdout_per_class=2)
  model, params = _model_and_params()
  npz = str(tmp_path / 'model.npz')
  checkpoint.save(params, npz)
  result = evaluators.evaluate_checkpoint(options.read_evals(config), npz, skip_missing=True)
  missing, protocol = result.pop('missing'), result.pop('protocol')
  assert protocol['image_size'] == 16 and protocol['averaged'] is None  # a file: as released
  assert protocol['pp']['val'] == 'decode|resize(16)|value_range(-1, 1)|onehot|keep("image", "labels")'
  assert sorted(missing) == ['fewshot_cifar100', 'fewshot_flowers', 'fewshot_pets', 'real', 'v2']
  assert 'tfds build cifar100' in missing['fewshot_cifar100']
  workdir = str(tmp_path / 'report')
  os.makedirs(workdir)
  with open(os.path.join(workdir, 'vtab.json'), 'w', encoding='utf-8') as f:
    json.dump({'groups': {'natural': 0.5, 'specialized': 0.75, 'structured': 0.25},
               'mean': 0.45, 'complete': False}, f)
  path = paper_report.write(workdir, npz, result, missing, 'ViT-L/16 (I21k)', protocol)
  text = open(path, encoding='utf-8').read()
  ours = f'{100 * result["val/accuracy"]:.2f}'
  assert (f'| ImageNet top-1 | {ours} | `{protocol["pp"]["val"]}` | not comparable: measured at '
          '16 px, the paper at 512 px |') in text  # never 85.30 beside a 16-px number
  assert 'Measured at 16 px; averaged (EMA/Polyak) weights: as released.' in text
  assert (f'| imagenet 3-shot linear probe | '
          f'{100 * result["fewshot_imagenet/imagenet_3shot"]:.2f} | `') in text
  assert '| VTAB-1k specialized | 75.00 | - | - |' in text
  assert '| VTAB-1k mean (not all 19 tasks) | 45.00 | - | 72.72 |' in text
  # Measured as Table 2 was (512 px, the whole image resized): the paper's number beside it,
  # unless the weights are known not to be averaged, or the image was cropped.
  as_paper = {'image_size': 512, 'averaged': None,
              'pp': {'val': 'decode|resize(512)|value_range(-1, 1)|onehot|keep("image", "labels")'}}
  text = open(paper_report.write(workdir, npz, result, missing, 'ViT-L/16 (I21k)', as_paper),
              encoding='utf-8').read()
  assert f'| ImageNet top-1 | {ours} | `{as_paper["pp"]["val"]}` | 85.30 |' in text
  text = open(paper_report.write(workdir, npz, result, missing, 'ViT-L/16 (I21k)',
                                 {**as_paper, 'averaged': False}), encoding='utf-8').read()
  assert 'not comparable: weights not averaged (the paper: Polyak averaging, 0.9999)' in text
  cropped = {**as_paper, 'pp': {'val': 'decode|resize_small(585)|central_crop(512)|'
                                       'value_range(-1, 1)'}}
  text = open(paper_report.write(workdir, npz, result, missing, 'ViT-L/16 (I21k)', cropped),
              encoding='utf-8').read()
  assert 'not comparable: preprocessing' in text and '85.30' not in text
  assert '- fewshot_pets: ' in text and 'tfds build oxford_iiit_pet' in text
  saved = json.load(open(os.path.join(workdir, 'report.json'), encoding='utf-8'))
  assert saved['results']['val/accuracy'] == result['val/accuracy']
  with pytest.raises(ValueError, match=r"config.paper_model: expected one of \["):
    paper_report.write(workdir, npz, result, missing, 'ViT-Q/16')
