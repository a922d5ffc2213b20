"""The input transform a checkpoint was trained with, as one of our eval preprocessing strings.

Every source says it in its own words: a Hugging Face `preprocessor_config.json`, timm's
`pretrained_cfg` (mean, std, input size, interpolation, crop_pct), a workdir's evaluator, and for
released `.npz` files the official `[-1, 1]` resize. All become one `pp` string of the host ops
(`resize`, `resize_small`, `central_crop`, `value_range`, `normalize`), which the tf.data
pipeline and `vit_jax.data.images` (PIL, for `infer` and `viz`) both run; exports write it back.
"""

import math
from typing import Any, Mapping, Optional, Sequence

from vit_jax import errors
from vit_jax.data import pp_spec

# PIL's resample codes (what transformers' `resample` holds) -> our resize methods.
_PIL_RESAMPLE = {0: 'nearest', 1: 'lanczos', 2: 'bilinear', 3: 'bicubic', 4: 'box', 5: 'hamming'}
_METHODS_TO_PIL = {name: code for code, name in _PIL_RESAMPLE.items()}
_TIMM_INTERPOLATION = ('bilinear', 'bicubic', 'nearest', 'lanczos', 'box', 'hamming')
# The image ops of an eval string; label ops (onehot, keep) and decode are left out.
IMAGE_OPS = ('resize', 'resize_small', 'central_crop', 'value_range', 'normalize')
# Fields of preprocessor_config.json that change nothing we compute (or name the class).
_HF_HARMLESS = {'image_processor_type', 'processor_class', 'feature_extractor_type',
                'do_convert_rgb', 'input_data_format', 'data_format', 'default_to_square',
                'return_tensors', 'device', 'disable_grouping', 'crop_to_patches',
                'do_pad', 'pad_size', 'resample', 'size', 'crop_size', 'image_mean',
                'image_std', 'do_resize', 'do_center_crop', 'do_rescale', 'do_normalize',
                'rescale_factor', 'image_seq_length'}


def released(image_size: int) -> str:
  """The official vit_jax eval transform: a square resize, values in [-1, 1]."""
  return f'resize({image_size})|value_range(-1, 1)'


def _floats(values) -> tuple[float, ...]:
  return tuple(round(float(v), 8) for v in values)


def _norm_op(mean: Sequence[float], std: Sequence[float]) -> str:
  mean, std = _floats(mean), _floats(std)
  if all(m == 0.5 for m in mean) and all(s == 0.5 for s in std):
    return 'value_range(-1, 1)'
  return f'normalize({mean}, {std})'


_CLASSIFIERS = ('classification', 'real')  # evaluator kinds whose pp ends at the model input


def of_run(config: Mapping[str, Any]) -> str:
  """A run's transform (its saved config): the first classification evaluator's image ops when
  they end at the run's image size, else a square resize to it with the value op the run used
  (its evaluator's, else the training one's of pp_train and pp_device)."""
  image_size = config['image_size']
  evals = [entry.get('pp') for entry in (config.get('evals') or {}).values()
           if entry.get('kind') in _CLASSIFIERS and entry.get('pp')]
  pp = image_ops(evals[0]) if evals else ''
  sizes = [(args or [kwargs.get('size')])[0] for name, args, kwargs in
           map(pp_spec.parse_op, pp_spec.ops(pp)) if name in ('resize', 'central_crop')]
  value = value_op(pp)
  if sizes and _pair(sizes[-1]) == (image_size, image_size) and value:
    return pp
  trained = '|'.join(p for p in (config.get('pp_train'), config.get('pp_device')) if p)
  return f'resize({image_size})|{value or value_op_or_default(trained)}'


def image_ops(pp: str) -> str:
  """The image part of an eval string (`decode|resize(224)|value_range(-1, 1)|onehot` ->
  `resize(224)|value_range(-1, 1)`)."""
  return '|'.join(op for op in pp_spec.ops(pp) if pp_spec.parse_op(op)[0] in IMAGE_OPS)


