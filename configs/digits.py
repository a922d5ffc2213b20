"""The default main job: a small ViT on the embedded digits data, a few minutes on 2 CPU cores.

  python -m vit_jax.main --config=configs/digits.py --workdir=workdirs/digits
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position


def get_config():
  config = common.get_config()
  config.model_name = 'ViT-Ti_16'
  config.model = dict(patches={'size': (4, 4)}, hidden_size=96,
                      transformer=dict(mlp_dim=192, num_heads=3, num_layers=4,
                                       dropout_rate=0.0))
  config.num_classes = 10
  config.image_size = 16
  config.data = dict(name='digits', split='train', image_size=16)
  config.eval_data = dict(name='digits', split='test', image_size=16)
  config.pp_train = ('decode|resize(20)|random_crop(16)|value_range(-1, 1)|'
                     'onehot(10, smoothing=0.1)|keep("image", "labels")')
  config.pp_eval = 'decode|resize(20)|central_crop(16)|value_range(-1, 1)|onehot(10)|keep("image", "labels")'
  config.batch_size = 128
  config.eval_batch_size = 128
  config.total_steps = 1500
  config.optim = dict(name='adam', b1=0.9, b2=0.999, eps=1e-8, momentum=0.9, nesterov=False,
                      mu_dtype=None)
  config.lr = dict(base=2e-3, schedule='cosine', warmup_steps=100, end=0.0, timescale=10_000)
  config.wd = 1e-4
  config.wd_decoupled = True
  config.log_every = 50
  config.eval_every = 500
  config.checkpoint_every = 500
  return config
