"""VisionTransformer: official parameter counts, numerics against an independent reference,
scan/remat/dtype equivalences, stochastic depth and input validation."""

import math
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from support import randomize
from support import tiny_vit_config
from support import numpy_vit
from vit_jax import models
from vit_jax.configs import models as model_configs
from vit_jax.models import vit

# The official vit_jax counts (1000 classes, 224px).
OFFICIAL_PARAM_COUNTS = {
    'ViT-Ti_16': 5_717_416, 'ViT-S_16': 22_050_664, 'ViT-S_32': 22_878_952,
    'ViT-B_8': 86_576_872, 'ViT-B_16': 86_567_656, 'ViT-B_32': 88_224_232,
    'ViT-L_16': 304_326_632, 'ViT-L_32': 306_535_400, 'ViT-H_14': 632_045_800,
    'ViT-S_16-gap-norep': 22_049_896, 'ViT-B_16-gap-norep': 86_566_120,
    'ViT-S_32-gap-norep': 22_878_184, 'ViT-B_32-gap-norep': 88_222_696,
    'R+ViT-Ti_16': 6_337_704, 'R26+ViT-S_32': 36_431_912, 'R26+ViT-B_32': 101_383_976,
    'R50+ViT-B_16': 98_659_112, 'R50+ViT-L_32': 328_994_856,
    'testing': 21_390, 'testing-unpooled': 21_370,
}


def _param_shapes(model, image_size=224):
  images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)['params']


