r"""DeiT with distillation (Touvron et al., "Training data-efficient image transformers &
distillation through attention", arXiv:2012.12877): ImageNet-1k alone, a teacher's predictions
learnt through the distillation token (hard distillation, DeiT's best: ViT-B/16 83.4%).

DeiT's settings: AdamW lr 5e-4 x batch / 512, weight decay 0.05, batch 1024, 300 epochs, 5
warmup epochs then cosine, RandAugment(2, 9), mixup 0.8 / CutMix 1.0 (one of them per batch),
label smoothing 0.1, random erasing 0.25, repeated augmentation (3 copies), stochastic depth
0.1, no dropout. The argument is the student's size (Ti, S or B); the teacher is a flag and
may be anything `--checkpoint` accepts (a workdir, an .npz, a timm or Hugging Face file):

  python -m vit_jax.main --config=configs/deit_distill.py:B --workdir=runs/deit_b16 \
      --config.distill.teacher=/models/teacher --config.data.data_dir=/data/tfds
"""

from vit_jax.configs import common

IMAGENET_TRAIN = 1_281_167


def get_config(size='B'):
  config = common.get_config()
  config.model_name = f'ViT-{size}_16'
  config.model.update(distilled=True, gelu_approximate=False, stochastic_depth=0.1,
                      dtype='auto')
  config.model.transformer.update(dropout_rate=0.0, attention_dropout_rate=0.0)
  config.objective = 'distillation'
  config.distill.update(kind='hard', alpha=0.5, tau=1.0)
  config.num_classes = 1000
  config.image_size = 224
  config.data.name, config.data.split = 'imagenet2012', 'train[:99%]'
  config.pp_train = 'decode_jpeg_and_inception_crop(224)|flip_lr|onehot|keep("image", "labels")'
  config.pp_device = 'randaug(2, 9)|normalize()|random_erase(0.25)'
  config.repeated_aug = 3
  config.evals = common.imagenet_evals(
      'decode|resize_small(256)|central_crop(224)|normalize()|onehot|keep("image", "labels")',
      every=5_000)
  config.batch_size = 1024
  config.total_epochs = 300.0
  config.mixup.update(kind='mixup_cutmix', alpha=0.8, cutmix_alpha=1.0)
  config.label_smoothing = 0.1
  config.optim.update(name='adamw', b1=0.9, b2=0.999)
  config.lr.update(base=5e-4 * config.batch_size / 512, schedule='cosine',
                   warmup_steps=round(5 * IMAGENET_TRAIN / config.batch_size))
  config.wd, config.wd_decoupled = 0.05, True
  config.grad_clip_norm = 0.0
  config.checkpoint_every = 2_000
  return config
