r"""big_vision's "Better plain ViT baselines for ImageNet-1k" (Beyer et al., arXiv:2205.01580).

ViT-S/16 with global average pooling and fixed 2-D sin-cos position embeddings, batch 1024,
90 epochs, Adam lr 1e-3 with 10k warmup and cosine decay, weight decay 1e-4 (big_vision's: scaled
by the schedule, 1e-4 per step at peak), a pre-logits layer,
RandAugment(2, 10), mixup 0.2, no dropout; reaches 76.5% top-1 in the paper (90 epochs).

  python -m vit_jax.main --config=configs/i1k_s16.py --workdir=runs/i1k_s16 \
      --config.data.data_dir=/data/tfds
"""

from vit_jax.configs import common
from vit_jax.configs import sources


def source(epochs='90') -> sources.Source:
  """big_vision/configs/vit_s16_i1k.py (the file's own fields)."""
  return sources.Source(
      cite='google-research/big_vision, big_vision/configs/vit_s16_i1k.py (Beyer et al. 2022, '
           'arXiv:2205.01580)',
      values={'model_name': 'ViT-S_16', 'model.classifier': 'gap', 'model.posemb': 'sincos2d',
              'model.representation_size': 384, 'batch_size': 1024,
              'total_epochs': float(epochs), 'optim.name': 'adam', 'optim.mu_dtype': 'bfloat16',
              'lr.base': 1e-3, 'wd': 1e-4, 'wd_style': 'schedule_scaled',
              'lr.schedule': 'cosine', 'lr.warmup_steps': 10_000, 'grad_clip_norm': 1.0,
              'mixup.kind': 'mixup', 'mixup.alpha': 0.2, 'data.split': 'train[:99%]',
              'image_size': 224, 'loss': 'softmax_xent', 'label_smoothing': 0.0,
              'model.transformer.dropout_rate': 0.0},
      peak_decay=1e-4,
      deviations={'pp_device': 'RandAugment(2, 10) and the value range run on the devices '
                               "(big_vision: on the host, in pp_train); the same ops"},
      result='76.5% top-1 after 90 epochs (the file\'s docstring)')


def get_config(epochs='90'):
  config = common.get_config()
  config.model_name = 'ViT-S_16'
  config.model.classifier, config.model.posemb = 'gap', 'sincos2d'
  config.model.representation_size = 384  # big_vision's rep_size=True: a pre-logits layer
  config.model.transformer.dropout_rate = 0.0
  config.optim.mu_dtype = 'bfloat16'  # big_vision's optax mu_dtype
  config.model.dtype = 'auto'  # bf16 on GPU/TPU (docs/accelerators.md), float32 on CPU
  config.num_classes = 1000
  config.image_size = 224
  config.data.name, config.data.split = 'imagenet2012', 'train[:99%]'
  # The host decodes, crops and flips; RandAugment and the value range run on the devices
  # (measured in experiments/device_augment.py). All on the host (the TF path) instead:
  #   --config.pp_device= --config.pp_train='decode_jpeg_and_inception_crop(224)|flip_lr|
  #       randaug(2, 10)|value_range(-1, 1)|onehot|keep("image", "labels")'
  config.pp_train = 'decode_jpeg_and_inception_crop(224)|flip_lr|onehot|keep("image", "labels")'
  config.pp_device = 'randaug(2, 10)|value_range(-1, 1)'
  # Evaluators: minival (train[99%:]), val, ReaL and v2, every 5,000 steps and at the end.
  config.evals = common.imagenet_evals(
      'decode|resize_small(256)|central_crop(224)|value_range(-1, 1)|onehot|keep("image", "labels")',
      every=5_000)
  config.batch_size = 1024
  config.eval_batch_size = 1024
  config.total_epochs = float(epochs)
  config.mixup.kind, config.mixup.alpha = 'mixup', 0.2
  config.optim.name = 'adam'
  config.lr.base, config.lr.schedule, config.lr.warmup_steps = 1e-3, 'cosine', 10_000
  config.wd = 1e-4
  config.wd_style = 'schedule_scaled'  # big_vision's: 1e-4 taken off per step at peak
  config.grad_clip_norm = 1.0
  config.checkpoint_every = 2_000
  return config
