r"""Fine-tuning as in the paper (Appendix B.1.1): `--config=configs/finetune.py:<dataset>`.

SGD with momentum 0.9, batch 512, cosine decay after a short warmup, no weight decay, global-norm
clipping at 1, 384px, a zero-initialised new head; steps per dataset as the paper's Table 4. The
learning rate is one of Table 4's sweep ({0.001, 0.003, 0.01, 0.03}; ImageNet {0.003, 0.01, 0.03,
0.06}); the paper picked the best on a held-out part of the train split, the `minival`
evaluator here: `python experiments/sweep.py --config=configs/finetune.py:cifar10 ...` runs the
sweep and picks (docs/reproducing.md). Start from a released checkpoint:

  python -m vit_jax.main --config=configs/finetune.py:cifar10 --workdir=runs/b16_cifar10 \
      --config.model_name=ViT-B_16 --config.init_from=imagenet21k/ViT-B_16.npz

Table 2's fine-tunes: 512 px for ViT-L/16, 518 for ViT-H/14, with Polyak averaging (0.9999):

  python -m vit_jax.main --config=configs/finetune.py:imagenet2012,512,polyak \
      --config.model_name=ViT-L_16 --config.init_from=imagenet21k/ViT-L_16.npz --workdir=runs/l16

Your own images (`folder`): a folder of `<class>/*.jpg` or `{train,val,test}/<class>/*`; the class
count and names come from it and, without a val/ folder, 10% of each class is held out:

  python -m vit_jax.main --config=configs/finetune.py:folder --config.data.root=/data/pets \
      --config.init_from=ViT-B_16.npz --workdir=runs/pets
"""

import ml_collections

from vit_jax import errors
from vit_jax.configs import common
from vit_jax.configs import sources

# dataset: (classes, steps, train split, eval split, learning rate)
DATASETS = {
    'cifar10': (10, 10_000, 'train[:98%]', 'test', 0.01),
    'cifar100': (100, 10_000, 'train[:98%]', 'test', 0.01),
    'imagenet2012': (1000, 20_000, 'train[:99%]', 'validation', 0.03),
    'oxford_iiit_pet': (37, 500, 'train[:90%]', 'test', 0.003),
    'oxford_flowers102': (102, 500, 'train[:90%]', 'test', 0.003),
    # Your own images: classes from the folder; the small-dataset setting of Pets and Flowers.
    'folder': (None, 500, 'train', 'val', 0.003),
}
# The paper's Table 4: fine-tuning steps and the learning rates swept (experiments/sweep.py).
TABLE4 = {
    'imagenet2012': (20_000, (0.003, 0.01, 0.03, 0.06)),
    'cifar10': (10_000, (0.001, 0.003, 0.01, 0.03)),
    'cifar100': (10_000, (0.001, 0.003, 0.01, 0.03)),
    'oxford_iiit_pet': (500, (0.001, 0.003, 0.01, 0.03)),
    'oxford_flowers102': (500, (0.001, 0.003, 0.01, 0.03)),
}
POLYAK = 0.9999  # Table 2's fine-tunes: Polyak averaging of the weights (Appendix B.1.1)


def _parse(arg: str) -> tuple[str, int, bool]:
  dataset, _, rest = arg.partition(',')
  size, _, polyak = rest.partition(',')
  if dataset not in DATASETS:
    raise errors.UserError(f'configs/finetune.py:{arg}: unknown dataset {dataset!r}; expected '
                           f'one of {sorted(DATASETS)}.')
  if size and not size.isdigit():
    raise errors.UserError(f'configs/finetune.py:{arg}: the resolution after the comma must be '
                           f'a number of pixels, got {size!r}.')
  if polyak not in ('', 'polyak'):
    raise errors.UserError(f'configs/finetune.py:{arg}: the third part may only be "polyak", '
                           f'got {polyak!r}.')
  return dataset, int(size or 384), bool(polyak)


