r"""Python as the device image has it: imports of what the image lacks fail here too.

`install()` puts an import hook first on `sys.meta_path`. A top-level module that comes from an
installed distribution neither in `image_packages.txt` nor in `carried.txt` (the wheels that
travel with the device command) fails to import with ModuleNotFoundError, as it would on the
device. The standard library and the repository's own modules (vit_jax, the benchmark's files)
import as usual. TensorFlow and tensorflow-datasets are not in the image: they are blocked.

`check()` imports the benchmark path and measures one tiny row of it on CPU under the hook; it
is the import half of the rehearsal (tests/test_gpu_check.py runs it in CI):

  python experiments/device/image_only.py     # exit 0 and the row, or the import that failed
"""

import importlib.abc
import importlib.metadata
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def _normalized(name: str) -> str:
  return re.sub(r'[-_.]+', '-', name).lower()


def _names(file_name: str) -> set[str]:
  """Distribution names listed in a file of this folder, one per line ('#' comments)."""
  with open(os.path.join(HERE, file_name), encoding='utf-8') as f:
    lines = [line.split('#')[0].strip() for line in f]
  return {_normalized(re.split(r'[=<>!~ ]', line)[0]) for line in lines if line}


def image_packages() -> set[str]:
  return _names('image_packages.txt')


def carried() -> set[str]:
  return _names('carried.txt')


class _Blocker(importlib.abc.MetaPathFinder):
  """Refuses top-level modules whose distributions are all outside `allowed`."""

  def __init__(self, allowed: set[str]):
    self._allowed = allowed
    self._owners = importlib.metadata.packages_distributions()

  def find_spec(self, name, path=None, target=None):
    del path, target
    if '.' in name or name in sys.stdlib_module_names or name in sys.builtin_module_names:
      return None
    owners = self._owners.get(name)
    if not owners or any(_normalized(owner) in self._allowed for owner in owners):
      return None  # the repository's own modules, or a package the device holds
    raise ModuleNotFoundError(
        f'No module named {name!r} on the device image (distribution {", ".join(owners)} is '
        'neither in experiments/device/image_packages.txt nor carried by carried.txt)',
        name=name)


def install() -> None:
  """From now on, this process imports only what the device image holds plus the carried."""
  if not any(isinstance(finder, _Blocker) for finder in sys.meta_path):
    # vit_jax travels as the working tree (here it may also be an installed distribution).
    sys.meta_path.insert(0, _Blocker(image_packages() | carried() | {'vit-jax'}))


def check() -> dict:
  """The benchmark path under the hook: one tiny row measured on CPU, as the dry run does."""
  install()
  sys.path[:0] = [ROOT, os.path.join(ROOT, 'experiments', 'bench')]
  import harness  # pylint: disable=g-import-not-at-top
  from vit_jax.parallel import xla_flags  # pylint: disable=g-import-not-at-top
  xla_flags.apply()
  row = harness.run_row({**harness.DEFAULTS, 'name': 'import_check', 'variant': 'B/16',
                         'batch_per_device': 2, 'image_size': 32, 'iters': 1}, tiny=True)
  blocked = sorted(m for m in ('tensorflow', 'tensorflow_datasets') if m in sys.modules)
  if blocked:
    raise AssertionError(f'the benchmark path imported {blocked}')
  return row


if __name__ == '__main__':
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  result = check()
  print(f"import check: ok (jax {result['jax']}, loss {result['loss']:.4f}, "
        f"{result['train_img_s']:.0f} img/s on {result['device_kind']})")
