"""Patch embeddings: kernels at another patch size (FlexiViT's pseudo-inverse resize, PI-resize)
and the embedding of NaFlex's flattened patches with the convolution's parameters.

Beyer et al., "FlexiViT: One Model for All Patch Sizes" (arXiv:2212.08013), Sec. 3.4: with B the
matrix of a bilinear resize of a patch from p x p to q x q pixels (resize(x) = B x), the kernel
w' = pinv(B^T) w gives <B x, w'> = <x, w> for every patch x when q >= p (upsampling), and the
least-squares best such kernel when q < p. Used to load B/16 weights into B/8 or B/32 models.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vit_jax import errors


def resize_matrix(old: Sequence[int], new: Sequence[int]) -> np.ndarray:
  """B [new_h * new_w, old_h * old_w]: the bilinear (antialiased) resize of a flattened patch."""
  old, new = tuple(int(s) for s in old), tuple(int(s) for s in new)
  basis = np.eye(old[0] * old[1], dtype=np.float32).reshape(-1, *old)
  resized = jax.vmap(lambda e: jax.image.resize(e, new, 'bilinear', antialias=True))(basis)
  return np.asarray(resized, np.float64).reshape(old[0] * old[1], -1).T


def resample_patch_embed(kernel: np.ndarray, new_size: Sequence[int]) -> np.ndarray:
  """Kernel [ph, pw, channels, width] -> [new_h, new_w, channels, width] by PI-resize."""
  kernel = np.asarray(kernel)
  if kernel.ndim != 4:
    raise errors.UserError(
        f'A patch-embedding kernel is [ph, pw, channels, width], got {kernel.shape}.')
  old_size, new_size = kernel.shape[:2], tuple(int(s) for s in new_size)
  if tuple(old_size) == new_size:
    return kernel
  resize = resize_matrix(old_size, new_size)  # [new, old]
  flat = kernel.reshape(old_size[0] * old_size[1], -1).astype(np.float64)
  new = np.linalg.pinv(resize.T) @ flat
  return new.reshape(*new_size, *kernel.shape[2:]).astype(kernel.dtype)


class FlattenedPatchEmbedding(nn.Module):
  """The patch embedding of NaFlex inputs: flattened patches [b, t, ph*pw*c] -> [b, t, width].

  The parameters are the strided convolution's (`kernel` [ph, pw, c, width], `bias`, with
  `nn.Conv`'s initialisers), so square and NaFlex inputs share them: a patch flattened in
  (row, column, channel) order times the reshaped kernel is the convolution at that patch.
  """

  patch_size: tuple[int, int]
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, patches: jnp.ndarray) -> jnp.ndarray:
    ph, pw = self.patch_size
    channels, remainder = divmod(patches.shape[-1], ph * pw)
    if remainder or not channels:
      raise errors.UserError(f'NaFlex patches of {patches.shape[-1]} values do not hold '
                             f'{ph}x{pw} pixels of whole channels.')
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (ph, pw, channels, self.features), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros_init(), (self.features,), jnp.float32)
    kernel = kernel.reshape(ph * pw * channels, self.features).astype(self.dtype)
    return jnp.einsum('btp,pw->btw', patches.astype(self.dtype), kernel) + bias.astype(self.dtype)
