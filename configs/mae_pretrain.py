r"""Masked-autoencoder pretraining (He et al., "Masked Autoencoders Are Scalable Vision Learners",
arXiv:2111.06377) on ImageNet-1k images, without their labels.

The paper's settings: 75% of the patches masked per image, a decoder of 8 blocks x 512
(16 heads, MLP 2048), the loss on per-patch normalised pixels of the masked patches; AdamW with
betas (0.9, 0.95), base lr 1.5e-4 x batch / 256, weight decay 0.05, batch 4096, 40 warmup epochs
then cosine, 800 epochs (1600 for the 83.6% ViT-B), random resized crop (0.2, 1) and flips only.
The argument is "<size>" or "<size>,<epochs>" (B, L or H; 800 by default):

  python -m vit_jax.main --config=configs/mae_pretrain.py:B,1600 --workdir=runs/mae_b16 \
      --config.data.data_dir=/data/tfds

Fine-tune the result with configs/mae_finetune.py (its encoder loads, its decoder is dropped).
"""

from vit_jax.configs import common
from vit_jax.configs import sources

IMAGENET_TRAIN = sources.IMAGENET_TRAIN


def source(arg='B') -> sources.Source:
  """He et al. 2021 (arXiv:2111.06377), Appendix A.1 and Table 8; facebookresearch/mae
  PRETRAIN.md and main_pretrain.py (blr 1.5e-4, lr = blr x batch / 256, PyTorch AdamW)."""
  size, _, epochs = arg.partition(',')
  batch, lr = 4096, 1.5e-4 * 4096 / 256
  return sources.Source(
      cite='He et al. 2021, Masked Autoencoders, Appendix A.1 / Table 8; facebookresearch/mae '
           'PRETRAIN.md, main_pretrain.py',
      values={'objective': 'mae', 'mae.mask_ratio': 0.75, 'mae.decoder_depth': 8,
              'mae.decoder_width': 512, 'mae.decoder_heads': 16, 'mae.decoder_mlp_dim': 2048,
              'mae.norm_pix_loss': True, 'optim.name': 'adamw', 'optim.b1': 0.9,
              'optim.b2': 0.95, 'batch_size': batch, 'lr.base': lr, 'lr.schedule': 'cosine',
              'lr.warmup_steps': round(40 * IMAGENET_TRAIN / batch), 'wd': 0.05,
              'wd_style': 'lr_scaled', 'grad_clip_norm': 0.0, 'image_size': 224,
              'total_epochs': float(epochs or 800), 'model.gelu_approximate': False,
              'model.transformer.dropout_rate': 0.0, 'label_smoothing': 0.0,
              'mixup.kind': None, 'model_name': 'ViT-H_14' if size == 'H' else f'ViT-{size}_16'},
      peak_decay=0.05 * lr,  # 1.2e-4 per step
      result='ViT-B/16, 1600 epochs, norm_pix_loss: 83.6% top-1 after fine-tuning '
             '(FINETUNE.md: 83.664)')


def get_config(arg='B'):
  size, _, epochs = arg.partition(',')
  epochs = float(epochs or 800)
  config = common.get_config()
  config.model_name = 'ViT-H_14' if size == 'H' else f'ViT-{size}_16'
  config.model.gelu_approximate = False  # the reference's ViT (timm): exact GELU
  config.model.transformer.update(dropout_rate=0.0, attention_dropout_rate=0.0)
  config.model.dtype = 'auto'
  config.objective = 'mae'
  config.mae.update(mask_ratio=0.75, decoder_width=512, decoder_depth=8, decoder_heads=16,
                    decoder_mlp_dim=2048, norm_pix_loss=True)
  config.num_classes = 1000  # the split's classes; MAE reads no labels
  config.image_size = 224
  config.data.name, config.data.split = 'imagenet2012', 'train'
  config.pp_train = 'decode_jpeg_and_inception_crop(224, area_min=20)|flip_lr|keep("image")'
  config.pp_device = 'normalize()'  # ImageNet mean and std, as the reference
  config.batch_size = 4096
  config.total_epochs = epochs
  config.optim.update(name='adamw', b1=0.9, b2=0.95)
  steps_per_epoch = IMAGENET_TRAIN / config.batch_size
  config.lr.update(base=1.5e-4 * config.batch_size / 256, schedule='cosine',
                   warmup_steps=round(40 * steps_per_epoch))
  config.wd, config.wd_style = 0.05, 'lr_scaled'  # PyTorch's AdamW
  config.grad_clip_norm = 0.0  # none
  config.evals = {}
  config.log_every = 100
  config.checkpoint_every = 2_000
  return config
