"""Sharding tables: every parameter has axes; presets place them as documented."""

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import pytest

from vit_jax import checkpoint
from vit_jax import models
from vit_jax.parallel import mesh as mesh_lib
from vit_jax.parallel import partitioning


def _abstract(name='ViT-B_16', **kw):
  model = models.get_model(name, num_classes=1000, **kw)
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3)),
                                           train=False))['params']


@pytest.mark.parametrize('name,kw', [('ViT-B_16', {}), ('R50+ViT-B_16', {}),
                                     ('ViT-B_16', {'scan': True}), ('ViT-g_14', {'scan': True})])
def test_every_parameter_resolves(name, kw):
  for path, leaf in checkpoint.flatten(_abstract(name, **kw)).items():
    axes = partitioning.logical_axes(path, len(leaf.shape))
    assert len(axes) == len(leaf.shape)


def test_presets_place_parameters():
  mesh = mesh_lib.make_mesh((2, 2, 2))
  params = _abstract()
  def spec(layout, path):
    shardings = checkpoint.flatten(partitioning.param_shardings(params, mesh, layout))
    return shardings['Transformer/encoderblock_0/' + path].spec

  assert spec('dp', 'MlpBlock_0/Dense_0/kernel') == P(None, None)
  assert spec('fsdp', 'MlpBlock_0/Dense_0/kernel') == P('fsdp', None)
  assert spec('fsdp_tp', 'MlpBlock_0/Dense_0/kernel') == P('fsdp', 'tensor')
  assert spec('fsdp_tp', 'MlpBlock_0/Dense_1/kernel') == P('tensor', 'fsdp')
  assert spec('fsdp_tp', 'MultiHeadDotProductAttention_0/query/kernel') == P('fsdp', 'tensor',
                                                                             None)
  assert spec('fsdp_tp', 'MultiHeadDotProductAttention_0/out/kernel') == P('tensor', None,
                                                                           'fsdp')
  head = partitioning.param_shardings(params, mesh, 'fsdp_tp')['head']
  assert head['kernel'].spec == P('fsdp', None) and head['bias'].spec == P(None)


def test_indivisible_dimensions_stay_whole():
  mesh = mesh_lib.make_mesh((1, 8, 1))
  params = _abstract('testing')  # width 10: not divisible by 8
  shardings = partitioning.param_shardings(params, mesh, 'fsdp')
  assert shardings['embedding']['kernel'].spec == P(None, None, None, None)


def test_scanned_layers_get_a_leading_unsharded_axis():
  mesh = mesh_lib.make_mesh((1, 8, 1))
  shardings = partitioning.param_shardings(_abstract(scan=True), mesh, 'fsdp')
  kernel = shardings['Transformer']['encoderblock']['MlpBlock_0']['Dense_0']['kernel']
  assert kernel.spec == P(None, 'fsdp', None)


def test_unknown_layout():
  with pytest.raises(ValueError, match="config.sharding='zero' is not a preset"):
    partitioning.get_rules('zero')
