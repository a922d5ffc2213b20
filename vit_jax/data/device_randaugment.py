"""RandAugment as batched JAX ops, for the accelerator, on uint8 [b, h, w, 3] batches: the ops of
`augment_table.py`, the table the TF version on the host (`randaugment.py`) reads too.

Per-example randomness comes from a key per example (`example_keys(seed, positions)`: the seed
folded with the example's global stream position), so a batch augments the same way on any host
count and after a resume. The random draws themselves (op, sign, application) come from
`jax.random`, not TF's stateless RNG, so a given seed picks other ops than on the host; each op
is the TF op's twin, tested pixel for pixel (tests/test_device_randaugment.py).

The trainer runs it as the `randaug` op of `config.pp_device` (device_pp.py), in the train step.
"""

import jax
import jax.numpy as jnp

from vit_jax import errors
from vit_jax.data import augment_table as table
from vit_jax.data.augment_table import FILL, OPS


def _to_uint8(x: jnp.ndarray) -> jnp.ndarray:
  """float in [0, 255] -> uint8, truncating as TF's cast does."""
  return jnp.clip(x, 0, 255).astype(jnp.uint8)


def _blend(degenerate, image, factor):
  degenerate, image = degenerate.astype(jnp.float32), image.astype(jnp.float32)
  return _to_uint8(degenerate + factor * (image - degenerate))


def grayscale(image):
  """tf.image.rgb_to_grayscale on uint8: to [0, 1], weighted sum, back with x * 255.5 truncated."""
  weights = jnp.array([0.2989, 0.5870, 0.1140], jnp.float32)
  grey = jnp.tensordot(image.astype(jnp.float32) / 255.0, weights, axes=[[-1], [0]])
  return (grey * 255.5).astype(jnp.uint8)[..., None]


def autocontrast(image, _):
  lo = image.min(axis=(0, 1)).astype(jnp.float32)
  hi = image.max(axis=(0, 1)).astype(jnp.float32)
  scaled = _to_uint8((image.astype(jnp.float32) - lo) * 255.0 / jnp.maximum(hi - lo, 1e-6))
  return jnp.where(hi > lo, scaled, image)


def _equalize_channel(x):
  histogram = jnp.bincount(x.ravel().astype(jnp.int32), length=256)
  last = histogram[x.max().astype(jnp.int32)]  # the last non-empty bin
  step = (histogram.sum() - last) // 255
  lut = (jnp.cumsum(histogram) + step // 2) // jnp.maximum(step, 1)
  lut = jnp.clip(jnp.concatenate([jnp.zeros(1, lut.dtype), lut[:-1]]), 0, 255)
  return jnp.where(step == 0, x, lut[x.astype(jnp.int32)].astype(jnp.uint8))


def equalize(image, _):
  return jnp.stack([_equalize_channel(image[..., c]) for c in range(3)], -1)


def invert(image, _):
  return 255 - image


def posterize(image, level):
  shift = (8 - table.posterize_bits(level).astype(jnp.int32)).astype(jnp.uint8)
  return jnp.left_shift(jnp.right_shift(image, shift), shift)


def solarize(image, level):
  threshold = table.solarize_threshold(level).astype(jnp.int32)
  return jnp.where(image.astype(jnp.int32) < threshold, image, 255 - image)


def solarize_add(image, level):
  added = jnp.clip(image.astype(jnp.int32) + table.solarize_addition(level).astype(jnp.int32),
                   0, 255)
  return jnp.where(image < 128, added.astype(jnp.uint8), image)


def color(image, level):
  return _blend(jnp.broadcast_to(grayscale(image), image.shape), image, table.enhance_factor(level))


def contrast(image, level):
  mean = grayscale(image).astype(jnp.float32).mean()
  return _blend(jnp.full(image.shape, mean), image, table.enhance_factor(level))


def brightness(image, level):
  return _blend(jnp.zeros_like(image), image, table.enhance_factor(level))


def sharpness(image, level):
  kernel = jnp.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], jnp.float32) / 13.0
  x = image.astype(jnp.float32)
  smooth = sum(kernel[i, j] * x[i:x.shape[0] - 2 + i, j:x.shape[1] - 2 + j]
               for i in range(3) for j in range(3))
  smooth = jnp.clip(jnp.round(smooth), 0, 255).astype(jnp.uint8)
  degenerate = image.at[1:-1, 1:-1].set(smooth)  # borders keep their pixels
  return _blend(degenerate, image, table.enhance_factor(level))


def _round_half_away(x):
  return jnp.sign(x) * jnp.floor(jnp.abs(x) + 0.5)


def transform(image, matrix):
  """ImageProjectiveTransformV3 (output -> input map, 8 numbers), nearest, FILL outside."""
  height, width = image.shape[:2]
  ys, xs = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32),
                        jnp.arange(width, dtype=jnp.float32), indexing='ij')
  a0, a1, a2, b0, b1, b2, c0, c1 = (matrix[i] for i in range(8))
  k = c0 * xs + c1 * ys + 1.0
  in_x = _round_half_away((a0 * xs + a1 * ys + a2) / k)
  in_y = _round_half_away((b0 * xs + b1 * ys + b2) / k)
  inside = (in_x >= 0) & (in_x < width) & (in_y >= 0) & (in_y < height)
  gathered = image[jnp.clip(in_y, 0, height - 1).astype(jnp.int32),
                   jnp.clip(in_x, 0, width - 1).astype(jnp.int32)]
  return jnp.where(inside[..., None], gathered, jnp.uint8(FILL))


