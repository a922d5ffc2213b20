"""FlexiViT's PI-resize of the patch embedding, against a direct least-squares solution."""

import jax
import numpy as np
import pytest

from support import tiny_vit_config
from vit_jax import checkpoint
from vit_jax.models import patch_embed
from vit_jax.models.vit import VisionTransformer


def _kernel(size, seed=0):
  return np.random.default_rng(seed).normal(0, 1, (size, size, 3, 5)).astype(np.float32)


@pytest.mark.parametrize('old,new', [(4, 8), (4, 2), (4, 6)])
def test_equals_least_squares(old, new):
  kernel = _kernel(old)
  resize = patch_embed.resize_matrix((old, old), (new, new))  # [new^2, old^2]
  # A direct least-squares solution of B^T w' = w, one right-hand side per (channel, unit).
  direct = np.linalg.lstsq(resize.T, kernel.reshape(old * old, -1).astype(np.float64),
                           rcond=None)[0].reshape(new, new, 3, 5)
  np.testing.assert_allclose(patch_embed.resample_patch_embed(kernel, (new, new)), direct,
                             rtol=1e-5, atol=1e-5)


def test_upsampled_patches_give_the_same_tokens():
  """<resize(x), w'> = <x, w> for every patch x when the new patch is larger."""
  kernel = _kernel(4, 1)
  new = patch_embed.resample_patch_embed(kernel, (8, 8))
  patches = np.random.default_rng(2).normal(0, 1, (10, 4, 4, 3)).astype(np.float32)
  resized = np.asarray(jax.vmap(lambda p: jax.image.resize(p, (8, 8, 3), 'bilinear'))(patches))
  np.testing.assert_allclose(np.einsum('nhwc,hwcd->nd', resized, new),
                             np.einsum('nhwc,hwcd->nd', patches, kernel), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('patch', [2, 8])
def test_weights_of_one_patch_size_load_into_another(patch):
  source = VisionTransformer(num_classes=3, **tiny_vit_config())  # 4x4 patches
  params = source.init(jax.random.key(0), np.zeros((1, 16, 16, 3)), train=False)['params']
  target = VisionTransformer(num_classes=3, **tiny_vit_config(patches={'size': (patch, patch)}))
  init = target.init(jax.random.key(1), np.zeros((1, 16, 16, 3)), train=False)['params']
  loaded = checkpoint.adapt_params(params, init, reset_head=False)
  np.testing.assert_allclose(
      loaded['embedding']['kernel'],
      patch_embed.resample_patch_embed(params['embedding']['kernel'], (patch, patch)), rtol=1e-6)
  assert loaded['Transformer']['posembed_input']['pos_embedding'].shape == (
      1, 1 + (16 // patch) ** 2, 16)
  logits = target.apply({'params': loaded}, np.ones((1, 16, 16, 3)), train=False)
  assert np.all(np.isfinite(logits))
