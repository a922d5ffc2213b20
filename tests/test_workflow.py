"""The paper's workflow end to end on the digits data: pretrain (in epochs, sigmoid loss,
representation layer: the i21k recipe's shape) -> fine-tune from that workdir with a new head at
another resolution -> evaluate -> export -> visualise. The functions behind the command lines are
called in-process (the command lines' own parsing and errors are tested in test_cli.py)."""

import importlib.util
import json
import os

import jax
import numpy as np
from PIL import Image
import pytest
import torch

from vit_jax import checkpoint
from vit_jax import evaluators
from vit_jax import export
from vit_jax.data import sources
from vit_jax.parallel import mesh as mesh_lib
from vit_jax.parallel import partitioning
from vit_jax.train import loop
from vit_jax.train import options as options_lib
from vit_jax.viz import report
from vit_jax.weights import trained_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PP_24 = 'decode|resize(24)|value_range(-1, 1)|onehot|keep("image", "labels")'


def _digits_recipe(data_dir):
  spec = importlib.util.spec_from_file_location('digits', os.path.join(ROOT, 'configs', 'digits.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.model.transformer.num_layers = 2
  config.batch_size = config.evals.eval.batch_size = config.evals.fewshot.batch_size = 64
  config.log_every, config.checkpoint_every = 10, 40
  config.evals.eval.every = config.evals.fewshot.every = 0  # at the end only
  config.data.data_dir = config.evals.eval.data.data_dir = data_dir
  config.evals.fewshot.datasets.digits.data_dir = data_dir
  return config


@pytest.mark.slow
def test_pretrain_finetune_eval_export_viz(digits_data_dir, tmp_path):
  pretrain, finetune = str(tmp_path / 'pretrain'), str(tmp_path / 'finetune')
  # 1. Pretraining measured in epochs, sigmoid cross-entropy, a pre-logits layer, a negative
  #    head bias (-10 in the i21k recipe; log(1/9) suits 10 classes and a short run).
  config = _digits_recipe(digits_data_dir)
  config.total_steps, config.total_epochs = 0, 3
  config.loss, config.label_smoothing = 'sigmoid_xent', 0.0
  config.model.representation_size, config.model.head_bias_init = 96, -2.2
  config.lr.schedule, config.lr.warmup_steps = 'linear', 5
  del config.evals['fewshot']  # probed after fine-tuning
  result = loop.train_and_evaluate(config, pretrain)
  num_train = sources.digits_source('train', image_size=16, data_dir=digits_data_dir).num_examples
  assert result['step'] == -(-3 * num_train // 64)  # ceil(3 epochs x examples / batch)
  assert result['eval/accuracy'] > 0.3, result
  # 2. Fine-tune from that workdir: a new zero head (softmax), no pre-logits, 24px (posemb
  #    resampled from a 4x4 to a 6x6 grid).
  config = _digits_recipe(digits_data_dir)
  config.init_from, config.total_steps, config.image_size = pretrain, 40, 24
  config.pp_train = config.evals.eval.pp = PP_24
  config.evals.fewshot.pp = 'decode|resize(24)|value_range(-1, 1)'
  config.lr.warmup_steps, config.lr.base = 5, 1e-3
  tuned_result = loop.train_and_evaluate(config, finetune)
  assert tuned_result['eval/accuracy'] > 0.5, tuned_result
  # The few-shot probe of the fine-tuned representation, against the same probe of a randomly
  # initialised model of the same shape: training made the features better.
  trained = trained_model.load(finetune)
  random_init = trained.model.init(jax.random.key(7), np.zeros((1, 24, 24, 3), np.float32),
                                   train=False)['params']
  mesh = mesh_lib.make_mesh((1, 1, 1), jax.devices()[:1])
  shardings = partitioning.param_shardings(random_init, mesh, config.sharding)
  probe = evaluators.build('fewshot', config.evals.fewshot.to_dict(), evaluators.base.Context(
      trained.model, mesh, shardings, 10, 64, config.image_size,
      config.dense.ignore_label), config.loss)
  with partitioning.use(mesh, config.sharding):
    untrained = probe.run(jax.device_put(random_init, shardings), step=0)
  # Seen with the published protocol (fixed L2 2^10, mean of seeds 0-2): 0.573 after this short
  # run, 0.509 at random init (random conv features already separate digits); the 1,500-step
  # main job reaches the README's figures.
  assert tuned_result['fewshot/digits_10shot'] > 0.53, tuned_result
  assert untrained['fewshot/digits_10shot'] < tuned_result['fewshot/digits_10shot'] - 0.04, (
      untrained, tuned_result)

  tuned, pre = trained_model.load(finetune), trained_model.load(pretrain)
  assert tuned.image_size == 24 and 'pre_logits' not in tuned.params
  assert tuned.params['Transformer']['posembed_input']['pos_embedding'].shape == (1, 37, 96)
  assert pre.params['pre_logits']['kernel'].shape == (96, 96)

  # 3. Evaluate the workdir (--mode=eval): the run's own final evaluation, to the last digit.
  evaluated = evaluators.evaluate_checkpoint(options_lib.read_evals(config), finetune)
  assert evaluated['eval/accuracy'] == pytest.approx(tuned_result['eval/accuracy'], abs=1e-9)

  # 4. Export: npz exactly, Hugging Face to the same logits.
  npz = export.export(finetune, 'npz', str(tmp_path / 'tuned.npz'))
  jax.tree.map(np.testing.assert_array_equal, checkpoint.load(npz), tuned.params)
  hf = export.export(finetune, 'hf', str(tmp_path / 'hf'))
  # PyTorch: imported only by the tests that build a reference.
  from transformers import ViTForImageClassification  # pylint: disable=g-import-not-at-top
  hf_model = ViTForImageClassification.from_pretrained(hf).eval()
  pixels = np.random.default_rng(0).uniform(-1, 1, (3, 24, 24, 3)).astype(np.float32)
  with torch.no_grad():
    theirs = hf_model(pixel_values=torch.from_numpy(pixels.transpose(0, 3, 1, 2))).logits.numpy()
  ours = np.asarray(tuned.model.apply({'params': tuned.params}, pixels, train=False))
  np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-5)

  # 5. Visualise the pretraining run: rollout maps on its 4x4 grid, every figure written.
  photo = str(tmp_path / 'digit.png')
  Image.fromarray(np.random.default_rng(1).uniform(0, 255, (16, 16, 3)).astype(np.uint8)).save(
      photo)
  written = report.run(pretrain, [photo], str(tmp_path / 'viz'))
  rollout = np.load(tmp_path / 'viz' / 'digit_rollout.npy')
  assert rollout.shape == (4, 4) and np.all(rollout >= 0) and rollout.sum() > 0
  for path in (written.distance_png, written.posemb_png, written.filters_png):
    assert os.path.getsize(path) > 1000
  assert json.load(open(os.path.join(finetune, 'config.json')))['init_from'] == pretrain
