"""The preprocessing-string grammar shared by the host ops (TF) and the device ops (JAX).

`'op1(args)|op2|...'`: each op is a name or a call with literal arguments. No TensorFlow and no
JAX here, so either side parses without importing the other. The argument rules both sides of
an op share (RandAugment's layer count and magnitude) live here too.
"""

import ast

from vit_jax import errors

# ImageNet's per-channel mean and std of pixels in [0, 1] (`normalize`'s defaults, both sides).
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# Above 20, posterize's shift (8 - magnitude * 4 / 10 bits) goes negative: AugReg's heaviest
# recipe is randaug(2, 20).
MAX_RANDAUG_MAGNITUDE = 20.0


def at_resolution(spec: str, image_size: int) -> str:
  """`spec` with `{image_size}` and `{resize_size}` (image_size x 8/7: 256 for 224, big_vision's
  resize before a central crop) filled in: an evaluator written for any checkpoint's resolution."""
  return (spec.replace('{image_size}', str(image_size))
          .replace('{resize_size}', str(round(image_size * 8 / 7))))


def ops(spec: str) -> list[str]:
  """The op texts of `spec` ('' and blank pieces give none)."""
  return [text.strip() for text in (spec or '').split('|') if text.strip()]


def parse_op(text: str) -> tuple[str, list, dict]:
  """'name(1, x=2)' -> ('name', [1], {'x': 2}); a ValueError naming `text` otherwise."""
  try:
    call = ast.parse(text.strip(), mode='eval').body
  except SyntaxError as e:
    raise errors.UserError(f'Cannot parse preprocessing op {text!r}: {e.msg}.') from e
  if isinstance(call, ast.Name):
    return call.id, [], {}
  if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
    raise errors.UserError(f'Preprocessing op {text!r} should look like name or name(args).')
  try:
    args = [ast.literal_eval(a) for a in call.args]
    kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
  except ValueError as e:
    raise errors.UserError(f'Arguments of preprocessing op {text!r} must be literals.') from e
  return call.func.id, args, kwargs


def check_randaug(num_layers, magnitude) -> tuple[int, float]:
  """(num_layers, magnitude) checked: a whole number of layers >= 0, magnitude in [0, 20]."""
  if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 0:
    raise errors.UserError(
        f'randaug: num_layers must be a whole number >= 0, found {num_layers!r}.')
  if isinstance(magnitude, bool) or not isinstance(magnitude, (int, float)) or not (
      0 <= magnitude <= MAX_RANDAUG_MAGNITUDE):
    raise errors.UserError(f'randaug: magnitude must be in [0, {MAX_RANDAUG_MAGNITUDE:g}], found '
                           f'{magnitude!r}.')
  return num_layers, float(magnitude)
