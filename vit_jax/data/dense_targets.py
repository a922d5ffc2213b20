"""The startup check of a dense dataset's per-pixel targets (objectives/dense.py, evaluators).

The first examples go through the run's preprocessing once, eagerly, before anything is
compiled: a label map of another size than its image, class ids outside `num_classes` (other
than the ignore label) and depth maps without a single measured pixel are refused in one line
naming the dataset and the example, not hours later inside tf.data.
"""

import numpy as np
import tensorflow as tf

from vit_jax import errors


def check(source, pp, target: str, *, field: str, count: int = 4,
          depth_range: tuple[float, float] = (0.0, np.inf)) -> None:
  """Refuses `source` (through `pp`, the `field` config's preprocessing) unless its first
  `count` examples give an image and a `target` map of the same height and width (and, for
  'depth', some pixel in `depth_range` = (min, max])."""
  measured = False
  for index in range(min(count, source.num_examples)):
    try:
      example = pp(source.lookup(tf.constant(index, tf.int64)),
                   tf.constant([0, index], tf.int64))
    except tf.errors.InvalidArgumentError as e:
      raise errors.UserError(f'{source.name} example {index} ({field}): '
                             f'{e.message.splitlines()[0]}.') from e
    if target not in example or 'image' not in example:
      raise errors.UserError(f'{field} must produce "image" and "{target}" (add the {target} op '
                             f'and keep both); it produces {sorted(example)}.')
    image_size, target_size = tuple(example['image'].shape[:2]), tuple(example[target].shape)
    if image_size != target_size:
      raise errors.UserError(f'{source.name} example {index} ({field}): the {target} map is '
                             f'{target_size} but its image is {image_size}.')
    if target == 'depth':
      values = example[target].numpy()
      measured |= bool(np.any((values > depth_range[0]) & (values <= depth_range[1])))
  if target == 'depth' and not measured:
    raise errors.UserError(
        f'{source.name} ({field}): no depth pixel in ({depth_range[0]}, {depth_range[1]}] in '
        f'its first {count} examples; is data.target the depth map, in metres (depth(scale=...))?')