def _analytic_count(config, num_classes=1000, image_size=224):
  """Parameters of a plain ViT from its sizes alone (the paper's architecture, written out)."""
  d, t = config.hidden_size, config.transformer
  m, layers = t.mlp_dim, t.num_layers
  ph, pw = config.patches.size
  tokens = (image_size // ph) * (image_size // pw)
  count = ph * pw * 3 * d + d  # patch embedding
  block = 2 * 2 * d + 4 * (d * d + d) + (d * m + m) + (m * d + d)  # 2 LN, q/k/v/out, MLP
  count += layers * block + 2 * d  # encoder_norm
  if config.classifier == 'token':
    count += d + (tokens + 1) * d  # cls + posemb incl. its row
  else:
    count += tokens * d
  if config.classifier == 'map':
    count += d + 4 * (d * d + d) + 2 * d + (d * m + m) + (m * d + d)
  return count + d * num_classes + num_classes


@pytest.mark.parametrize('name', sorted(OFFICIAL_PARAM_COUNTS))
def test_param_counts_equal_official(name):
  model = models.get_model(name, num_classes=1000)
  assert models.count_params(_param_shapes(model)) == OFFICIAL_PARAM_COUNTS[name]


def test_every_variant_is_counted():
  hybrids = {n for n in model_configs.MODEL_CONFIGS if '+' in n}
  plain = set(model_configs.MODEL_CONFIGS) - hybrids - {'testing', 'testing-unpooled'}
  assert hybrids <= set(OFFICIAL_PARAM_COUNTS)
  for name in plain:  # includes So400m, g/14, G/14
    config = model_configs.get_config(name)
    model = models.VisionTransformer(num_classes=1000, **config)
    assert models.count_params(_param_shapes(model)) == _analytic_count(config), name


_tiny_config = tiny_vit_config


def _init(model, images, seed=0):
  params = model.init(jax.random.key(seed), images, train=False)['params']
  return randomize(params, seed)


@pytest.mark.parametrize('overrides', [
    {},
    {'classifier': 'gap'},
    {'classifier': 'map'},
    {'representation_size': 12},
    {'posemb': 'sincos2d'},
    {'posemb': 'sincos2d', 'classifier': 'gap'},
    {'gelu_approximate': False},
], ids=str)
def test_logits_match_independent_reference(overrides):
  config = _tiny_config(**overrides)
  model = models.VisionTransformer(num_classes=7, **config)
  images = np.random.default_rng(1).uniform(-1, 1, (3, 16, 12, 3)).astype(np.float32)
  params = _init(model, images)
  logits = model.apply({'params': params}, images, train=False)
  expected = numpy_vit.forward(params, images, config.to_dict())
  assert logits.shape == (3, 7)
  np.testing.assert_allclose(logits, expected, rtol=2e-4, atol=2e-4)


def test_hybrid_logits_match_independent_reference():
  config = _tiny_config(patches={'size': (2, 2)}, resnet={'num_layers': (1, 1),
                                                         'width_factor': 1})
  model = models.VisionTransformer(num_classes=5, **config)
  images = np.random.default_rng(2).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
  params = _init(model, images)
  logits = model.apply({'params': params}, images, train=False)
  expected = numpy_vit.forward(params, images, config.to_dict())
  np.testing.assert_allclose(logits, expected, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize('classifier,tokens', [('unpooled', 12), ('token_unpooled', 13)])
def test_unpooled_returns_every_token(classifier, tokens):
  model = models.VisionTransformer(num_classes=7, **_tiny_config(classifier=classifier))
  images = jnp.ones((2, 16, 12, 3))
  params = _init(model, images)
  assert model.apply({'params': params}, images, train=False).shape == (2, tokens, 7)


def test_official_call_style_runs_unchanged():
  """`VisionTransformer(num_classes=..., **config)` with a locked official config."""
  model = models.VisionTransformer(num_classes=10, **model_configs.MODEL_CONFIGS['testing'])
  variables = model.init(jax.random.key(0), jnp.ones((2, 32, 32, 3)), train=False)
  assert set(variables['params']) == {'cls', 'embedding', 'head', 'Transformer'}
  out = model.apply(variables, jnp.ones((2, 32, 32, 3)), train=False)
  np.testing.assert_array_equal(out, np.zeros((2, 10)))  # zero-initialised head


def test_initialisers_follow_the_official_model():
  model = models.get_model('ViT-S_16', num_classes=10)
  params = model.init(jax.random.key(0), jnp.ones((1, 64, 64, 3)), train=False)['params']
  assert not np.any(params['cls']) and not np.any(params['head']['kernel'])
  posemb = np.asarray(params['Transformer']['posembed_input']['pos_embedding'])
  assert posemb.shape == (1, 17, 384) and abs(posemb.std() - 0.02) < 0.002
  dense = np.asarray(params['Transformer']['encoderblock_0']['MlpBlock_0']['Dense_0']['kernel'])
  limit = np.sqrt(6 / (384 + 1536))  # xavier uniform bound
  assert dense.max() <= limit and dense.max() > 0.95 * limit
  assert np.abs(params['Transformer']['encoderblock_0']['MlpBlock_0']['Dense_0']['bias']).max() < 1e-5
  biased = models.get_model('testing', num_classes=3, head_bias_init=-10.0)
  head = biased.init(jax.random.key(0), jnp.ones((1, 32, 32, 3)), train=False)['params']['head']
  np.testing.assert_array_equal(head['bias'], -10.0 * np.ones(3))


def test_scan_and_loop_agree_both_ways():
  images = np.random.default_rng(3).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
  loop = models.VisionTransformer(num_classes=5, **_tiny_config())
  scan = models.VisionTransformer(num_classes=5, scan=True, **_tiny_config())
  loop_params = _init(loop, images)
  scan_params = models.stack_encoder_blocks(loop_params)
  assert scan_params['Transformer']['encoderblock']['LayerNorm_0']['scale'].shape == (2, 16)
  # The stacked tree has exactly the structure the scanned model initialises.
  scan_init = scan.init(jax.random.key(0), images, train=False)['params']
  assert jax.tree.map(np.shape, scan_init) == jax.tree.map(np.shape, scan_params)
  out_loop = loop.apply({'params': loop_params}, images, train=False)
  out_scan = scan.apply({'params': scan_params}, images, train=False)
  np.testing.assert_allclose(out_scan, out_loop, rtol=1e-5, atol=1e-5)
  back = models.unstack_encoder_blocks(scan_params)
  jax.tree.map(np.testing.assert_array_equal, back, loop_params)


@pytest.mark.parametrize('scan', [False, True])
def test_remat_changes_memory_not_results(scan):
  config = _tiny_config(hidden_size=64, transformer=dict(
      mlp_dim=256, num_heads=4, num_layers=4, dropout_rate=0.0, attention_dropout_rate=0.0))
  images = np.random.default_rng(4).uniform(-1, 1, (8, 32, 32, 3)).astype(np.float32)
  labels = jax.nn.one_hot(np.arange(8) % 5, 5)

  def grads_and_memory(remat):
    model = models.VisionTransformer(num_classes=5, scan=scan, remat=remat, **config)
    params = _init(model, images)
    loss = lambda p: -jnp.mean(jnp.sum(  # pylint: disable=g-long-lambda
        labels * jax.nn.log_softmax(model.apply({'params': p}, images, train=False)), -1))
    step = jax.jit(jax.value_and_grad(loss))
    lowered = step.lower(params)
    barriers = lowered.as_text().count('optimization_barrier')
    return step(params), lowered.compile().memory_analysis().temp_size_in_bytes, barriers

  (loss_plain, grads_plain), memory_plain, barriers_plain = grads_and_memory('none')
  (loss_remat, grads_remat), memory_remat, barriers_remat = grads_and_memory('full')
  np.testing.assert_allclose(loss_remat, loss_plain, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               grads_remat, grads_plain)
  if scan:
    # Scanned layers keep only each layer's input for the backward pass.
    assert memory_remat < 0.5 * memory_plain, (memory_remat, memory_plain)
  else:
    # XLA:CPU reports the same temp size for unrolled layers either way; check that the
    # recomputation is fenced off from CSE (one barrier per block) instead.
    assert (barriers_plain, barriers_remat) == (0, config.transformer.num_layers)


def test_bfloat16_compute_keeps_float32_params_and_logits():
  images = np.random.default_rng(5).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
  f32 = models.VisionTransformer(num_classes=5, **_tiny_config())
  bf16 = models.VisionTransformer(num_classes=5, dtype=jnp.bfloat16, **_tiny_config())
  init = bf16.init(jax.random.key(0), images, train=False)['params']
  assert {leaf.dtype for leaf in jax.tree.leaves(init)} == {jnp.dtype('float32')}
  params = _init(f32, images)
  out16 = bf16.apply({'params': params}, images, train=False)
  out32 = f32.apply({'params': params}, images, train=False)
  assert out16.dtype == jnp.float32
  np.testing.assert_allclose(out16, out32, rtol=0.1, atol=0.15)
  assert not np.allclose(out16, out32, rtol=1e-6, atol=1e-6)  # it really ran in bf16


def test_dropout_and_stochastic_depth_only_in_training():
  config = _tiny_config(transformer=dict(mlp_dim=24, num_heads=4, num_layers=2,
                                         dropout_rate=0.1, attention_dropout_rate=0.1))
  for scan in (False, True):
    model = models.VisionTransformer(num_classes=5, stochastic_depth=0.3, scan=scan, **config)
    images = jnp.ones((4, 16, 16, 3))
    params = _init(model, images)
    apply = jax.jit(model.apply, static_argnames='train')
    run = lambda train, seed: apply(  # pylint: disable=g-long-lambda
        {'params': params}, images, train=train, rngs={'dropout': jax.random.key(seed)})
    np.testing.assert_array_equal(run(False, 0), run(False, 1))
    assert not np.allclose(run(True, 0), run(True, 1))
    np.testing.assert_array_equal(run(True, 2), run(True, 2))


def test_drop_path_drops_whole_examples_and_rescales():
  y = jnp.ones((4000, 3, 2))
  keys = iter(jax.random.split(jax.random.key(0), 1))
  out = np.asarray(vit.drop_path(y, 0.25, lambda _: next(keys)))
  per_example = out.reshape(4000, -1)
  assert np.all((per_example == 0).all(1) | (per_example == 1 / 0.75).all(1))
  assert abs((per_example[:, 0] == 0).mean() - 0.25) < 0.03
  np.testing.assert_array_equal(vit.drop_path(y, 0.0, None), y)


@pytest.mark.parametrize('overrides,image_shape,message', [
    ({}, (1, 18, 16, 3), 'not divisible by patches.size'),
    ({'classifier': 'cls'}, (1, 16, 16, 3), "classifier='cls'"),
    ({'posemb': 'rotary'}, (1, 16, 16, 3), "posemb='rotary'"),
    ({'remat': 'sometimes'}, (1, 16, 16, 3), "remat='sometimes'"),
    ({'hidden_size': 18}, (1, 16, 16, 3), 'not divisible by num_heads'),
    ({}, (16, 16, 3), '[batch, height, width, channels]'),
])
def test_bad_configuration_or_input_is_named(overrides, image_shape, message):
  model = models.VisionTransformer(num_classes=3, **_tiny_config(**overrides))
  with pytest.raises(ValueError, match=None) as error:
    model.init(jax.random.key(0), jnp.ones(image_shape), train=False)
  assert message in str(error.value)


# Parameter counts of the official vit_jax test suite (`models_test.py`, MODEL_SIZES), for the
# variants both have.
OFFICIAL_SIZES = {
    'R+ViT-Ti_16': 6_337_704, 'R26+ViT-B_32': 101_383_976, 'R26+ViT-S_32': 36_431_912,
    'R50+ViT-B_16': 98_659_112, 'R50+ViT-L_32': 328_994_856, 'ViT-B_8': 86_576_872,
    'ViT-B_16': 86_567_656, 'ViT-B_16-gap-norep': 86_566_120, 'ViT-B_32': 88_224_232,
    'ViT-B_32-gap-norep': 88_222_696, 'ViT-H_14': 632_045_800, 'ViT-L_16': 304_326_632,
    'ViT-L_32': 306_535_400, 'ViT-S_16': 22_050_664, 'ViT-S_16-gap-norep': 22_049_896,
    'ViT-S_32': 22_878_952, 'ViT-S_32-gap-norep': 22_878_184, 'ViT-Ti_16': 5_717_416,
    'testing': 21_390, 'testing-unpooled': 21_370,
}


@pytest.mark.parametrize('name,size', sorted(OFFICIAL_SIZES.items()))
def test_init_returns_parameters_only_with_the_official_counts(name, size):
  """As the official `test_can_instantiate`: every leaf of `init`'s variables counts, so sown
  activations (block outputs, representations) must not be there."""
  model = models.get_model(name, num_classes=1000)
  variables = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.ones((2, 224, 224, 3)), train=False))
  assert set(variables) == {'params'}
  assert sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(variables)) == size


