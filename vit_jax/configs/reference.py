r"""The configuration reference: every field of `common.get_config()`, its default and meaning.

`docs/config_reference.md` is this module's output (tests/test_docs.py fails when a field is
added, removed or its default changes without the page following):

  python -m vit_jax.configs.reference > docs/config_reference.md
"""

from typing import Any

from vit_jax.configs import common

# Field -> what it means and the values it takes. Defaults come from common.get_config().
MEANINGS = {
    'seed': 'the run\'s seed: initialisation, data order, augmentation, dropout, masks',
    'model_name': 'a variant of `vit_jax.configs.models` (`ViT-B_16`, `ViT-L_16`, `R50+ViT-B_16`, '
                  '...) or a short name (`B/16`)',
    'model.patches.size': 'patch size, e.g. `(16, 16)`; unset: the variant\'s',
    'model.hidden_size': 'token width; unset: the variant\'s',
    'model.transformer.mlp_dim': 'MLP width; unset: the variant\'s',
    'model.transformer.num_heads': 'attention heads; unset: the variant\'s',
    'model.transformer.num_layers': 'encoder blocks; unset: the variant\'s',
    'model.transformer.dropout_rate': 'dropout after attention and in the MLP',
    'model.transformer.attention_dropout_rate': 'dropout of the attention weights',
    'model.representation_size': 'a pre-logits layer of this width before the head (the '
                                 'paper\'s pretraining head)',
    'model.classifier': '`token` | `gap` | `map` | `token_gap` | `unpooled` | `token_unpooled`: '
                        'the pooling ([models.md](models.md#model-fields))',
    'model.head_bias_init': 'the head bias\'s initial value (e.g. -10 for sigmoid losses)',
    'model.posemb': '`learn` | `sincos2d` | `rope` | `none`: the position embedding (`none`: '
                    'positions from a relative position bias alone, BEiT)',
    'model.stochastic_depth': 'drop-path rate of the last block (linear from 0)',
    'model.dtype': '`auto` | `float32` | `bfloat16` | `float16`: the compute dtype (`auto`: '
                   'bfloat16 on GPU/TPU)',
    'model.scan': 'stack the blocks with `nn.scan` (one compiled block)',
    'model.remat': '`none` | `dots` | `dots_no_batch` | `full` | `auto`: rematerialisation per '
                   'block (`auto`: the lightest that fits)',
    'model.gelu_approximate': 'tanh GELU (True, official) or erf GELU',
    'model.activation': '`gelu_tanh` | `gelu` | `quick_gelu` | `silu`: the MLP activation',
    'model.layer_norm_eps': 'every LayerNorm\'s epsilon',
    'model.layerscale': 'LayerScale\'s initial value (unset: none)',
    'model.qk_norm': 'LayerNorm of queries and keys per head',
    'model.pre_norm': 'a LayerNorm before the first block (CLIP)',
    'model.num_registers': 'register tokens (DINOv2)',
    'model.distilled': 'DeiT\'s distillation token and head',
    'model.distillation_head': 'with `distilled`: logits from both heads (True) or the class '
                               'head alone',
    'model.dynamic_image_size': 'resample the position table to any input grid on the fly',
    'model.posemb_resize': '`bilinear` | `bicubic`: how the table is resized on the fly '
                           '(antialiased; timm NaFlexViT: bicubic)',
    'model.posemb_resize_square': 'resize the table to a square of the longer side and keep '
                                  'its top-left corner (timm\'s `pos_embed_ar_preserving`)',
    'model.class_token': 'a class token beside `gap`/`map` pooling',
    'model.fc_norm': 'the final LayerNorm after pooling instead of before it',
    'model.gated_mlp': 'SwiGLU MLP',
    'model.rope_theta': 'the RoPE base with `posemb=\'rope\'` or `rope`',
    'model.rope': '`none` | `dinov3` | `axial`: rotary embeddings beside the position embedding '
                  '(`axial`: EVA-02\'s)',
    'model.rope_grid': 'axial rope: coordinates rescaled to this grid (EVA-02\'s pretraining grid)',
    'model.rope_offset': 'axial rope: added to the patch indices',
    'model.rope_xy': 'axial rope: the column angles first',
    'model.rel_pos_bias': 'a relative position bias table in every block (BEiT)',
    'model.shared_rel_pos_bias': 'one relative position bias table shared by every block (BEiT)',
    'model.norm': '`layer` | `rms`: every norm of the model (`rms`: RMSNorm, AIMv2)',
    'model.map_include_prefix': 'with `classifier=\'map\'`: the head also attends to the class '
                                'token and registers (timm\'s Eva, `pool_include_prefix`)',
    'model.map_heads': 'the MAP head\'s attention heads (unset: the blocks\')',
    'model.map_mlp_dim': 'the MAP head\'s MLP width (unset: the blocks\')',
    'model.attn_inner_norm': 'a LayerNorm of the merged heads before the attention\'s output '
                             'projection (BEiT-3)',
    'model.mlp_inner_norm': 'a norm of the MLP\'s hidden activations before its second dense '
                            'layer (BEiT-3, EVA-02)',
    'model.patch_norm': 'a norm of the patch tokens before the position embedding (AIMv2)',
    'model.map_mlp': 'with `classifier=\'map\'`: False drops the head\'s MLP (AIMv2\'s '
                     'attention pooling)',
    'model.attention_impl': '`auto` | `xla` | `cudnn` | `explicit`: how attention runs',
    'model.linear_probe': 'MAE\'s linear probe: frozen encoder, BatchNorm before the head',
    'model.head_init_std': 'the head kernel\'s normal init (0: zeros)',
    'num_classes': 'classes of the head; unset (None): the training data\'s (image folders)',
    'image_size': 'the input side in pixels',
    'init_from': 'start from weights: a released/big_vision `.npz`, one of our workdirs, or a '
                 'timm / Hugging Face checkpoint ([getting_weights.md](getting_weights.md))',
    'dont_load': 'regexes of parameter names kept from the fresh init instead of `init_from`',
    'pp_from_init': 'give the default `value_range(-1, 1)` pp strings the `init_from` '
                    'checkpoint\'s own input statistics',
    'objective': '`classification` | `mae` | `distillation` | `dense` '
                 '([objectives.md](objectives.md), [dense.md](dense.md))',
    'mae.mask_ratio': 'share of patches hidden from the encoder, in (0, 1)',
    'mae.decoder_width': 'MAE decoder width',
    'mae.decoder_depth': 'MAE decoder blocks',
    'mae.decoder_heads': 'MAE decoder heads',
    'mae.decoder_mlp_dim': 'MAE decoder MLP width',
    'mae.norm_pix_loss': 'each target patch normalised by its own mean and variance',
    'distill.teacher': 'the teacher: anything `--checkpoint` accepts',
    'distill.kind': '`hard` | `soft`: DeiT\'s distillation loss',
    'distill.alpha': 'the distillation term\'s weight',
    'distill.tau': 'the soft distillation\'s temperature',
    'dense.task': '`segmentation` | `depth`',
    'dense.head': '`linear` | `mask_transformer` | `multilevel`',
    'dense.blocks': 'the blocks whose patch maps the head reads (negative: from the end)',
    'dense.frozen_backbone': 'a probe: the backbone frozen and in inference mode',
    'dense.ignore_label': 'the segmentation label no loss or metric counts',
    'dense.min_depth': 'the smallest depth predicted',
    'dense.max_depth': 'the largest depth predicted',
    'dense.depth_loss': '`silog` | `l1` | `silog+l1`',
    'dense.decoder_width': 'the mask transformer\'s / multi-level decoder\'s width',
    'dense.decoder_depth': 'the mask transformer\'s blocks',
    'dense.decoder_heads': 'the mask transformer\'s heads',
    'data.name': 'a tfds name, `folder`, `digits`, `digit_canvas`, `synthetic` or '
                 '`vtab/<task>` ([data.md](data.md))',
    'data.split': 'a split expression: `train`, `train[:99%]`, `validation[100:200]`',
    'data.data_dir': 'the tfds data directory (unset: tfds\'s default)',
    'data.prepare': 'run tfds\'s `download_and_prepare` first',
    'data.image_size': 'digits and synthetic: the side of the images made',
    'data.root': 'folder: the image folder',
    'data.strict': 'folder: an undecodable file is fatal instead of skipped',
    'data.image_key': 'the image feature\'s name',
    'data.label_key': 'the label feature\'s name',
    'data.target': 'a dense dataset\'s per-pixel feature',
    'data.canvas': 'digit_canvas: (height, width)',
    'pp_train': 'the host preprocessing of training examples ([data.md](data.md))',
    'pp_device': 'preprocessing on the accelerator, inside the train step (`randaug`, '
                 '`flip_lr`, `value_range`, `normalize`)',
    'batch_size': 'the global batch, whatever the device count',
    'total_steps': 'the run\'s length in steps (or `total_epochs`; set one)',
    'total_epochs': 'the run\'s length in epochs of the training split',
    'mixup.kind': '`mixup` | `cutmix` | `mixup_cutmix` (unset: none)',
    'mixup.alpha': 'mixup\'s Beta parameter',
    'mixup.cutmix_alpha': 'CutMix\'s Beta parameter',
    'repeated_aug': 'repeated augmentation (DeiT): each example this many times in a row',
    'probe_stats_batches': 'a linear probe: the batches its BatchNorm statistics come from',
    'naflex.images_per_sequence': 'NaViT packing: images per sequence at most',
    'naflex.sequences': 'NaViT packing: sequences per step (unset: batch_size)',
    'loss': '`softmax_xent` | `sigmoid_xent`',
    'label_smoothing': 'label smoothing of the targets',
    'optim.name': '`adam` | `adamw` | `sgd` | `adafactor` | `lars`',
    'optim.b1': 'Adam\'s first-moment decay',
    'optim.b2': 'Adam\'s second-moment decay',
    'optim.eps': 'Adam\'s epsilon',
    'optim.momentum': 'SGD / LARS momentum',
    'optim.nesterov': 'Nesterov momentum (SGD)',
    'optim.trust_coefficient': 'LARS trust coefficient',
    'optim.mu_dtype': 'the first moment\'s dtype (e.g. `bfloat16`; unset: the parameters\')',
    'lr.base': 'the peak learning rate (no implicit batch scaling)',
    'lr.schedule': '`cosine` | `linear` | `rsqrt` | `constant`, after warmup',
    'lr.warmup_steps': 'linear warmup steps',
    'lr.end': 'the learning rate at the end (cosine, linear)',
    'lr.timescale': 'the rsqrt schedule\'s timescale',
    'wd': 'weight decay',
    'wd_style': '`lr_scaled` (`p -= lr_t * wd * p`, PyTorch\'s AdamW) | `schedule_scaled` '
                '(`p -= (lr_t / lr.base) * wd * p`, big_vision)',
    'wd_mask': 'the regex of parameter names that decay',
    'grad_clip_norm': 'clip the global gradient norm (0: no clipping)',
    'lr_mults': '(regex, multiplier) pairs on the learning rate',
    'frozen': 'regexes of parameter names that do not train',
    'layerwise_lr_decay': 'layer-wise learning-rate decay (BEiT, MAE fine-tuning)',
    'ema_decay': 'keep an exponential moving average of the parameters (Polyak)',
    'mesh': '(data, fsdp, tensor) axis sizes; -1 takes the remaining devices',
    'sharding': '`dp` | `fsdp` | `fsdp_tp` ([scaling.md](scaling.md))',
    'replicated_max_mb': 'under fsdp: a parameter left whole above this size (MB per device) '
                         'is refused',
    'replicated_ok': 'regexes of parameters allowed to stay whole under fsdp',
    'dcn_mesh': 'multi-slice / multi-node: how the slow-link groups split over the mesh axes',
    'micro_batches': 'gradient accumulation: an int, or `auto` (the fewest that fit)',
    'device_memory_gb': 'the per-device memory budget (unset: the device\'s own)',
    'check_memory': 'check the compiled train step against the budget before step 1',
    'nonfinite_guard': '`auto` | `cond` | `select`: how a step with non-finite gradients is '
                       'skipped',
    'dropout_rng': '`auto` | `threefry` | `rbg`: the dropout random bits',
    'log_every': 'steps between logged rows',
    'checkpoint_every': 'steps between checkpoints',
    'keep_checkpoints': 'the newest checkpoints kept',
    'keep_period': 'also keep every checkpoint whose step is a multiple of this',
    'evals': '{name: evaluator entry}: top-1, ReaL, few-shot, dense ([evaluation.md]'
             '(evaluation.md))',
    'eval_batch_size': 'the evaluators\' batch (unset: batch_size)',
    'distributed.heartbeat_timeout_s': 'a peer silent this long is declared dead',
    'distributed.initialization_timeout_s': 'how long the processes wait for each other at '
                                            'start',
    'distributed.shutdown_timeout_s': 'how long the processes wait for each other at the end',
}


def fields(config=None, prefix: str = '') -> dict[str, Any]:
  """{dotted field: default} of every leaf (an empty group, such as `evals`, is a leaf)."""
  config = common.get_config() if config is None else config
  found = {}
  for key, value in config.items():
    if hasattr(value, 'items') and len(value):
      found.update(fields(value, f'{prefix}{key}.'))
    else:
      found[f'{prefix}{key}'] = value
  return found


def _default(value: Any) -> str:
  if value is None:
    return 'unset'
  if hasattr(value, 'items'):
    return '{}'
  return f'`{value!r}`'


def markdown() -> str:
  defaults = fields()
  lines = ['# Configuration reference', '',
           'Every field a recipe can set, with its default in `vit_jax/configs/common.py`; any of '
           'them is set from the command line as `--config.<field>=<value>`. A recipe '
           '(`configs/<name>.py`) starts from these and sets its own. Generated by '
           '`python -m vit_jax.configs.reference`.', '',
           '| field | default | meaning |', '|---|---|---|']
  for name, value in defaults.items():
    lines.append(f'| `{name}` | {_default(value)} | {MEANINGS[name]} |')
  return '\n'.join(lines) + '\n'


if __name__ == '__main__':
  print(markdown(), end='')
