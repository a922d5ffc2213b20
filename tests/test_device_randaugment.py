"""The JAX RandAugment ops against the TF ones on the same images and parameters; the draws."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from vit_jax.data import augment_table
from vit_jax.data import device_randaugment as jax_ra
from vit_jax.data import randaugment as tf_ra


def _images():
  rng = np.random.default_rng(0)
  noise = rng.integers(0, 256, (20, 28, 3), np.uint8)
  # Smooth content with a narrow range (autocontrast and equalize have work to do).
  ys, xs = np.mgrid[:20, :28]
  smooth = np.stack([40 + 3 * ys, 90 + 2 * xs, 60 + ys + xs], -1).astype(np.uint8)
  return [noise, smooth]


LEVELS = (3.7, 10.0)
# op name -> (TF function, JAX function, takes a sign, largest allowed difference in levels)
OPS = {
    'AutoContrast': (tf_ra.autocontrast, jax_ra.autocontrast, False, 0),
    'Equalize': (tf_ra.equalize, jax_ra.equalize, False, 0),
    'Invert': (tf_ra.invert, jax_ra.invert, False, 0),
    'Posterize': (tf_ra.posterize, jax_ra.posterize, False, 0),
    'Solarize': (tf_ra.solarize, jax_ra.solarize, False, 0),
    'SolarizeAdd': (tf_ra.solarize_add, jax_ra.solarize_add, False, 0),
    'Color': (tf_ra.color, jax_ra.color, False, 1),
    'Contrast': (tf_ra.contrast, jax_ra.contrast, False, 1),
    'Brightness': (tf_ra.brightness, jax_ra.brightness, False, 1),
    'Sharpness': (tf_ra.sharpness, jax_ra.sharpness, False, 1),
    **{name: (lambda x, level, sign, name=name: tf_ra.geometric(x, name, level, sign),
              lambda x, level, sign, name=name: jax_ra.geometric(x, name, level, sign), True, 0)
       for name in augment_table.GEOMETRIC},
}


def test_both_sides_implement_the_whole_table():
  assert set(OPS) | {'Cutout'} == set(augment_table.OPS)
  assert set(jax_ra.PIXEL_OPS) | set(augment_table.GEOMETRIC) | {'Cutout'} == set(
      augment_table.OPS)


@pytest.mark.parametrize('name', sorted(OPS))
def test_each_op_equals_the_tf_op(name):
  """Exact, except the blends (Color, Contrast, Brightness, Sharpness): float32 rounding may
  put a pixel one level off; at most 1% of pixels."""
  tf_op, jax_op, signed, tolerance = OPS[name]
  changed = False
  for image in _images():
    for level in LEVELS:
      for sign in ((-1.0, 1.0) if signed else (None,)):
        args = (level,) if sign is None else (level, sign)
        ours = np.asarray(jax.jit(jax_op)(jnp.asarray(image), *map(jnp.float32, args)))
        theirs = tf_op(tf.constant(image), *(tf.constant(a, tf.float32) for a in args)).numpy()
        difference = np.abs(ours.astype(int) - theirs.astype(int))
        assert difference.max() <= tolerance, (name, level, sign, difference.max())
        assert (difference > 0).mean() <= 0.01, (name, level, sign)
        changed = changed or not np.array_equal(ours, image)
  assert changed, f'{name} left every test image unchanged'


@pytest.mark.parametrize('sign', [-1.0, 1.0])
def test_a_layer_applies_exactly_the_chosen_op(sign):
  """apply_op (what a RandAugment layer runs, the geometric ops sharing one gather) equals each
  op's own function, op by op, under vmap as in training (the blends to one level on <= 1%)."""
  images = jnp.asarray(np.stack(_images()))
  key = jax.random.key(4)
  level = jnp.float32(7.0)
  layer = jax.jit(jax.vmap(lambda x, op: jax_ra.apply_op(x, op, level, jnp.float32(sign), key),
                           in_axes=(0, None)))
  for index, name in enumerate(jax_ra.OPS):
    ours = np.asarray(layer(images, jnp.int32(index)))
    for image, out in zip(images, ours):
      if name == 'Cutout':
        expected = jax_ra.cutout(image, level, key)
      elif name in augment_table.GEOMETRIC:
        expected = jax_ra.geometric(image, name, level, jnp.float32(sign))
      else:
        expected = jax_ra.PIXEL_OPS[name](image, level)
      difference = np.abs(out.astype(int) - np.asarray(expected).astype(int))
      # The blends may round one level apart where XLA fuses them differently.
      assert difference.max() <= (1 if OPS.get(name, (0, 0, 0, 0))[3] else 0), name
      assert (difference > 0).mean() <= 0.01, name


def test_cutout_equals_the_tf_square_at_the_same_centre():
  image = _images()[1]
  ours = np.asarray(jax_ra.cutout_at(jnp.asarray(image), jnp.float32(10.0), 7, 20))
  pad = int(10.0 / 10 * 40.0 / 224.0 * 20)  # TF's formula: 3
  expected = image.copy()
  expected[max(7 - pad, 0):7 + pad + 1, 20 - pad:20 + pad + 1] = 128
  np.testing.assert_array_equal(ours, expected)


def test_draws_are_uniform_over_ops_and_applied_half_the_time():
  keys = jax_ra.example_keys(0, jnp.arange(4000))
  chosen = jax.vmap(lambda k: jax_ra.draws(k, 2))(keys)
  counts = np.bincount(np.asarray(chosen['op']).ravel(), minlength=len(jax_ra.OPS))
  expected = 8000 / len(jax_ra.OPS)
  assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected)), counts  # 5 sigma
  assert abs(np.asarray(chosen['apply']).mean() - 0.5) < 0.02  # E[U(0.2, 0.8)] = 0.5
  assert abs(np.asarray(chosen['sign']).mean()) < 0.05


def test_a_batch_is_a_pure_function_of_seed_and_positions_and_compiles_once():
  images = jnp.asarray(np.stack([_images()[0]] * 4))
  run = jax.jit(jax_ra.randaugment, static_argnums=(2, 3))
  first = run(images, jax_ra.example_keys(3, jnp.arange(8, 12)), 2, 10.0)
  again = run(images, jax_ra.example_keys(3, jnp.arange(8, 12)), 2, 10.0)
  np.testing.assert_array_equal(first, again)
  # Example 9 alone, at the same position, augments the same way (host-count independence).
  alone = run(images[1:2], jax_ra.example_keys(3, jnp.arange(9, 10)), 2, 10.0)
  np.testing.assert_array_equal(alone[0], first[1])
  other = run(images, jax_ra.example_keys(3, jnp.arange(12, 16)), 2, 10.0)
  assert not np.array_equal(other, first)
  assert run._cache_size() == 2  # one program per batch shape, none per step  # pylint: disable=protected-access
  with pytest.raises(ValueError, match='uint8'):
    jax_ra.randaugment_one(images[0].astype(jnp.float32), jax.random.key(0))
