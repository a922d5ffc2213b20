"""Position embeddings: learned (the paper) and fixed 2-D sin-cos (MoCo v3, big_vision)."""

from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

Dtype = Any


def posemb_sincos_2d(height: int, width: int, hidden_size: int,
                     temperature: float = 10_000.) -> np.ndarray:
  """Fixed embeddings of a [height, width] patch grid -> [1, height * width, hidden_size].

  A quarter of the channels each for sin(x), cos(x), sin(y), cos(y), with frequencies
  temperature^(-k / (hidden_size/4 - 1)), rows in row-major patch order.
  """
  if hidden_size % 4:
    raise ValueError(f'posemb=sincos2d needs hidden_size divisible by 4, got {hidden_size}.')
  quarter = hidden_size // 4
  omega = 1.0 / temperature**(np.arange(quarter) / max(quarter - 1, 1))
  y, x = np.mgrid[:height, :width]
  x = np.einsum('m,d->md', x.ravel(), omega)
  y = np.einsum('m,d->md', y.ravel(), omega)
  table = np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1)
  return table[None].astype(np.float32)


class AddPositionEmbs(nn.Module):
  """Adds a learned embedding [1, tokens, width] (`pos_embedding`) to inputs [b, tokens, width]."""

  posemb_init: Callable[..., jnp.ndarray] = nn.initializers.normal(stddev=0.02)  # as BERT
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs: jnp.ndarray) -> jnp.ndarray:
    if inputs.ndim != 3:
      raise ValueError(f'AddPositionEmbs expects [batch, tokens, width], got {inputs.shape}.')
    posemb = self.param('pos_embedding', self.posemb_init, (1, *inputs.shape[1:]),
                        self.param_dtype)
    return inputs + posemb.astype(inputs.dtype)
