"""RandAugment's one op table (Cubuk et al., arXiv:1909.13719): the ops, their order, and what
the magnitude means for each. The TF ops on the host (`randaugment.py`) and the JAX ops on the
accelerator (`device_randaugment.py`) both read it, so neither can drift from the other;
`tests/test_device_randaugment.py` compares them op by op, pixel for pixel.

The table follows the TF EfficientNet implementation big_vision's ImageNet recipes use; pixel
constants written there for 224px (translate 100, cutout 40) are fractions of the image size
here. Every mapping is plain arithmetic on the level, so a TF or a JAX scalar goes through it.
"""

import math

MAX_LEVEL = 10.0
FILL = 128  # the grey of cutout squares and of pixels moved in from outside the image

# The draw order: op i is chosen with probability 1/16.
OPS = ('AutoContrast', 'Equalize', 'Invert', 'Rotate', 'Posterize', 'Solarize', 'Color',
       'Contrast', 'Brightness', 'Sharpness', 'ShearX', 'ShearY', 'TranslateX', 'TranslateY',
       'Cutout', 'SolarizeAdd')
# Ops that are one projective transform of the image (nearest neighbour, FILL outside), whose
# direction is a random sign.
GEOMETRIC = ('Rotate', 'ShearX', 'ShearY', 'TranslateX', 'TranslateY')
APPLY_PROBABILITY = (0.2, 0.8)  # each layer's op is applied with a probability drawn from this


def enhance_factor(level):
  return level / MAX_LEVEL * 1.8 + 0.1


def posterize_bits(level):
  """Low bits cleared: 8 - bits are kept (cast to an integer by the caller)."""
  return level / MAX_LEVEL * 4


def solarize_threshold(level):
  return level / MAX_LEVEL * 256


def solarize_addition(level):
  return level / MAX_LEVEL * 110


def cutout_half_size(level, shorter_side):
  """Half the side of the cutout square, in pixels (cast to an integer by the caller)."""
  return level / MAX_LEVEL * 40.0 / 224.0 * shorter_side


def transform_matrix(name: str, height, width, level, sign, cos, sin) -> list:
  """The output -> input pixel map of a GEOMETRIC op (ImageProjectiveTransformV3's 8 numbers);
  `cos` and `sin` are the array library's."""
  if name == 'Rotate':
    radians = sign * level / MAX_LEVEL * 30.0 * math.pi / 180.0
    c, s = cos(radians), sin(radians)
    x_offset = ((width - 1) - (c * (width - 1) - s * (height - 1))) / 2.0
    y_offset = ((height - 1) - (s * (width - 1) + c * (height - 1))) / 2.0
    return [c, -s, x_offset, s, c, y_offset, 0.0, 0.0]
  if name == 'ShearX':
    return [1.0, sign * level / MAX_LEVEL * 0.3, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
  if name == 'ShearY':
    return [1.0, 0.0, 0.0, sign * level / MAX_LEVEL * 0.3, 1.0, 0.0, 0.0, 0.0]
  if name == 'TranslateX':
    return [1.0, 0.0, -(sign * level / MAX_LEVEL * 0.45 * width), 0.0, 1.0, 0.0, 0.0, 0.0]
  if name == 'TranslateY':
    return [1.0, 0.0, 0.0, 0.0, 1.0, -(sign * level / MAX_LEVEL * 0.45 * height), 0.0, 0.0]
  raise ValueError(f'{name} is not a geometric op; those are {GEOMETRIC}.')
