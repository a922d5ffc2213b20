"""Optimizer from config: schedules, decay mask, decoupled decay, groups, layer-wise decay."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vit_jax import models
from vit_jax.configs import common
from vit_jax.train import optimizer
from vit_jax.train import options


def _config(**overrides) -> options.Optimizer:
  """Plain SGD at a constant 0.1, no decay or clipping; `overrides` of config fields."""
  config = common.get_config()
  config.update(dict(optim=dict(name='sgd', momentum=0.0), grad_clip_norm=0.0,
                     lr=dict(base=0.1, warmup_steps=0, schedule='constant')))
  config.update(overrides)  # nested: optim={'name': 'adam'} keeps the other optim fields
  return options.read_optimizer(config)


def _params(layers=3, scan=False):
  model = models.VisionTransformer(
      num_classes=3, scan=scan, patches={'size': (4, 4)}, hidden_size=8,
      transformer=dict(mlp_dim=8, num_heads=2, num_layers=layers, dropout_rate=0.0,
                       attention_dropout_rate=0.0))
  return model.init(jax.random.key(0), jnp.ones((1, 8, 8, 3)), train=False)['params']


def _update(config, params, grads=None):
  tx, _ = optimizer.build(config, params, total_steps=100)
  grads = grads if grads is not None else jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  return updates


@pytest.mark.parametrize('kind,checks', [
    ('cosine', {0: 0.0, 10: 1.0, 55: 0.5, 100: 0.0}),
    ('linear', {0: 0.0, 5: 0.5, 10: 1.0, 55: 0.5, 100: 0.0}),
    ('rsqrt', {10: 1.0, 30: 1 / np.sqrt(1 + 20 / 10)}),
    ('constant', {10: 1.0, 99: 1.0}),
])
def test_schedules(kind, checks):
  schedule = optimizer.make_schedule(options.Schedule(
      base=1.0, kind=kind, warmup_steps=10, end=0.0, timescale=10.0), 100)
  for step, value in checks.items():
    np.testing.assert_allclose(float(schedule(step)), value, atol=1e-6, err_msg=f'step {step}')


def test_bad_schedule_fields():
  with pytest.raises(ValueError, match="config.lr.schedule='step'; expected one of cosine"):
    _config(lr={'schedule': 'step'})
  with pytest.raises(ValueError, match='warmup_steps=20 exceeds the 10'):
    optimizer.build(_config(lr={'warmup_steps': 20}), _params(), 10)
  with pytest.raises(ValueError, match="config.optim.name='lamb'; expected one of adam"):
    _config(optim={'name': 'lamb'})


def test_weight_decay_hits_kernels_only_and_both_conventions():
  params = jax.tree.map(lambda x: jnp.full_like(x, 2.0), _params())
  zero_grads = jax.tree.map(jnp.zeros_like, params)
  coupled = _update(_config(wd=0.1), params, zero_grads)
  np.testing.assert_allclose(coupled['head']['kernel'], -0.1 * 0.1 * 2.0, rtol=1e-6)  # lr*wd*p
  np.testing.assert_array_equal(coupled['head']['bias'], 0.0)
  np.testing.assert_array_equal(coupled['Transformer']['encoder_norm']['scale'], 0.0)
  decoupled = _update(_config(wd=0.1, wd_style='schedule_scaled'), params, zero_grads)
  np.testing.assert_allclose(decoupled['head']['kernel'], -0.1 * 2.0, rtol=1e-6)  # wd*p


def test_lr_multipliers_and_frozen_groups():
  params = _params()
  updates = _update(_config(lr_mults=((r'head/.*', 10.0),), frozen=(r'embedding/.*',)), params)
  np.testing.assert_allclose(updates['head']['kernel'], -1.0)  # lr 0.1 x 10
  np.testing.assert_array_equal(updates['embedding']['kernel'], 0.0)
  np.testing.assert_allclose(updates['cls'], -0.1)


def _array_bytes(tree) -> int:
  return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(tree)
             if hasattr(leaf, 'dtype') and leaf.ndim > 0)


def test_frozen_backbone_has_no_moments_and_stays_out_of_the_clip():
  """Adam + clipping with everything but the head frozen: the optimizer state holds moments for
  the head alone (two copies of its bytes), and the head's updates equal those of an optimizer
  built over the head alone, so the clip does not see the frozen gradients."""
  params = _params()
  config = _config(optim={'name': 'adam'}, grad_clip_norm=0.01, wd=0.1,
                   lr_mults=((r'head/bias', 2.0),), frozen=(r'^(?!head/).*',))
  tx, _ = optimizer.build(config, params, 10)
  state = tx.init(params)
  assert _array_bytes(state) == 2 * _array_bytes(params['head'])
  grads = jax.tree.map(lambda x: jnp.full_like(x, 3.0), params)
  updates, _ = tx.update(grads, state, params)
  alone_config = _config(optim={'name': 'adam'}, grad_clip_norm=0.01, wd=0.1,
                         lr_mults=((r'head/bias', 2.0),))
  head_only = {'head': params['head']}
  alone, _ = optimizer.build(alone_config, head_only, 10)
  expected, _ = alone.update({'head': grads['head']}, alone.init(head_only), head_only)
  for name in ('kernel', 'bias'):
    np.testing.assert_allclose(updates['head'][name], expected['head'][name], rtol=1e-6)
  assert all(float(jnp.abs(u).max()) == 0.0
             for u in jax.tree.leaves({k: v for k, v in updates.items() if k != 'head'}))
  with pytest.raises(ValueError, match='selects every parameter'):
    optimizer.build(_config(frozen=('.*',)), params, 10)


@pytest.mark.parametrize('scan', [False, True])
def test_layerwise_lr_decay(scan):
  params = _params(layers=3, scan=scan)
  updates = _update(_config(layerwise_lr_decay=0.5), params)
  encoder = updates['Transformer']
  block = lambda i: (encoder['encoderblock']['LayerNorm_0']['scale'][i] if scan  # pylint: disable=g-long-lambda
                     else encoder[f'encoderblock_{i}']['LayerNorm_0']['scale'])
  for layer, factor in ((0, 0.125), (1, 0.25), (2, 0.5)):
    np.testing.assert_allclose(block(layer), -0.1 * factor, rtol=1e-6)
  np.testing.assert_allclose(updates['embedding']['kernel'], -0.1 * 0.0625, rtol=1e-6)
  np.testing.assert_allclose(updates['head']['kernel'], -0.1, rtol=1e-6)


def test_adam_bf16_moment_and_clipping():
  params = _params()
  config = _config(optim={'name': 'adam', 'mu_dtype': 'bfloat16'}, grad_clip_norm=1.0)
  tx, _ = optimizer.build(config, params, 10)
  state = tx.init(params)
  adam_state = [s for s in jax.tree.leaves(state, is_leaf=lambda s: isinstance(
      s, optax.ScaleByAdamState)) if isinstance(s, optax.ScaleByAdamState)][0]
  assert jax.tree.leaves(adam_state.mu)[0].dtype == jnp.bfloat16
  grads = jax.tree.map(lambda x: jnp.full_like(x, 100.0), params)
  clip = optax.clip_by_global_norm(1.0)
  clipped, _ = clip.update(grads, clip.init(params))
  np.testing.assert_allclose(float(optax.tree.norm(clipped)), 1.0, rtol=1e-5)
