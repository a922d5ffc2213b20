"""The runner: outputs, resume (SIGKILL / SIGTERM), fallback, resharding, fine-tuning, eval."""

import json
import os
import shutil

import jax
import numpy as np
from PIL import Image
import pytest

from vit_jax import checkpoint as npz_checkpoint
from vit_jax import evaluators
from vit_jax.configs import common
from vit_jax.data import sources
from vit_jax.train import checkpointer
from vit_jax.train import loop
from vit_jax.train import options as options_lib
from vit_jax.train import setup as setup_lib
from vit_jax.viz import run_figures
from vit_jax.weights import trained_model
from vit_jax.weights import workdir_params

import runs
import tiny_recipe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def finished(digits_data_dir, tmp_path_factory):
  """One complete tiny run, shared by the tests that only read it."""
  workdir = str(tmp_path_factory.mktemp('run'))
  result = loop.train_and_evaluate(_finished_config(digits_data_dir), workdir,
                                   figures=run_figures.write)
  return workdir, result


def _finished_config(data_dir):
  config = tiny_recipe.get_config(data_dir)
  # A second evaluator on its own schedule, beside the old-form `eval` (every 6).
  config.evals.probe = common.fewshot_eval(
      {'digits': common.fewshot_dataset('digits', 'train[:256]', 'test[:50]', image_size=16,
                                        data_dir=data_dir)},
      'decode|resize(16)|value_range(-1, 1)', every=4, shots=(1, 2), holdout_per_class=1)
  return config


def _restore(workdir, config):
  setup = setup_lib.from_config(config)
  return checkpointer.Checkpointer(workdir, async_save=False).restore(setup.abstract_state)


def _final_params(workdir, data_dir, total_steps=None):
  config = tiny_recipe.get_config(data_dir)
  config.total_steps = total_steps or config.total_steps
  step, state, data_state, _ = _restore(workdir, config)
  return step, jax.tree.map(np.asarray, jax.device_get(state.params)), data_state


def _rows(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    return [json.loads(line) for line in f]


def test_a_run_leaves_checkpoints_metrics_and_a_plot(finished):
  workdir, result = finished
  assert result['outcome'] == 'completed' and result['step'] == 12
  assert 0.0 <= result['eval/accuracy'] <= 1.0 and result['eval/examples'] == 50
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['12', '4', '8']
  rows = _rows(workdir)
  train_steps = [r['step'] for r in rows if 'train/loss' in r]
  assert train_steps == list(range(1, 13))
  assert {'train/accuracy', 'train/grad_norm', 'train/param_norm',
          'train/learning_rate'} <= set(rows[0])
  assert [r['step'] for r in rows if 'eval/accuracy' in r] == [6, 12]
  assert [r['step'] for r in rows if 'probe/digits_2shot' in r] == [4, 8, 12]
  assert 0.0 <= result['probe/digits_1shot'] <= 1.0
  assert 0.0 <= result['probe/digits_2shot-seed-2'] <= 1.0
  assert json.load(open(os.path.join(workdir, 'config.json')))['total_steps'] == 12
  assert any(f.startswith('events.out.tfevents') for f in
             os.listdir(os.path.join(workdir, 'tensorboard')))
  plot = np.asarray(Image.open(result['plot']).convert('L'))
  assert plot.shape[0] > 200 and plot.std() > 10  # drawn, not blank


def test_eval_mode_reproduces_the_final_eval(finished, digits_data_dir, tmp_path):
  workdir, result = finished
  config = tiny_recipe.get_config(digits_data_dir)
  evaluated = evaluators.evaluate_checkpoint(options_lib.read_evals(config), workdir)
  assert evaluated['eval/accuracy'] == pytest.approx(result['eval/accuracy'], abs=1e-9)
  _, params, _ = _final_params(workdir, digits_data_dir)
  npz_checkpoint.save(params, str(tmp_path / 'final.npz'))
  from_npz = evaluators.evaluate_checkpoint(options_lib.read_evals(config), str(tmp_path / 'final.npz'))
  assert from_npz['eval/accuracy'] == pytest.approx(result['eval/accuracy'], abs=1e-9)
  assert from_npz['eval/loss'] == pytest.approx(result['eval/loss'], rel=1e-5)


def test_newest_corrupt_checkpoint_falls_back(finished, digits_data_dir, tmp_path, caplog):
  workdir = str(tmp_path / 'copy')
  shutil.copytree(finished[0], workdir)
  for item in ('params', 'train_state'):
    for root, _, files in os.walk(os.path.join(workdir, 'checkpoints', '12', item)):
      for name in files:
        with open(os.path.join(root, name), 'r+b') as f:
          f.truncate(max(os.path.getsize(os.path.join(root, name)) // 3, 1))
  step, _, data_state = _final_params(workdir, digits_data_dir)
  assert step == 8 and data_state == {'global_position': 8 * 32}
  assert 'is damaged' in caplog.text and '/12' in caplog.text


def test_a_run_whose_checkpoints_all_fail_stops_and_changes_nothing(finished, digits_data_dir,
                                                                  tmp_path):
  """Every checkpoint damaged: the run refuses in one line naming each step and why, exits
  with a user error (never a fresh start from step 0), and leaves every file as it was;
  --overwrite then starts afresh on purpose."""
  workdir = str(tmp_path / 'copy')
  shutil.copytree(finished[0], workdir)
  steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, 'checkpoints')))
  for step in steps:
    runs.damage(workdir, step)
  before = runs.files(workdir)
  with pytest.raises(workdir_params.Unrestorable) as refused:
    loop.train_and_evaluate(_finished_config(digits_data_dir), workdir)
  message = str(refused.value)
  assert all(f'step {step}: ValueError: DATA_LOSS' in message for step in steps), message
  assert 'Nothing was changed' in message and '--overwrite' in message
  assert '\n' not in message
  assert runs.files(workdir) == before  # metrics.jsonl keeps every row
  result = loop.train_and_evaluate(_finished_config(digits_data_dir), workdir, overwrite=True)
  assert result['step'] == 12 and _rows(workdir)[0]['step'] == 1


