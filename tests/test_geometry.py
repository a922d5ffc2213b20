"""The model's geometry in one place: prefix tokens, patch stride and grid, the position table."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from vit_jax import models
from vit_jax.configs import models as model_configs
from vit_jax.models import geometry
from vit_jax.models import posemb


def test_prefix_tokens_stride_and_grid_of_variants():
  b16 = model_configs.get_config('ViT-B_16')
  assert geometry.num_prefix_tokens(b16) == 1 and geometry.patch_stride(b16) == (16, 16)
  assert geometry.patch_grid(b16, 384) == (24, 24)
  assert geometry.patch_grid(b16, (224, 320)) == (14, 20)
  assert geometry.num_tokens(b16, 224) == 197
  hybrid = model_configs.get_config('R50+ViT-B_16')
  assert geometry.patch_stride(hybrid) == (16, 16)  # 1x1 patches on a stride-16 stem
  gap = model_configs.get_config('ViT-S_16_gap_norep') if 'ViT-S_16_gap_norep' in \
      model_configs.MODEL_CONFIGS else ml_collections.ConfigDict(
          {'patches': {'size': (16, 16)}, 'classifier': 'gap'})
  assert geometry.num_prefix_tokens(gap) == 0


def test_image_size_check_names_the_effective_patch_size():
  config = ml_collections.ConfigDict({'patches': {'size': (16, 16)}})
  geometry.check_image_size(224, config)
  with pytest.raises(ValueError, match='image_size=200 is not a positive multiple of the '
                     'effective patch size 16'):
    geometry.check_image_size(200, config)
  hybrid = ml_collections.ConfigDict({'patches': {'size': (1, 1)},
                                      'resnet': {'num_layers': (3, 4, 9)}})
  with pytest.raises(ValueError, match='effective patch size 16 .*stride 16'):
    geometry.check_image_size(232, hybrid)


@pytest.mark.parametrize('posemb_kind', ['learn', 'sincos2d'])
def test_position_table_and_abstract_params_agree_with_the_model(posemb_kind):
  model = models.VisionTransformer(
      num_classes=3, patches={'size': (4, 4)}, hidden_size=16, posemb=posemb_kind,
      transformer=dict(mlp_dim=8, num_heads=2, num_layers=1))
  abstract = geometry.abstract_params(model, 16)
  params = model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)), train=False)['params']
  assert jax.tree.map(lambda x: x.shape, abstract) == jax.tree.map(lambda x: x.shape, params)
  config = ml_collections.ConfigDict(dict(patches={'size': (4, 4)}, hidden_size=16,
                                          classifier='token', posemb=posemb_kind))
  table, prefix = geometry.position_table(params, config, 16)
  if posemb_kind == 'learn':
    assert prefix == 1 and table.shape == (1, 17, 16)
    np.testing.assert_array_equal(table, params['Transformer']['posembed_input']['pos_embedding'])
    assert geometry.native_image_size(params, config) == 16
  else:
    assert prefix == 0
    np.testing.assert_array_equal(table, posemb.posemb_sincos_2d(4, 4, 16))
    assert geometry.native_image_size(params, config) is None
