"""Block outputs: equal to Hugging Face's hidden states, scan = loop, NHWC maps."""

import jax
import numpy as np
import pytest
import torch
import transformers

from support import tiny_vit_config
from vit_jax import models
from vit_jax.weights import trained_model
from vit_jax.models import intermediates
from vit_jax.models.vit import VisionTransformer


def _model_and_params(**overrides):
  model = VisionTransformer(num_classes=3, **tiny_vit_config(**overrides))
  images = np.random.default_rng(0).uniform(-1, 1, (2, 16, 24, 3)).astype(np.float32)
  params = model.init(jax.random.key(0), images, train=False)['params']
  return model, params, images


def test_block_outputs_equal_hugging_face_hidden_states(tmp_path):
  config = transformers.Dinov2WithRegistersConfig(
      hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
      image_size=32, patch_size=8, num_register_tokens=2)
  model = transformers.Dinov2WithRegistersModel(config).eval()
  model.save_pretrained(tmp_path)
  loaded = trained_model.load(str(tmp_path))
  images = np.random.default_rng(1).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
  with torch.no_grad():
    hidden = model(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()),
                   output_hidden_states=True).hidden_states
  _, blocks = intermediates.forward_intermediates(loaded.model, loaded.params, images, [0, -1])
  for ours, theirs in zip(blocks, (hidden[1], hidden[3])):  # hidden[0] is the embedding
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-4, atol=1e-4)
  _, maps = intermediates.forward_intermediates(loaded.model, loaded.params, images, [-1],
                                                output='nhwc')
  assert maps[0].shape == (2, 4, 4, 32)  # cls and the 2 registers dropped
  np.testing.assert_allclose(maps[0][:, 1, 2], hidden[3][:, 3 + 1 * 4 + 2].numpy(), rtol=1e-4,
                             atol=1e-4)


def test_scan_equals_loop_and_norm_matches_the_final_output():
  model, params, images = _model_and_params(classifier='token_unpooled')
  logits, blocks = intermediates.forward_intermediates(model, params, images)
  assert len(blocks) == 2 and blocks[0].shape == (2, 1 + 4 * 6, 16)
  scanned = VisionTransformer(num_classes=3, **tiny_vit_config(classifier='token_unpooled',
                                                               scan=True))
  _, scanned_blocks = intermediates.forward_intermediates(
      scanned, models.stack_encoder_blocks(params), images)
  for a, b in zip(blocks, scanned_blocks):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # The last block, normed, is what the (unpooled) head reads.
  _, normed = intermediates.forward_intermediates(model, params, images, [-1], norm=True)
  head = params['head']
  np.testing.assert_allclose(normed[0] @ head['kernel'] + head['bias'], logits, rtol=1e-4,
                             atol=1e-5)
  with pytest.raises(ValueError, match='out of range for 2 blocks'):
    intermediates.forward_intermediates(model, params, images, [5])
