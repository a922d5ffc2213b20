r"""big_vision's "Better plain ViT baselines for ImageNet-1k" (Beyer et al., arXiv:2205.01580).

ViT-S/16 with global average pooling and fixed 2-D sin-cos position embeddings, batch 1024,
90 epochs, Adam lr 1e-3 with 10k warmup and cosine decay, decoupled weight decay 1e-4,
RandAugment(2, 10), mixup 0.2, no dropout; reaches 76.5% top-1 in the paper (90 epochs).

  python -m vit_jax.main --config=configs/i1k_s16.py --workdir=runs/i1k_s16 \
      --config.data.data_dir=/data/tfds
"""

from vit_jax.configs import common


def get_config(epochs='90'):
  config = common.get_config()
  config.model_name = 'ViT-S_16'
  config.model.classifier, config.model.posemb = 'gap', 'sincos2d'
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
  config.wd_decoupled = True
  config.grad_clip_norm = 1.0
  config.checkpoint_every = 2_000
  return config
