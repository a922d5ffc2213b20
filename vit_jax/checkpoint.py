"""The official `vit_jax.checkpoint` API, in front of `vit_jax.weights`.

A drop-in for the official module: `load`, `load_pretrained`, `inspect_params`, `recover_tree`,
`interpolate_posembed`, and `save`. Released and big_vision `.npz` files are read by
`weights/npz.py`; timm and Hugging Face files (`.safetensors`, `.bin` through
`weights_only=True`, a model directory) by `weights/foreign.py`; a loaded tree is mapped onto a
model to fine-tune by `weights/adapt.py`. The package itself imports those modules, not this
one.
"""

from typing import Any, Mapping, Optional, Sequence

import ml_collections

from vit_jax.weights import adapt
from vit_jax.weights import architecture
from vit_jax.weights import foreign
from vit_jax.weights import npz

# The official module's names, and the ones our own tools use, re-exported.
recover_tree = npz.recover_tree
read_npz = npz.read_npz
canonicalize = npz.canonicalize
to_released_layout = npz.to_released_layout
save = npz.save
inspect_params = npz.inspect_params
interpolate_posembed = npz.interpolate_posembed
resample_posemb = npz.resample_posemb
flatten = npz.flatten
adapt_params = adapt.adapt_params


def load(path: str) -> dict[str, Any]:
  """Reads a checkpoint into the canonical parameter tree (numpy leaves): a released or
  big_vision `.npz` (`weights/npz.py`), or a timm or Hugging Face file, whose model fields
  beyond the shapes come with `foreign.load`."""
  if foreign.handles(path):
    return foreign.load(path).params
  return npz.read(path)


def load_pretrained(*, pretrained_path: str, init_params: Mapping[str, Any],
                    model_config: Any, dont_load: Sequence[str] = (), reset_head: bool = True,
                    grid_shape: Optional[Sequence[int]] = None,
                    pretrained_grid_shape: Optional[Sequence[int]] = None) -> Any:
  """Maps a pretrained checkpoint onto a model for fine-tuning; returns a tree like `init_params`.

  As the official code: the head is reset to `init_params` (`reset_head`), `pre_logits` is
  dropped when the model has no representation layer, and position embeddings are resampled to
  the model's grid (the cls row kept; `grid_shape`/`pretrained_grid_shape` for non-square grids).
  `dont_load` regexes (over names like `head/kernel`) take those entries from `init_params`.
  Anything else that does not fit raises one ValueError listing missing, unexpected and
  mis-shaped entries with their shapes (`weights/adapt.py`).
  """
  del model_config  # Everything needed is in the two trees; kept for the official signature.
  return adapt.adapt_params(load(pretrained_path), init_params, source=pretrained_path,
                            dont_load=dont_load, reset_head=reset_head, grid_shape=grid_shape,
                            pretrained_grid_shape=pretrained_grid_shape)


def infer_model_config(params: Mapping[str, Any]
                       ) -> tuple[ml_collections.ConfigDict, Optional[int]]:
  """Reads the architecture off a tree's shapes -> (model config, num_classes); see
  `vit_jax.weights.architecture.infer`."""
  return architecture.infer(npz.canonicalize(params) if 'Transformer' in params else params)
