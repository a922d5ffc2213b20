"""The paper's workflow end to end on the digits data, through the command lines a user types:
pretrain (in epochs, sigmoid loss, representation layer: the i21k recipe's shape) -> fine-tune
from that workdir with a new head at another resolution -> evaluate -> export -> visualise."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch

from vit_jax import checkpoint
from vit_jax import export
from vit_jax import trained_model
from vit_jax.data import sources

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMON = ['--config.model.transformer.num_layers=2',
          '--config.batch_size=64', '--config.log_every=10', '--config.checkpoint_every=40',
          '--config.eval_batch_size=64']


def _main(*args):
  result = subprocess.run([sys.executable, '-m', *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=400)
  assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
  return result.stdout


def _accuracy(stdout, prefix):
  line = [l for l in stdout.splitlines() if l.startswith(prefix)][-1]
  return float(line.split('eval/accuracy ')[1].split(',')[0]) if 'eval/accuracy' in line else \
      float(line.split('accuracy ')[1].split(',')[0])


@pytest.mark.slow
def test_pretrain_finetune_eval_export_viz(digits_data_dir, tmp_path):
  data = [f'--config.data.data_dir={digits_data_dir}',
          f'--config.eval_data.data_dir={digits_data_dir}']
  pretrain, finetune = str(tmp_path / 'pretrain'), str(tmp_path / 'finetune')
  # 1. Pretraining measured in epochs, sigmoid cross-entropy, a pre-logits layer, a negative
  #    head bias (-10 in the i21k recipe; log(1/9) suits 10 classes and a short run).
  out = _main('vit_jax.main', '--config=configs/digits.py', f'--workdir={pretrain}', *COMMON,
              *data, '--config.total_steps=0', '--config.total_epochs=3',
              '--config.loss=sigmoid_xent', '--config.label_smoothing=0.0',
              '--config.model.representation_size=96', '--config.model.head_bias_init=-2.2',
              '--config.lr.schedule=linear', '--config.lr.warmup_steps=5')
  steps = int(out.split('Run completed at step ')[1].split('.')[0])
  num_train = sources.digits_source('train', image_size=16, data_dir=digits_data_dir).num_examples
  assert steps == -(-3 * num_train // 64)  # ceil(3 epochs x examples / batch)
  pretrained_accuracy = _accuracy(out, 'Run completed')
  assert pretrained_accuracy > 0.3, out[-2000:]

  # 2. Fine-tune from that workdir: a new zero head (softmax), no pre-logits, 24px (posemb
  #    resampled from a 4x4 to a 6x6 grid).
  out = _main('vit_jax.main', '--config=configs/digits.py', f'--workdir={finetune}', *COMMON,
              *data, f'--config.init_from={pretrain}', '--config.total_steps=40',
              '--config.image_size=24', '--config.data.image_size=16',
              '--config.pp_train=decode|resize(24)|value_range(-1, 1)|onehot|keep("image", "labels")',
              '--config.pp_eval=decode|resize(24)|value_range(-1, 1)|onehot|keep("image", "labels")',
              '--config.lr.warmup_steps=5', '--config.lr.base=0.001')
  tuned_accuracy = _accuracy(out, 'Run completed')
  assert tuned_accuracy > 0.5, out[-2000:]
  tuned = trained_model.load(finetune)
  pre = trained_model.load(pretrain)
  assert tuned.image_size == 24 and 'pre_logits' not in tuned.params
  assert tuned.params['Transformer']['posembed_input']['pos_embedding'].shape == (1, 37, 96)
  assert pre.params['pre_logits']['kernel'].shape == (96, 96)

  # 3. Evaluate the workdir: the same accuracy as the run's own final evaluation.
  out = _main('vit_jax.main', '--mode=eval', '--config=configs/digits.py', *data,
              f'--checkpoint={finetune}', '--config.image_size=24',
              '--config.pp_eval=decode|resize(24)|value_range(-1, 1)|onehot|keep("image", "labels")')
  assert _accuracy(out, finetune) == pytest.approx(tuned_accuracy, abs=1e-4)

  # 4. Export: npz exactly, Hugging Face to the same logits.
  npz, hf = str(tmp_path / 'tuned.npz'), str(tmp_path / 'hf')
  export.export(finetune, 'npz', npz)  # the function behind the command line used below
  jax.tree.map(np.testing.assert_array_equal, checkpoint.load(npz), tuned.params)
  _main('vit_jax.export', f'--checkpoint={finetune}', '--format=hf', f'--out={hf}')
  from transformers import ViTForImageClassification  # pylint: disable=g-import-not-at-top
  hf_model = ViTForImageClassification.from_pretrained(hf).eval()
  pixels = np.random.default_rng(0).uniform(-1, 1, (3, 24, 24, 3)).astype(np.float32)
  with torch.no_grad():
    theirs = hf_model(pixel_values=torch.from_numpy(pixels.transpose(0, 3, 1, 2))).logits.numpy()
  ours = np.asarray(tuned.model.apply({'params': tuned.params}, pixels, train=False))
  np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-5)

  # 5. Visualise the pretraining run: rollout maps on its 4x4 grid, every figure written.
  from PIL import Image  # pylint: disable=g-import-not-at-top
  photo = str(tmp_path / 'digit.png')
  Image.fromarray((np.random.default_rng(1).uniform(0, 255, (16, 16, 3))).astype(np.uint8)).save(
      photo)
  out = _main('vit_jax.viz', f'--checkpoint={pretrain}', f'--image={photo}',
              f'--out={tmp_path / "viz"}')
  rollout = np.load(tmp_path / 'viz' / 'digit_rollout.npy')
  assert rollout.shape == (4, 4) and np.all(rollout >= 0) and rollout.sum() > 0
  for name in ('attention_distance.png', 'posemb_similarity.png', 'embedding_filters.png'):
    assert os.path.getsize(tmp_path / 'viz' / name) > 1000
  assert json.load(open(os.path.join(finetune, 'config.json')))['init_from'] == pretrain
