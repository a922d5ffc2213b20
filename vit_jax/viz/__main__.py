r"""Attention maps and the paper's analysis figures for a checkpoint.

  python -m vit_jax.viz --checkpoint=workdirs/digits --image=photo.jpg --out=viz/
  python -m vit_jax.viz --checkpoint=ViT-B_16.npz --image=images/ --out=viz/ --image_size=384
  python -m vit_jax.viz --checkpoint=ViT-B_16.npz --image=images/ --out=viz/ --naflex=256

Writes, into --out:
  <image>_rollout.png / .npy   attention rollout overlaid on the input (paper Figure 6), raw map
  <image>_heads.png            per-layer, per-head attention of the output token to the patches
  attention_distance.png/.csv  mean attention distance per head vs depth over all images (Fig. 7)
  posemb_similarity.png        cosine similarity of position embeddings (Fig. 7, centre)
  embedding_filters.png        first principal components of the patch-embedding filters (Fig. 7)
  reconstruction.png           an MAE workdir's: each image, masked, reconstructed
  dense.png                    a dense run's: each image beside its predicted classes or depth
"""

from absl import app
from absl import flags

from vit_jax import cli
from vit_jax.data import images
from vit_jax.viz import report

_CHECKPOINT = flags.DEFINE_string('checkpoint', None, cli.CHECKPOINT_HELP)
_IMAGE = flags.DEFINE_string('image', None, 'An image file or a folder of images.')
_OUT = flags.DEFINE_string('out', None, 'Output folder.')
_MODEL = flags.DEFINE_string('model', None, 'Variant name for an .npz whose shapes are ambiguous.')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', None, "Input resolution (default: the "
                                   "checkpoint's own; position embeddings are resampled).")
_MAX_IMAGES = flags.DEFINE_integer('max_images', 64, 'At most this many images from a folder.')
_NAFLEX = flags.DEFINE_integer('naflex', None, 'Native resolution: each image keeps its aspect '
                               'ratio as a sequence of at most this many patches (docs/naflex.md). '
                               "Default: a NaFlex checkpoint's own budget (SigLIP 2's "
                               'max_num_patches).')


def main(argv):
  del argv
  for name, flag in (('checkpoint', _CHECKPOINT), ('image', _IMAGE), ('out', _OUT)):
    if not flag.value:
      raise app.UsageError(f'--{name} is required.')
  written = report.run(_CHECKPOINT.value, images.image_paths(_IMAGE.value, _MAX_IMAGES.value),
                       _OUT.value, model_name=_MODEL.value, image_size=_IMAGE_SIZE.value,
                       naflex=_NAFLEX.value)
  for path in [*written.rollouts, *written.head_maps, written.distance_png, written.distance_csv,
               written.posemb_png, written.filters_png, written.reconstruction_png,
               written.dense_png]:
    if path is None:
      continue
    print(path)


if __name__ == '__main__':
  cli.run(main)
