r"""Fine-tuning an MAE encoder on ImageNet-1k (He et al. 2021, its fine-tuning recipe).

Global average pooling with the LayerNorm after pooling, layer-wise lr decay 0.65 (0.75 for L and
H), drop path 0.1, RandAugment(2, 9), mixup 0.8 / CutMix 1.0 (one of them per batch), label
smoothing 0.1, random erasing 0.25, AdamW base lr 5e-4 x batch / 256 (1e-3 for L and H), weight
decay 0.05, batch 1024, 5 warmup epochs, 100 epochs (50 for L and H). ViT-B/16: 83.6% top-1
after 1600 pretraining epochs. The pretraining workdir is the flag `init_from`:

  python -m vit_jax.main --config=configs/mae_finetune.py:B --workdir=runs/mae_b16_ft \
      --config.init_from=runs/mae_b16 --config.data.data_dir=/data/tfds

The encoder loads from the workdir (its fixed position table becomes a learned one), the decoder
and the encoder's final norm are dropped, `fc_norm` and the head start fresh.
"""

from vit_jax.configs import common

IMAGENET_TRAIN = 1_281_167


def get_config(size='B'):
  large = size in ('L', 'H')
  config = common.get_config()
  config.model_name = 'ViT-H_14' if size == 'H' else f'ViT-{size}_16'
  config.model.update(classifier='gap', fc_norm=True, class_token=True, gelu_approximate=False,
                      stochastic_depth=0.1 if size == 'B' else 0.2, dtype='auto')
  config.model.transformer.update(dropout_rate=0.0, attention_dropout_rate=0.0)
  config.dont_load = (r'fc_norm/.*',)
  config.num_classes = 1000
  config.image_size = 224
  config.data.name, config.data.split = 'imagenet2012', 'train[:99%]'
  config.pp_train = 'decode_jpeg_and_inception_crop(224)|flip_lr|onehot|keep("image", "labels")'
  config.pp_device = 'randaug(2, 9)|normalize()|random_erase(0.25)'
  config.evals = common.imagenet_evals(
      'decode|resize_small(256)|central_crop(224)|normalize()|onehot|keep("image", "labels")',
      every=5_000)
  config.batch_size = 1024
  config.total_epochs = 50.0 if large else 100.0
  config.mixup.update(kind='mixup_cutmix', alpha=0.8, cutmix_alpha=1.0)
  config.label_smoothing = 0.1
  config.optim.update(name='adamw', b1=0.9, b2=0.999)
  config.layerwise_lr_decay = 0.75 if large else 0.65
  config.lr.update(base=(1e-3 if large else 5e-4) * config.batch_size / 256, schedule='cosine',
                   warmup_steps=round(5 * IMAGENET_TRAIN / config.batch_size))
  config.wd, config.wd_decoupled = 0.05, True
  config.grad_clip_norm = 0.0
  config.checkpoint_every = 2_000
  return config
