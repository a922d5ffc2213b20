"""ResNetV2 stem pieces: weight standardisation and the bottleneck unit's shapes."""

import jax
import jax.numpy as jnp
import numpy as np

from vit_jax.models import resnet


def test_weight_standardize_per_output_channel():
  kernel = np.random.default_rng(0).normal(3.0, 2.0, (3, 3, 4, 5))
  out = np.asarray(resnet.weight_standardize(kernel, axis=(0, 1, 2), eps=0.0))
  np.testing.assert_allclose(out.mean((0, 1, 2)), np.zeros(5), atol=1e-6)
  np.testing.assert_allclose(out.std((0, 1, 2)), np.ones(5), rtol=1e-6)


def test_std_conv_standardises_the_kernel_it_applies():
  conv = resnet.StdConv(features=2, kernel_size=(1, 1), use_bias=False)
  x = jnp.ones((1, 2, 2, 3))
  params = conv.init(jax.random.key(0), x)['params']
  scaled = {'kernel': params['kernel'] * 10 + 3}  # affine changes vanish after standardisation
  np.testing.assert_allclose(conv.apply({'params': scaled}, x), conv.apply({'params': params}, x),
                             rtol=1e-3, atol=1e-4)


def test_stem_downsamples_and_names_layers_as_released():
  class Stem(resnet.nn.Module):

    @resnet.nn.compact
    def __call__(self, x):
      return resnet.resnet_stem(x, num_layers=(1, 2), width_factor=1)

  x = jnp.ones((1, 64, 64, 3))
  variables = Stem().init(jax.random.key(0), x)
  stem_params = variables['params']
  assert set(stem_params) == {'conv_root', 'gn_root', 'block1', 'block2'}
  assert set(stem_params['block2']) == {'unit1', 'unit2'}
  assert 'conv_proj' in stem_params['block2']['unit1'] and 'conv_proj' not in stem_params[
      'block2']['unit2']
  assert Stem().apply(variables, x).shape == (1, 8, 8, 512)  # /4 root, /2 stage 2; 4 x 128
  np.testing.assert_array_equal(stem_params['block1']['unit1']['gn3']['scale'], np.zeros(256))
