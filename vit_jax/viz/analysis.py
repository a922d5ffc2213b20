"""The numbers behind the paper's Figures 6 and 7, as pure functions of weights and attention.

Attention comes from the model itself: `MultiHeadAttention` sows its weights when the caller makes
`intermediates` mutable, for any variant, per-layer or scanned, hybrid or not.
"""

from typing import Any, Sequence

import jax
import numpy as np


def attention_weights(model, params: Any, images: np.ndarray) -> np.ndarray:
  """Encoder attention, [layers, batch, heads, tokens, tokens] (queries x keys)."""
  _, state = jax.jit(lambda p, x: model.apply({'params': p}, x, train=False,
                                              mutable=['intermediates']))(params, images)
  encoder = state['intermediates']['Transformer']
  if 'encoderblock' in encoder:  # scanned: one entry stacked over layers
    (stacked,) = encoder['encoderblock']['MultiHeadDotProductAttention_0']['attention_weights']
    return np.asarray(stacked, np.float32)
  layers = sorted((k for k in encoder if k.startswith('encoderblock_')),
                  key=lambda k: int(k.split('_')[1]))
  return np.stack([np.asarray(encoder[k]['MultiHeadDotProductAttention_0']['attention_weights'][0],
                              np.float32) for k in layers])


def rollout(attention: np.ndarray, num_prefix_tokens: int) -> np.ndarray:
  """Attention rollout (Abnar & Zuidema 2020): [layers, batch, heads, t, t] -> [batch, patches].

  Heads are averaged, the identity added for the residual path and rows renormalised; the layers'
  matrices are multiplied from the input up. The result is the attention of the output token
  (the cls token, or the mean over tokens without one) to each input patch, summing to 1.
  """
  mixed = attention.mean(axis=2)
  eye = np.eye(mixed.shape[-1], dtype=mixed.dtype)
  mixed = mixed + eye
  mixed = mixed / mixed.sum(axis=-1, keepdims=True)
  joint = mixed[0]
  for layer in mixed[1:]:
    joint = layer @ joint
  output_row = joint[:, 0] if num_prefix_tokens else joint.mean(axis=1)
  patches = output_row[:, num_prefix_tokens:]
  return patches / patches.sum(axis=-1, keepdims=True)


def mean_attention_distance(attention: np.ndarray, grid_shape: Sequence[int],
                            patch_pixels: float, num_prefix_tokens: int) -> np.ndarray:
  """Paper Figure 7 (right): [layers, heads] mean distance in pixels that attention spans.

  For each query patch, the attention-weighted distance between patch centres over the key
  patches (prefix tokens left out, weights renormalised), averaged over queries and images.
  """
  gh, gw = grid_shape
  patch_attention = attention[..., num_prefix_tokens:, num_prefix_tokens:]
  patch_attention = patch_attention / patch_attention.sum(axis=-1, keepdims=True)
  rows, cols = np.divmod(np.arange(gh * gw), gw)
  distance = np.hypot(rows[:, None] - rows[None, :], cols[:, None] - cols[None, :]) * patch_pixels
  per_query = (patch_attention * distance).sum(axis=-1)  # [layers, batch, heads, queries]
  return per_query.mean(axis=(1, 3))


def posemb_similarity(posemb: np.ndarray, grid_shape: Sequence[int],
                      num_prefix_tokens: int) -> np.ndarray:
  """Paper Figure 7 (centre): cosine similarity of each patch's posemb to all others,
  [gh, gw, gh, gw]."""
  gh, gw = grid_shape
  table = np.asarray(posemb, np.float64).reshape(-1, posemb.shape[-1])[num_prefix_tokens:]
  unit = table / np.maximum(np.linalg.norm(table, axis=-1, keepdims=True), 1e-12)
  return (unit @ unit.T).reshape(gh, gw, gh, gw)


def embedding_components(kernel: np.ndarray, count: int = 28) -> np.ndarray:
  """Paper Figure 7 (left): the first principal components of the patch-embedding filters.

  `kernel` [ph, pw, channels, width] holds `width` linear filters; returns [count, ph, pw,
  channels] components (unit vectors, sign-normalised so their largest entry is positive).
  """
  ph, pw, channels, width = kernel.shape
  filters = np.asarray(kernel, np.float64).reshape(ph * pw * channels, width).T
  filters = filters - filters.mean(axis=0, keepdims=True)
  _, _, components = np.linalg.svd(filters, full_matrices=False)
  components = components[:min(count, components.shape[0])]
  signs = np.sign(components[np.arange(len(components)), np.abs(components).argmax(axis=1)])
  return (components * signs[:, None]).reshape(-1, ph, pw, channels)
