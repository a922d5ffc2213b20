r"""Fine-tuning an MAE encoder on ImageNet-1k (He et al. 2021, its fine-tuning recipe).

Global average pooling with the LayerNorm after pooling, layer-wise lr decay 0.65 (0.75 for L and
H), drop path 0.1 (0.2 for L, 0.3 for H), RandAugment(2, 9), mixup 0.8 / CutMix 1.0 (one of them per batch), label
smoothing 0.1, random erasing 0.25, AdamW base lr 5e-4 x batch / 256 (1e-3 for L and H), weight
decay 0.05, batch 1024, 5 warmup epochs, 100 epochs (50 for L and H). ViT-B/16: 83.6% top-1
after 1600 pretraining epochs. The pretraining workdir is the flag `init_from`:

  python -m vit_jax.main --config=configs/mae_finetune.py:B --workdir=runs/mae_b16_ft \
      --config.init_from=runs/mae_b16 --config.data.data_dir=/data/tfds

The encoder loads from the workdir (its fixed position table becomes a learned one), the decoder
and the encoder's final norm are dropped, `fc_norm` and the head start fresh.
"""

from vit_jax.configs import common
from vit_jax.configs import sources

IMAGENET_TRAIN = sources.IMAGENET_TRAIN
# facebookresearch/mae FINETUNE.md, per size: (blr, layer_decay, drop_path, epochs, top-1 %).
REFERENCE = {'B': (5e-4, 0.65, 0.1, 100, 83.664), 'L': (1e-3, 0.75, 0.2, 50, 85.952),
             'H': (1e-3, 0.75, 0.3, 50, 86.928)}


def source(size='B') -> sources.Source:
  """facebookresearch/mae FINETUNE.md (the scripts for ViT-Base, -Large and -Huge, effective
  batch 1024) and main_finetune.py's defaults (5 warmup epochs, smoothing 0.1, AdamW)."""
  blr, layer_decay, drop_path, epochs, top1 = REFERENCE[size]
  lr = blr * 1024 / 256
  return sources.Source(
      cite='facebookresearch/mae FINETUNE.md (fine-tuning scripts), main_finetune.py; He et '
           'al. 2021, Table 9',
      values={'batch_size': 1024, 'lr.base': lr, 'layerwise_lr_decay': layer_decay,
              'model.stochastic_depth': drop_path, 'total_epochs': float(epochs),
              'wd': 0.05, 'wd_style': 'lr_scaled', 'optim.name': 'adamw', 'optim.b1': 0.9,
              'optim.b2': 0.999, 'lr.schedule': 'cosine',
              'lr.warmup_steps': round(5 * IMAGENET_TRAIN / 1024), 'label_smoothing': 0.1,
              'mixup.kind': 'mixup_cutmix', 'mixup.alpha': 0.8, 'mixup.cutmix_alpha': 1.0,
              'model.classifier': 'gap', 'model.fc_norm': True, 'image_size': 224,
              'grad_clip_norm': 0.0, 'model.gelu_approximate': False},
      peak_decay=0.05 * lr,
      deviations={'pp_device': "RandAugment(2, 9) is big_vision's op, not timm's "
                               'rand-m9-mstd0.5-inc1 (no magnitude noise, another op list); '
                               'random erasing 0.25 and ImageNet mean/std as the reference. '
                               'Expected effect: small (augmentation strength only)',
                  'data.split': "train[:99%]: 1% of ImageNet's train split held out as minival "
                                '(big_vision): 1% fewer training images'},
      result=f'ViT-{size}: {top1}% top-1 (FINETUNE.md, the released fine-tuned checkpoint)')


def get_config(size='B'):
  blr, layer_decay, _, epochs, _ = REFERENCE[size]
  config = common.get_config()
  config.model_name = 'ViT-H_14' if size == 'H' else f'ViT-{size}_16'
  config.model.update(classifier='gap', fc_norm=True, class_token=True, gelu_approximate=False,
                      stochastic_depth=REFERENCE[size][2], dtype='auto')
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
  config.total_epochs = float(epochs)
  config.mixup.update(kind='mixup_cutmix', alpha=0.8, cutmix_alpha=1.0)
  config.label_smoothing = 0.1
  config.optim.update(name='adamw', b1=0.9, b2=0.999)
  config.layerwise_lr_decay = layer_decay
  config.lr.update(base=blr * config.batch_size / 256, schedule='cosine',
                   warmup_steps=round(5 * IMAGENET_TRAIN / config.batch_size))
  config.wd, config.wd_style = 0.05, 'lr_scaled'  # PyTorch's AdamW
  config.grad_clip_norm = 0.0
  config.checkpoint_every = 2_000
  return config
