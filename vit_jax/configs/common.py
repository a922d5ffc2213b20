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
  # With init_from: the pp strings whose value op is the default value_range(-1, 1) take the
  # checkpoint's own input statistics (a timm/HF file's mean and std, a workdir's own).
  config.pp_from_init = True

  # What the run trains for (vit_jax.objectives): 'classification' (the paper), 'mae'
  # (masked-autoencoder pretraining, no labels) or 'distillation' (DeiT's distillation token
  # learning a teacher) or 'dense' (segmentation or depth from the patch maps, docs/dense.md).
  # `mae`, `distill` and `dense` hold their fields (docs/objectives.md).
  config.objective = 'classification'
  config.mae = ml_collections.ConfigDict(dict(
      mask_ratio=0.75, decoder_width=512, decoder_depth=8, decoder_heads=16,
      decoder_mlp_dim=2048, norm_pix_loss=True))
  config.distill = ml_collections.ConfigDict(dict(
      teacher=ml_collections.config_dict.placeholder(str),  # anything --checkpoint accepts
      kind='hard', alpha=0.5, tau=1.0))  # 'hard' | 'soft'; DeiT's weight and temperature
  # Dense tasks (vit_jax.models.dense): task 'segmentation' | 'depth'; head 'linear' (DINOv2's
  # probe) | 'mask_transformer' (Segmenter) | 'multilevel'; `blocks` the head reads;
  # frozen_backbone: a probe (backbone frozen, inference mode). Segmentation ignores
  # `ignore_label`; depth is predicted in (min_depth, max_depth) with depth_loss 'silog' |
  # 'l1' | 'silog+l1'.
  config.dense = ml_collections.ConfigDict(dict(
      task='segmentation', head='linear', blocks=(-1,), frozen_backbone=True, ignore_label=255,
      min_depth=1e-3, max_depth=10.0, depth_loss='silog', decoder_width=256, decoder_depth=2,
      decoder_heads=4))

  # Data: sources (vit_jax.data.sources.from_config) and preprocessing strings. `onehot` takes
  # its depth from num_classes; label smoothing is `label_smoothing` below.
  config.data = data_source('imagenet2012', 'train[:99%]')
  config.pp_train = 'decode_jpeg_and_inception_crop(224)|flip_lr|value_range(-1, 1)|onehot'
  # Preprocessing on the accelerator, inside the train step (vit_jax.data.device_pp): randaug,
  # flip_lr, value_range, normalize on the uint8 images pp_train ships. Empty: all on the host.
  config.pp_device = ''
  config.batch_size = 512  # global: independent of the device count
  config.total_steps = ml_collections.config_dict.placeholder(int)
  config.total_epochs = ml_collections.config_dict.placeholder(float)
  # 'mixup' | 'cutmix' | 'mixup_cutmix' (one or the other per batch, as timm's Mixup with
  # switch_prob 0.5: mixup with `alpha`, CutMix with `cutmix_alpha`)
  config.mixup = ml_collections.ConfigDict(dict(
      kind=ml_collections.config_dict.placeholder(str), alpha=0.2, cutmix_alpha=1.0))
  # Repeated augmentation (DeiT): each example of an epoch's order comes `repeated_aug` times in
  # a row, each copy augmented on its own; an epoch keeps the split's length.
  config.repeated_aug = 1
  # A linear probe (model.linear_probe): the training batches whose features' mean and variance
  # set its head_norm's inference statistics before the first step.
  config.probe_stats_batches = 10
  # NaFlex (docs/naflex.md): with a `naflex(patch_size, max_patches)` op in pp_train, images
  # keep their aspect ratio as sequences of max_patches tokens; `images_per_sequence` > 1 packs
  # that many at most into each of `sequences` sequences per step (None: batch_size, padded).
  config.naflex = ml_collections.ConfigDict(dict(
      images_per_sequence=1, sequences=ml_collections.config_dict.placeholder(int)))

  # Loss and optimizer (vit_jax.train.optimizer documents every field).
  config.loss = 'softmax_xent'
  config.label_smoothing = 0.0
  config.optim = ml_collections.ConfigDict(dict(name='adam', b1=0.9, b2=0.999, eps=1e-8,
                                                momentum=0.9, nesterov=False,
                                                trust_coefficient=0.001,
                                                mu_dtype=ml_collections.config_dict.placeholder(str)))
  config.lr = ml_collections.ConfigDict(dict(base=1e-3, schedule='cosine', warmup_steps=0,
                                             end=0.0, timescale=10_000))
  config.wd = 0.0
  # 'lr_scaled': p -= lr_t * wd * p (PyTorch/optax AdamW, the ViT paper); 'schedule_scaled':
  # p -= (lr_t / lr.base) * wd * p (big_vision). vit_jax.train.optimizer.peak_decay compares them.
  config.wd_style = 'lr_scaled'
  config.wd_mask = r'.*/kernel$'
  config.grad_clip_norm = 1.0
  config.lr_mults = ()
  config.frozen = ()
  config.layerwise_lr_decay = ml_collections.config_dict.placeholder(float)
  config.ema_decay = ml_collections.config_dict.placeholder(float)

  # Parallelism.
  config.mesh = (-1, 1, 1)  # (data, fsdp, tensor)
  config.sharding = 'dp'  # dp | fsdp | fsdp_tp
  # Under fsdp/fsdp_tp a parameter above replicated_max_mb (per device) that the preset leaves
  # whole on every device is refused at startup, unless a regex of replicated_ok names it.
  config.replicated_max_mb = 1.0
  config.replicated_ok = ()
  # Multi-slice TPU / multi-node GPU: how the slow-link groups (slices, nodes) split over
  # (data, fsdp, tensor); unset: slices (TPU) or multi-GPU processes along 'data'. With one
  # process per GPU set it, e.g. (nodes, 1, 1) (vit_jax/parallel/mesh.py).
  config.dcn_mesh = ml_collections.config_dict.placeholder(tuple)
  # Gradient accumulation: an int, or 'auto' for the fewest that fit (with model.remat='auto',
  # the lightest rematerialisation too); device_memory_gb is the per-device budget (read from
  # the device on GPU/TPU; set it on CPU or to override). See vit_jax/train/memory.py.
  config.micro_batches = ml_collections.config_dict.FieldReference(1, field_type=object)
  config.device_memory_gb = ml_collections.config_dict.placeholder(float)
  # The train step is compiled once, before the workdir is claimed, and checked against the
  # budget: device_memory_gb, else the device's own (the host's memory shared by CPU devices).
  # False keeps the one compile and skips the check.
  config.check_memory = True
  # Accelerator costs (docs/accelerators.md). A step whose loss or gradients are not finite changes nothing: 'cond' skips the update
  # (cheapest on CPU), 'select' picks per leaf (no second copy of the state in memory).
  config.nonfinite_guard = 'auto'  # cond on CPU, select elsewhere
  config.dropout_rng = 'auto'  # dropout bits: 'threefry', or 'rbg' (cheap on GPU/TPU); auto: rbg off CPU

  # Bookkeeping.
  config.log_every = 50
  config.checkpoint_every = 1000
  config.keep_checkpoints = 3
  config.keep_period = ml_collections.config_dict.placeholder(int)

  # Evaluators (vit_jax.evaluators): {name: entry}; see classification_eval and fewshot_eval
  # below. The first classification entry's pp is the input transform the run's workdir records
  # (`vit_jax.infer`, exports, fine-tuning from it).
  config.evals = ml_collections.ConfigDict()
  config.eval_batch_size = ml_collections.config_dict.placeholder(int)  # default: batch_size

  # Multi-host runtime (vit_jax.parallel.distributed): a peer silent for heartbeat_timeout_s is
  # declared dead and every process exits non-zero, so the scheduler can restart the job.
  config.distributed = ml_collections.ConfigDict(dict(
      heartbeat_timeout_s=40, initialization_timeout_s=300, shutdown_timeout_s=300))
  return config


