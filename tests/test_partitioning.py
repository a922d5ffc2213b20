"""Sharding tables: every parameter has axes; presets place them as documented."""

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import numpy as np
import optax
import pytest

from vit_jax import checkpoint
from vit_jax import errors
from vit_jax import models
from vit_jax import objectives
from vit_jax import param_names
from vit_jax.configs import common
from vit_jax.parallel import mesh as mesh_lib
from vit_jax.parallel import partitioning
from vit_jax.train import options
from vit_jax.train import state as state_lib


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


def _abstract_under_fsdp(**fields):
  """The trained module's abstract state of a ViT-B/16 run with `fields` set, on (1, 8, 1)."""
  config = common.get_config()
  config.model.dtype = 'float32'
  config.update(mesh=(1, 8, 1), sharding='fsdp', **{k: v for k, v in fields.items()
                                                     if k != 'model'})
  config.model.update(fields.get('model', {}))
  read = options.read(config)
  model = objectives.build(read.objective, read.objective_context()).train_model
  mesh = mesh_lib.make_mesh((1, 8, 1))
  state, shardings = state_lib.abstract(model, optax.adam(1e-3), image_shape=(224, 224, 3),
                                        mesh=mesh, preset='fsdp')
  return state.params, shardings.params, mesh


FAMILIES = {
    'classification': {}, 'pre_logits': {'model': {'representation_size': 768}},
    'distilled_student': {'model': {'distilled': True}},
    'gated_mlp_registers': {'model': {'gated_mlp': True, 'num_registers': 4,
                                      'layerscale': 1e-5}},
    'mae': {'objective': 'mae'},
    'dense_linear': {'objective': 'dense', 'num_classes': 150},
    'dense_segmenter': {'objective': 'dense', 'num_classes': 150,
                        'dense': {'head': 'mask_transformer', 'decoder_width': 768}},
    'dense_multilevel': {'objective': 'dense', 'num_classes': 150,
                         'dense': {'head': 'multilevel'}},
}


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_no_large_parameter_is_left_whole_under_fsdp(family):
  """Every objective's and model family's ViT-B/16 parameters above 1 MiB are split over fsdp."""
  params, shardings, mesh = _abstract_under_fsdp(**FAMILIES[family])
  partitioning.check_coverage(params, shardings, mesh, 'fsdp')  # refuses what is missed
  flat = param_names.flatten(shardings)
  whole = [p for p, leaf in param_names.flatten(params).items()
           if np.prod(leaf.shape) * 4 > 2**20 and all(a is None for a in flat[p].spec)]
  assert whole == []


def test_a_large_parameter_no_rule_names_is_refused_or_allowed_by_name():
  params, shardings, mesh = _abstract_under_fsdp()
  params = {**params, 'new_module': {'kernel': jax.ShapeDtypeStruct((768, 1024), jnp.float32)}}
  shardings = {**shardings, 'new_module': {
      'kernel': jax.sharding.NamedSharding(mesh, P(None, None))}}
  with pytest.raises(errors.UserError, match=r"new_module/kernel \(3.0 MiB: no row of PARAM_AXES "
                     r"names it\)\. Add a row"):
    partitioning.check_coverage(params, shardings, mesh, 'fsdp')
  partitioning.check_coverage(params, shardings, mesh, 'fsdp', allowed=(r'new_module/.*',))
  partitioning.check_coverage(params, shardings, mesh, 'fsdp', max_replicated_mb=4.0)
  partitioning.check_coverage(params, shardings, mesh, 'dp')  # replicated by choice
