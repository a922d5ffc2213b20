"""The device mesh: axes ('data', 'fsdp', 'tensor'), laid out along the physical topology.

Devices joined by slow links (TPU slices over the data-center network, GPU nodes over
InfiniBand/Ethernet) form a hybrid mesh: the fast-link groups ("granules": slices, or hosts)
are split only along `dcn` sizes, so the collectives that cross the slow links are the ones of
the data axis (a gradient all-reduce per step), never FSDP's gathers or tensor parallelism's.
"""

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


def granules(devices: Sequence[jax.Device]) -> tuple[int, bool]:
  """(number of fast-link groups, whether they are processes): TPU slices when there are
  several (`slice_index`); else the processes, when each drives several GPUs (one process per
  node); else 1 (one slice, one node, or one process per GPU: set `config.dcn_mesh`)."""
  slices = {getattr(d, 'slice_index', 0) for d in devices}
  if len(slices) > 1:
    return len(slices), False
  processes = {d.process_index for d in devices}
  if len(processes) > 1 and devices[0].platform == 'gpu' and len(devices) > len(processes):
    return len(processes), True
  return 1, False


def make_mesh(sizes: Sequence[int] = (-1, 1, 1),
              devices: Optional[Sequence[jax.Device]] = None,
              dcn: Optional[Sequence[int]] = None) -> Mesh:
  """A ('data', 'fsdp', 'tensor') mesh over `devices` (default: all, on every host).

  `dcn`: how the slow-link groups split over the three axes (e.g. (4, 1, 1): four slices or
  nodes along 'data'); default: every group along 'data' (`granules`). With one process per
  GPU the nodes are not visible from the devices: given `dcn`, the processes are grouped in
  rank order, node by node (as SLURM and torchrun number them).
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(sizes, len(devices))
  count, by_process = granules(devices)
  if dcn is None and count > 1:
    dcn = (count, 1, 1)
  if dcn is None or math.prod(dcn) == 1:
    return Mesh(_physical_grid(shape, devices), MESH_AXES)
  dcn = tuple(int(d) for d in dcn)
  if len(dcn) != len(MESH_AXES) or any(s % d for s, d in zip(shape, dcn)):
    raise errors.UserError(f'dcn_mesh {dcn} must have {len(MESH_AXES)} sizes dividing the '
                           f'mesh {dict(zip(MESH_AXES, shape))}.')
  inner = tuple(s // d for s, d in zip(shape, dcn))
  if count > 1:
    grid = mesh_utils.create_hybrid_device_mesh(
        inner, dcn, devices, process_is_granule=by_process, allow_split_physical_axes=True)
    return Mesh(grid, MESH_AXES)
  ordered = sorted(devices, key=lambda d: (d.process_index, d.id))
  size = len(devices) // math.prod(dcn)
  grid = np.empty(shape, dtype=object)
  for group, position in enumerate(np.ndindex(*dcn)):
    block = tuple(slice(p * n, (p + 1) * n) for p, n in zip(position, inner))
    grid[block] = _physical_grid(inner, ordered[group * size:(group + 1) * size])
  return Mesh(grid, MESH_AXES)


def _physical_grid(shape: Sequence[int], devices: Sequence[jax.Device]) -> np.ndarray:
  """`devices` as an array of `shape`, along the physical topology where JAX knows it."""
  try:
    return mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
  except (ValueError, NotImplementedError, AssertionError):  # topologies it does not know
    return np.asarray(devices, dtype=object).reshape(shape)


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