def transform_matrix(name, shape, level, sign) -> jnp.ndarray:
  """The table's projective map of a GEOMETRIC op, as a float32 [8] array."""
  values = table.transform_matrix(name, float(shape[0]), float(shape[1]), level, sign, jnp.cos,
                                  jnp.sin)
  return jnp.stack([jnp.asarray(v, jnp.float32) for v in values])


def geometric(image, name, level, sign):
  """A GEOMETRIC op of the table: its projective transform of the image."""
  return transform(image, transform_matrix(name, image.shape, level, sign))


def cutout_at(image, level, row, col):
  """A FILL square of the table's half-size, centred at (row, col)."""
  height, width = image.shape[:2]
  pad = table.cutout_half_size(level, min(height, width)).astype(jnp.int32)
  rows, cols = jnp.arange(height)[:, None], jnp.arange(width)[None, :]
  inside = ((jnp.abs(rows - row) <= pad) & (jnp.abs(cols - col) <= pad))[..., None]
  return jnp.where(inside, jnp.uint8(FILL), image)


def cutout(image, level, key):
  row_key, col_key = jax.random.split(key)
  height, width = image.shape[:2]
  return cutout_at(image, level, jax.random.randint(row_key, (), 0, height),
                   jax.random.randint(col_key, (), 0, width))


def draws(key: jax.Array, num_layers: int) -> dict[str, jnp.ndarray]:
  """The random choices of one example, per layer: op index, sign, applied, cutout key."""
  keys = jax.random.split(key, num_layers)

  def one(layer_key):
    op_key, sign_key, prob_key, apply_key, cutout_key = jax.random.split(layer_key, 5)
    low, high = table.APPLY_PROBABILITY
    probability = jax.random.uniform(prob_key, (), minval=low, maxval=high)
    return {'op': jax.random.randint(op_key, (), 0, len(OPS)),
            'sign': jnp.where(jax.random.uniform(sign_key) < 0.5, -1.0, 1.0),
            'apply': jax.random.uniform(apply_key) < probability, 'cutout_key': cutout_key}
  return jax.vmap(one)(keys)


PIXEL_OPS = {'AutoContrast': autocontrast, 'Equalize': equalize, 'Invert': invert,
             'Posterize': posterize, 'Solarize': solarize, 'Color': color, 'Contrast': contrast,
             'Brightness': brightness, 'Sharpness': sharpness,
             'SolarizeAdd': solarize_add}  # op(image, level); Cutout: cutout(image, level, key)


def apply_op(image: jnp.ndarray, op: jnp.ndarray, level, sign, cutout_key) -> jnp.ndarray:
  """OPS[op] applied to one uint8 image (op a traced index). Under vmap every op runs for every
  image (a select); the geometric ones share one gather with the chosen op's matrix."""
  indices = [OPS.index(name) for name in table.GEOMETRIC]
  matrices = jnp.stack([transform_matrix(name, image.shape, level, sign)
                        for name in table.GEOMETRIC])
  slot = jnp.argmax(jnp.asarray(indices) == op)  # 0 (any matrix) when op is not geometric
  moved = transform(image, matrices[slot])
  branches = []
  for name in OPS:
    if name in table.GEOMETRIC:
      branches.append(lambda x: moved)
    elif name == 'Cutout':
      branches.append(lambda x: cutout(x, level, cutout_key))
    else:
      branches.append(lambda x, f=PIXEL_OPS[name]: f(x, level))
  return jax.lax.switch(op, branches, image)


def randaugment_one(image: jnp.ndarray, key: jax.Array, num_layers: int = 2,
                    magnitude: float = 10.0) -> jnp.ndarray:
  """`num_layers` ops drawn uniformly from OPS, each applied with a probability drawn from the
  table's APPLY_PROBABILITY."""
  if image.dtype != jnp.uint8:
    raise errors.UserError(f'randaugment expects uint8 images, got {image.dtype}.')
  level = jnp.asarray(float(magnitude), jnp.float32)
  if num_layers == 0:
    return image

  def layer(image, chosen):  # one layer; a scan over layers compiles the 16 ops once
    return jnp.where(chosen['apply'], apply_op(image, chosen['op'], level, chosen['sign'],
                                               chosen['cutout_key']), image), None

  return jax.lax.scan(layer, image, draws(key, num_layers))[0]


def example_keys(seed: int, positions: jnp.ndarray) -> jax.Array:
  """One key per example from (seed, global stream position): host-count independent."""
  base = jax.random.key(seed)
  return jax.vmap(lambda p: jax.random.fold_in(base, p))(positions)


def randaugment(images: jnp.ndarray, keys: jax.Array, num_layers: int = 2,
                magnitude: float = 10.0) -> jnp.ndarray:
  """uint8 [b, h, w, 3] batch, one key per example -> the augmented batch (jit/shard friendly)."""
  return jax.vmap(lambda x, k: randaugment_one(x, k, num_layers, magnitude))(images, keys)
