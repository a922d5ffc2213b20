"""Defaults shared by every recipe: a recipe starts from `get_config()` and sets fields.

  from vit_jax.configs import common
  config = common.get_config()
  config.data.name = 'cifar10'

Every field exists here, so every field can be set from the command line (`--config.x.y=v`) and
a mistyped one is refused with the nearest names.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  # Model: a variant from vit_jax.configs.models, with field overrides.
  config.model_name = 'ViT-B_16'
  config.model = model_overrides()
  config.num_classes = 1000
  config.image_size = 224
  config.init_from = ml_collections.config_dict.placeholder(str)  # released/big_vision .npz, or one of our workdirs
  # Parameter names (full regex match, vit_jax.param_names) kept from the fresh init.
  config.dont_load = ()

  # Data: sources (vit_jax.data.sources.from_config) and preprocessing strings. `onehot` takes
  # its depth from num_classes; label smoothing is `label_smoothing` below.
  config.data = data_source('imagenet2012', 'train[:99%]')
  config.eval_data = data_source('imagenet2012', 'train[99%:]')
  config.pp_train = 'decode_jpeg_and_inception_crop(224)|flip_lr|value_range(-1, 1)|onehot'
  config.pp_eval = 'decode|resize_small(256)|central_crop(224)|value_range(-1, 1)|onehot'
  config.batch_size = 512  # global: independent of the device count
  config.eval_batch_size = 512
  config.total_steps = ml_collections.config_dict.placeholder(int)
  config.total_epochs = ml_collections.config_dict.placeholder(float)
  config.mixup = ml_collections.ConfigDict(dict(
      kind=ml_collections.config_dict.placeholder(str), alpha=0.2))  # 'mixup' | 'cutmix'

  # Loss and optimizer (vit_jax.train.optimizer documents every field).
  config.loss = 'softmax_xent'
  config.label_smoothing = 0.0
  config.optim = ml_collections.ConfigDict(dict(name='adam', b1=0.9, b2=0.999, eps=1e-8,
                                                momentum=0.9, nesterov=False,
                                                mu_dtype=ml_collections.config_dict.placeholder(str)))
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

  # Multi-host runtime (vit_jax.parallel.distributed): a peer silent for heartbeat_timeout_s is
  # declared dead and every process exits non-zero, so the scheduler can restart the job.
  config.distributed = ml_collections.ConfigDict(dict(
      heartbeat_timeout_s=40, initialization_timeout_s=300, shutdown_timeout_s=300))
  return config


def model_overrides() -> ml_collections.ConfigDict:
  """Every VisionTransformer field, unset: a set one overrides the `model_name` variant's."""
  unset = ml_collections.config_dict.placeholder
  return ml_collections.ConfigDict(dict(
      patches=dict(size=unset(tuple)), hidden_size=unset(int),
      transformer=dict(mlp_dim=unset(int), num_heads=unset(int), num_layers=unset(int),
                       dropout_rate=unset(float), attention_dropout_rate=unset(float)),
      representation_size=unset(int), classifier=unset(str), head_bias_init=unset(float),
      posemb=unset(str), stochastic_depth=unset(float), dtype=unset(str), scan=unset(bool),
      remat=unset(str), gelu_approximate=unset(bool)))


def data_source(name: str, split: str) -> ml_collections.ConfigDict:
  """Every field a source accepts (vit_jax.data.sources.from_config), settable from flags."""
  return ml_collections.ConfigDict(dict(
      name=name, split=split, data_dir=ml_collections.config_dict.placeholder(str), prepare=False,
      image_size=ml_collections.config_dict.placeholder(int),  # digits only
      root=ml_collections.config_dict.placeholder(str), strict=False,  # folders
      image_key='image', label_key='label'))