def _from_siglip2(config: Mapping[str, Any], source: str) -> str:
  """`Siglip2ImageProcessor`: each image resized (bilinear) to the largest patch grid of at most
  `max_num_patches` that keeps its aspect ratio, rescaled and normalised -> our
  `naflex(patch_size, max_num_patches)` op and the value op."""
  unknown = sorted(k for k in config if k not in _HF_HARMLESS | {'patch_size', 'max_num_patches'})
  if unknown:
    raise errors.UserError(f'{source}: preprocessor_config.json field {unknown[0]!r} is not one we '
                           'follow for a NaFlex processor.')
  if config.get('resample', 2) != 2 or not config.get('do_resize', True):
    raise errors.UserError(f'{source}: preprocessor_config.json: a NaFlex processor must resize '
                           f'bilinearly (resample 2); found resample={config.get("resample")!r}, '
                           f'do_resize={config.get("do_resize", True)!r}.')
  if not math.isclose(float(config.get('rescale_factor', 1 / 255)), 1 / 255, rel_tol=1e-6):
    raise errors.UserError(f'{source}: preprocessor_config.json rescale_factor: only 1/255 is '
                           'followed.')
  norm = (_norm_op(config.get('image_mean', (0.5,) * 3), config.get('image_std', (0.5,) * 3))
          if config.get('do_normalize', True) else 'value_range(0, 1)')
  return f'naflex({int(config["patch_size"])}, {int(config["max_num_patches"])})|{norm}'


def naflex_budget(pp: str) -> Optional[int]:
  """The `max_patches` of a transform's naflex op (a NaFlex checkpoint's natural budget)."""
  for op in pp_spec.ops(pp):
    name, args, kwargs = pp_spec.parse_op(op)
    if name == 'naflex':
      return int(args[1] if len(args) > 1 else kwargs['max_patches'])
  return None


def from_hf(config: Mapping[str, Any], source: str) -> str:
  """A `preprocessor_config.json` -> pp string; a ValueError naming a field we cannot follow."""
  if 'max_num_patches' in config and 'patch_size' in config:  # SigLIP 2's NaFlex processor
    return _from_siglip2(config, source)
  unknown = sorted(k for k in config if k not in _HF_HARMLESS)
  if unknown:
    raise errors.UserError(f'{source}: preprocessor_config.json field {unknown[0]!r} is not one we '
                           f'follow (known: {", ".join(sorted(_HF_HARMLESS))}).')
  ops = []
  method = _PIL_RESAMPLE.get(config.get('resample', 2))
  if method is None:
    raise errors.UserError(
        f'{source}: preprocessor_config.json resample={config["resample"]!r} is not '
        f'a PIL resampling code {sorted(_PIL_RESAMPLE)}.')
  if config.get('do_resize', True):
    size = config.get('size') or {}
    if isinstance(size, int):
      size = {'shortest_edge': size}
    if 'height' in size and 'width' in size:
      ops.append(f'resize(({size["height"]}, {size["width"]}), method={method!r})')
    elif 'shortest_edge' in size:
      ops.append(f'resize_small({size["shortest_edge"]}, method={method!r}, floor=True)')
    else:
      raise errors.UserError(
          f'{source}: preprocessor_config.json size={size!r}: expected height and '
          'width, or shortest_edge.')
  if config.get('do_center_crop', False):
    crop = config.get('crop_size') or {}
    if isinstance(crop, int):
      crop = {'height': crop, 'width': crop}
    if 'height' not in crop or 'width' not in crop:
      raise errors.UserError(
          f'{source}: preprocessor_config.json crop_size={crop!r}: expected height '
          'and width.')
    ops.append(f'central_crop(({crop["height"]}, {crop["width"]}))')
  rescale = float(config.get('rescale_factor', 1 / 255)) if config.get('do_rescale', True) else 1.
  if not math.isclose(rescale, 1 / 255, rel_tol=1e-6):
    raise errors.UserError(
        f'{source}: preprocessor_config.json rescale_factor={rescale}: only 1/255 '
        '(pixels to [0, 1]) is followed.')
  if config.get('do_normalize', True):
    ops.append(_norm_op(config.get('image_mean', (0.5,) * 3), config.get('image_std', (0.5,) * 3)))
  else:
    ops.append('value_range(0, 1)')
  return '|'.join(ops)