def source(arg='cifar10') -> sources.Source:
  """The paper's fine-tuning (Appendix B.1.1, Table 4): SGD momentum 0.9, batch 512, no weight
  decay, clipping at global norm 1, cosine decay, 384 px (Table 2: 512 for L/16, 518 for H/14,
  Polyak averaging 0.9999); the official vit_jax configs/common.py (500 warmup steps)."""
  dataset, size, polyak = _parse(arg)
  if dataset == 'folder':
    return sources.ours('fine-tuning on a folder of images: the paper\'s Pets/Flowers setting '
                        '(Table 4) on data of your own')
  steps, rates = TABLE4[dataset]
  values = {'batch_size': 512, 'optim.name': 'sgd', 'optim.momentum': 0.9, 'wd': 0.0,
            'grad_clip_norm': 1.0, 'lr.schedule': 'cosine', 'total_steps': steps,
            'ema_decay': POLYAK if polyak else None}
  splits = {'cifar10': 'train[:98%]', 'cifar100': 'train[:98%]', 'imagenet2012': 'train[:99%]'}
  if dataset in splits:  # the official DATASET_PRESETS: the rest held out for validation
    values['data.split'] = splits[dataset]
  deviations = {}
  if size == 384:
    values['image_size'] = 384
  else:
    deviations['image_size'] = (f'{size} px asked for by the argument (the paper: 384; Table 2: '
                                '512 for ViT-L/16, 518 for ViT-H/14)')
  if steps >= 5_000:
    values['lr.warmup_steps'] = 500
  else:
    deviations['lr.warmup_steps'] = ("the official config's 500 warmup steps would be the "
                                      'whole 500-step run: 10% of it (50) instead')
  return sources.Source(
      cite='Dosovitskiy et al. 2021, Appendix B.1.1 and Table 4; google-research/'
           'vision_transformer vit_jax/configs/common.py',
      values=values, peak_decay=0.0, deviations=deviations,
      choices={'lr.base': rates},
      result={'imagenet2012': 'ViT-B/16 I21k -> ImageNet at 384: 84.0% (Table 5)',
              'cifar10': 'ViT-B/16 I21k: 98.95% (Table 5)',
              'cifar100': 'ViT-B/16 I21k: 91.67% (Table 5)',
              'oxford_iiit_pet': 'ViT-B/16 I21k: 94.43% (Table 5)',
              'oxford_flowers102': 'ViT-B/16 I21k: 99.38% (Table 5)'}[dataset])


def get_config(arg='cifar10'):
  """`<dataset>[,<resolution>[,polyak]]`: resolution 384 by default (the paper's; e.g.
  `folder,224`); `polyak` keeps Polyak-averaged weights (Table 2's `imagenet2012,512,polyak`)."""
  dataset, size, polyak = _parse(arg)
  classes, steps, train_split, eval_split, lr = DATASETS[dataset]
  config = common.get_config()
  config.model_name = 'ViT-B_16'
  config.model.dtype = 'auto'  # bf16 on GPU/TPU (docs/accelerators.md), float32 on CPU
  # A folder's classes come from its sub-folders: unset, but settable (`vit_jax.plan` needs it).
  config.num_classes = classes if classes else ml_collections.config_dict.placeholder(int)
  config.image_size = size
  # Set --config.init_from=<released .npz or workdir>.
  config.data.name, config.data.split = dataset, train_split
  # The official fine-tuning input: random crop of 5-100% area, flip; eval resizes the image.
  # The host ships uint8 images and the devices map them to [-1, 1] (the host's share halves:
  # experiments/results/input_path.md).
  config.pp_train = (f'decode_jpeg_and_inception_crop({size})|flip_lr|onehot|'
                     'keep("image", "labels")')
  config.pp_device = 'value_range(-1, 1)'
  pp_eval = f'decode|resize({size})|value_range(-1, 1)|onehot|keep("image", "labels")'
  config.batch_size = 512
  config.total_steps = steps
  config.optim.name, config.optim.momentum = 'sgd', 0.9
  config.lr.base, config.lr.schedule, config.lr.warmup_steps = lr, 'cosine', min(500, steps // 10)
  config.wd = 0.0
  config.grad_clip_norm = 1.0
  every = max(steps // 10, 100)
  if dataset == 'imagenet2012':  # minival, val, ReaL and v2
    config.evals = common.imagenet_evals(pp_eval, every=every)
  else:
    test = common.data_source(dataset, eval_split)
    if dataset == 'folder':  # --config.data.root=... sets both (one reference)
      test.root, test.strict = config.data.get_ref('root'), config.data.get_ref('strict')
    config.evals.eval = common.classification_eval(test, pp_eval, every=every)
    if dataset != 'folder':  # the held-out part of the train split: where a sweep chooses
      held_out = common.data_source(dataset, train_split.replace('[:', '[').replace('%]', '%:]'))
      config.evals.minival = common.classification_eval(held_out, pp_eval, every=every)
  if polyak:
    config.ema_decay = POLYAK  # evaluators and the saved model use the averaged weights
  config.checkpoint_every = max(steps // 10, 100)
  config.micro_batches = 1  # raise it (e.g. 8) when 512 images do not fit in memory
  return config