def test_newest_damaged_resumes_exactly_from_the_previous_one(finished, digits_data_dir,
                                                             tmp_path):
  """Newest damaged: the run resumes from the step before, trims only the rows past it, writes
  the damaged step anew when it reaches it, and ends with the same parameters as the run that
  was never interrupted."""
  workdir = str(tmp_path / 'copy')
  shutil.copytree(finished[0], workdir)
  shutil.rmtree(os.path.join(workdir, 'checkpoints', '12'))  # the run as if killed before 12
  runs.damage(workdir, 8)
  rows_before = _rows(workdir)
  result = loop.train_and_evaluate(_finished_config(digits_data_dir), workdir)
  assert result['step'] == 12
  rows = _rows(workdir)
  assert [r for r in rows if r['step'] <= 4] == [r for r in rows_before if r['step'] <= 4]
  assert sorted({r['step'] for r in rows if 'train/loss' in r}) == list(range(1, 13))
  _, params, _ = _final_params(workdir, digits_data_dir)
  _, uninterrupted, _ = _final_params(finished[0], digits_data_dir)
  jax.tree.map(np.testing.assert_array_equal, params, uninterrupted)
  for item in ('params', 'train_state'):  # step 8 written anew, not left damaged
    with open(os.path.join(workdir, 'checkpoints', '8', item, 'manifest.ocdbt'), 'rb') as f:
      assert f.read() != b"cut short"


def test_a_transient_store_error_is_retried_and_resumes(finished, digits_data_dir, monkeypatch,
                                                       caplog):
  """UNAVAILABLE twice, then the store answers: retried after a pause, resumed at the newest."""
  calls = []
  original = checkpointer.Checkpointer._restore_step  # pylint: disable=protected-access

  def flaky(self, step, abstract_state):
    calls.append(step)
    if len(calls) <= 2:
      raise ValueError('UNAVAILABLE: the object store did not answer')
    return original(self, step, abstract_state)
  monkeypatch.setattr(checkpointer.Checkpointer, '_restore_step', flaky)
  config = tiny_recipe.get_config(digits_data_dir)
  setup = setup_lib.from_config(config)
  restored = checkpointer.Checkpointer(finished[0], async_save=False).restore(
      setup.abstract_state, delays_s=(0.0, 0.0, 0.0))
  assert restored.step == 12 and calls == [12, 12, 12]
  assert len([r for r in caplog.records if 'did not answer' in r.getMessage()]) == 2

  def down(self, step, abstract_state):
    del self, step, abstract_state
    raise ValueError('UNAVAILABLE: down')
  monkeypatch.setattr(checkpointer.Checkpointer, '_restore_step', down)
  with pytest.raises(ValueError, match='UNAVAILABLE'):  # never answers: the run fails
    checkpointer.Checkpointer(finished[0], async_save=False).restore(
        setup.abstract_state, delays_s=(0.0, 0.0))


