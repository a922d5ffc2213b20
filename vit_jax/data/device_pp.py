"""Preprocessing that runs on the accelerator, inside the jitted train step (`config.pp_device`).

  config.pp_train = 'decode_jpeg_and_inception_crop(224)|flip_lr|onehot|keep("image", "labels")'
  config.pp_device = 'randaug(2, 10)|value_range(-1, 1)'

The host (tf.data, `pp_train`) decodes and crops and ships uint8 batches; the ops here take the
uint8 batch to the model's input on the devices, sharded with the batch, each shard on its own
examples. Ops:

  randaug(num_layers=2, magnitude=10)   RandAugment (device_randaugment.py), uint8 -> uint8
  flip_lr                               mirrors left-right with probability 1/2
  value_range(vmin=-1, vmax=1, in_min=0, in_max=255)   -> float32
  normalize(mean=ImageNet, std=ImageNet)                (x / 255 - mean) / std, -> float32
  random_erase(probability=0.25, area_min=0.02, area_max=1/3, aspect_min=0.3)
      timm's RandomErasing (DeiT: 0.25, mode 'pixel'): with `probability`, a box of that area
      fraction and aspect ratio gets per-pixel N(0, 1) noise; after value_range/normalize

Randomness is per example: op i of the example at global stream position p draws from
`fold_in(fold_in(key(seed), p), i)`, and the pipeline puts each example's position in the batch
(`position`), so a batch augments the same way on any host or device count and after a resume.
No TensorFlow here.
"""

import math
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from vit_jax import errors
from vit_jax.data import device_randaugment
from vit_jax.data import pp_spec

# op(images [b, h, w, c], keys [b]) -> images
BatchOp = Callable[[jax.Array, jax.Array], jax.Array]


def _randaug(num_layers: int = 2, magnitude: float = 10) -> BatchOp:
  num_layers, magnitude = pp_spec.check_randaug(num_layers, magnitude)
  return lambda images, keys: device_randaugment.randaugment(images, keys, num_layers, magnitude)


def _flip_lr() -> BatchOp:
  def op(images, keys):
    flip = jax.vmap(lambda key: jax.random.uniform(key) < 0.5)(keys)
    return jnp.where(flip[:, None, None, None], images[:, :, ::-1], images)
  return op


def _value_range(vmin: float = -1, vmax: float = 1, in_min: float = 0,
                 in_max: float = 255) -> BatchOp:
  # The host op's arithmetic, in its order: the same float32 values.
  return lambda images, keys: vmin + (images.astype(jnp.float32) - in_min) * (vmax - vmin) / (
      in_max - in_min)


def _normalize(mean: Sequence[float] = pp_spec.IMAGENET_MEAN,
               std: Sequence[float] = pp_spec.IMAGENET_STD) -> BatchOp:
  mean, std = jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32)
  return lambda images, keys: (images.astype(jnp.float32) / 255.0 - mean) / std


def _random_erase(probability: float = 0.25, area_min: float = 0.02, area_max: float = 1 / 3,
                  aspect_min: float = 0.3, attempts: int = 10) -> BatchOp:
  """timm's RandomErasing(mode='pixel', count 1): up to `attempts` box draws, the first that
  fits the image is filled with N(0, 1) noise (none fits: nothing is erased)."""
  if not 0.0 <= probability <= 1.0 or not 0.0 < area_min <= area_max <= 1.0 or not 0 < aspect_min:
    raise errors.UserError(f'random_erase: bad probability/area/aspect ({probability}, {area_min}, '
                           f'{area_max}, {aspect_min}).')
  log_ratio = math.log(aspect_min), math.log(1 / aspect_min)

  def one(image, key):
    height, width = image.shape[:2]
    k_do, k_area, k_ratio, k_top, k_left, k_noise = jax.random.split(key, 6)
    area = jax.random.uniform(k_area, (attempts,), minval=area_min, maxval=area_max)
    ratio = jnp.exp(jax.random.uniform(k_ratio, (attempts,), minval=log_ratio[0],
                                       maxval=log_ratio[1]))
    box_h = jnp.round(jnp.sqrt(area * height * width * ratio)).astype(jnp.int32)
    box_w = jnp.round(jnp.sqrt(area * height * width / ratio)).astype(jnp.int32)
    fits = (box_h < height) & (box_w < width)
    first = jnp.argmax(fits)
    box_h, box_w = box_h[first], box_w[first]
    top = jax.random.randint(k_top, (), 0, height - box_h + 1)
    left = jax.random.randint(k_left, (), 0, width - box_w + 1)
    rows, cols = jnp.arange(height)[:, None], jnp.arange(width)[None, :]
    inside = (rows >= top) & (rows < top + box_h) & (cols >= left) & (cols < left + box_w)
    erase = inside & fits[first] & jax.random.bernoulli(k_do, probability)
    noise = jax.random.normal(k_noise, image.shape, jnp.float32)
    return jnp.where(erase[:, :, None], noise, image)

  return lambda images, keys: jax.vmap(one)(images.astype(jnp.float32), keys)


