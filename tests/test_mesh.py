"""Mesh construction from config sizes."""

import jax
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