# Fields that were renamed or removed: what to write instead (refused with this line when set;
# a saved config.json that holds one is read with its old meaning, vit_jax.train.workdir).
RETIRED_FIELDS = {
    'wd_decoupled': "use config.wd_style='schedule_scaled' (what wd_decoupled=True did: "
                    "p -= (lr_t / lr.base) * wd * p) or 'lr_scaled' (wd_decoupled=False: "
                    "p -= lr_t * wd * p, PyTorch's AdamW).",
}


def upgrade_saved(saved: dict) -> dict:
  """A saved run's config.json with retired fields in today's spelling, meaning unchanged."""
  saved = dict(saved)
  if 'wd_decoupled' in saved:
    saved['wd_style'] = 'schedule_scaled' if saved.pop('wd_decoupled') else 'lr_scaled'
  return saved


def model_overrides() -> ml_collections.ConfigDict:
  """Every VisionTransformer field, unset: a set one overrides the `model_name` variant's."""
  unset = ml_collections.config_dict.placeholder
  return ml_collections.ConfigDict(dict(
      patches=dict(size=unset(tuple)), hidden_size=unset(int),
      transformer=dict(mlp_dim=unset(int), num_heads=unset(int), num_layers=unset(int),
                       dropout_rate=unset(float), attention_dropout_rate=unset(float)),
      representation_size=unset(int), classifier=unset(str), head_bias_init=unset(float),
      posemb=unset(str), stochastic_depth=unset(float), dtype=unset(str), scan=unset(bool),
      remat=unset(str), gelu_approximate=unset(bool), activation=unset(str),
      layer_norm_eps=unset(float), layerscale=unset(float), qk_norm=unset(bool),
      pre_norm=unset(bool), num_registers=unset(int), distilled=unset(bool),
      distillation_head=unset(bool), dynamic_image_size=unset(bool), posemb_resize=unset(str),
      posemb_resize_square=unset(bool), class_token=unset(bool),
      fc_norm=unset(bool), gated_mlp=unset(bool), rope_theta=unset(float),
      rope=unset(str), rope_grid=unset(tuple), rope_offset=unset(float), rope_xy=unset(bool),
      rel_pos_bias=unset(bool), shared_rel_pos_bias=unset(bool), norm=unset(str),
      patch_norm=unset(bool), map_mlp=unset(bool),
      map_include_prefix=unset(bool), map_heads=unset(int), map_mlp_dim=unset(int),
      attn_inner_norm=unset(bool),
      mlp_inner_norm=unset(bool), attention_impl=unset(str), linear_probe=unset(bool),
      head_init_std=unset(float)))


