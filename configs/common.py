"""Defaults shared by every recipe; a recipe starts from `get_config()` and overrides."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  # Model: a variant from vit_jax.configs.models, with field overrides.
  config.model_name = 'ViT-B_16'
  config.model = ml_collections.ConfigDict()
  config.num_classes = 1000
  config.image_size = 224
  config.init_from = None  # released/big_vision .npz, or one of our workdirs
  config.dont_load = ()  # regexes of parameters to keep from the fresh init

  # Data: sources (vit_jax.data.sources.from_config) and preprocessing strings.
  config.data = ml_collections.ConfigDict(dict(name='imagenet2012', split='train[:99%]',
                                               data_dir=None, prepare=False))
  config.eval_data = ml_collections.ConfigDict(dict(name='imagenet2012', split='train[99%:]',
                                                    data_dir=None, prepare=False))
  config.pp_train = 'decode_jpeg_and_inception_crop(224)|flip_lr|value_range(-1, 1)|onehot(1000)'
  config.pp_eval = 'decode|resize_small(256)|central_crop(224)|value_range(-1, 1)|onehot(1000)'
  config.batch_size = 512  # global: independent of the device count
  config.eval_batch_size = 512
  config.total_steps = ml_collections.config_dict.placeholder(int)
  config.total_epochs = ml_collections.config_dict.placeholder(float)
  config.mixup = ml_collections.ConfigDict(dict(kind=None, alpha=0.2))

  # Loss and optimizer (vit_jax.train.optimizer documents every field).
  config.loss = 'softmax_xent'
  config.label_smoothing = 0.0
  config.optim = ml_collections.ConfigDict(dict(name='adam', b1=0.9, b2=0.999, eps=1e-8,
                                                momentum=0.9, nesterov=False, mu_dtype=None))
  config.lr = ml_collections.ConfigDict(dict(base=1e-3, schedule='cosine', warmup_steps=0,
                                             end=0.0, timescale=10_000))
  config.wd = 0.0
  config.wd_decoupled = False
  config.wd_mask = r'.*/kernel$'
  config.grad_clip_norm = 1.0
  config.lr_mults = ()
  config.frozen = ()
  config.layerwise_lr_decay = ml_collections.config_dict.placeholder(float)
  config.ema_decay = ml_collections.config_dict.placeholder(float)

  # Parallelism.
  config.mesh = (-1, 1, 1)  # (data, fsdp, tensor)
  config.layout = 'dp'  # dp | fsdp | fsdp_tp
  config.micro_batches = 1

  # Bookkeeping.
  config.log_every = 50
  config.eval_every = 1000
  config.checkpoint_every = 1000
  config.keep_checkpoints = 3
  config.keep_period = ml_collections.config_dict.placeholder(int)
  return config
