"""Analytic FLOPs against the paper's figure and XLA's own count."""

import jax
import jax.numpy as jnp
import pytest

from vit_jax import flops
from vit_jax import models
from vit_jax.configs import models as model_configs


def test_b16_forward_is_about_17_6_gmacs():
  config = model_configs.get_config('ViT-B_16')
  assert flops.forward_flops(config, 224) / 2e9 == pytest.approx(17.56, abs=0.01)
  assert flops.train_flops(config, 224) == 3 * flops.forward_flops(config, 224)


@pytest.mark.parametrize('name,overrides', [('ViT-S_16', {}), ('R+ViT-Ti_16', {}),
                                            ('ViT-Ti_16', {'classifier': 'map'}),
                                            ('ViT-Ti_16', {'representation_size': 192}),
                                            ('R26+ViT-S_32', {})])
def test_analytic_count_matches_xla_cost_analysis(name, overrides):
  config = model_configs.get_config(name)
  config.update(overrides)
  model = models.VisionTransformer(num_classes=1000, **config)
  images = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3)),
                                             train=False))['params']
  compiled = jax.jit(lambda p, x: model.apply({'params': p}, x, train=False)).lower(
      params, images).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  # XLA also counts elementwise work (LayerNorm, GELU, softmax): a percent or two more.
  assert flops.forward_flops(config, 224) == pytest.approx(cost['flops'], rel=0.03)
  assert flops.forward_flops(config, 224) <= cost['flops']
