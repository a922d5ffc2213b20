"""Test setup: 8 simulated CPU devices (set before JAX initialises) and shared fixtures."""

import os

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position


def randomize(params, seed: int = 0, scale: float = 0.5):
  """Replaces every leaf with normal noise, so zero-initialised heads and cls count in tests."""
  leaves, treedef = jax.tree_util.tree_flatten(params)
  rng = np.random.default_rng(seed)
  noisy = [(scale * rng.standard_normal(np.shape(x))).astype(np.float32) for x in leaves]
  return jax.tree_util.tree_unflatten(treedef, noisy)


@pytest.fixture
def rng():
  return np.random.default_rng(0)
