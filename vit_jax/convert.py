r"""Brings a checkpoint in: a Hugging Face or timm directory, or a .safetensors / .bin file -> .npz.

  python -m vit_jax.convert --checkpoint=dinov2-base/ --out=dinov2-base.npz

Prints the architecture it read, the fields each config gave (or what was assumed), and the
input transform; then runs the source library (transformers or timm, when installed) and our
model on one photograph through that transform and prints the largest difference of the
outputs. The .npz loads like a released checkpoint; `--checkpoint` of every tool also takes the
source directly (and keeps its transform, which an .npz cannot hold: it is printed to pass on).
"""

import json
import os
from typing import Optional

from absl import flags
import numpy as np

from vit_jax import errors
from vit_jax.weights import npz
from vit_jax import cli
from vit_jax.weights import trained_model
from vit_jax.data import images as images_lib
from vit_jax.weights import foreign
from vit_jax.models import vit



def _define_flags() -> None:
  """The command's flags (defined only when run as a command: `infer` and `export` share names)."""
  flags.DEFINE_string('checkpoint', None, 'A Hugging Face or timm directory, or a .safetensors / '
                      '.bin file.')
  flags.DEFINE_string('out', None, 'The .npz to write.')
  flags.DEFINE_string('model', None, 'For a bare weights file without a config: our variant, a '
                      'timm model name or a transformers model_type.')
  flags.DEFINE_bool('check', True, 'Run the source library and compare (when installed).')


def _source_output(path: str, pixels: np.ndarray) -> Optional[tuple[str, np.ndarray]]:
  """(library, output) of the source library on [1, h, w, 3] inputs, or None when it is not
  installed or the file is not a directory it loads."""
  folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
  config_path = os.path.join(folder, 'config.json')
  if not os.path.isfile(config_path):
    return None
  with open(config_path, encoding='utf-8') as f:
    config = json.load(f)
  try:  # torch, timm and transformers are optional (the export extra): imported when checking
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  inputs = torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy())
  with torch.no_grad():
    if 'architecture' in config:
      try:
        import timm  # pylint: disable=g-import-not-at-top
      except Exception:  # pylint: disable=broad-except  # missing, or its torchvision is broken
        return None
      model = timm.create_model(f'local-dir:{folder}', pretrained=True).eval()
      return 'timm', model(inputs).numpy()
    import transformers  # pylint: disable=g-import-not-at-top
    model = transformers.AutoModel.from_pretrained(folder)
    architectures = config.get('architectures') or []
    for name in architectures:
      cls = getattr(transformers, name, None)
      if cls is not None:
        model = cls.from_pretrained(folder)
        break
    out = model.eval()(pixel_values=inputs)
  for field in ('logits', 'image_embeds', 'pooler_output', 'last_hidden_state'):
    value = getattr(out, field, None)
    if value is not None:
      return f'transformers {type(model).__name__}.{field}', value.numpy()
  return None


def _our_output(loaded, pixels: np.ndarray, field: str) -> np.ndarray:
  if field.endswith(('logits', 'image_embeds')) or field == 'timm':
    return np.asarray(loaded.model.apply({'params': loaded.params}, pixels, train=False))
  if field.endswith('last_hidden_state'):
    unpooled = vit.VisionTransformer(num_classes=None, **{
        **loaded.model_config, 'classifier': 'token_unpooled'})
    return np.asarray(unpooled.apply({'params': loaded.params}, pixels, train=False))
  return np.asarray(vit.representations(loaded.model, loaded.params, pixels)['pooled'])


def convert(path: str, out: str, model_name: Optional[str] = None, check: bool = True) -> dict:
  """Writes `out`; returns what was read and, with `check`, the comparison."""
  if not foreign.handles(path):
    raise errors.UserError(f'{path}: not a Hugging Face or timm checkpoint (a directory with '
                           'config.json, or a .safetensors / .bin file).')
  loaded = trained_model.load(path, model_name)
  report = {'architecture': loaded.model_config.to_dict(), 'classes': loaded.num_classes,
            'read': loaded.read, 'pp': loaded.pp}
  npz.save(loaded.params, out)
  if check:
    pixels = images_lib.load(images_lib.example_photo(), loaded.pp)[None]
    source = _source_output(path, pixels)
    if source is not None:
      library, theirs = source
      ours = _our_output(loaded, pixels, library)
      report['check'] = {'library': library,
                         'max_abs_difference': float(np.abs(ours - theirs).max()),
                         'max_abs_output': float(np.abs(theirs).max())}
  return report


def main(argv):
  del argv
  values = flags.FLAGS
  if not values.checkpoint or not values.out:
    raise errors.UserError(
        'Pass --checkpoint=<hf dir | timm dir | .safetensors> and --out=<x.npz>.')
  report = convert(values.checkpoint, values.out, values.model, values.check)
  config = report['architecture']
  transformer = config['transformer']
  print(f'architecture: width {config["hidden_size"]}, depth {transformer["num_layers"]}, '
        f'heads {transformer["num_heads"]}, MLP {transformer["mlp_dim"]}, patch '
        f'{tuple(config["patches"]["size"])}, classifier {config["classifier"]}, classes '
        f'{report["classes"]}')
  for line in report['read']:
    print(f'read: {line}')
  print(f'input transform: {report["pp"]}')
  if 'check' in report:
    check = report['check']
    print(f'check against {check["library"]} on one photograph: largest difference '
          f'{check["max_abs_difference"]:.3g} (outputs up to {check["max_abs_output"]:.3g})')
  else:
    print('check: the source library is not installed (or cannot load this file); not run')
  print(f'wrote {values.out}')


if __name__ == '__main__':
  _define_flags()
  cli.run(main)
