"""`python -m vit_jax.convert`: a transformers directory in, an .npz out, what was read printed,
and the source library's output compared on a photograph."""

import os
import sys

import numpy as np
import torch
import transformers

from vit_jax import checkpoint
from vit_jax import convert
from vit_jax.weights import trained_model

from support import in_process

COMMON = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
              image_size=64, patch_size=16, num_labels=3)


def _saved(tmp_path):
  model = transformers.Dinov2ForImageClassification(transformers.Dinov2Config(**COMMON))
  generator = torch.Generator().manual_seed(0)
  with torch.no_grad():
    for param in model.parameters():
      param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
  model.eval().save_pretrained(tmp_path / 'src')
  transformers.BitImageProcessor(size={'shortest_edge': 72}, crop_size=64).save_pretrained(
      tmp_path / 'src')
  return str(tmp_path / 'src')


def test_convert_checks_against_the_source_library(tmp_path):
  source = _saved(tmp_path)
  report = convert.convert(source, str(tmp_path / 'out.npz'))
  assert report['check']['library'].startswith('transformers Dinov2ForImageClassification.logits')
  assert report['check']['max_abs_difference'] <= 1e-4 * report['check']['max_abs_output']
  assert report['pp'].startswith("resize_small(72, method='bicubic', floor=True)|central_crop")
  assert any(line.startswith("config.json: model_type='dinov2'") for line in report['read'])
  written = checkpoint.load(str(tmp_path / 'out.npz'))
  loaded = trained_model.load(source)
  np.testing.assert_array_equal(written['head']['kernel'], loaded.params['head']['kernel'])


def test_convert_command_prints_what_it_read(tmp_path):
  source = _saved(tmp_path)
  result = in_process.run(
      [sys.executable, '-m', 'vit_jax.convert', f'--checkpoint={source}',
       f'--out={tmp_path / "cli.npz"}'])
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert lines[0].startswith('architecture: width 32, depth 2, heads 4')
  assert 'classifier token_gap' in lines[0]
  assert any(line.startswith('input transform: resize_small(72') for line in lines)
  assert any(line.startswith('check against transformers') for line in lines)
  assert os.path.isfile(tmp_path / 'cli.npz')
  missing = in_process.run(
      [sys.executable, '-m', 'vit_jax.convert', f'--checkpoint={tmp_path / "nothing"}',
       f'--out={tmp_path / "x.npz"}'])
  assert missing.returncode == 2 and missing.stderr.count('\n') == 1, missing.stderr
