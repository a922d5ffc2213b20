"""Train/eval steps: the same numbers under every sharding preset and the explicit DP variant."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax import models
from vit_jax.evaluators import eval_step as eval_step_lib
from vit_jax.parallel import mesh as mesh_lib
from vit_jax.parallel import partitioning
from vit_jax.train import optimizer
from vit_jax.train import state as state_lib
from vit_jax.train import step as step_lib

from support import engine_setup


@pytest.fixture(scope='module')
def reference():
  return engine_setup.train((1, 1, 1), devices=jax.devices()[:1])


@pytest.mark.parametrize('sizes', [(8, 1, 1), (1, 8, 1), (2, 2, 2)])
def test_mesh_layouts_agree(reference, sizes):
  losses, params = engine_setup.train(sizes)
  ref_losses, ref_params = reference
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
  assert losses[-1] < losses[0] - 0.05  # it fits the batch
  engine_setup.assert_params_close(params, ref_params)


def test_explicit_data_parallel_step_agrees(reference):
  vit = engine_setup.model()
  mesh = mesh_lib.make_mesh((8, 1, 1))
  tx, schedule = optimizer.build(engine_setup.opt_config(), engine_setup.abstract_params(vit), 10)
  state, _ = state_lib.create(vit, tx, image_shape=engine_setup.IMAGE_SHAPE, seed=0, mesh=mesh,
                              preset='dp')
  factory = lambda **kw: step_lib.make_train_step(engine_setup.classifier(vit), tx, step_lib.StepOptions(schedule=schedule, **kw))  # pylint: disable=unnecessary-lambda-assignment
  step = engine_setup.data_parallel_step(factory, mesh)
  losses = []
  for batch in engine_setup.batches(4):
    state, metrics = step(state, jax.device_put(batch, mesh_lib.batch_sharding(mesh)))
    losses.append(float(metrics['loss']))
  np.testing.assert_allclose(losses, reference[0], rtol=1e-5)
  engine_setup.assert_params_close(state.params, reference[1])


def test_gradient_accumulation_equals_the_full_batch(reference):
  losses, params = engine_setup.train((8, 1, 1), micro_batches=2)
  np.testing.assert_allclose(losses, reference[0], rtol=1e-5)
  engine_setup.assert_params_close(params, reference[1])


def test_fsdp_holds_an_eighth_of_the_state_per_device():
  vit = engine_setup.model(hidden_size=64, transformer=dict(
      mlp_dim=128, num_heads=4, num_layers=2, dropout_rate=0.0, attention_dropout_rate=0.0))
  tx, _ = optimizer.build(engine_setup.opt_config(), engine_setup.abstract_params(vit), 10)
  per_device = {}
  for layout, sizes in (('dp', (8, 1, 1)), ('fsdp', (1, 8, 1))):
    state, _ = state_lib.create(vit, tx, image_shape=engine_setup.IMAGE_SHAPE, seed=0,
                                mesh=mesh_lib.make_mesh(sizes), preset=layout)
    leaves = jax.tree.leaves((state.params, state.opt_state))
    per_device[layout] = sum(x.addressable_shards[0].data.nbytes for x in leaves)
  ratio = per_device['fsdp'] / per_device['dp']
  assert 0.12 <= ratio < 0.16, ratio  # 1/8 plus the small replicated leaves (biases of heads)


def test_giant_model_initialises_directly_into_shards():
  """ViT-G/14 (1.8B parameters) on 8 devices: compiled init whose outputs are 1/8 slices."""
  vit = models.get_model('ViT-G_14', num_classes=1000, scan=True)
  mesh = mesh_lib.make_mesh((1, 8, 1))
  image = jnp.zeros((1, 224, 224, 3))
  init = lambda rng: vit.init(rng, image, train=False)['params']  # pylint: disable=unnecessary-lambda-assignment
  abstract = jax.eval_shape(init, jax.random.key(0))
  shardings = partitioning.param_shardings(abstract, mesh, 'fsdp')
  total = sum(x.size * 4 for x in jax.tree.leaves(abstract))
  per_device = sum(s.shard_shape(x.shape)[0] * np.prod(s.shard_shape(x.shape)[1:]) * 4
                   for x, s in zip(jax.tree.leaves(abstract), jax.tree.leaves(shardings)))
  assert total > 7e9 and per_device < total / 7.5
  compiled = jax.jit(init, out_shardings=shardings).lower(jax.random.key(0)).compile()
  assert compiled.memory_analysis().output_size_in_bytes < total / 7.5


def test_non_finite_step_leaves_the_state_unchanged():
  _, mesh, _, state, step = engine_setup.state_and_step((8, 1, 1), 'dp')
  step = engine_setup.under_rules(step, mesh, 'dp')
  before = jax.tree.map(np.asarray, state.params)
  batch = engine_setup.batches(1)[0]
  batch['image'][0, 0, 0, 0] = np.nan
  state, metrics = step(state, jax.device_put(batch, mesh_lib.batch_sharding(mesh)))
  assert float(metrics['finite']) == 0.0 and int(state.step) == 0
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, state.params), before)


def test_activation_constraints_reach_the_compiled_step():
  _, mesh, _, state, step = engine_setup.state_and_step((2, 2, 2), 'fsdp_tp')
  batch = jax.device_put(engine_setup.batches(1)[0], mesh_lib.batch_sharding(mesh))
  with partitioning.use(mesh, 'fsdp_tp'):
    text = step.lower(state, batch).as_text()
  assert '{"data", "fsdp"}, {}, {"tensor"}' in text  # the MLP hidden units over 'tensor'


def test_eval_step_masked_sums_are_exact():
  vit = engine_setup.model()
  mesh = mesh_lib.make_mesh((4, 2, 1))
  params = vit.init(jax.random.key(0), jnp.zeros((1, *engine_setup.IMAGE_SHAPE)),
                    train=False)['params']
  params = jax.tree.map(lambda x: x + 0.1, params)
  batch = engine_setup.batches(1)[0]
  batch['mask'] = np.array([1.0] * 11 + [0.0] * 5, np.float32)
  eval_step = eval_step_lib.jit_eval_step(
      eval_step_lib.make_eval_step(vit, mesh), mesh,
      jax.tree.map(lambda _: mesh_lib.replicated(mesh), params))
  sums = eval_step(params, jax.device_put(batch, mesh_lib.batch_sharding(mesh)))
  logits = np.asarray(vit.apply({'params': params}, batch['image'], train=False))
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  losses = -(batch['labels'] * log_probs).sum(-1)
  correct = (logits.argmax(-1) == batch['labels'].argmax(-1))
  assert float(sums['count']) == 11
  np.testing.assert_allclose(float(sums['loss_sum']), losses[:11].sum(), rtol=1e-5)
  assert float(sums['correct']) == correct[:11].sum()


def test_ema_tracks_the_parameters():
  _, mesh, _, state, step = engine_setup.state_and_step((8, 1, 1), 'dp', ema_decay=0.9)
  step = engine_setup.under_rules(step, mesh, 'dp')
  start = jax.tree.map(np.asarray, state.params)
  for batch in engine_setup.batches(2):
    state, _ = step(state, jax.device_put(batch, mesh_lib.batch_sharding(mesh)))
  # Two steps from p0: ema = 0.9 (0.9 p0 + 0.1 p1) + 0.1 p2; with lr 0 at step 0, p1 = p0.
  expected = jax.tree.map(lambda p0, p2: 0.9 * p0 + 0.1 * p2, start,
                          jax.tree.map(np.asarray, state.params))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               jax.tree.map(np.asarray, state.ema_params), expected)