# name: (factory, whether it draws random numbers)
OPS = {'randaug': (_randaug, True), 'flip_lr': (_flip_lr, True),
       'value_range': (_value_range, False), 'normalize': (_normalize, False),
       'random_erase': (_random_erase, True)}
UINT8_INPUT = ('randaug', 'value_range', 'normalize')  # read pixels in [0, 255]
FLOAT_INPUT = ('random_erase',)  # read the model's input values
FLOAT_OUTPUT = ('value_range', 'normalize')


class DevicePreprocess:
  """`pp(images uint8 [b, h, w, c], positions [b]) -> images`, the parsed `config.pp_device`."""

  def __init__(self, spec: str, seed: int = 0):
    self.spec, self.seed = spec, seed
    self._ops: list[tuple[int, BatchOp]] = []
    self.needs_positions = False
    float_from = None  # the op after which images are float
    for index, text in enumerate(pp_spec.ops(spec)):
      name, args, kwargs = pp_spec.parse_op(text)
      if name not in OPS:
        raise errors.UserError(
            f'config.pp_device: unknown op {name!r} in {spec!r}; device ops: '
            f'{sorted(OPS)} (decode, crops and labels belong in config.pp_train).')
      factory, random = OPS[name]
      if name in UINT8_INPUT and float_from is not None:
        raise errors.UserError(f'config.pp_device: {text!r} works on uint8 images but comes after '
                               f'{float_from!r}; put it before.')
      if name in FLOAT_INPUT and float_from is None:
        raise errors.UserError(f'config.pp_device: {text!r} works on the model\'s input values; '
                               'put it after value_range/normalize.')
      try:
        with errors.context('config.pp_device'):
          self._ops.append((index, factory(*args, **kwargs)))
      except TypeError as e:  # the op called with arguments it does not take
        raise errors.UserError(f'config.pp_device: bad arguments for {text!r}: {e}.') from e
      self.needs_positions |= random
      if name in FLOAT_OUTPUT:
        float_from = text

  def __bool__(self):
    return bool(self._ops)

  def __call__(self, images: jax.Array, positions: Optional[jax.Array]) -> jax.Array:
    if images.dtype != jnp.uint8:
      raise errors.UserError(f'config.pp_device expects uint8 images from config.pp_train, found '
                             f'{images.dtype}; end pp_train before value_range/normalize.')
    keys = None
    if self.needs_positions:
      keys = device_randaugment.example_keys(self.seed, positions)
    for index, op in self._ops:
      op_keys = None if keys is None else jax.vmap(lambda k, i=index: jax.random.fold_in(k, i))(
          keys)
      images = op(images, op_keys)
    return images


def per_shard(pp: DevicePreprocess, mesh: jax.sharding.Mesh,
              batch_axes: Sequence[str]) -> Callable[[jax.Array, Optional[jax.Array]], jax.Array]:
  """`pp` run by every shard on its own slice of the batch (per-example ops: no traffic)."""
  spec = P(tuple(batch_axes))
  # check_vma=False: jax's varying-axes check trips over lax.switch under vmap (a pvary on an
  # already varying value); every op here is per example, so nothing crosses shards.
  if pp.needs_positions:
    return jax.shard_map(pp, mesh=mesh, in_specs=(spec, spec), out_specs=spec, check_vma=False)
  mapped = jax.shard_map(lambda images: pp(images, None), mesh=mesh, in_specs=spec,
                         out_specs=spec, check_vma=False)
  return lambda images, positions: mapped(images)