BEIT_FIELDS = dict(posemb='none', rel_pos_bias=True, shared_rel_pos_bias=True, classifier='gap',
                   class_token=True, fc_norm=True)
# AIMv2 (RMSNorm, a patch norm, SwiGLU, a MAP head without MLP) with BEiT-3's inner norms.
AIMV2_FIELDS = dict(norm='rms', patch_norm=True, gated_mlp=True, activation='silu',
                    classifier='map', map_mlp=False, attn_inner_norm=True,
                    mlp_inner_norm=True)


@pytest.mark.parametrize('scan,remat,fields', [(True, 'dots', BEIT_FIELDS),
                                               (True, 'full', AIMV2_FIELDS)],
                         ids=['beit', 'aimv2'])
def test_new_families_compose_with_scan_remat_and_attention_routes(scan, remat, fields):
  """BEiT's tables (per block and shared), and AIMv2's and BEiT-3's norms: scanned,
  rematerialised and through XLA's fused attention, the logits and gradients equal the plain
  loop's with explicit attention."""
  images = np.random.default_rng(5).uniform(-1, 1, (2, 16, 24, 3)).astype(np.float32)
  plain = models.VisionTransformer(num_classes=5, attention_impl='explicit',
                                   **_tiny_config(**fields))
  other = models.VisionTransformer(num_classes=5, scan=scan, remat=remat, attention_impl='xla',
                                   **_tiny_config(**fields))
  params = _init(plain, images)
  block = params['Transformer']['encoderblock_0']
  if fields is BEIT_FIELDS:
    assert block['MultiHeadDotProductAttention_0']['relative_position_bias'].shape == (
        7 * 11 + 3, 4) and params['Transformer']['relative_position_bias'].shape == (7 * 11 + 3, 4)
  else:
    assert set(block['LayerNorm_0']) == {'scale'} and 'inner_norm' in block['MlpBlock_0']
    assert set(params['MAPHead_0']) == {'probe', 'MultiHeadDotProductAttention_0'}
  other_params = models.stack_encoder_blocks(params) if scan else params
  loss = lambda model, p: jnp.sum(model.apply({'params': p}, images, train=False) ** 2)  # pylint: disable=unnecessary-lambda-assignment
  value, grads = jax.value_and_grad(lambda p: loss(plain, p))(params)
  other_value, other_grads = jax.value_and_grad(lambda p: loss(other, p))(other_params)
  np.testing.assert_allclose(other_value, value, rtol=1e-5)
  if scan:
    other_grads = models.unstack_encoder_blocks(other_grads)
  # Relative to the largest gradient: some are zero in exact arithmetic (a key bias shifts every
  # logit of a query alike) and only rounding is left of them.
  scale = max(float(np.abs(g).max()) for g in jax.tree.leaves(grads))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * scale),
               other_grads, grads)
  if fields is BEIT_FIELDS:  # a table shifts attention: zeroed, the logits change
    flat = jax.tree_util.tree_map(np.asarray, params)
    flat['Transformer']['relative_position_bias'] = np.zeros_like(
        flat['Transformer']['relative_position_bias'])
    assert not np.allclose(loss(plain, flat), value)