def test_a_checkpoint_of_another_shape_is_refused_naming_the_parameter(finished,
                                                                       digits_data_dir):
  """A structure that no longer matches (a code or config change): refused at once, naming
  the parameter; no older checkpoint is tried, nothing is deleted."""
  config = tiny_recipe.get_config(digits_data_dir)
  config.model.transformer.mlp_dim = 48
  setup = setup_lib.from_config(config)
  with pytest.raises(workdir_params.Mismatch,
                     match=r'MlpBlock_0/Dense_0/kernel saved as \(16, 32\), the model has '
                           r'\(16, 48\)'):
    checkpointer.Checkpointer(finished[0], async_save=False).restore(setup.abstract_state)


def test_restore_onto_another_mesh_and_layout(finished, digits_data_dir):
  workdir, _ = finished
  _, params, _ = _final_params(workdir, digits_data_dir)
  config = tiny_recipe.get_config(digits_data_dir)
  config.mesh, config.sharding = (1, 8, 1), 'fsdp'
  step, state, _, _ = _restore(workdir, config)
  assert step == 12
  kernel = state.params['Transformer']['encoderblock_0']['MlpBlock_0']['Dense_0']['kernel']
  assert kernel.sharding.spec[0] == 'fsdp'
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, state.params), params)


def test_a_different_config_in_the_workdir_is_refused(finished, digits_data_dir):
  workdir, _ = finished
  config = _finished_config(digits_data_dir)
  config.lr.base = 1.0
  with pytest.raises(ValueError, match=r"different config \(fields: \['lr.base'\]\).*--overwrite"):
    loop.train_and_evaluate(config, workdir)


def test_fine_tuning_from_a_released_npz(finished, digits_data_dir, tmp_path):
  _, params, _ = _final_params(finished[0], digits_data_dir)
  npz_checkpoint.save(params, str(tmp_path / 'pre.npz'))
  config = tiny_recipe.get_config(digits_data_dir)
  config.num_classes, config.image_size = 4, 24
  config.pp_train = 'decode|resize(24)|value_range(-1, 1)|onehot|keep("image", "labels")'
  config.pp_device = ''  # all preprocessing on the host
  config.lr.base, config.lr.warmup_steps, config.wd = 0.0, 0, 0.0  # no update: see the init
  config.total_steps = 1
  del config.evals['eval']  # the parameters are the point here
  config.init_from = str(tmp_path / 'pre.npz')
  workdir = str(tmp_path / 'ft')
  loop.train_and_evaluate(config, workdir)
  _, state, _, _ = _restore(workdir, config)
  tuned = jax.tree.map(np.asarray, jax.device_get(state.params))
  np.testing.assert_array_equal(tuned['Transformer']['encoderblock_0']['MlpBlock_0']['Dense_0'][
      'kernel'], params['Transformer']['encoderblock_0']['MlpBlock_0']['Dense_0']['kernel'])
  assert tuned['head']['kernel'].shape == (16, 4) and not tuned['head']['kernel'].any()
  assert tuned['Transformer']['posembed_input']['pos_embedding'].shape == (1, 37, 16)


def test_non_finite_loss_stops_with_the_step(digits_data_dir, tmp_path):
  config = tiny_recipe.get_config(digits_data_dir)
  config.pp_train = ('decode|resize(16)|value_range(-1, 1, in_max=0)|onehot|'
                     'keep("image", "labels")')  # divides by zero: inf/nan pixels
  config.pp_device = ''  # all preprocessing on the host
  with pytest.raises(FloatingPointError, match='Non-finite loss or gradient at step 1 '):
    loop.train_and_evaluate(config, str(tmp_path / 'nan'))


@pytest.mark.parametrize('field,value,message', [
    ('model_name', 'ViT-Q_16', "Unknown model name 'ViT-Q_16'"),
    ('optim.name', 'lamb', "config.optim.name='lamb'; expected one of adam"),
    ('sharding', 'zero', "config.sharding='zero'; expected one of dp"),
    ('batch_size', 12, 'batch_size=12 must be a positive multiple of the device count'),
    ('image_size', 18, 'image_size=18 is not a positive multiple'),
    ('total_steps', -3, 'config.total_steps must be positive, found -3'),
])
def test_bad_configs_fail_at_startup(digits_data_dir, tmp_path, field, value, message):
  config = tiny_recipe.get_config(digits_data_dir)
  node = config
  *parents, leaf = field.split('.')
  for parent in parents:
    node = node[parent]
  node[leaf] = value
  with pytest.raises(ValueError, match=message):
    setup_lib.from_config(config)