def from_timm(pretrained_cfg: Mapping[str, Any], source: str) -> str:
  """timm's `pretrained_cfg` -> pp string: timm's eval transform (resize the shorter side to
  floor(size / crop_pct), centre crop `size`, normalise)."""
  _, height, width = pretrained_cfg.get('input_size', (3, 224, 224))
  interpolation = pretrained_cfg.get('interpolation', 'bicubic')
  if interpolation not in _TIMM_INTERPOLATION:
    raise errors.UserError(
        f'{source}: pretrained_cfg interpolation={interpolation!r}: expected one of '
        f'{_TIMM_INTERPOLATION}.')
  crop_pct = float(pretrained_cfg.get('crop_pct', 0.875))
  crop_mode = pretrained_cfg.get('crop_mode', 'center')
  norm = _norm_op(pretrained_cfg.get('mean', pp_spec.IMAGENET_MEAN),
                  pretrained_cfg.get('std', pp_spec.IMAGENET_STD))
  if crop_mode == 'squash':
    scaled = (math.floor(height / crop_pct), math.floor(width / crop_pct))
    return (f'resize({scaled}, method={interpolation!r})|central_crop(({height}, {width}))|'
            f'{norm}')
  if crop_mode != 'center':
    raise errors.UserError(
        f'{source}: pretrained_cfg crop_mode={crop_mode!r}: center and squash are '
        'followed.')
  if height != width:
    raise errors.UserError(
        f'{source}: pretrained_cfg input_size {height}x{width}: a centre crop of a '
        'non-square input is not followed.')
  return (f'resize_small({math.floor(height / crop_pct)}, method={interpolation!r}, floor=True)|'
          f'central_crop({height})|{norm}')


def _parsed(pp: str) -> dict[str, tuple[list, dict]]:
  return {name: (args, kwargs) for name, args, kwargs in map(pp_spec.parse_op, pp_spec.ops(pp))}


