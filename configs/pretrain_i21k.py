r"""Pretraining on ImageNet-21k as the paper (Section 4.1, Table 3): ViT-B/16 by default.

Adam (0.9, 0.999), batch 4096, lr 1e-3 with 10k warmup steps and linear decay, weight decay 0.1
(AdamW style), dropout 0.1, 90 epochs, sigmoid cross-entropy, a representation (pre-logits)
layer of the model width, 224px. `--config=configs/pretrain_i21k.py:ViT-L_16` for other sizes.

  python -m vit_jax.main --config=configs/pretrain_i21k.py --workdir=runs/i21k_b16 \
      --config.data.data_dir=/data/tfds --config.mesh='(-1, 8, 1)' --config.sharding=fsdp
"""

from vit_jax.configs import common
from vit_jax.configs import models as model_configs


def get_config(model_name='ViT-B_16'):
  config = common.get_config()
  config.model_name = model_name
  width = model_configs.get_config(model_name).hidden_size
  config.model.representation_size = width
  config.model.head_bias_init = -10.0
  config.model.transformer.dropout_rate = 0.1
  config.model.dtype = 'auto'  # bf16 on GPU/TPU (docs/accelerators.md), float32 on CPU
  # L/16 and up: the layers as one scanned block (compiles once, not 24-48 times; the
  # checkpoint stores them stacked, every loader reads both layouts).
  config.model.scan = model_configs.get_config(model_name).transformer.num_layers >= 24
  config.num_classes = 21843
  config.image_size = 224
  config.data.name, config.data.split = 'imagenet21k', 'full[102400:]'
  # The host ships uint8 images; the devices map them to [-1, 1] (input_path.md).
  config.pp_train = 'decode_jpeg_and_inception_crop(224)|flip_lr|onehot|keep("image", "labels")'
  config.pp_device = 'value_range(-1, 1)'
  config.batch_size = 4096
  config.eval_batch_size = 4096
  config.total_epochs = 90
  config.loss = 'sigmoid_xent'
  config.optim.name = 'adam'  # optim.mu_dtype='bfloat16' halves the first moment's memory
  config.lr.base, config.lr.schedule, config.lr.warmup_steps, config.lr.end = (
      1e-3, 'linear', 10_000, 1e-5)
  config.wd = 0.1
  config.wd_decoupled = False
  config.grad_clip_norm = 1.0
  # Held-out top-1 (the first 102,400 images), and few-shot linear probes watching the
  # representation as pretraining goes (as big_vision does).
  config.evals = common.fewshot_i21k_monitor(every=10_000)
  config.evals.eval = common.classification_eval(
      common.data_source('imagenet21k', 'full[:102400]'),
      'decode|resize_small(256)|central_crop(224)|value_range(-1, 1)|onehot|keep("image", "labels")',
      every=10_000)
  config.checkpoint_every = 2_000
  config.keep_period = 20_000
  return config
