"""The training checkpointer on its own: items, round trip, keep-N, fallback past a broken step."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vit_jax.weights import workdir_params
from vit_jax.parallel import mesh as mesh_lib
from vit_jax.train import checkpointer
from vit_jax.train import state as state_lib
from vit_jax import models


def _state(seed, ema=True):
  model = models.VisionTransformer(num_classes=3, patches={'size': (4, 4)}, hidden_size=8,
                                   transformer=dict(mlp_dim=8, num_heads=2, num_layers=1))
  tx = optax.adam(1e-3)
  mesh = mesh_lib.make_mesh((-1, 1, 1))
  state, shardings = state_lib.create(model, tx, image_shape=(8, 8, 3), seed=seed, mesh=mesh,
                                      preset='dp', ema=ema)
  abstract, _ = state_lib.abstract(model, tx, image_shape=(8, 8, 3), mesh=mesh, preset='dp',
                                   ema=ema)
  return state.replace(step=jnp.asarray(seed, jnp.int32)), abstract


def test_round_trip_keeps_every_leaf_and_writes_params_as_their_own_item(tmp_path):
  state, abstract = _state(5)
  ckpt = checkpointer.Checkpointer(str(tmp_path), async_save=False)
  ckpt.save(5, state, {'global_position': 40}, {'seed': 0}, wait=True)
  assert {'config', 'data', 'params', 'train_state'} <= set(
      os.listdir(tmp_path / 'checkpoints' / '5'))
  restored = ckpt.restore(abstract)
  ckpt.close()
  assert restored.step == 5 and restored.data_state == {'global_position': 40}
  assert restored.config == {'seed': 0}
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
               restored.state, state)
  assert restored.state.params['head']['kernel'].sharding == \
      abstract.params['head']['kernel'].sharding
  step, params = workdir_params.read(str(tmp_path))  # parameters alone, as numpy: the EMA
  assert step == 5 and isinstance(params['head']['kernel'], np.ndarray)
  jax.tree.map(np.testing.assert_array_equal, params, jax.device_get(state.ema_params))


def test_keeps_the_newest_and_falls_back_past_a_broken_one(tmp_path, caplog):
  ckpt = checkpointer.Checkpointer(str(tmp_path), max_to_keep=2, async_save=False)
  for step in (1, 2, 3):
    state, abstract = _state(step, ema=False)
    ckpt.save(step, state, {'global_position': step}, {}, wait=True)
  assert ckpt.steps() == [2, 3]
  for root, _, files in os.walk(tmp_path / 'checkpoints' / '3' / 'train_state'):
    for name in files:
      os.truncate(os.path.join(root, name), 1)
  restored = ckpt.restore(abstract)
  ckpt.close()
  assert restored.step == 2 and int(restored.state.step) == 2
  assert 'is damaged' in caplog.text
