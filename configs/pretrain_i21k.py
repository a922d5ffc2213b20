r"""Pretraining on ImageNet-21k as the paper (Section 4.1, Table 3): ViT-B/16 by default.

Adam (0.9, 0.999), batch 4096, lr 1e-3 with 10k warmup steps and linear decay, weight decay 0.03
(p -= lr_t * 0.03 * p: 3e-5 per step at peak; 0.1 is the JFT-300M figure), dropout 0.1, 90 epochs, sigmoid cross-entropy, a representation (pre-logits)
layer of the model width, 224px. `--config=configs/pretrain_i21k.py:ViT-L_16` for other sizes.

  python -m vit_jax.main --config=configs/pretrain_i21k.py --workdir=runs/i21k_b16 \
      --config.data.data_dir=/data/tfds --config.mesh='(-1, 8, 1)' --config.sharding=fsdp
"""

from vit_jax import errors
from vit_jax.configs import common
from vit_jax.configs import models as model_configs
from vit_jax.configs import sources


def _parse(arg: str) -> tuple[str, str]:
  model_name, _, monitor = arg.partition(',')
  if monitor not in ('', 'paper', 'big_vision'):
    raise errors.UserError(f'configs/pretrain_i21k.py:{arg}: the few-shot monitor after the '
                           f"comma is 'paper' or 'big_vision', got {monitor!r}.")
  return model_name, monitor or 'paper'


def source(arg='ViT-B_16') -> sources.Source:
  """The ViT paper, Table 3's ImageNet-21k rows (ViT-B and ViT-L: 90 epochs, lr 1e-3, linear
  decay, weight decay 0.03, dropout 0.1) and Appendix B.1 (Adam 0.9/0.999, batch 4096, 10k
  warmup steps, 224 px); the pre-logits layer of the released ImageNet-21k checkpoints."""
  model_name, _ = _parse(arg)
  width = model_configs.get_config(model_name).hidden_size
  return sources.Source(
      cite='Dosovitskiy et al. 2021, Table 3 (ImageNet-21k rows) and Appendix B.1',
      values={'batch_size': 4096, 'optim.name': 'adam', 'optim.b1': 0.9, 'optim.b2': 0.999,
              'lr.base': 1e-3, 'lr.schedule': 'linear', 'lr.warmup_steps': 10_000,
              'wd': 0.03, 'wd_style': 'lr_scaled', 'model.transformer.dropout_rate': 0.1,
              'total_epochs': 90, 'image_size': 224, 'num_classes': 21843,
              'model.representation_size': width},
      peak_decay=0.03 * 1e-3,
      deviations={
          'grad_clip_norm': 'clipped at global norm 1 (Table 3 names clipping for its ImageNet '
                            "runs; big_vision's vit_i21k.py clips ImageNet-21k too): no effect "
                            'on a healthy run, it stops a bad batch from wrecking it',
          'loss': "sigmoid cross-entropy and head bias -10 (big_vision's vit_i21k.py, the "
                  "paper's released training code): ImageNet-21k images carry several labels",
          'lr.end': "linear decay to 1e-5, not 0 (big_vision's linear_end)",
          'data.split': 'the first 102,400 images held out for top-1 (tfds has no test split)'},
      result='ViT-B/16 I21k, fine-tuned on ImageNet at 384 px: 84.0% (Table 5); ViT-L/16: '
             '85.3% (Table 2)')


def get_config(arg='ViT-B_16'):
  """`<variant>[,<monitor>]`: the few-shot monitor is the paper's datasets ('paper', default)
  or big_vision's ('big_vision': Caltech-101, Cars, CIFAR-100, DTD, Pets, UC Merced)."""
  model_name, monitor = _parse(arg)
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
  config.wd = 0.03
  config.wd_style = 'lr_scaled'  # the paper's Adam: p -= lr_t * wd * p
  config.grad_clip_norm = 1.0
  # Held-out top-1 (the first 102,400 images), and few-shot linear probes watching the
  # representation as pretraining goes (as big_vision does).
  # Few-shot probes: the paper's datasets, or big_vision's monitor (`:ViT-B_16,big_vision`).
  config.evals = (common.fewshot_big_vision_monitor(every=10_000) if monitor == 'big_vision'
                  else common.fewshot_paper_monitor(every=10_000))
  config.evals.eval = common.classification_eval(
      common.data_source('imagenet21k', 'full[:102400]'),
      'decode|resize_small(256)|central_crop(224)|value_range(-1, 1)|onehot|keep("image", "labels")',
      every=10_000)
  config.checkpoint_every = 2_000
  config.keep_period = 20_000
  return config
