r"""Exports a checkpoint (one of our workdirs or a released .npz) to another framework.

  python -m vit_jax.export --checkpoint=workdirs/digits --format=hf --out=exports/digits_hf
  python -m vit_jax.export --checkpoint=ViT-B_16.npz --format=npz --out=exports/ViT-B_16.npz

Formats: npz (the official released layout), timm (safetensors + timm_model.json), hf
(transformers ViTForImageClassification directory), stablehlo (jax.export, symbolic batch),
onnx (a .onnx file, via the PyTorch model).
"""

from absl import flags

from vit_jax import cli
from vit_jax import export as export_lib
from vit_jax import storage

_CHECKPOINT = flags.DEFINE_string('checkpoint', None, cli.CHECKPOINT_HELP, required=True)
_FORMAT = flags.DEFINE_enum('format', None, export_lib.FORMATS, 'What to write.', required=True)
_OUT = flags.DEFINE_string('out', None, 'Output file (npz, onnx) or directory.', required=True)
_MODEL = flags.DEFINE_string('model', None, 'Variant name for an .npz whose shapes are ambiguous.')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', None, 'Input resolution (default: the '
                                   "checkpoint's own; position embeddings are resampled).")
_LABELS = flags.DEFINE_string('labels', None, 'Text file of class names (hf: id2label).')


def main(argv):
  del argv
  labels = None
  if _LABELS.value:
    labels = [line.strip() for line in storage.read_text(_LABELS.value).splitlines()
              if line.strip()]
  path = export_lib.export(_CHECKPOINT.value, _FORMAT.value, _OUT.value, model_name=_MODEL.value,
                image_size=_IMAGE_SIZE.value, labels=labels)
  print(f'Wrote {_FORMAT.value} export to {path}')


if __name__ == '__main__':
  cli.run(main)
