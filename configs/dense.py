r"""Dense tasks from ViT patch features: segmentation and depth (docs/dense.md).

On the embedded digit canvases (offline, minutes on 2 CPU cores), from the digits backbone of
the Quickstart (configs/digits.py):

  python -m vit_jax.main --config=configs/dense.py:digits_segmentation \
      --workdir=workdirs/canvas_linear --config.init_from=workdirs/digits
  python -m vit_jax.main --config=configs/dense.py:digits_finetune \
      --workdir=workdirs/canvas_finetune --config.init_from=workdirs/digits
  python -m vit_jax.main --config=configs/dense.py:digits_depth \
      --workdir=workdirs/canvas_depth --config.init_from=workdirs/digits

The published protocols, on one's own prepared copy of the data (docs/dense.md):

  ade20k_linear     DINOv2's linear probe: frozen backbone, a linear layer on the last block's
                    patch tokens, 512x512 crops, 40k iterations at batch 16, AdamW 1e-3
  ade20k_segmenter  Segmenter's mask transformer fine-tuned with the backbone: 160k iterations
                    at batch 8, SGD 1e-3 (momentum 0.9), stochastic depth 0.1
  nyu_linear        the depth probe: frozen backbone, a linear layer, scale-invariant log loss,
                    depth in (0.001, 10] m
"""

from vit_jax import errors
from vit_jax.configs import common
from vit_jax.configs import sources

_UNCHECKED = ("the optimizer values (AdamW's rate, weight decay 1e-4, 1,500 warmup steps) "
              'follow the mmsegmentation schedules the papers name; they are not yet held '
              "against the papers' released config files")


def source(variant: str = 'digits_segmentation') -> sources.Source:
  """The dense protocols' published settings: DINOv2's linear probe (Oquab et al. 2023,
  Section 7.4), Segmenter's mask transformer (Strudel et al. 2021, Section 4.1)."""
  if variant.startswith('digits_'):
    return sources.ours('digit canvases: a few minutes on 2 CPU cores, no paper to match')
  if variant == 'ade20k_linear':
    return sources.Source(
        cite='Oquab et al. 2023 (DINOv2), Section 7.4: linear probe on ADE20K',
        values={'dense.head': 'linear', 'dense.frozen_backbone': True, 'image_size': 512,
                'total_steps': 40_000, 'batch_size': 16, 'num_classes': 150,
                'wd_style': 'lr_scaled', 'lr.schedule': 'linear', 'lr.end': 0.0},
        gaps=(_UNCHECKED,))
  if variant == 'ade20k_segmenter':
    return sources.Source(
        cite='Strudel et al. 2021 (Segmenter), Section 4.1: ADE20K',
        values={'dense.head': 'mask_transformer', 'dense.frozen_backbone': False,
                'dense.decoder_depth': 2, 'image_size': 512, 'total_steps': 160_000,
                'batch_size': 8, 'optim.name': 'sgd', 'optim.momentum': 0.9,
                'lr.base': 1e-3, 'wd': 0.0, 'model.stochastic_depth': 0.1, 'num_classes': 150},
        peak_decay=0.0,
        deviations={'lr.schedule': "linear decay to 0 (Segmenter: poly, power 0.9): the rate "
                                   'mid-run is a few % lower'})
  return sources.Source(
      cite='Oquab et al. 2023 (DINOv2), Section 7.4: linear depth probe on NYU-Depth v2',
      values={'dense.task': 'depth', 'dense.head': 'linear', 'dense.frozen_backbone': True,
              'dense.max_depth': 10.0, 'total_steps': 38_400, 'batch_size': 16,
              'wd_style': 'lr_scaled'},
      gaps=(_UNCHECKED,))

DIGITS_BACKBONE = dict(patches=dict(size=(4, 4)), hidden_size=96,
                       transformer=dict(mlp_dim=192, num_heads=3, num_layers=4, dropout_rate=0.0))
CANVAS_PP = 'value_range(-1, 1)'


def _canvas(split: str, target: str):
  data = common.data_source('digit_canvas', split)
  data.target = target
  return data


