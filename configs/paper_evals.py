r"""The paper's evaluations of one checkpoint, as a report: `--config=configs/paper_evals.py`.

  TFDS_DATA_DIR=/data/tfds python -m vit_jax.main --mode=eval --config=configs/paper_evals.py \
      --checkpoint=imagenet21k+imagenet2012/ViT-L_16.npz --workdir=reports/l16 \
      --config.paper_model='ViT-L/16 (I21k)'

Writes `<workdir>/report.md` and `report.json`: ImageNet / ReaL / v2 top-1 (the checkpoint's head
must be ImageNet's 1,000 classes; `configs/paper_evals.py:no_imagenet` leaves them out), few-shot
linear probes (1/5/10/25 shots) on ImageNet, CIFAR-100, Pets and Flowers (any checkpoint), and the
VTAB-1k groups when experiments/vtab.py wrote `vtab.json` into the same workdir. Datasets that are
not prepared are listed with the command that prepares them; the rest still runs.

Each checkpoint is evaluated at its own resolution (`--config.image_size=N` to override), and the
report prints the resolution, the preprocessing and whether the weights were averaged beside
each number; the paper's number is printed only where it was measured the same way (Table 2:
512 px for L/16, 518 for H/14, the whole image resized, Polyak-averaged weights), else "not
comparable: <why>".
"""

import ml_collections

from vit_jax.configs import common
from vit_jax.configs import sources


def source(arg='') -> sources.Source:
  """The protocols the report measures: big_vision's few-shot probes (L2 2^10, 3 seeds, resize
  and central crop); ImageNet top-1 at the checkpoint's own resolution, the whole image resized
  to it (the official vit_jax eval input)."""
  del arg
  return sources.Source(
      cite='Dosovitskiy et al. 2021, Section 4.1 (few-shot) and Table 2; big_vision '
           'configs/common_fewshot.py',
      values={'evals.fewshot_cifar100.l2_reg': 2.0 ** 10,
              'evals.fewshot_cifar100.seeds': (0, 1, 2),
              'evals.fewshot_cifar100.shots': (1, 5, 10, 25),
              'evals.val.pp': 'decode|resize({image_size})|value_range(-1, 1)|onehot|'
                              'keep("image", "labels")',
              'image_size': None})

# The official eval input at the checkpoint's own resolution: the whole image resized to it.
IMAGENET_PP = 'decode|resize({image_size})|value_range(-1, 1)|onehot|keep("image", "labels")'
# big_vision's few-shot input (resize 256, central crop 224), at the checkpoint's resolution.
FEWSHOT_PP = 'decode|resize({resize_size})|central_crop({image_size})|value_range(-1, 1)'
# (tfds name, train split, test split, shots): Flowers-102 has 10 training images per class.
FEWSHOT = {
    'imagenet': ('imagenet2012', 'train[:10%]', 'validation', (1, 5, 10, 25)),
    'cifar100': ('cifar100', 'train', 'test', (1, 5, 10, 25)),
    'pets': ('oxford_iiit_pet', 'train', 'test', (1, 5, 10, 25)),
    'flowers': ('oxford_flowers102', 'train', 'test', (1, 5)),
}


def get_config(arg=''):
  """`arg`: 'no_imagenet' leaves out the ImageNet top-1 evaluations (a head of other classes)."""
  config = common.get_config()
  config.model_name = 'ViT-B_16'  # an .npz's architecture is read off its shapes
  config.num_classes = 1000
  # Unset: each checkpoint at its own resolution (a released 384-px file at 384); set it to
  # evaluate elsewhere (the position table is resampled).
  config.image_size = ml_collections.config_dict.placeholder(int)
  config.paper_model = ml_collections.config_dict.placeholder(str)  # a row of PAPER
  config.batch_size = config.eval_batch_size = 256
  if arg != 'no_imagenet':
    config.evals = common.imagenet_evals(IMAGENET_PP, every=0)
    del config.evals['minival']  # held out of training only in our own ImageNet runs
  for short, (name, train, test, shots) in FEWSHOT.items():
    config.evals[f'fewshot_{short}'] = common.fewshot_eval(
        {short: common.fewshot_dataset(name, train, test)}, FEWSHOT_PP, every=0, shots=shots)
  return config