def data_source(name: str, split: str) -> ml_collections.ConfigDict:
  """Every field a source accepts (vit_jax.data.sources.from_config), settable from flags."""
  return ml_collections.ConfigDict(dict(
      name=name, split=split, data_dir=ml_collections.config_dict.placeholder(str), prepare=False,
      image_size=ml_collections.config_dict.placeholder(int),  # digits, synthetic
      root=ml_collections.config_dict.placeholder(str), strict=False,  # folders
      image_key='image', label_key='label',
      target=ml_collections.config_dict.placeholder(str),  # a dense dataset's per-pixel feature
      canvas=ml_collections.config_dict.placeholder(tuple)))  # digit_canvas (height, width)


def classification_eval(data: ml_collections.ConfigDict, pp: str, every: int = 1000,
                        kind: str = 'classification') -> ml_collections.ConfigDict:
  """A top-1/loss evaluator on a split (kind 'classification'), or ImageNet-ReaL (kind 'real')."""
  return ml_collections.ConfigDict(dict(
      kind=kind, every=every, data=data, pp=pp,
      batch_size=ml_collections.config_dict.placeholder(int)))


def dense_eval(kind: str, data: ml_collections.ConfigDict, pp: str, every: int = 1000, *,
               mode: str = 'slide', crop=None, stride=None, figures: int = 4
               ) -> ml_collections.ConfigDict:
  """A dense evaluator (kind 'segmentation': mIoU, pixel accuracy, per-class IoU; 'depth':
  RMSE, AbsRel, delta<1.25) on a split, by sliding windows of `crop` pixels `stride` apart
  (default: the run's image_size, 2/3 of it) or on the `whole` image (evaluators/dense.py)."""
  unset = ml_collections.config_dict.placeholder
  return ml_collections.ConfigDict(dict(
      kind=kind, every=every, data=data, pp=pp, mode=mode,
      crop=unset(tuple) if crop is None else tuple(crop),
      stride=unset(tuple) if stride is None else tuple(stride), figures=figures,
      batch_size=unset(int)))


