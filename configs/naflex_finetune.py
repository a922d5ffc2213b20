r"""Fine-tuning at native resolution (NaFlex, docs/naflex.md): every image keeps its aspect ratio.

Each image becomes one sequence of its own patch grid, the largest under a budget of 256 patches
(16 x 16 for a square; small images keep their size), and 4 of them at most are packed into each
of 256 sequences per step of 512 images (NaViT's packing; attention stays inside each image). A
released square model fine-tunes as it is: its position table is resized to every image's grid.

  python -m vit_jax.main --config=configs/naflex_finetune.py --config.data.root=/data/pets \
      --config.init_from=ViT-B_16.npz --workdir=runs/pets_naflex

`--config.naflex.images_per_sequence=1 --config.naflex.sequences=512` trains on padded
sequences (one image each) instead; `train/images_packed` says how many of a step's images found
room (raise `naflex.sequences` when it falls short of the batch).
"""

from vit_jax.configs import common
from vit_jax.configs import sources


def source() -> sources.Source:
  """Ours (NaViT-style packing of native-resolution sequences); its optimizer is the paper's
  small-dataset fine-tuning (Table 4: Pets and Flowers)."""
  return sources.Source(
      cite="none for the input (ours, after NaViT's packing); the optimizer: Dosovitskiy et al. "
           '2021, Table 4 (Pets / Flowers rows)',
      values={'batch_size': 512, 'total_steps': 500, 'optim.name': 'sgd',
              'optim.momentum': 0.9, 'wd': 0.0, 'grad_clip_norm': 1.0, 'lr.schedule': 'cosine'},
      peak_decay=0.0, choices={'lr.base': (0.001, 0.003, 0.01, 0.03)},
      deviations={'lr.warmup_steps': '50 (10% of the 500-step run; the official config: 500)'})

KEEP = 'keep("patches", "positions", "segments", "grids", "labels")'


def get_config():
  config = common.get_config()
  config.model_name = 'ViT-B_16'
  config.model.dtype = 'auto'
  config.num_classes = None  # the folder's classes
  config.image_size = 224  # where the position table is made (a fresh model) or kept (init_from)
  config.data = common.data_source('folder', 'train')
  budget = 'naflex(16, 256)'
  config.pp_train = f'decode|flip_lr|value_range(-1, 1)|{budget}|onehot|{KEEP}'
  config.naflex.images_per_sequence = 4
  config.naflex.sequences = 256
  config.batch_size = 512
  config.total_steps = 500
  config.optim.name, config.optim.momentum = 'sgd', 0.9
  config.lr.base, config.lr.schedule, config.lr.warmup_steps = 0.003, 'cosine', 50
  config.wd = 0.0
  config.grad_clip_norm = 1.0
  test = common.data_source('folder', 'val')
  test.root, test.strict = config.data.get_ref('root'), config.data.get_ref('strict')
  config.evals.eval = common.classification_eval(
      test, f'decode|value_range(-1, 1)|{budget}|onehot|{KEEP}', every=100)
  config.checkpoint_every = 100
  return config
