"""Mesh construction from config sizes."""

import dataclasses

import jax
import numpy as np
import pytest

from vit_jax.parallel import mesh as mesh_lib


def test_sizes_with_one_free_axis():
  assert mesh_lib.mesh_shape((-1, 2, 1), 8) == (4, 2, 1)
  mesh = mesh_lib.make_mesh((2, -1, 2))
  assert dict(mesh.shape) == {'data': 2, 'fsdp': 2, 'tensor': 2}
  assert sorted(d.id for d in mesh.devices.flat) == sorted(d.id for d in jax.devices())
  single = mesh_lib.make_mesh((1, 1, 1), jax.devices()[:1])
  assert single.devices.size == 1


@pytest.mark.parametrize('sizes,message', [((3, 1, 1), 'needs 3 devices, but 8'),
                                           ((-1, -1, 1), 'at most one may be -1'),
                                           ((3, -1, 1), 'do not divide by 3'),
                                           ((2, 2), 'needs 3 sizes')])
def test_bad_sizes(sizes, message):
  with pytest.raises(ValueError, match=message):
    mesh_lib.make_mesh(sizes)


@dataclasses.dataclass(frozen=True)
class _Device:
  """What the mesh reads of a device, for topologies this machine does not have."""
  id: int
  process_index: int
  slice_index: int
  platform: str
  device_kind: str
  coords: tuple = (0, 0, 0)
  core_on_chip: int = 0


def _tpu_slices():
  """Two TPU slices of 4 chips, numbered so that neighbours in id alternate slices."""
  return [_Device(i, i // 2, i % 2, 'tpu', 'TPU v5 lite', coords=(i // 2 % 2, i // 4, 0))
          for i in range(8)]


def _attribute(mesh, name):
  return np.vectorize(lambda d: getattr(d, name))(mesh.devices)


def test_slices_meet_only_along_the_data_axis():
  """Two slices, mesh (data 2, fsdp 4): each slice is one data row, so FSDP's gathers stay
  inside a slice; without the hybrid layout (dcn (1, 1, 1)) rows mix both slices."""
  slices = _attribute(mesh_lib.make_mesh((2, 4, 1), _tpu_slices()), 'slice_index')
  assert [set(row.ravel()) for row in slices] == [{0}, {1}]
  flat = _attribute(mesh_lib.make_mesh((2, 4, 1), _tpu_slices(), dcn=(1, 1, 1)), 'slice_index')
  assert [set(row.ravel()) for row in flat] == [{0, 1}, {0, 1}]


def test_gpu_nodes_are_granules_and_a_bad_dcn_is_refused():
  devices = [_Device(i, i // 4, 0, 'gpu', 'NVIDIA H100 80GB HBM3') for i in range(8)]
  assert mesh_lib.granules(devices) == (2, True)
  nodes = _attribute(mesh_lib.make_mesh((2, 4, 1), devices), 'process_index')
  assert [set(row.ravel()) for row in nodes] == [{0}, {1}]
  one_per_gpu = [_Device(i, i, 0, 'gpu', 'NVIDIA H100 80GB HBM3') for i in range(8)]
  assert mesh_lib.granules(one_per_gpu) == (1, False)  # hosts unknown: config.dcn_mesh says
  ranks = _attribute(mesh_lib.make_mesh((2, 4, 1), one_per_gpu, dcn=(2, 1, 1)), 'process_index')
  assert [sorted(row.ravel()) for row in ranks] == [[0, 1, 2, 3], [4, 5, 6, 7]]
  with pytest.raises(ValueError, match=r'dcn_mesh \(3, 1, 1\) must have 3 sizes dividing'):
    mesh_lib.make_mesh((2, 4, 1), devices, dcn=(3, 1, 1))
