"""The default main job: a small ViT on the embedded digits data, a few minutes on 2 CPU cores.

  python -m vit_jax.main --config=configs/digits.py --workdir=workdirs/digits
"""

from vit_jax.configs import common


def get_config():
  config = common.get_config()
  config.model_name = 'ViT-Ti_16'
  config.model.patches.size = (4, 4)
  config.model.hidden_size = 96
  config.model.transformer.mlp_dim = 192
  config.model.transformer.num_heads = 3
  config.model.transformer.num_layers = 4
  config.model.transformer.dropout_rate = 0.0
  config.num_classes = 10
  config.image_size = 16
  config.data = common.data_source('digits', 'train')
  config.data.image_size = 16
  config.eval_data = common.data_source('digits', 'test')
  config.eval_data.image_size = 16
  config.pp_train = 'decode|resize(20)|random_crop(16)|value_range(-1, 1)|onehot|keep("image", "labels")'
  config.pp_eval = 'decode|resize(20)|central_crop(16)|value_range(-1, 1)|onehot|keep("image", "labels")'
  config.label_smoothing = 0.1
  config.batch_size = 128
  config.eval_batch_size = 128
  config.total_steps = 1500
  config.lr.base = 2e-3
  config.lr.warmup_steps = 100
  config.wd = 1e-4
  config.wd_decoupled = True
  config.log_every = 50
  config.eval_every = 500
  config.checkpoint_every = 500
  return config
