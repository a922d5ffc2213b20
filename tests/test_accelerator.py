"""The accelerator path, checked on CPU by compiling the train step and reading the program:
cuDNN attention where `auto` should pick it (lowered for CUDA), the dtype of FSDP's gathers and
gradient reductions, micro-batches that stay on their devices, the non-finite guard's memory,
and rbg dropout keys."""

import glob
import os
import re

import jax
import jax._src.cudnn.fused_attention_stablehlo as cudnn_attention
import jax.numpy as jnp
import numpy as np
import pytest

from support import engine_setup
from vit_jax.configs import common
from vit_jax.models import attention
from vit_jax.parallel import mesh as mesh_lib
from vit_jax.parallel import partitioning
from vit_jax.train import optimizer
from vit_jax.train import options
from vit_jax.train import state as state_lib
from vit_jax.train import step as step_lib
from vit_jax.train.state import TrainState

# Width 32 with 2 heads: head_dim 16, which cuDNN's flash kernels take. 16x16 images in 4x4
# patches and a class token: 17 tokens, an odd count (as a ViT's 197).
SMALL = dict(hidden_size=32, transformer=dict(mlp_dim=64, num_heads=2, num_layers=2,
                                              dropout_rate=0.0, attention_dropout_rate=0.0))


@pytest.fixture
def cuda_target(monkeypatch):
  """Lowering for CUDA on a machine without one: JAX's cuDNN attention asks the installed cuDNN
  for its version and the GPU for its compute capability at trace time; stand in a cuDNN 9.10
  on a Hopper GPU, and tell `attention.choose` the program is for a GPU."""
  monkeypatch.setattr(cudnn_attention, 'check_cudnn_version', lambda: 91000)
  monkeypatch.setattr(cudnn_attention, 'check_compute_capability', lambda capability: True)
  monkeypatch.setattr(cudnn_attention, 'is_cuda_compute_capability_equal', lambda c: False)
  monkeypatch.setattr(attention, 'platform', lambda: 'gpu')


def _cuda_train_step_text(**model_fields):
  vit = engine_setup.model(**{**SMALL, **model_fields})
  tx, _ = optimizer.build(engine_setup.opt_config(), engine_setup.abstract_params(vit),
                          total_steps=10)
  params = engine_setup.abstract_params(vit)
  state = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=params,
                     opt_state=jax.eval_shape(tx.init, params),
                     rng=jax.ShapeDtypeStruct((2,), jnp.uint32))
  batch = {'image': jax.ShapeDtypeStruct((8, *engine_setup.IMAGE_SHAPE), jnp.float32),
           'labels': jax.ShapeDtypeStruct((8, engine_setup.NUM_CLASSES), jnp.float32)}
  step = step_lib.make_train_step(engine_setup.classifier(vit), tx,
                                  step_lib.StepOptions(guard='select', dropout_kind='rbg'))
  return jax.jit(step).trace(state, batch).lower(lowering_platforms=('cuda',)).as_text()


@pytest.mark.parametrize('fields, expected', [
    (dict(dtype='bfloat16'), True),  # auto, bf16, head_dim 16: cuDNN
    (dict(dtype='auto'), True),  # auto dtype on a GPU is bf16
    (dict(dtype='bfloat16', classifier='map'), True),  # the MAP head's attention too
    (dict(dtype='float32'), False),  # cuDNN's flash kernels take bf16/fp16 only
    (dict(dtype='bfloat16', attention_impl='xla'), False),  # asked for XLA
])
def test_auto_attention_takes_cudnn_on_gpu_where_jax_allows(cuda_target, fields, expected):
  text = _cuda_train_step_text(**fields)
  forward = text.count('__cudnn$fmhaSoftmax(')
  backward = text.count('__cudnn$fmhaSoftmaxBackward(')
  if expected:
    layers = 2 + (fields.get('classifier') == 'map')
    assert forward == layers and backward == layers, (forward, backward)
  else:
    assert forward == backward == 0


def test_cudnn_route_pads_odd_token_counts_without_changing_the_result(monkeypatch):
  """`_cudnn` pads 17 tokens to 18 behind a padding mask; run through XLA's fused call (the
  same arguments cuDNN gets), the result equals unpadded attention."""
  fused = jax.nn.dot_product_attention
  calls = []

  def through_xla(*args, implementation=None, **kwargs):
    calls.append((implementation, args[0].shape))
    return fused(*args, implementation='xla', **kwargs)
  monkeypatch.setattr(jax.nn, 'dot_product_attention', through_xla)
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.standard_normal((2, 17, 2, 16)), jnp.float32) for _ in range(3))
  out = attention._cudnn(q, k, v)  # pylint: disable=protected-access
  assert calls == [('cudnn', (2, 18, 2, 16))]
  np.testing.assert_allclose(out, fused(q, k, v, implementation='xla'), rtol=1e-5, atol=1e-6)


