r"""VTAB-1k fine-tuning as in the paper (Appendix B.1.1): `--config=configs/vtab.py:<task>`.

The same setting for all 19 tasks: SGD momentum 0.9, lr 0.01, 2,500 steps, batch 512, cosine decay
(500 warmup steps), no weight decay, gradient clipping at 1, 384x384 input for every task, a
zero-initialised new head. Trains on `train800val200`, evaluated on the task's test part
(evaluator `test`). Tasks and splits: vit_jax/data/vtab.py. Run all of them and get the table
with experiments/vtab.py.

  python -m vit_jax.main --config=configs/vtab.py:clevr_count --workdir=runs/vtab/clevr_count \
      --config.model_name=ViT-B_16 --config.init_from=imagenet21k/ViT-B_16.npz \
      --config.data.data_dir=/data/tfds --config.evals.test.data.data_dir=/data/tfds
"""

from vit_jax.configs import common
from vit_jax.configs import sources
from vit_jax.data import vtab


def source(task='cifar100') -> sources.Source:
  """The paper's VTAB-1k setting (Appendix B.1.1, Table 4's VTAB row), one for all tasks."""
  del task
  return sources.Source(
      cite='Dosovitskiy et al. 2021, Appendix B.1.1 and Table 4 (VTAB row)',
      values={'batch_size': 512, 'total_steps': 2_500, 'lr.base': 0.01, 'optim.name': 'sgd',
              'optim.momentum': 0.9, 'wd': 0.0, 'grad_clip_norm': 1.0, 'lr.schedule': 'cosine',
              'lr.warmup_steps': 500, 'image_size': 384, 'data.split': 'train800val200'},
      peak_decay=0.0,
      result='ViT-H/14 (JFT): 77.63% mean over the 19 tasks (Table 2)')

PP = 'decode|resize({size})|value_range(-1, 1)|onehot|keep("image", "labels")'


def get_config(task='cifar100'):
  config = common.get_config()
  config.model_name = 'ViT-B_16'
  config.model.dtype = 'auto'  # bf16 on GPU/TPU (docs/accelerators.md), float32 on CPU
  config.num_classes = vtab.task(task).num_classes
  config.image_size = 384
  # Set --config.init_from=<released .npz or workdir>.
  config.data = common.data_source(f'vtab/{task}', 'train800val200')
  # No random crop or flip: positions, orientations and counts are labels in structured tasks.
  config.pp_train = PP.format(size=config.image_size)
  config.evals.test = common.classification_eval(
      common.data_source(f'vtab/{task}', 'test'), PP.format(size=config.image_size), every=0)
  config.batch_size = 512
  config.eval_batch_size = 512
  config.total_steps = 2_500
  config.optim.name, config.optim.momentum = 'sgd', 0.9
  config.lr.base, config.lr.schedule, config.lr.warmup_steps = 0.01, 'cosine', 500
  config.wd = 0.0
  config.grad_clip_norm = 1.0
  config.checkpoint_every = 500
  config.log_every = 50
  config.micro_batches = 1  # raise it (e.g. 8) when 512 images of 384px do not fit in memory
  return config
