"""MAE's linear probe (configs/mae_linprobe.py): LARS against timm's own `Lars`, the probe's
frozen encoder and BatchNorm head, and the statistics measured before the first step."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from vit_jax.configs import common
from vit_jax.models import vit
from vit_jax.train import optimizer
from vit_jax.train import options
from vit_jax.train import probe
from vit_jax.weights import trained_model

from support import randomize
from support import timm_reference
from support import tiny_vit_config


def test_lars_equals_timms_lars_as_mae_uses_it():
  """MAE's util/lars.py is timm's `Lars` with its trust ratio on matrices only (always_adapt)
  and none on vectors, without decay; momentum 0.9, the rate following the schedule each step.
  Six steps of the same gradients: the same parameters."""
  timm_reference.import_timm()
  # PyTorch: imported only by the tests that build a reference.
  # behind the torchvision stand-in (tests/support/timm_reference.py).
  from timm.optim import Lars  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  params = {'head': {'kernel': rng.normal(size=(8, 5)).astype(np.float32) * 0.01,
                     'bias': rng.normal(size=(5,)).astype(np.float32)}}
  grads = [{'head': {'kernel': rng.normal(size=(8, 5)).astype(np.float32),
                     'bias': rng.normal(size=(5,)).astype(np.float32)}} for _ in range(6)]
  opt = options.optimizer_with(optim={'name': 'lars', 'momentum': 0.9},
                               lr={'base': 0.4, 'schedule': 'cosine', 'warmup_steps': 2,
                                   'end': 0.0}, wd=0.0, grad_clip_norm=0.0)
  tx, schedule = optimizer.build(opt, params, total_steps=6)
  ours, state = jax.tree.map(jnp.asarray, params), None
  state = tx.init(ours)
  for g in grads:
    updates, state = tx.update(jax.tree.map(jnp.asarray, g), state, ours)
    ours = jax.tree.map(lambda p, u: p + u, ours, updates)

  kernel = torch.nn.Parameter(torch.tensor(params['head']['kernel']))
  bias = torch.nn.Parameter(torch.tensor(params['head']['bias']))
  theirs = Lars([{'params': [kernel], 'always_adapt': True},
                 {'params': [bias], 'always_adapt': False}],
                lr=0.0, momentum=0.9, weight_decay=0.0, trust_coeff=0.001, eps=0.0)
  for step, g in enumerate(grads):
    for group in theirs.param_groups:
      group['lr'] = float(schedule(step))
    kernel.grad = torch.tensor(g['head']['kernel'])
    bias.grad = torch.tensor(g['head']['bias'])
    theirs.step()
  np.testing.assert_allclose(ours['head']['kernel'], kernel.detach().numpy(), rtol=1e-5,
                             atol=1e-7)
  np.testing.assert_allclose(ours['head']['bias'], bias.detach().numpy(), rtol=1e-5, atol=1e-7)
  assert not np.allclose(ours['head']['kernel'], params['head']['kernel'])  # it moved


def _probe_model(**fields):
  config = tiny_vit_config()
  config.transformer.update(dropout_rate=0.3, attention_dropout_rate=0.3)
  return vit.VisionTransformer(num_classes=3, linear_probe=True, stochastic_depth=0.3,
                               **config, **fields)


def test_the_probe_trains_its_head_on_batch_statistics_and_infers_with_the_stored_ones():
  model = _probe_model(head_init_std=0.01)
  images = jax.random.normal(jax.random.PRNGKey(1), (6, 16, 16, 3))
  params = randomize(model.init(jax.random.PRNGKey(0), images, train=False)['params'], seed=2)
  assert set(params['head_norm']) == {'mean', 'var'}
  params['head_norm']['var'] = np.abs(params['head_norm']['var']) + 0.5
  features = np.asarray(vit.representations(model, params, images)['pre_logits'], np.float64)
  kernel, bias = (np.asarray(params['head'][k], np.float64) for k in ('kernel', 'bias'))

  # Training: the batch's mean and (biased) variance; no dropout or drop path in the encoder.
  standardized = (features - features.mean(0)) / np.sqrt(features.var(0) + 1e-6)
  for seed in (0, 1):
    logits = model.apply({'params': params}, images, train=True,
                         rngs={'dropout': jax.random.PRNGKey(seed)})
    np.testing.assert_allclose(logits, standardized @ kernel + bias, rtol=1e-4, atol=1e-5)
  # Inference: the stored statistics.
  mean, var = params['head_norm']['mean'], params['head_norm']['var']
  expected = (features - mean) / np.sqrt(np.asarray(var, np.float64) + 1e-6) @ kernel + bias
  np.testing.assert_allclose(model.apply({'params': params}, images, train=False), expected,
                             rtol=1e-4, atol=1e-5)

  # Only the head learns: every other gradient is exactly zero.
  labels = jax.nn.one_hot(jnp.arange(6) % 3, 3)
  def loss(p):
    logits = model.apply({'params': p}, images, train=True,
                         rngs={'dropout': jax.random.PRNGKey(0)})
    return -jnp.mean(jnp.sum(labels * jax.nn.log_softmax(logits), -1))
  grads = jax.tree_util.tree_flatten_with_path(jax.grad(loss)(params))[0]
  trained = {jax.tree_util.keystr(path) for path, g in grads if np.any(np.asarray(g) != 0)}
  assert trained == {"['head']['kernel']", "['head']['bias']"}, trained


def test_a_probe_folds_into_a_plain_classifier_with_the_same_logits():
  """What exports, infer and init_from read of a probe's workdir: head_norm folded into the
  head, a plain ViT classifier giving the probe's inference logits."""
  model = _probe_model(head_init_std=0.01)
  images = jax.random.normal(jax.random.PRNGKey(1), (4, 16, 16, 3))
  params = randomize(model.init(jax.random.PRNGKey(0), images, train=False)['params'], seed=4)
  params['head_norm']['var'] = np.abs(params['head_norm']['var']) + 0.1
  folded, config = trained_model.fold_head_norm(
      params, ml_collections.ConfigDict({'linear_probe': True}))
  assert 'head_norm' not in folded and config.linear_probe is False
  np.testing.assert_allclose(model.clone(linear_probe=False).apply({'params': folded}, images,
                                                                   train=False),
                             model.apply({'params': params}, images, train=False),
                             rtol=1e-5, atol=1e-5)


def test_the_probe_freezes_everything_but_its_head():
  config = common.get_config()
  config.model.linear_probe = True
  config.num_classes, config.total_steps = 10, 100
  assert options.read(config).optimizer.frozen == (r'(?!head/).*',)


def test_the_statistics_are_the_features_moments_over_the_batches():
  model = _probe_model()
  batches = [{'image': jax.random.normal(jax.random.PRNGKey(i), (5, 16, 16, 3))}
             for i in range(3)]
  params = randomize(model.init(jax.random.PRNGKey(0), batches[0]['image'],
                                train=False)['params'], seed=3)
  features = np.concatenate([np.asarray(vit.representations(model, params, b['image'])
                                        ['pre_logits'], np.float64) for b in batches])
  filled = probe.with_statistics(model, params, iter(batches), 3)
  np.testing.assert_allclose(filled['head_norm']['mean'], features.mean(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(filled['head_norm']['var'], features.var(0), rtol=1e-4, atol=1e-6)
  assert features.var(0).mean() > 1e-3  # the check is not of constants
  with pytest.raises(StopIteration):
    probe.with_statistics(model, params, iter(batches), 4)