def statistics(pp: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """(mean, std) of pixels in [0, 1] that the string's last value op applies."""
  ops = _parsed(pp)
  if 'normalize' in ops:
    args, kwargs = ops['normalize']
    mean = kwargs.get('mean', args[0] if args else pp_spec.IMAGENET_MEAN)
    std = kwargs.get('std', args[1] if len(args) > 1 else pp_spec.IMAGENET_STD)
    return _floats(mean), _floats(std)
  args, kwargs = ops.get('value_range', ([], {}))
  vmin = kwargs.get('vmin', args[0] if args else -1)
  vmax = kwargs.get('vmax', args[1] if len(args) > 1 else 1)
  # x' = vmin + x (vmax - vmin) = (x - mean) / std with std = 1 / (vmax - vmin).
  std = 1.0 / (vmax - vmin)
  return _floats((-vmin * std,) * 3), _floats((std,) * 3)


def to_hf(pp: str, image_size: int) -> dict[str, Any]:
  """A `preprocessor_config.json` (ViTImageProcessor) for a pp string."""
  ops = _parsed(pp)
  mean, std = statistics(pp)
  config = {'image_processor_type': 'ViTImageProcessor', 'do_rescale': True,
            'rescale_factor': 1 / 255, 'do_normalize': True, 'image_mean': list(mean),
            'image_std': list(std), 'do_resize': True, 'resample': 2,
            'size': {'height': image_size, 'width': image_size}}
  for name in ('resize_small', 'resize'):
    if name in ops:
      args, kwargs = ops[name]
      size = kwargs.get('size', args[0] if args else image_size)
      config['resample'] = _METHODS_TO_PIL.get(kwargs.get('method', 'bilinear'), 2)
      config['size'] = ({'shortest_edge': size} if name == 'resize_small' else
                        {'height': _pair(size)[0], 'width': _pair(size)[1]})
  if 'central_crop' in ops:
    height, width = _pair(ops['central_crop'][0][0])
    config.update(do_center_crop=True, crop_size={'height': height, 'width': width})
  if 'resize_small' in ops:
    config['image_processor_type'] = 'BitImageProcessor'  # ViTImageProcessor has no crop
  return config


def to_timm(pp: str, image_size: int) -> dict[str, Any]:
  """timm `pretrained_cfg` fields (input_size, interpolation, crop_pct, crop_mode, mean, std)."""
  ops = _parsed(pp)
  mean, std = statistics(pp)
  cfg = {'input_size': [3, image_size, image_size], 'mean': list(mean), 'std': list(std),
         'interpolation': 'bilinear', 'crop_pct': 1.0, 'crop_mode': 'center'}
  for name in ('resize_small', 'resize'):
    if name in ops:
      args, kwargs = ops[name]
      cfg['interpolation'] = kwargs.get('method', 'bilinear')
      size = _pair(kwargs.get('size', args[0] if args else image_size))[0]
      cfg['crop_pct'] = round(image_size / size, 4) if 'central_crop' in ops else 1.0
      if name == 'resize' and 'central_crop' in ops:
        cfg['crop_mode'] = 'squash'
  return cfg


def with_statistics(pp: str, source_pp: str) -> str:
  """`pp` with its value op (value_range / normalize) replaced by the one of `source_pp`: a
  recipe's geometry, a checkpoint's input statistics."""
  source = value_op(source_pp)
  if source is None:
    return pp
  return '|'.join(source if pp_spec.parse_op(op)[0] in ('value_range', 'normalize') else op
                  for op in pp_spec.ops(pp))


def value_op(pp: str) -> Optional[str]:
  """The last value op (value_range / normalize) of a pp string, or None."""
  values = [op for op in pp_spec.ops(pp) if pp_spec.parse_op(op)[0] in ('value_range',
                                                                         'normalize')]
  return values[-1] if values else None


def value_op_or_default(pp: str) -> str:
  """The string's value op, or the official value_range(-1, 1) where it has none."""
  return value_op(pp) or 'value_range(-1, 1)'


def is_default_range(pp: str) -> bool:
  """Whether the string's value op is the official value_range(-1, 1)."""
  op = value_op(pp)
  return (op is not None and pp_spec.parse_op(op)[0] == 'value_range'
          and statistics(op) == ((0.5,) * 3, (0.5,) * 3))


def take_statistics(pp: str, source_pp: str) -> str:
  """`pp` with the source's value op when `pp` has the default value_range(-1, 1) and the
  source another (a recipe's defaults meeting a checkpoint's statistics); else `pp` unchanged."""
  if is_default_range(pp) and not is_default_range(source_pp) and value_op(source_pp):
    return with_statistics(pp, source_pp)
  return pp


def for_display(pp: str) -> str:
  """The same geometry with values in [-1, 1] (what the figures draw)."""
  ops = [op for op in pp_spec.ops(pp) if pp_spec.parse_op(op)[0] not in ('value_range',
                                                                          'normalize')]
  return '|'.join(ops + ['value_range(-1, 1)'])


def _pair(size) -> tuple[int, int]:
  return (size, size) if isinstance(size, int) else tuple(size)


def resized(pp: str, native: int, image_size: int) -> str:
  """The string for another square resolution: every size scaled by image_size / native."""
  if image_size == native:
    return pp
  out = []
  for text in pp_spec.ops(pp):
    name, args, kwargs = pp_spec.parse_op(text)
    if name in ('resize', 'resize_small', 'central_crop'):
      size = kwargs.pop('size', args[0] if args else native)
      scaled = tuple(round(s * image_size / native) for s in _pair(size))
      size = scaled[0] if isinstance(size, int) else scaled
      text = f'{name}({size!r}{"".join(f", {k}={v!r}" for k, v in kwargs.items())})'
    out.append(text)
  return '|'.join(out)