def test_unknown_dataset_and_field(digits_data_dir, tmp_path):
  config = tiny_recipe.get_config(digits_data_dir)
  config.data.name = 'no_such_dataset'
  with pytest.raises(ValueError, match="Unknown tfds dataset 'no_such_dataset'"):
    sources.from_config(config.data)
  config = tiny_recipe.get_config(digits_data_dir)
  config.model.posembed = 'sincos2d'
  with pytest.raises(ValueError, match='Unknown field model.posembed; did you mean posemb'):
    setup_lib.from_config(config)
  config = tiny_recipe.get_config(digits_data_dir)
  config.label_smoothing = 0.1
  config.pp_train = 'decode|resize(16)|value_range(-1, 1)|onehot(smoothing=0.1)'
  config.pp_device = ''  # all preprocessing on the host
  with pytest.raises(ValueError, match='onehot has no smoothing'):
    loop.train_and_evaluate(config, str(tmp_path / 'twice'))
  assert not os.path.exists(tmp_path / 'twice' / 'checkpoints')


def test_epochs_need_only_the_split_size(digits_data_dir):
  config = tiny_recipe.get_config(digits_data_dir)
  config.total_steps, config.total_epochs = None, 2.5
  assert options_lib.read_length(config).steps(256) == 20  # ceil(2.5 * 256 / 32)
  assert setup_lib.from_config(config, num_train_examples=256).total_steps == 20
  with pytest.raises(ValueError, match='total_epochs needs the training split'):
    setup_lib.from_config(config)


# A run killed with SIGKILL and resumed ends bit-identical to an uninterrupted one: tested in
# test_object_store.py (on a GCS emulator, against a local run) and test_chaos.py (random signals).


def test_fine_tuning_from_one_of_our_workdirs_into_a_relative_one(finished, digits_data_dir,
                                                                  tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  _, params, _ = _final_params(finished[0], digits_data_dir)
  config = tiny_recipe.get_config(digits_data_dir)
  config.num_classes = 3
  config.pp_train = 'decode|resize(16)|value_range(-1, 1)|onehot|keep("image", "labels")'
  config.pp_device = ''  # all preprocessing on the host
  config.lr.base, config.lr.warmup_steps, config.wd, config.total_steps = 0.0, 0, 0.0, 1
  config.init_from = finished[0]
  config.dont_load = ('Transformer/encoder_norm/.*',)
  del config.evals['eval']  # the parameters are the point here
  workdir = 'relative/run'
  assert loop.train_and_evaluate(config, workdir)['outcome'] == 'completed'
  assert os.listdir(tmp_path / 'relative' / 'run' / 'checkpoints') == ['1']
  _, state, _, _ = _restore(workdir, config)
  tuned = jax.tree.map(np.asarray, jax.device_get(state.params))
  np.testing.assert_array_equal(tuned['embedding']['kernel'], params['embedding']['kernel'])
  assert tuned['head']['kernel'].shape == (16, 3) and not tuned['head']['kernel'].any()
  np.testing.assert_array_equal(tuned['Transformer']['encoder_norm']['scale'], np.ones(16))


def test_fine_tuning_a_frozen_backbone_keeps_it_and_resumes(finished, digits_data_dir, tmp_path):
  """init_from a finished run with everything but the head frozen: the backbone comes out as it
  went in, the head trains, the checkpointed optimizer state (moments for the head alone)
  restores on a second start."""
  source, _ = finished
  config = tiny_recipe.get_config(digits_data_dir)
  config.init_from, config.frozen = source, (r'^(?!head/).*',)
  config.total_steps, config.checkpoint_every, config.evals.eval.every = 4, 2, 0
  workdir = str(tmp_path / 'frozen')
  loop.train_and_evaluate(config, workdir)
  before, after = trained_model.load(source).params, trained_model.load(workdir).params
  for name in ('embedding', 'cls', 'Transformer'):
    jax.tree.map(np.testing.assert_array_equal, after[name], before[name])
  assert not np.allclose(after['head']['kernel'], before['head']['kernel'])
  result = loop.train_and_evaluate(config, workdir)  # restores the masked optimizer state
  assert result['step'] == 4
