"""StableHLO: the inference function serialized with `jax.export`, batch size symbolic.

`model.jax_export` holds the serialized StableHLO module with the signature
`f(params, images[batch, H, W, 3]) -> logits[batch, classes]`; `params.npz` the weights (flat
'/'-joined names); `model.mlir` the module as text for other toolchains. `load()` below runs it
with jax and numpy only: no model code.
"""

import json
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np


def export(model, params: Any, image_size: int, out_dir: str) -> str:
  os.makedirs(out_dir, exist_ok=True)
  params = jax.tree.map(lambda x: np.asarray(x, np.float32), params)

  def infer(params, images):
    return model.apply({'params': params}, images, train=False)

  (batch,) = jax.export.symbolic_shape('batch')
  images = jax.ShapeDtypeStruct((batch, image_size, image_size, 3), jnp.float32)
  exported = jax.export.export(jax.jit(infer))(
      jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params), images)
  with open(os.path.join(out_dir, 'model.jax_export'), 'wb') as f:
    f.write(exported.serialize())
  with open(os.path.join(out_dir, 'model.mlir'), 'w', encoding='utf-8') as f:
    f.write(exported.mlir_module())
  flat = {'/'.join(path): value for path, value in _flatten(params)}
  np.savez(os.path.join(out_dir, 'params.npz'), **flat)
  with open(os.path.join(out_dir, 'signature.json'), 'w', encoding='utf-8') as f:
    json.dump({'inputs': f'images: float32[batch, {image_size}, {image_size}, 3] in [-1, 1]',
               'outputs': 'logits: float32[batch, classes]',
               'platforms': list(exported.platforms)}, f, indent=2)
  return out_dir


def _flatten(tree, prefix=()):
  for key, value in tree.items():
    if isinstance(value, dict):
      yield from _flatten(value, prefix + (key,))
    else:
      yield prefix + (key,), value


def load(out_dir: str) -> Callable[[np.ndarray], jax.Array]:
  """images [batch, H, W, 3] -> logits, from an exported directory (jax + numpy only)."""
  with open(os.path.join(out_dir, 'model.jax_export'), 'rb') as f:
    exported = jax.export.deserialize(bytearray(f.read()))
  params: dict[str, Any] = {}
  with np.load(os.path.join(out_dir, 'params.npz'), allow_pickle=False) as arrays:
    for name in arrays.files:
      node = params
      *parents, leaf = name.split('/')
      for key in parents:
        node = node.setdefault(key, {})
      node[leaf] = arrays[name]
  return lambda images: exported.call(params, jnp.asarray(images, jnp.float32))
