"""RandAugment as batched JAX ops, for the accelerator: the same operations and magnitude
semantics as the TF version (`vit_jax/data/randaugment.py`), on uint8 [b, h, w, 3] batches.

Per-example randomness comes from a key per example (`example_keys(seed, positions)`: the seed
folded with the example's global stream position), so a batch augments the same way on any host
count and after a resume. The random draws themselves (op, sign, application) come from
`jax.random`, not TF's stateless RNG, so a given seed picks other ops than on the host; each op
is the TF op's twin, tested pixel for pixel (tests/test_device_randaugment.py).

The trainer runs it as the `randaug` op of `config.pp_device` (device_pp.py), in the train step.
"""

import math

import jax
import jax.numpy as jnp

from vit_jax import errors

MAX_LEVEL = 10.0
FILL = 128
OPS = ('AutoContrast', 'Equalize', 'Invert', 'Rotate', 'Posterize', 'Solarize', 'Color',
       'Contrast', 'Brightness', 'Sharpness', 'ShearX', 'ShearY', 'TranslateX', 'TranslateY',
       'Cutout', 'SolarizeAdd')


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
  shift = (8 - (level / MAX_LEVEL * 4).astype(jnp.int32)).astype(jnp.uint8)
  return jnp.left_shift(jnp.right_shift(image, shift), shift)


def solarize(image, level):
  threshold = (level / MAX_LEVEL * 256).astype(jnp.int32)
  return jnp.where(image.astype(jnp.int32) < threshold, image, 255 - image)


def solarize_add(image, level):
  added = jnp.clip(image.astype(jnp.int32) + (level / MAX_LEVEL * 110).astype(jnp.int32), 0, 255)
  return jnp.where(image < 128, added.astype(jnp.uint8), image)


def _enhance_factor(level):
  return level / MAX_LEVEL * 1.8 + 0.1


def color(image, level):
  return _blend(jnp.broadcast_to(grayscale(image), image.shape), image, _enhance_factor(level))


def contrast(image, level):
  mean = grayscale(image).astype(jnp.float32).mean()
  return _blend(jnp.full(image.shape, mean), image, _enhance_factor(level))


def brightness(image, level):
  return _blend(jnp.zeros_like(image), image, _enhance_factor(level))


def sharpness(image, level):
  kernel = jnp.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], jnp.float32) / 13.0
  x = image.astype(jnp.float32)
  smooth = sum(kernel[i, j] * x[i:x.shape[0] - 2 + i, j:x.shape[1] - 2 + j]
               for i in range(3) for j in range(3))
  smooth = jnp.clip(jnp.round(smooth), 0, 255).astype(jnp.uint8)
  degenerate = image.at[1:-1, 1:-1].set(smooth)  # borders keep their pixels
  return _blend(degenerate, image, _enhance_factor(level))


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


def _matrix(*values):
  return jnp.stack([jnp.asarray(v, jnp.float32) for v in values])


# The five geometric ops are one projective transform each: their matrices are built apart, so
# a RandAugment layer gathers once with the chosen matrix instead of once per op.
def rotate_matrix(shape, level, sign):
  radians = sign * level / MAX_LEVEL * 30.0 * math.pi / 180.0
  height, width = float(shape[0]), float(shape[1])
  cos, sin = jnp.cos(radians), jnp.sin(radians)
  x_offset = ((width - 1) - (cos * (width - 1) - sin * (height - 1))) / 2.0
  y_offset = ((height - 1) - (sin * (width - 1) + cos * (height - 1))) / 2.0
  return _matrix(cos, -sin, x_offset, sin, cos, y_offset, 0.0, 0.0)


def shear_x_matrix(shape, level, sign):
  del shape
  return _matrix(1.0, sign * level / MAX_LEVEL * 0.3, 0, 0, 1, 0, 0, 0)


def shear_y_matrix(shape, level, sign):
  del shape
  return _matrix(1.0, 0, 0, sign * level / MAX_LEVEL * 0.3, 1, 0, 0, 0)


def translate_x_matrix(shape, level, sign):
  return _matrix(1.0, 0, -(sign * level / MAX_LEVEL * 0.45 * shape[1]), 0, 1, 0, 0, 0)


def translate_y_matrix(shape, level, sign):
  return _matrix(1.0, 0, 0, 0, 1, -(sign * level / MAX_LEVEL * 0.45 * shape[0]), 0, 0)


def rotate(image, level, sign):
  return transform(image, rotate_matrix(image.shape, level, sign))


def shear_x(image, level, sign):
  return transform(image, shear_x_matrix(image.shape, level, sign))


def shear_y(image, level, sign):
  return transform(image, shear_y_matrix(image.shape, level, sign))


def translate_x(image, level, sign):
  return transform(image, translate_x_matrix(image.shape, level, sign))


def translate_y(image, level, sign):
  return transform(image, translate_y_matrix(image.shape, level, sign))


GEOMETRIC = {'Rotate': rotate_matrix, 'ShearX': shear_x_matrix, 'ShearY': shear_y_matrix,
             'TranslateX': translate_x_matrix, 'TranslateY': translate_y_matrix}
SIGNED_OPS = {'Rotate': rotate, 'ShearX': shear_x, 'ShearY': shear_y, 'TranslateX': translate_x,
              'TranslateY': translate_y}  # op(image, level, sign)


def cutout_at(image, level, row, col):
  """A FILL square of half-size level/10 * 40/224 of the shorter side, centred at (row, col)."""
  height, width = image.shape[:2]
  pad = (level / MAX_LEVEL * 40.0 / 224.0 * min(height, width)).astype(jnp.int32)
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
    probability = jax.random.uniform(prob_key, (), minval=0.2, maxval=0.8)
    return {'op': jax.random.randint(op_key, (), 0, len(OPS)),
            'sign': jnp.where(jax.random.uniform(sign_key) < 0.5, -1.0, 1.0),
            'apply': jax.random.uniform(apply_key) < probability, 'cutout_key': cutout_key}
  return jax.vmap(one)(keys)


LEVEL_OPS = {'AutoContrast': autocontrast, 'Equalize': equalize, 'Invert': invert,
             'Posterize': posterize, 'Solarize': solarize, 'Color': color, 'Contrast': contrast,
             'Brightness': brightness, 'Sharpness': sharpness,
             'SolarizeAdd': solarize_add}  # op(image, level); Cutout: cutout(image, level, key)


def apply_op(image: jnp.ndarray, op: jnp.ndarray, level, sign, cutout_key) -> jnp.ndarray:
  """OPS[op] applied to one uint8 image (op a traced index). Under vmap every op runs for every
  image (a select); the geometric ones share one gather with the chosen op's matrix."""
  geometric = [OPS.index(name) for name in GEOMETRIC]
  matrices = jnp.stack([build(image.shape, level, sign) for build in GEOMETRIC.values()])
  slot = jnp.argmax(jnp.asarray(geometric) == op)  # 0 (any matrix) when op is not geometric
  moved = transform(image, matrices[slot])
  branches = []
  for name in OPS:
    if name in GEOMETRIC:
      branches.append(lambda x: moved)
    elif name == 'Cutout':
      branches.append(lambda x: cutout(x, level, cutout_key))
    else:
      branches.append(lambda x, f=LEVEL_OPS[name]: f(x, level))
  return jax.lax.switch(op, branches, image)


def randaugment_one(image: jnp.ndarray, key: jax.Array, num_layers: int = 2,
                    magnitude: float = 10.0) -> jnp.ndarray:
  """`num_layers` ops drawn uniformly from OPS, each applied with probability in [0.2, 0.8]."""
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