def fewshot_dataset(name: str, train_split: str, test_split: str,
                    **source_fields) -> ml_collections.ConfigDict:
  """One few-shot dataset: shots are drawn from `train_split`, accuracy is on `test_split`."""
  fields = data_source(name, train_split)
  for dense_only in ('split', 'target', 'canvas'):
    del fields[dense_only]
  fields.update(train_split=train_split, test_split=test_split, **source_fields)
  return fields


def fewshot_eval(datasets: dict, pp: str, every: int = 1000, shots=(1, 5, 10, 25),
                 holdout_per_class: int = 5, protocol: str = 'fixed_l2'
                 ) -> ml_collections.ConfigDict:
  """The paper's few-shot linear probes on `datasets` ({short name: fewshot_dataset(...)}):
  big_vision's protocol (fixed L2 2^10, seeds 0-2, standardised features), or
  protocol='selected_l2' (the L2 chosen on `holdout_per_class` held-out images per class)."""
  return ml_collections.ConfigDict(dict(
      kind='fewshot', every=every, datasets=datasets, pp=pp, shots=tuple(shots),
      protocol=protocol, l2_reg=2.0 ** 10, seeds=(0, 1, 2),
      l2_regs=tuple(2.0 ** i for i in range(-10, 11)), holdout_per_class=holdout_per_class,
      seed=0, representation='pre_logits',
      batch_size=ml_collections.config_dict.placeholder(int)))


def imagenet_evals(pp: str, every: int) -> ml_collections.ConfigDict:
  """The ImageNet evaluators: `minival` (train[99%:], held out of training), `val`, `real`
  (ImageNet-ReaL labels of the validation images) and `v2` (ImageNet-v2 matched-frequency)."""
  def data(name, split, **fields):
    source = data_source(name, split)
    source.update(fields)
    return source
  return ml_collections.ConfigDict(dict(
      minival=classification_eval(data('imagenet2012', 'train[99%:]'), pp, every),
      val=classification_eval(data('imagenet2012', 'validation'), pp, every),
      real=classification_eval(data('imagenet2012_real', 'validation', label_key='real_label'),
                               pp, every, kind='real'),
      v2=classification_eval(data('imagenet_v2', 'test'), pp, every)))


FEWSHOT_PP = 'decode|resize(256)|central_crop(224)|value_range(-1, 1)'  # big_vision's input


def fewshot_paper_monitor(every: int) -> ml_collections.ConfigDict:
  """The ViT paper's few-shot datasets (Section 4.1, Figure 3): probes on ImageNet, CIFAR-100
  and Pets (1/5/10/25 shots) and, in its own entry, Flowers (10 training images per class: 1
  and 5 shots)."""
  return ml_collections.ConfigDict(dict(
      fewshot=fewshot_eval({
          'imagenet': fewshot_dataset('imagenet2012', 'train[:10%]', 'validation'),
          'cifar100': fewshot_dataset('cifar100', 'train', 'test'),
          'pets': fewshot_dataset('oxford_iiit_pet', 'train', 'test'),
      }, FEWSHOT_PP, every),
      fewshot_flowers=fewshot_eval(
          {'flowers': fewshot_dataset('oxford_flowers102', 'train', 'test')}, FEWSHOT_PP, every,
          shots=(1, 5))))


# big_vision's pretraining monitor (big_vision/configs/common_fewshot.py): {name: (tfds name,
# train split, test split)}; 1/5/10/25 shots, L2 2^10, 3 seeds.
BIG_VISION_FEWSHOT = {
    'caltech': ('caltech101', 'train', 'test'),
    'cars': ('cars196', 'train', 'test'),
    'cifar100': ('cifar100', 'train', 'test'),
    'dtd': ('dtd', 'train', 'test'),
    'pets': ('oxford_iiit_pet', 'train', 'test'),
    'uc_merced': ('uc_merced', 'train[:1000]', 'train[1000:]'),
}


def fewshot_big_vision_monitor(every: int) -> ml_collections.ConfigDict:
  """big_vision's few-shot monitor: Caltech-101, Cars, CIFAR-100, DTD, Pets and UC Merced."""
  datasets = {short: fewshot_dataset(*split) for short, split in BIG_VISION_FEWSHOT.items()}
  return ml_collections.ConfigDict(dict(fewshot=fewshot_eval(datasets, FEWSHOT_PP, every)))
