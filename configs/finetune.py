r"""Fine-tuning as in the paper (Appendix B.1.1): `--config=configs/finetune.py:<dataset>`.

SGD with momentum 0.9, batch 512, cosine decay after a short warmup, no weight decay, global-norm
clipping at 1, 384px, a zero-initialised new head; steps per dataset as the paper; the learning
rate is the best of the paper's sweep {0.001, 0.003, 0.01, 0.03} for ViT-B/16 (override it with
--config.lr.base). Start from a released checkpoint:

  python -m vit_jax.main --config=configs/finetune.py:cifar10 --workdir=runs/b16_cifar10 \
      --config.model_name=ViT-B_16 --config.init_from=imagenet21k/ViT-B_16.npz

Your own images (`folder`): a folder of `<class>/*.jpg` or `{train,val,test}/<class>/*`; the class
count and names come from it and, without a val/ folder, 10% of each class is held out:

  python -m vit_jax.main --config=configs/finetune.py:folder --config.data.root=/data/pets \
      --config.init_from=ViT-B_16.npz --workdir=runs/pets
"""

from vit_jax.configs import common

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


def get_config(arg='cifar10'):
  """`<dataset>` or `<dataset>,<resolution>` (default 384, the paper's; e.g. `folder,224`)."""
  dataset, _, size = arg.partition(',')
  if dataset not in DATASETS:
    raise ValueError(f'Unknown fine-tuning dataset {dataset!r}; expected one of {sorted(DATASETS)}.')
  if size and not size.isdigit():
    raise ValueError(f'The resolution after the comma must be a number of pixels, got {size!r}.')
  size = int(size or 384)
  classes, steps, train_split, eval_split, lr = DATASETS[dataset]
  config = common.get_config()
  config.model_name = 'ViT-B_16'
  config.model.dtype = 'auto'  # bf16 on GPU/TPU (docs/accelerators.md), float32 on CPU
  config.num_classes = classes
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
  config.checkpoint_every = max(steps // 10, 100)
  config.micro_batches = 1  # raise it (e.g. 8) when 512 images do not fit in memory
  return config
