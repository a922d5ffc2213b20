"""Our masked autoencoder against transformers' `ViTMAEForPreTraining`, the MAE reference in
PyTorch: its weights (decoder included), as its `save_pretrained` writes them, read into ours,
and ours written back as a file its `from_pretrained` loads with nothing missing or left over;
on the same images and the same masking noise the loss and the predicted pixels agree, with and
without `norm_pix_loss`, at two image sizes."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax import errors
from vit_jax.models import mae
from vit_jax.weights import foreign
from vit_jax.weights import hf_mae

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')


def _reference(image_size, norm_pix, seed=0):
  """A small ViTMAEForPreTraining with every learned parameter perturbed (its two fixed sincos
  tables stay: neither side learns them)."""
  config = transformers.ViTMAEConfig(
      image_size=image_size, patch_size=8, hidden_size=32, num_hidden_layers=2,
      num_attention_heads=4, intermediate_size=48, decoder_hidden_size=24,
      decoder_num_hidden_layers=2, decoder_num_attention_heads=3, decoder_intermediate_size=40,
      mask_ratio=0.75, norm_pix_loss=norm_pix, layer_norm_eps=1e-6)
  torch.manual_seed(seed)
  model = transformers.ViTMAEForPreTraining(config).eval()
  # transformers 5 leaves a model built from its config with zero position tables (its
  # initialize_weights returns early once the patch projection is flagged initialised): the
  # tables from its own code, as from_pretrained gives them.
  model.vit.embeddings.patch_embeddings.projection._is_hf_initialized = False
  model.vit.embeddings.initialize_weights()
  model.decoder.initialize_weights(model.vit.embeddings.patch_embeddings.num_patches)
  with torch.no_grad():
    for name, parameter in model.named_parameters():
      if not name.endswith(('position_embeddings', 'decoder_pos_embed')):
        parameter.add_(0.2 * torch.randn_like(parameter))
  return model, config.to_dict()


def _inputs(image_size, grid, seed=1):
  rng = np.random.default_rng(seed)
  images = rng.normal(size=(3, image_size, image_size, 3)).astype(np.float32)
  noise = rng.uniform(size=(3, grid * grid)).astype(np.float32)
  return images, noise


def _theirs(model, images, noise):
  with torch.no_grad():
    out = model(pixel_values=torch.tensor(images.transpose(0, 3, 1, 2)),
                noise=torch.tensor(noise))
  return float(out.loss), out.logits.numpy(), out.mask.numpy()


@pytest.mark.parametrize('image_size', [32, 48])
@pytest.mark.parametrize('norm_pix', [True, False])
def test_ours_gives_the_references_loss_and_pixels_on_its_weights(image_size, norm_pix,
                                                                 tmp_path):
  reference, config = _reference(image_size, norm_pix)
  assert np.abs(reference.state_dict()['vit.embeddings.position_embeddings'].numpy()).max() > 0.5
  reference.save_pretrained(tmp_path)
  state = foreign.read_state_dict(os.path.join(tmp_path, 'model.safetensors'))
  ours = hf_mae.model(config)
  params = hf_mae.to_params(state, config)
  images, noise = _inputs(image_size, image_size // 8)
  pred, mask = ours.apply({'params': params}, jnp.asarray(images), jnp.asarray(noise),
                          train=False)
  loss = float(mae.reconstruction_loss(pred, jnp.asarray(images), mask, 8, norm_pix))
  their_loss, their_pred, their_mask = _theirs(reference, images, noise)
  np.testing.assert_array_equal(mask, their_mask)
  np.testing.assert_allclose(pred, their_pred, rtol=1e-5, atol=1e-5)
  assert loss == pytest.approx(their_loss, rel=1e-5)
  assert their_loss > 0.1  # not a trivially zero comparison

  # Another noise, another mask: both sides follow it.
  _, other = _inputs(image_size, image_size // 8, seed=2)
  other_pred, other_mask = ours.apply({'params': params}, jnp.asarray(images),
                                      jnp.asarray(other), train=False)
  _, their_other, their_other_mask = _theirs(reference, images, other)
  np.testing.assert_array_equal(other_mask, their_other_mask)
  np.testing.assert_allclose(other_pred, their_other, rtol=1e-5, atol=1e-5)
  assert not np.array_equal(other_mask, mask)


def test_ours_written_back_loads_into_the_reference_and_agrees(tmp_path):
  """Our initialised (then perturbed) MAE as a file in the Hub's names ->
  ViTMAEForPreTraining.from_pretrained, nothing missing, unexpected or mismatched: its loss and
  pixels on our weights equal ours."""
  _, config = _reference(32, True, seed=3)
  ours = hf_mae.model(config)
  images, noise = _inputs(32, 4)
  params = ours.init(jax.random.PRNGKey(0), jnp.asarray(images), jnp.asarray(noise),
                     train=False)['params']
  rng = np.random.default_rng(4)
  params = jax.tree.map(lambda x: np.asarray(x) + 0.2 * rng.normal(size=x.shape).astype(
      np.float32), params)
  # PyTorch: imported only by the tests that build a reference.
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  save_file(hf_mae.state_dict(params, config), os.path.join(tmp_path, 'model.safetensors'))
  with open(os.path.join(tmp_path, 'config.json'), 'w', encoding='utf-8') as f:
    json.dump(config, f)
  reference, info = transformers.ViTMAEForPreTraining.from_pretrained(
      str(tmp_path), output_loading_info=True)
  reference.eval()
  assert not any(info[k] for k in ('missing_keys', 'unexpected_keys', 'mismatched_keys')), info
  pred, mask = ours.apply({'params': params}, jnp.asarray(images), jnp.asarray(noise),
                          train=False)
  loss = float(mae.reconstruction_loss(pred, jnp.asarray(images), mask, 8, True))
  their_loss, their_pred, _ = _theirs(reference, images, noise)
  np.testing.assert_allclose(pred, their_pred, rtol=1e-5, atol=1e-5)
  assert loss == pytest.approx(their_loss, rel=1e-5)


def test_a_learned_position_table_is_refused_in_one_line():
  reference, config = _reference(32, True)
  state = {k: v.numpy() for k, v in reference.state_dict().items()}
  state['decoder.decoder_pos_embed'] = state['decoder.decoder_pos_embed'] + 0.1
  with pytest.raises(errors.UserError, match=r'decoder.decoder_pos_embed is not the fixed '
                                             r'sincos table of a 4x4 grid'):
    hf_mae.to_params(state, config)