def _partitioned_text(tmp_path, preset, micro_batches=1, dtype='bfloat16', **step_kwargs):
  """The train step of the small model on 8 devices as the SPMD partitioner leaves it: the
  collectives with the dtypes they move (the CPU backend later widens bf16 collectives to
  float32, which a GPU or TPU does not)."""
  vit = engine_setup.model(dtype=dtype, **SMALL)
  mesh = mesh_lib.make_mesh((1, 8, 1) if preset == 'fsdp' else (8, 1, 1))
  tx, _ = optimizer.build(engine_setup.opt_config(), engine_setup.abstract_params(vit),
                          total_steps=10)
  state, shardings = state_lib.create(vit, tx, image_shape=engine_setup.IMAGE_SHAPE, seed=0,
                                      mesh=mesh, preset=preset)
  step = step_lib.make_train_step(engine_setup.classifier(vit), tx, step_lib.StepOptions(
      micro_batches=micro_batches, param_shardings=shardings.params, **step_kwargs))
  batch = jax.device_put(engine_setup.batches(1, global_batch=32)[0],
                         mesh_lib.batch_sharding(mesh))
  dump = str(tmp_path / 'dump')
  with partitioning.use(mesh, preset):
    compiled = step_lib.jit_train_step(step, shardings, mesh).lower(state, batch).compile(
        compiler_options={'xla_dump_to': dump,
                          'xla_dump_hlo_pass_re': 'spmd-partitioning'})
  (after,) = glob.glob(os.path.join(dump, '*jit_train_step*after_spmd-partitioning*.txt'))
  with open(after) as f:
    return f.read(), compiled


def _collectives(text, kind):
  """(dtype, shape) of every `kind` collective with at least two dimensions (weights,
  gradients and batches; not the scalar metrics)."""
  found = re.findall(rf'= (\w+)\[([0-9,]+)\][^ ]* {kind}\(', text)
  return [(dtype, tuple(int(d) for d in dims.split(','))) for dtype, dims in found
          if dims.count(',') >= 1]


HEAD = {(32, 5), (5, 32)}  # the head computes in float32 by design (logits feed the loss)


@pytest.mark.parametrize('dtype', ['bfloat16', 'float32'])
def test_fsdp_gathers_and_reduces_weights_in_the_compute_dtype(tmp_path, dtype):
  """Every weight FSDP gathers, and every gradient it reduces, moves in the compute dtype (the
  float32 model is the control: the same count of collectives, all float32)."""
  text, _ = _partitioned_text(tmp_path, 'fsdp', dtype=dtype,
                              compute_dtype=None if dtype == 'float32' else jnp.bfloat16)
  gathers = [c for c in _collectives(text, 'all-gather') if c[1] not in HEAD]
  reductions = [c for c in _collectives(text, 'all-reduce') if c[1] not in HEAD]
  assert len(gathers) >= 10 and len(reductions) >= 10, (gathers, reductions)
  want = {'bfloat16': 'bf16', 'float32': 'f32'}[dtype]
  assert {d for d, _ in gathers + reductions} == {want}, (gathers, reductions)


def test_micro_batches_stay_on_their_devices(tmp_path):
  """Under data parallelism nothing but gradients and metrics crosses devices, with or without
  accumulation: no all-gather at all (a contiguous split would gather each micro-batch)."""
  text, _ = _partitioned_text(tmp_path, 'dp', micro_batches=2)
  assert 'while' in text  # the accumulation loop is there
  assert not _collectives(text, 'all-gather'), _collectives(text, 'all-gather')


@pytest.mark.parametrize('guard', ['cond', 'select'])
def test_the_select_guard_updates_the_state_in_place(tmp_path, guard):
  """The select guard (off CPU) has no conditional around the update, whose two branches hold
  an old and a new state at once; every state leaf is written in place over its donated input
  either way. (CPU's buffer assignment shows no steady memory difference between the two:
  experiments/results/accelerator_static.md.)"""
  _, compiled = _partitioned_text(tmp_path, 'dp', compute_dtype=jnp.bfloat16, guard=guard)
  text = compiled.as_text()
  assert (' conditional(' in text) == (guard == 'cond')
  vit = engine_setup.model(**SMALL)
  leaves = len(jax.tree.leaves(engine_setup.abstract_params(vit)))
  header = text.split('\n', 1)[0]  # HloModule ..., input_output_alias={ {0}: (0, ...), ... }
  assert header.count('-alias)') >= 3 * leaves  # params and Adam's two moments at least


def _one_step_loss(dropout_kind):
  vit = engine_setup.model(transformer=dict(mlp_dim=32, num_heads=4, num_layers=2,
                                            dropout_rate=0.3, attention_dropout_rate=0.0))
  mesh = mesh_lib.make_mesh((1, 1, 1), jax.devices()[:1])
  tx, _ = optimizer.build(engine_setup.opt_config(), engine_setup.abstract_params(vit),
                          total_steps=10)
  state, shardings = state_lib.create(vit, tx, image_shape=engine_setup.IMAGE_SHAPE, seed=0,
                                      mesh=mesh, preset='dp')
  step = step_lib.jit_train_step(step_lib.make_train_step(
      engine_setup.classifier(vit), tx, step_lib.StepOptions(dropout_kind=dropout_kind)),
      shardings, mesh)
  with partitioning.use(mesh, 'dp'):
    state, metrics = step(state, engine_setup.batches(1)[0])
  assert state.rng.dtype == jnp.uint32 and state.rng.shape == (2,)  # checkpoints unchanged
  return float(metrics['grad_norm'])  # (the zero-initialised head makes every first loss log 5)


def test_rbg_dropout_is_its_own_deterministic_stream():
  """rbg dropout bits are drawn from the state's threefry key: the same state gives the same
  step, other bits than threefry's, and the state keeps its raw threefry key."""
  rbg = _one_step_loss('rbg')
  assert rbg == _one_step_loss('rbg')
  assert rbg != _one_step_loss('threefry')


def test_auto_choices_on_cpu():
  vit = engine_setup.model(dtype='auto')
  step = options.read_step(common.get_config())
  assert step.guard == step.dropout_rng == 'auto'
  assert step_lib.accelerator_choices(step, vit) == dict(compute_dtype=None, guard='cond',
                                                        dropout_kind='threefry')
  assert vit.compute_dtype == jnp.float32
