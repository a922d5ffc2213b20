r"""Classifies images with a ViT: a released `.npz` checkpoint or a freshly initialised variant.

  python -m vit_jax.infer --checkpoint=ViT-B_16.npz --image=cat.jpg --labels=imagenet.txt
  python -m vit_jax.infer --model=ViT-B_16 --image=cat.jpg     # random weights: a smoke test

Without `--model` the architecture is read off the checkpoint (its config, else its parameter
shapes); without `--image_size` the checkpoint's own resolution is used (position embeddings are
resampled otherwise). Images go through the input transform the checkpoint was trained with
(`TrainedModel.pp`: a workdir's evaluator, a Hugging Face preprocessor_config.json, timm's
pretrained_cfg; the official [-1, 1] resize for a released .npz). Without `--image` the photograph that ships with scikit-learn is used.
"""

import dataclasses
from typing import Optional, Sequence

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from vit_jax import storage
from vit_jax import errors
from vit_jax import cli
from vit_jax import models
from vit_jax.weights import trained_model
from vit_jax.data import images as images_lib
from vit_jax.data import naflex
from vit_jax.models import sequences
from vit_jax.weights import transforms

def _define_flags() -> None:
  """The command's flags (defined only when run as a command: importing this module as a library
  defines none, and `infer`, `export` and `viz` share names)."""
  flags.DEFINE_string('checkpoint', None, cli.CHECKPOINT_HELP)
  flags.DEFINE_string('model', None, 'Variant name (ViT-B_16, B/16, ...). Inferred from '
                      '--checkpoint when omitted.')
  flags.DEFINE_list('image', None, 'Image files (comma separated). Default: an example '
                    'photograph shipped with scikit-learn.')
  flags.DEFINE_integer('image_size', None, 'Square input resolution. Default: the '
                       "checkpoint's own, else 224.")
  flags.DEFINE_integer('num_classes', 1000, 'Classes of a randomly initialised model.')
  flags.DEFINE_string('labels', None, 'Text file with one class name per line (default: '
                      "the checkpoint's own, e.g. a workdir's labels.txt).")
  flags.DEFINE_integer('top_k', 5, 'How many classes to print per image.')
  flags.DEFINE_integer('naflex', None, 'Native resolution: each image keeps its aspect '
                       'ratio as a sequence of at most this many patches (docs/naflex.md). '
                       "Default: a NaFlex checkpoint's own budget (SigLIP 2's "
                       'max_num_patches).')


@dataclasses.dataclass
class Prediction:
  image: str
  classes: list[int]
  probabilities: list[float]
  names: Optional[list[str]] = None  # class names, when the checkpoint stores them (labels.txt)


def example_image() -> str:
  """Path of a photograph bundled with scikit-learn (no download)."""
  return images_lib.example_photo()


def build(model_name: Optional[str], checkpoint_path: Optional[str], image_size: Optional[int],
          num_classes: int, seed: int = 0):
  """(model, params, input transform (a pp string), class names or None) from a checkpoint
  and/or a variant name."""
  if checkpoint_path is not None:
    loaded = trained_model.load(checkpoint_path, model_name, image_size=image_size)
    return loaded.model, loaded.params, loaded.pp, loaded.labels
  if model_name is None:
    raise errors.UserError('Pass --model=<variant> or --checkpoint=<workdir or file.npz>.')
  model = models.get_model(model_name, num_classes=num_classes)
  image_size = image_size or 224
  params = jax.jit(model.init, static_argnames='train')(
      jax.random.key(seed), jnp.zeros((1, image_size, image_size, 3)), train=False)['params']
  return model, params, transforms.released(image_size), None


def classify(model, params, images, top_k: int) -> tuple[np.ndarray, np.ndarray]:
  """Top-k (class indices, probabilities), each [batch, k], of images [b, h, w, 3] or of
  one-image NaFlex sequences."""
  logits = jax.jit(lambda p, x: model.apply({'params': p}, x, train=False))(params, images)
  if isinstance(images, sequences.Sequences):
    logits = logits[:, 0]
  probabilities = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  k = min(top_k, probabilities.shape[-1])
  values, indices = jax.lax.top_k(probabilities, k)
  return np.asarray(indices), np.asarray(values)


def run(*, model_name=None, checkpoint_path=None, image_paths: Sequence[str] = (),
        image_size=None, num_classes=1000, top_k=5, seed=0,
        naflex_patches: Optional[int] = None) -> list[Prediction]:
  model, params, pp, labels = build(model_name, checkpoint_path, image_size, num_classes, seed)
  image_paths = list(image_paths) or [example_image()]
  naflex_patches = naflex_patches or transforms.naflex_budget(pp)  # a NaFlex checkpoint's own
  if naflex_patches:
    images = naflex.image_files(image_paths, transforms.value_op_or_default(pp),
                                tuple(model.patches['size'])[0], naflex_patches)
  else:
    images = np.stack([images_lib.load(path, pp) for path in image_paths])
  indices, values = classify(model, params, images, top_k)
  return [Prediction(path, idx.tolist(), val.tolist(),
                     [labels[i] for i in idx.tolist()] if labels else None)
          for path, idx, val in zip(image_paths, indices, values)]


def main(argv):
  del argv
  values = flags.FLAGS
  if values.naflex is not None and values.naflex < 1:
    raise errors.UserError(f'--naflex={values.naflex}: expected a positive number of patches '
                           '(leave it out for the square path).')
  labels = None
  if values.labels:
    labels = [line.strip() for line in storage.read_text(values.labels).splitlines()]
  predictions = run(model_name=values.model, checkpoint_path=values.checkpoint,
                    image_paths=values.image or (), image_size=values.image_size,
                    num_classes=values.num_classes, top_k=values.top_k,
                    naflex_patches=values.naflex)
  if values.checkpoint is None:
    print(f'{values.model}: randomly initialised (no --checkpoint); its head starts at zero, so '
          'every class is equally likely until it is trained or a checkpoint is loaded.')
  for prediction in predictions:
    print(prediction.image)
    for rank, (index, probability) in enumerate(zip(prediction.classes,
                                                    prediction.probabilities)):
      name = (labels[index] if labels and index < len(labels) else
              prediction.names[rank] if prediction.names else f'class {index}')
      print(f'  {probability:7.4f}  {name}')


if __name__ == '__main__':
  _define_flags()
  cli.run(main)
