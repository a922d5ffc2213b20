"""Preprocessing on the devices (config.pp_device): host parity, per-example keys, sharding, the
train step, the pipeline's positions and the startup errors."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

import tiny_recipe
from vit_jax.data import device_pp
from vit_jax.data import pipeline
from vit_jax.data import preprocess
from vit_jax.data import sources
from vit_jax.parallel import mesh as mesh_lib
from vit_jax.train import loop
from vit_jax.train import setup as setup_lib
from vit_jax.train import state as state_lib
from vit_jax.train import step as step_lib


def _images(count, size=16, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize('spec', ['value_range(-1, 1)', 'value_range(0, 1, in_min=10, in_max=200)',
                                  'normalize', 'normalize((0.5, 0.5, 0.5), (0.2, 0.3, 0.4))'])
def test_value_ops_equal_the_host_ops(spec):
  images = _images(4)
  host_op = preprocess.parse(spec)
  host = np.stack([host_op({'image': tf.constant(x)}, tf.constant([0, 0], tf.int64))['image']
                   for x in images])
  device = np.asarray(jax.jit(device_pp.DevicePreprocess(spec))(jnp.asarray(images), None))
  assert device.dtype == np.float32
  np.testing.assert_allclose(device, host, rtol=0, atol=1e-6)


def test_flip_mirrors_about_half_by_position_whatever_the_batch_order():
  images = _images(64)
  pp = jax.jit(device_pp.DevicePreprocess('flip_lr', seed=5))
  positions = jnp.arange(1000, 1064, dtype=jnp.uint32)
  out = np.asarray(pp(jnp.asarray(images), positions))
  flipped = [np.array_equal(o, x[:, ::-1]) and not np.array_equal(o, x)
             for o, x in zip(out, images)]
  kept = [np.array_equal(o, x) for o, x in zip(out, images)]
  assert all(f or k for f, k in zip(flipped, kept))
  assert 20 <= sum(flipped) <= 44, sum(flipped)
  order = np.random.default_rng(1).permutation(64)
  shuffled = np.asarray(pp(jnp.asarray(images[order]), positions[order]))
  np.testing.assert_array_equal(shuffled, out[order])  # an example's draw follows its position
  other_seed = np.asarray(jax.jit(device_pp.DevicePreprocess('flip_lr', seed=6))(
      jnp.asarray(images), positions))
  assert not np.array_equal(other_seed, out)


def test_sharded_over_8_devices_equals_one_unsharded_call():
  pp = device_pp.DevicePreprocess('randaug(2, 10)|flip_lr|value_range(-1, 1)', seed=3)
  images, positions = jnp.asarray(_images(32)), jnp.arange(96, 128, dtype=jnp.uint32)
  mesh = mesh_lib.make_mesh((-1, 1, 1))
  sharding = mesh_lib.batch_sharding(mesh)
  sharded = jax.jit(device_pp.per_shard(pp, mesh, mesh_lib.BATCH_AXES))(
      jax.device_put(images, sharding), jax.device_put(positions, sharding))
  assert len(sharded.sharding.device_set) == 8
  whole = jax.jit(pp)(images, positions)
  np.testing.assert_array_equal(np.asarray(sharded), np.asarray(whole))
  assert not np.array_equal(np.asarray(whole), np.asarray(images) / 127.5 - 1)  # it augmented


def test_the_train_step_augments_on_device_and_compiles_once():
  config = tiny_recipe.get_config()
  setup = setup_lib.from_config(config)
  options = setup.options
  step = step_lib.for_run(setup)
  spec = step_lib.train_batch_spec(options.data, options.step)
  assert {k: (v.shape, v.dtype) for k, v in spec.items()} == {
      'image': ((32, 16, 16, 3), jnp.uint8), 'labels': ((32, 10), jnp.float32),
      'position': ((32,), jnp.uint32), 'stop': ((32,), jnp.float32)}
  sharding = mesh_lib.batch_sharding(setup.mesh)
  labels = jax.nn.one_hot(np.arange(32) % 10, 10)

  def batch(index):
    return {'image': jax.device_put(_images(32, seed=index), sharding),
            'labels': jax.device_put(labels, sharding),
            'position': jax.device_put(np.arange(32 * index, 32 * index + 32, dtype=np.uint32),
                                       sharding)}

  def fresh_state():
    state, _ = state_lib.create(setup.model, setup.tx, image_shape=options.data.image_shape,
                                seed=0, mesh=setup.mesh, preset=options.parallel.sharding)
    return state

  state = fresh_state()
  norms = []  # of the gradient: the zero-initialised head gives every input the same first loss
  for index in range(3):
    state, metrics = step(state, batch(index), {})
    norms.append(float(metrics['grad_norm']))
  assert step._cache_size() == 1  # one program for every step  # pylint: disable=protected-access
  # The same first step, fed the batch the device preprocessing makes, without it: the same.
  pp = options.step.device_pp
  host_config = tiny_recipe.get_config()
  host_config.pp_device = ''
  host_step = step_lib.for_run(setup_lib.from_config(host_config))
  first = batch(0)
  augmented = jax.jit(pp)(first['image'], first['position'])
  _, metrics = host_step(fresh_state(), {'image': augmented, 'labels': first['labels']}, {})
  np.testing.assert_allclose(float(metrics['grad_norm']), norms[0], rtol=1e-6)
  _, plain = host_step(fresh_state(), {
      'image': jax.device_put(_images(32, seed=0) / 127.5 - 1.0, sharding),
      'labels': first['labels']}, {})
  assert abs(float(plain['grad_norm']) - norms[0]) > 1e-4 * norms[0]  # RandAugment changed it


def test_the_pipeline_ships_each_examples_global_position(digits_data_dir):
  source = sources.digits_source('train[:20]', data_dir=digits_data_dir)
  spec = 'decode|inception_crop(16)|onehot(10)|keep("image", "labels")'
  pp = preprocess.parse(spec)
  batches = []
  for process in range(2):
    dataset = pipeline.train_dataset(source, pp, global_batch=8, seed=0, position=16,
                                     process_index=process, process_count=2, with_position=True)
    batches.append(list(dataset.take(3).as_numpy_iterator()))
    assert batches[-1][0]['image'].dtype == np.uint8
  for b in range(3):
    joined = np.concatenate([batches[p][b]['position'] for p in range(2)])
    assert joined.dtype == np.uint32
    np.testing.assert_array_equal(joined, np.arange(16 + 8 * b, 24 + 8 * b))
  plain = pipeline.train_dataset(source, pp, global_batch=8, seed=0)
  assert 'position' not in plain.element_spec


@pytest.mark.parametrize('spec,message', [
    ('randaug(2, 25)', r'config.pp_device: randaug: magnitude must be in \[0, 20\], found 25'),
    ('randaug(2, -1)', r'magnitude must be in \[0, 20\], found -1'),
    ('randaug(1.5, 10)', 'num_layers must be a whole number >= 0, found 1.5'),
    ('autoaugment', "config.pp_device: unknown op 'autoaugment'"),
    ('decode', 'decode, crops and labels belong in config.pp_train'),
    ('value_range(-1, 1)|randaug(2, 10)', "'randaug\\(2, 10\\)' works on uint8 images but comes "
                                          "after 'value_range\\(-1, 1\\)'"),
    ('flip_lr(0.3)', "bad arguments for 'flip_lr\\(0.3\\)'"),
    ('randaug(2, 10', "Cannot parse preprocessing op 'randaug\\(2, 10'"),
])
def test_bad_device_specs_are_refused_in_one_line(spec, message):
  with pytest.raises(ValueError, match=message) as error:
    device_pp.DevicePreprocess(spec)
  assert '\n' not in str(error.value)


def test_host_randaug_checks_its_magnitude_too():
  with pytest.raises(ValueError, match=r'randaug: magnitude must be in \[0, 20\], found 21'):
    preprocess.parse('decode|randaug(2, 21)')
  preprocess.parse('decode|randaug(2, 20)')  # AugReg's heaviest recipe


@pytest.mark.parametrize('pp_train,pp_device,message', [
    ('decode|inception_crop(16)|value_range(-1, 1)|onehot|keep("image", "labels")',
     'randaug(2, 5)|value_range(-1, 1)', 'needs uint8 images but config.pp_train ends with '
     'float32 ones; move value_range/normalize from pp_train to pp_device'),
    ('decode|inception_crop(16)|onehot|keep("image", "labels")', '',
     'config.pp_train ends with uint8 images and config.pp_device is empty'),
])
def test_a_host_output_the_device_cannot_take_is_refused_before_the_workdir(
    digits_data_dir, tmp_path, pp_train, pp_device, message):
  config = tiny_recipe.get_config(digits_data_dir)
  config.pp_train, config.pp_device = pp_train, pp_device
  with pytest.raises(ValueError, match=message):
    loop.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run' / 'config.json')


def test_the_run_records_pp_device_in_its_config(digits_data_dir, tmp_path):
  config = tiny_recipe.get_config(digits_data_dir)
  config.total_steps, config.checkpoint_every = 2, 2
  del config.evals['eval']
  result = loop.train_and_evaluate(config, str(tmp_path / 'run'))
  assert result['outcome'] == 'completed' and result['step'] == 2
  with open(tmp_path / 'run' / 'metrics.jsonl', encoding='utf-8') as f:
    rows = [json.loads(line) for line in f]
  assert [r['step'] for r in rows] == [1, 2] and all(np.isfinite(r['train/loss']) for r in rows), rows
  with open(tmp_path / 'run' / 'config.json', encoding='utf-8') as f:
    assert json.load(f)['pp_device'] == 'randaug(2, 5)|value_range(-1, 1)'