def _digits(config, variant: str):
  """A digits-sized backbone (configs/digits.py's, at its 16x16 input) on 32x32 digit canvases:
  trained on random 16x16 crops, evaluated on 16x16 windows sliding over the whole canvas."""
  config.model_name = 'ViT-Ti_16'
  config.model.update(DIGITS_BACKBONE)
  config.image_size = 16
  task = 'depth' if variant == 'digits_depth' else 'segmentation'
  config.dense.task = task
  config.data = _canvas('train', task)
  op = 'segmentation' if task == 'segmentation' else 'depth'
  config.pp_train = f'decode|{op}|random_crop(16)|{CANVAS_PP}|keep("image", "{op}")'
  eval_pp = f'decode|{op}|central_crop(32)|{CANVAS_PP}|keep("image", "{op}")'
  config.evals.val = common.dense_eval(task, _canvas('test', task), eval_pp, every=200,
                                       stride=(16, 16))
  config.num_classes = 11 if task == 'segmentation' else 1
  config.batch_size = 64
  config.total_steps = 600
  config.optim.name = 'adam'
  config.wd_style = 'schedule_scaled'  # our digits setting (no source): 1e-4 per step at peak
  config.wd = 1e-4
  config.lr.update(base=1e-2, schedule='linear', end=0.0, warmup_steps=50)
  config.log_every = 50
  config.checkpoint_every = 200
  if variant == 'digits_finetune':  # the backbone learns too, with the multi-level decoder
    config.dense.update(head='multilevel', frozen_backbone=False, decoder_width=64)
    config.lr.base = 1e-3
    config.lr_mults = (('dense_head/.*', 5.0),)  # the fresh decoder learns faster
  if task == 'depth':
    config.dense.update(max_depth=10.0, depth_loss='silog+l1')  # L1 fixes the scale
  return config


def _ade20k(config, variant: str):
  config.image_size = 512
  config.num_classes = 150
  data = common.data_source('scene_parse150', 'train')
  data.target = 'annotation'
  config.data = data
  labels = 'segmentation(key="annotation", reduce_zero_label=True)'
  config.pp_train = (f'decode|{labels}|random_scale(512, 2048, 0.5, 2.0)|pad_to(512)|'
                     'random_crop(512)|flip_lr|value_range(-1, 1)|keep("image", "segmentation")')
  # The whole validation image, its shorter side at 512 and its longer at most 1024, padded
  # (padding ignored) to one size; windows of 512.
  eval_pp = (f'decode|{labels}|random_scale(512, 1024, 1.0, 1.0)|pad_to(1024)|'
             'central_crop(1024)|value_range(-1, 1)|keep("image", "segmentation")')
  val = common.data_source('scene_parse150', 'test')  # tfds names ADE20K's validation 'test'
  val.target = 'annotation'
  config.optim.name = 'adam'
  if variant == 'ade20k_linear':  # DINOv2: frozen backbone, linear head, AdamW, poly (power 1)
    config.evals.val = common.dense_eval('segmentation', val, eval_pp, every=4000,
                                         stride=(341, 341))
    config.batch_size = 16
    config.total_steps = 40_000
    config.wd_style = 'lr_scaled'  # DINOv2's AdamW (PyTorch)
    config.wd = 1e-4
    config.lr.update(base=1e-3, schedule='linear', end=0.0, warmup_steps=1500)
  else:  # Segmenter: the mask transformer and the backbone, SGD, poly
    config.evals.val = common.dense_eval('segmentation', val, eval_pp, every=16_000,
                                         stride=(512, 512))
    config.dense.update(head='mask_transformer', frozen_backbone=False, decoder_width=768,
                        decoder_depth=2, decoder_heads=12)
    config.model.stochastic_depth = 0.1
    config.batch_size = 8
    config.total_steps = 160_000
    config.optim.name = 'sgd'
    config.wd = 0.0
    config.lr.update(base=1e-3, schedule='linear', end=0.0, warmup_steps=0)
  return config


def _nyu(config):
  config.image_size = 416
  config.num_classes = 1
  config.dense.update(task='depth', min_depth=1e-3, max_depth=10.0, depth_loss='silog')
  data = common.data_source('nyu_depth_v2', 'train')
  data.target = 'depth'
  config.data = data
  config.pp_train = ('decode|depth|random_crop(416)|flip_lr|value_range(-1, 1)|'
                     'keep("image", "depth")')
  val = common.data_source('nyu_depth_v2', 'validation')
  val.target = 'depth'
  config.evals.val = common.dense_eval(
      'depth', val, 'decode|depth|central_crop((480, 640))|value_range(-1, 1)|'
      'keep("image", "depth")', every=4000, stride=(277, 277))
  config.batch_size = 16
  config.total_steps = 38_400
  config.optim.name = 'adam'
  config.wd_style = 'lr_scaled'  # AdamW (PyTorch)
  config.wd = 1e-4
  config.lr.update(base=1e-3, schedule='linear', end=0.0, warmup_steps=1500)
  return config


def get_config(variant: str = 'digits_segmentation'):
  config = common.get_config()
  config.objective = 'dense'
  config.model_name = 'ViT-B_16'
  config.eval_batch_size = 8
  config.grad_clip_norm = 0.0
  if variant.startswith('digits_'):
    return _digits(config, variant)
  if variant.startswith('ade20k_'):
    return _ade20k(config, variant)
  if variant == 'nyu_linear':
    return _nyu(config)
  raise errors.UserError(f'configs/dense.py: unknown variant {variant!r}; expected '
                         'digits_segmentation, digits_finetune, digits_depth, ade20k_linear, '
                         'ade20k_segmenter, nyu_linear.')
