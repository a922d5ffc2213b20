"""Losses against direct NumPy formulas."""

import numpy as np

from vit_jax import losses


def _data():
  rng = np.random.default_rng(0)
  return rng.normal(size=(4, 6)).astype(np.float32), np.eye(6, dtype=np.float32)[[0, 2, 5, 1]]


def test_softmax_xent_with_and_without_smoothing():
  logits, labels = _data()
  log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  np.testing.assert_allclose(losses.softmax_xent(logits, labels), -(labels * log_p).sum(-1),
                             rtol=1e-5)
  smooth = labels * 0.9 + 0.1 / 6
  np.testing.assert_allclose(losses.softmax_xent(logits, labels, 0.1), -(smooth * log_p).sum(-1),
                             rtol=1e-5)


def test_sigmoid_xent():
  logits, labels = _data()
  p = 1 / (1 + np.exp(-logits))
  expected = -(labels * np.log(p) + (1 - labels) * np.log(1 - p)).sum(-1)
  np.testing.assert_allclose(losses.sigmoid_xent(logits, labels), expected, rtol=1e-5)


def test_correct_and_unknown_loss():
  logits, labels = _data()
  np.testing.assert_array_equal(losses.correct(logits, labels),
                                (logits.argmax(-1) == labels.argmax(-1)).astype(np.float32))
  try:
    losses.get_loss('hinge')
  except ValueError as e:
    assert "Unknown loss 'hinge'" in str(e)
  else:
    raise AssertionError('expected ValueError')
