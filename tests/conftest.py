"""Test setup: 8 simulated CPU devices (set before JAX initialises) and shared fixtures."""

import os
import shutil
import tempfile

# XLA's default optimisation: the suite compiles what users compile.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# TensorFlow (the input pipeline) imports Keras eagerly, 2 s of every process the tests start;
# asking for legacy Keras, which is not installed, skips that import. Nothing here uses Keras.
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
# One persistent compilation cache for the whole session: its workers (the docs commands run in
# them) and every process they start (runs, multi-host peers) compile the same tiny programs. A
# hit returns the executable XLA wrote for the same program, flags and version, so results are
# unchanged. The first process to load this file (xdist's controller) makes it, its workers
# inherit it, and it is removed at the end: every session starts with an empty cache.
MADE_CACHE = 'JAX_COMPILATION_CACHE_DIR' not in os.environ
if MADE_CACHE:
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='vit_jax_tests_jax_cache_')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '-1')

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.fixture
def rng():
  return np.random.default_rng(0)


@pytest.fixture(scope='session')
def digits_data_dir(tmp_path_factory):
  """A tfds data_dir holding the digits dataset at 32px, built once per test session."""
  from vit_jax.data import digits  # pylint: disable=g-import-not-at-top
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  digits.builder(32, data_dir=data_dir).download_and_prepare(file_format='array_record')
  return data_dir


# The longest files, longest first (seconds of one worker, measured with 3 workers on 2 cores):
# xdist hands out files in collection order (`--no-loadscope-reorder` in pytest.ini), so these
# start first and the short files fill the workers at the end, instead of one worker running a
# long file alone.
LONGEST_FIRST = ('test_mae_payoff.py',  # the digits MAE at seed 0 and its random encoder
                 'test_recipe_training.py', 'test_recipe_training_scratch.py',  # ~300 s
                 'test_multihost_runs.py', 'test_dense_training.py', 'test_docs.py',  # ~280 s
                 'test_timm_import.py', 'test_vit.py', 'test_foreign.py', 'test_sequences.py',
                 'test_object_store.py', 'test_gpu_check.py', 'test_mae.py', 'test_plan.py',
                 'test_step.py', 'test_checkpoint.py', 'test_workflow.py')  # 200 to 66 s


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order kept


def pytest_sessionfinish(session):
  """The process that made the session's compilation cache removes it."""
  del session
  if MADE_CACHE:
    shutil.rmtree(os.environ['JAX_COMPILATION_CACHE_DIR'], ignore_errors=True)
