r"""ViT trained from scratch on ImageNet-1k as the paper (Table 3, last row; Appendix B.1).

Adam (0.9, 0.999), batch 4096, lr 3e-3 with 10k warmup steps and cosine decay, weight decay 0.3
(the paper's Adam: p -= lr_t * 0.3 * p, 9e-4 per step at peak), dropout 0.1, gradient clipping at
global norm 1, 300 epochs at 224 px, a pre-logits layer of the model width, no other
regularisation or augmentation than the random crop and flip. The paper's point: without
pretraining on more data ViT-B/16 reaches only 77.9% (Table 5's ImageNet column). The argument is
the variant (ViT-B_16 by default):

  python -m vit_jax.main --config=configs/i1k_scratch.py:ViT-B_16 --workdir=runs/i1k_b16 \
      --config.data.data_dir=/data/tfds --config.mesh='(-1, 8, 1)' --config.sharding=fsdp
"""

from vit_jax.configs import common
from vit_jax.configs import models as model_configs
from vit_jax.configs import sources


def source(model_name='ViT-B_16') -> sources.Source:
  """Table 3's ImageNet row ('ViT-*': 300 epochs, lr 3e-3, cosine, wd 0.3, dropout 0.1), its
  caption (batch 4096, 10k warmup, clipping at norm 1 for ImageNet, 224 px), Appendix B.1."""
  width = model_configs.get_config(model_name).hidden_size
  return sources.Source(
      cite='Dosovitskiy et al. 2021, Table 3 (ImageNet row) and its caption; Appendix B.1',
      values={'model_name': model_name, 'batch_size': 4096, 'optim.name': 'adam',
              'optim.b1': 0.9, 'optim.b2': 0.999, 'lr.base': 3e-3, 'lr.schedule': 'cosine',
              'lr.warmup_steps': 10_000, 'wd': 0.3, 'wd_style': 'lr_scaled',
              'model.transformer.dropout_rate': 0.1, 'grad_clip_norm': 1.0,
              'total_epochs': 300.0, 'image_size': 224, 'num_classes': 1000,
              'model.representation_size': width, 'mixup.kind': None,
              'label_smoothing': 0.0, 'loss': 'softmax_xent'},
      peak_decay=0.3 * 3e-3,
      deviations={'data.split': "train[:99%]: 1% held out as minival (big_vision's practice)"},
      result='ViT-B/16 trained on ImageNet alone, fine-tuned at 384: 77.9% (Table 5)')


def get_config(model_name='ViT-B_16'):
  config = common.get_config()
  config.model_name = model_name
  config.model.representation_size = model_configs.get_config(model_name).hidden_size
  config.model.transformer.dropout_rate = 0.1
  config.model.dtype = 'auto'  # bf16 on GPU/TPU, float32 on CPU
  config.model.scan = model_configs.get_config(model_name).transformer.num_layers >= 24
  config.num_classes = 1000
  config.image_size = 224
  config.data.name, config.data.split = 'imagenet2012', 'train[:99%]'
  config.pp_train = 'decode_jpeg_and_inception_crop(224)|flip_lr|onehot|keep("image", "labels")'
  config.pp_device = 'value_range(-1, 1)'
  config.evals = common.imagenet_evals(
      'decode|resize_small(256)|central_crop(224)|value_range(-1, 1)|onehot|keep("image", "labels")',
      every=5_000)
  config.batch_size = 4096
  config.eval_batch_size = 1024
  config.total_epochs = 300.0
  config.optim.name = 'adam'
  config.lr.base, config.lr.schedule, config.lr.warmup_steps = 3e-3, 'cosine', 10_000
  config.wd = 0.3
  config.wd_style = 'lr_scaled'  # the paper's Adam: p -= lr_t * wd * p
  config.grad_clip_norm = 1.0
  config.checkpoint_every = 2_000
  return config
