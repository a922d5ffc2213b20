r"""Linear probing of an MAE encoder on ImageNet-1k (He et al. 2021, its linear-probing recipe).

The encoder is frozen and runs in inference mode; its class token (after the encoder's final
LayerNorm) passes a BatchNorm without affine and a linear head, the only part that trains
(`model.linear_probe`). LARS (trust coefficient 0.001, momentum 0.9), base lr 0.1 x batch / 256,
batch 16384, no weight decay, 10 warmup epochs then a cosine to 0, 90 epochs for ViT-B (50 for L
and H), random-resized crops and flips only, the head's kernel drawn with std 0.01. ViT-B/16:
68.0% top-1 (the paper), 67.8% (the PyTorch repository). The pretraining workdir is the flag
`init_from`:

  python -m vit_jax.main --config=configs/mae_linprobe.py:B --workdir=runs/mae_b16_lin \
      --config.init_from=runs/mae_b16 --config.data.data_dir=/data/tfds

The BatchNorm's inference statistics are measured on the first `probe_stats_batches` training
batches before the first step (vit_jax/train/probe.py; the deviation below says why).
"""

from vit_jax.configs import common
from vit_jax.configs import sources

IMAGENET_TRAIN = sources.IMAGENET_TRAIN
BATCH = 16384  # 512 per GPU x 32 GPUs
# facebookresearch/mae FINETUNE.md, "Linear Probing", per size: (epochs, paper top-1 %,
# the PyTorch repository's top-1 %). The script is ViT-B's; L and H: "sufficient to train 50".
REFERENCE = {'B': (90, 68.0, 67.8), 'L': (50, 75.8, 76.0), 'H': (50, 76.6, 77.2)}


def source(size='B') -> sources.Source:
  """facebookresearch/mae FINETUNE.md (the linear-probing script, effective batch 16384) and
  main_linprobe.py (its defaults, the BatchNorm head, LARS, the head's init, the transforms)."""
  epochs, paper, repository = REFERENCE[size]
  return sources.Source(
      cite='facebookresearch/mae FINETUNE.md (Linear Probing), main_linprobe.py, util/lars.py; '
           'He et al. 2021, Section 4 and Appendix A.2',
      values={'batch_size': BATCH, 'lr.base': 0.1 * BATCH / 256, 'total_epochs': float(epochs),
              'lr.schedule': 'cosine', 'lr.end': 0.0,
              'lr.warmup_steps': round(10 * IMAGENET_TRAIN / BATCH), 'wd': 0.0,
              'optim.name': 'lars', 'optim.momentum': 0.9, 'optim.nesterov': False,
              'optim.trust_coefficient': 0.001, 'model.linear_probe': True,
              'model.head_init_std': 0.01, 'model.classifier': 'token', 'model.fc_norm': False,
              'model.stochastic_depth': 0.0, 'model.gelu_approximate': False,
              'label_smoothing': 0.0, 'mixup.kind': None, 'grad_clip_norm': 0.0,
              'image_size': 224},
      peak_decay=0.0,
      deviations={
          'probe_stats_batches': "head_norm's inference statistics are the frozen features' "
                                'mean and variance over the first probe_stats_batches (10) '
                                "training batches, set before the first step; the reference "
                                "keeps BatchNorm1d's running average (momentum 0.1) over "
                                'training. The encoder is frozen and in inference mode, so both '
                                'estimate the same per-feature moments. In training each step '
                                'is normalised with its global batch (16384 examples) where '
                                "the reference's BatchNorm sees each GPU's 512. Expected "
                                'effect: none measurable at this batch size',
          'pp_train': "TF's inception crop (area 8-100%, aspect 3/4-4/3, bilinear) for "
                      "torchvision's RandomResizedCrop with bicubic resizing; the evaluation "
                      'resizes the short side to 256 bilinearly (the reference: bicubic). '
                      'Expected effect: small (resampling only)',
          'data.split': "train[:99%]: 1% of ImageNet's train split held out as minival "
                        '(big_vision): 1% fewer training images'},
      result=f'ViT-{size}: {paper}% top-1 (the paper, TF/TPU), {repository}% (FINETUNE.md, '
             'PyTorch/GPU)')


def get_config(size='B'):
  epochs = REFERENCE[size][0]
  config = common.get_config()
  config.model_name = 'ViT-H_14' if size == 'H' else f'ViT-{size}_16'
  config.model.update(classifier='token', fc_norm=False, class_token=True,
                      gelu_approximate=False, stochastic_depth=0.0, linear_probe=True,
                      head_init_std=0.01, dtype='auto')
  config.model.transformer.update(dropout_rate=0.0, attention_dropout_rate=0.0)
  config.dont_load = (r'head_norm/.*',)  # measured from the data before the first step
  config.num_classes = 1000
  config.image_size = 224
  config.data.name, config.data.split = 'imagenet2012', 'train[:99%]'
  config.pp_train = 'decode_jpeg_and_inception_crop(224)|flip_lr|onehot|keep("image", "labels")'
  config.pp_device = 'normalize()'
  config.evals = common.imagenet_evals(
      'decode|resize_small(256)|central_crop(224)|normalize()|onehot|keep("image", "labels")',
      every=2_000)
  config.batch_size = BATCH
  config.total_epochs = float(epochs)
  config.label_smoothing = 0.0
  config.optim.update(name='lars', momentum=0.9, nesterov=False, trust_coefficient=0.001)
  config.lr.update(base=0.1 * BATCH / 256, schedule='cosine', end=0.0,
                   warmup_steps=round(10 * IMAGENET_TRAIN / BATCH))
  config.wd = 0.0
  config.grad_clip_norm = 0.0
  config.checkpoint_every = 1_000
  return config
