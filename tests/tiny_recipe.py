"""A seconds-long digits run for the runner tests: `--config=tests/tiny_recipe.py:<data_dir>`."""

from vit_jax.configs import common


def get_config(data_dir=None):
  config = common.get_config()
  config.model_name = 'testing'
  config.model.patches.size = (4, 4)
  config.model.hidden_size = 16
  config.model.transformer.update(mlp_dim=32, num_heads=2, num_layers=1, dropout_rate=0.1)
  config.num_classes = 10
  config.image_size = 16
  config.data.name, config.data.split = 'digits', 'train[:256]'
  config.data.data_dir = data_dir or None  # `tiny_recipe.py:` alone: tfds's default, not the cwd
  # RandAugment on the devices (as the i1k recipe): the resume and multi-host tests cover it.
  config.pp_train = 'decode|inception_crop(16, area_min=60)|onehot|keep("image", "labels")'
  config.pp_device = 'randaug(2, 5)|value_range(-1, 1)'
  config.batch_size = 32
  config.eval_batch_size = 16
  config.total_steps = 12
  config.lr.base, config.lr.warmup_steps = 3e-3, 2
  config.wd = 1e-4
  config.wd_style = 'schedule_scaled'  # big_vision's: 1e-4 taken off per step at peak
  config.log_every = 1
  test = common.data_source('digits', 'test[:50]')
  test.data_dir = data_dir or None
  config.evals.eval = common.classification_eval(
      test, 'decode|resize(16)|value_range(-1, 1)|onehot|keep("image", "labels")', every=6)
  config.checkpoint_every = 4
  config.keep_checkpoints = 3
  return config
