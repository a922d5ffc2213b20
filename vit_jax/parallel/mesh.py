"""The device mesh: axes ('data', 'fsdp', 'tensor'), laid out along the physical topology."""

import math
from typing import Optional, Sequence

import jax
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

from vit_jax import errors

MESH_AXES = ('data', 'fsdp', 'tensor')
BATCH_AXES = ('data', 'fsdp')  # the batch is split over both; 'tensor' holds replicas of it


def mesh_shape(sizes: Sequence[int], device_count: int) -> tuple[int, ...]:
  """Resolves one -1 entry so that the product is `device_count`; checks the product."""
  sizes = [int(s) for s in sizes]
  if len(sizes) != len(MESH_AXES):
    raise errors.UserError(f'mesh needs {len(MESH_AXES)} sizes for {MESH_AXES}, got {sizes}.')
  if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
    raise errors.UserError(f'mesh sizes {sizes}: each must be positive, at most one may be -1.')
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if device_count % known:
      raise errors.UserError(f'mesh {sizes}: {device_count} devices do not divide by {known}.')
    sizes[sizes.index(-1)] = device_count // known
  if math.prod(sizes) != device_count:
    raise errors.UserError(f'mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, '
                           f'but {device_count} are available.')
  return tuple(sizes)


def make_mesh(sizes: Sequence[int] = (-1, 1, 1),
              devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A ('data', 'fsdp', 'tensor') mesh over `devices` (default: all, on every host)."""
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(sizes, len(devices))
  try:
    grid = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
  except (ValueError, NotImplementedError, AssertionError):  # topologies it does not know
    grid = np.asarray(devices, dtype=object).reshape(shape)
  return Mesh(grid, MESH_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over ('data', 'fsdp'); other axes whole."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def local_batch_size(global_batch: int, process_count: int, device_count: int) -> int:
  """Per-process batch; the global batch must split evenly over processes and devices."""
  if global_batch <= 0 or global_batch % device_count or global_batch % process_count:
    raise errors.UserError(
        f'batch_size={global_batch} must be a positive multiple of the device count '
        f'({device_count}) and the process count ({process_count}).')
  return global_batch // process_count
