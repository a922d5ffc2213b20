"""Exports: official .npz, timm (ViT; NaFlexViT) and Hugging Face safetensors (ViT; SigLIP 2 NaFlex towers; BEiT),
StableHLO, ONNX.

`export(checkpoint, fmt, out)` is what `python -m vit_jax.export` runs.
"""

from vit_jax import errors
from vit_jax import storage

FORMATS = ('npz', 'timm', 'timm_naflex', 'timm_eva', 'timm_beit', 'hf', 'hf_siglip2', 'hf_beit', 'hf_aimv2', 'hf_mae', 'stablehlo',
           'onnx')


def export(checkpoint_path: str, fmt: str, out: str, *, model_name=None, image_size=None,
           labels=None) -> str:
  """Writes `checkpoint_path` as `fmt` to `out` (a path or an object-store URL); returns the
  path written."""
  # Imported here, not at the top: `vit_jax.export.stablehlo` must load an exported program
  # without the model code (flax), and the hf, timm and onnx formats need the export extra.
  from vit_jax.weights import trained_model  # pylint: disable=g-import-not-at-top
  if fmt not in FORMATS:
    raise errors.UserError(f'Unknown export format {fmt!r}; expected one of {FORMATS}.')
  if fmt == 'hf_mae':  # the whole masked autoencoder of an MAE run, decoder included
    from vit_jax.weights import hf_mae  # pylint: disable=g-import-not-at-top
    with storage.local_target(out) as local:
      written = hf_mae.export_workdir(checkpoint_path, local)
    return out if storage.is_remote(out) else written
  loaded = trained_model.load(checkpoint_path, model_name, image_size=image_size)
  with storage.local_target(out) as local:  # a URL: written here, then uploaded
    written = _write(loaded, fmt, local, labels)
  return out if storage.is_remote(out) else written


def _write(loaded, fmt: str, out: str, labels) -> str:
  from vit_jax.weights import npz  # pylint: disable=g-import-not-at-top
  args = (loaded.params, loaded.model_config, loaded.num_classes, loaded.image_size)
  if fmt == 'npz':
    npz.save(loaded.params, out)
    return out
  if fmt == 'hf':
    from vit_jax.export import hf  # pylint: disable=g-import-not-at-top
    return hf.export(*args, out, labels=labels or loaded.labels, pp=loaded.pp)
  if fmt == 'hf_siglip2':
    from vit_jax.export import hf  # pylint: disable=g-import-not-at-top
    return hf.export_siglip2(loaded.params, loaded.model_config, loaded.num_classes, out)
  if fmt == 'hf_aimv2':
    from vit_jax.export import hf  # pylint: disable=g-import-not-at-top
    return hf.export_aimv2(*args, out)
  if fmt == 'hf_beit':
    from vit_jax.export import hf  # pylint: disable=g-import-not-at-top
    return hf.export_beit(*args, out, labels=labels or loaded.labels, pp=loaded.pp)
  if fmt == 'timm':
    from vit_jax.export import timm  # pylint: disable=g-import-not-at-top
    return timm.export(*args, out, pp=loaded.pp)
  if fmt == 'timm_beit':
    from vit_jax.export import timm  # pylint: disable=g-import-not-at-top
    return timm.export_beit(*args, out, pp=loaded.pp)
  if fmt == 'timm_eva':
    from vit_jax.export import timm  # pylint: disable=g-import-not-at-top
    return timm.export_eva(*args, out, pp=loaded.pp)
  if fmt == 'timm_naflex':
    from vit_jax.export import timm  # pylint: disable=g-import-not-at-top
    return timm.export_naflex(*args, out, pp=loaded.pp)
  if fmt == 'stablehlo':
    from vit_jax.export import stablehlo  # pylint: disable=g-import-not-at-top
    return stablehlo.export(loaded.model, loaded.params, loaded.image_size, out)
  from vit_jax.export import onnx  # pylint: disable=g-import-not-at-top
  return onnx.export(*args, out)
