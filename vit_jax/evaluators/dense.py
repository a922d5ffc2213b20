"""Dense evaluators: `segmentation` (mIoU, pixel accuracy, per-class IoU) and `depth` (RMSE,
AbsRel, delta < 1.25) of a dense run's model (objectives/dense.py) on a whole split.

Prediction is by sliding windows (`mode='slide'`, mmseg's and DINOv2's protocol): windows of
`crop` pixels, `stride` apart and the last flush with the edge, their outputs averaged where
they overlap; or on the whole image (`mode='whole'`, a model with `dynamic_image_size` for sizes
other than its own). The eval pp must give one fixed size (pad with `pad_to`, then crop):
padding is labelled ignore (segmentation) or unmeasured (depth) and does not count.

Segmentation sums one confusion matrix over the split: IoU_c = TP / (TP + FP + FN), mIoU the
mean over the classes that occur in the labels or the predictions (mmseg's nanmean). Depth
averages per-image RMSE, AbsRel and delta1 over the images with a measured pixel (the NYU
protocol of the depth toolboxes).
"""

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf

from vit_jax import errors
from vit_jax.data import dense_targets
from vit_jax.data import pipeline
from vit_jax.data import preprocess
from vit_jax.evaluators import base
from vit_jax.models import dense as dense_lib
from vit_jax.parallel import mesh as mesh_lib
from vit_jax.weights import transforms

MODES = ('slide', 'whole')


def confusion_matrix(pred: jax.Array, labels: jax.Array, num_classes: int, ignore: int,
                     weights: jax.Array) -> jax.Array:
  """[classes, classes] counts of (label, prediction) over pixels not labelled `ignore`,
  each weighted by its example's weight ([b]: 0 for padding examples)."""
  valid = (labels != ignore) & (labels >= 0) & (labels < num_classes)
  index = jnp.where(valid, labels * num_classes + pred, 0)
  counts = (valid * weights[:, None, None]).astype(jnp.float32)
  flat = jnp.zeros(num_classes * num_classes, jnp.float32).at[index.reshape(-1)].add(
      counts.reshape(-1))
  return flat.reshape(num_classes, num_classes)


def segmentation_metrics(confusion: np.ndarray) -> dict[str, Any]:
  """mIoU, pixel accuracy and per-class IoU (NaN for a class absent from labels and
  predictions) of a confusion matrix [label, prediction]."""
  confusion = np.asarray(confusion, np.float64)
  true_positive = np.diag(confusion)
  union = confusion.sum(0) + confusion.sum(1) - true_positive
  with np.errstate(invalid='ignore', divide='ignore'):
    iou = np.where(union > 0, true_positive / union, np.nan)
  total = confusion.sum()
  return {'miou': float(np.nanmean(iou)) if np.any(union > 0) else float('nan'),
          'pixel_accuracy': float(true_positive.sum() / total) if total else float('nan'),
          'iou': iou}


def depth_sums(pred: jax.Array, depth: jax.Array, valid: jax.Array,
               weights: jax.Array) -> dict[str, jax.Array]:
  """Sums over the images of per-image RMSE, AbsRel and delta1 (images with a measured pixel
  and weight 1), and their count."""
  count = jnp.sum(valid, axis=(1, 2))
  has = (count > 0) * weights
  per = jnp.maximum(count, 1)
  safe = jnp.where(valid, depth, 1.0)
  error = jnp.where(valid, pred - safe, 0.0)
  rmse = jnp.sqrt(jnp.sum(error**2, axis=(1, 2)) / per)
  absrel = jnp.sum(jnp.abs(error) / safe, axis=(1, 2)) / per
  ratio = jnp.maximum(pred / safe, safe / pred)
  delta1 = jnp.sum((ratio < 1.25) & valid, axis=(1, 2)) / per
  return {'rmse': jnp.sum(rmse * has), 'absrel': jnp.sum(absrel * has),
          'delta1': jnp.sum(delta1 * has), 'images': jnp.sum(has)}


class DenseEvaluator(base.Evaluator):
  """What both kinds share: the data, the prediction (slide or whole) and the figure."""

  FIELDS = ('data', 'pp', 'mode', 'crop', 'stride', 'figures')
  TASK = ''

  def __init__(self, name: str, entry: Mapping[str, Any], context: base.Context,
               run_loss: str = ''):
    del run_loss
    super().__init__(name, entry, context)
    model = context.model
    if not isinstance(model, dense_lib.DenseModel) or model.task != self.TASK:
      raise errors.UserError(f'config.evals.{name}: kind {self.TASK!r} scores a dense '
                             f'{self.TASK} model; set config.objective=dense and '
                             f'config.dense.task={self.TASK}.')
    self.model = model
    self.source = base.source(name, 'data', entry.get('data'))
    self.pp_spec = entry.get('pp')
    if not self.pp_spec:
      raise errors.UserError(f'config.evals.{name}.pp: expected an eval preprocessing string '
                             f'ending with the {self.TASK} op and a fixed size; found '
                             f'{self.pp_spec!r}.')
    self._pp = preprocess.parse(self.pp_spec, num_classes=context.num_classes)
    self.mode = entry.get('mode') or 'slide'
    if self.mode not in MODES:
      raise errors.UserError(f'config.evals.{name}.mode={self.mode!r}; expected one of '
                             f'{", ".join(MODES)}.')
    size = context.image_size
    self.crop = tuple(entry.get('crop') or (size, size))
    self.stride = tuple(entry.get('stride') or (max(1, self.crop[0] * 2 // 3),
                                                max(1, self.crop[1] * 2 // 3)))
    self.figures = int(entry.get('figures') or 0)
    self._local_batch = context.local_batch(self.batch_size)
    dense_targets.check(self.source, self._pp, self.TASK, field=f'config.evals.{name}.pp',
                        depth_range=(model.min_depth, model.max_depth))
    self._check_shapes()
    self._step = jax.jit(self._sums, in_shardings=(context.param_shardings,
                                                   mesh_lib.batch_sharding(context.mesh)),
                         out_shardings=mesh_lib.replicated(context.mesh))

  def _check_shapes(self) -> None:
    """Traces one prediction at the eval size now: a window or image the model cannot take is
    refused before training starts."""
    example = self._pp(self.source.lookup(tf.constant(0, tf.int64)),
                       tf.constant([0, 0], tf.int64))
    shape = tuple(example['image'].shape)
    params = jax.eval_shape(lambda: self.model.init(
        jax.random.key(0), jnp.zeros((1, *self.crop, shape[-1]), jnp.float32),
        train=False))['params']
    jax.eval_shape(self.predict, params, jax.ShapeDtypeStruct((1, *shape), jnp.float32))

  def predict(self, params: Any, images: jax.Array) -> jax.Array:
    """Logits [b, h, w, classes] or depth [b, h, w] of eval images."""
    apply = lambda x: self.model.apply({'params': params}, x, train=False)  # pylint: disable=unnecessary-lambda-assignment
    if self.mode == 'whole':
      return apply(images)
    return dense_lib.slide(apply, images, self.crop, self.stride)

  def _sums(self, params, batch):
    raise NotImplementedError

  def _totals(self, params: Any) -> dict[str, np.ndarray]:
    totals = None
    for batch in base.batches(self.source, self._pp, self._local_batch, self.context.mesh):
      sums = self._step(params, batch)
      totals = sums if totals is None else jax.tree.map(lambda a, b: a + b, totals, sums)
    return jax.device_get(totals)

  def figure_rows(self, params: Any) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(image, ground truth, prediction) of the split's first `figures` examples, the image in
    [0, 1] (what `vit_jax.viz.figures.dense_rows` draws)."""
    dataset, _ = pipeline.eval_dataset(self.source, self._pp, local_batch=max(self.figures, 1))
    batch = next(dataset.as_numpy_iterator())
    images = batch['image'][:self.figures]
    pred = np.asarray(jax.jit(self.predict)(jax.device_get(params), images))
    if self.TASK == 'segmentation':
      pred = pred.argmax(-1)
    mean, std = (np.asarray(v, np.float32) for v in transforms.statistics(
        transforms.value_op_or_default(self.pp_spec)))
    return [(image * std + mean, truth, guess) for image, truth, guess in
            zip(images, batch[self.TASK][:self.figures], pred)]


class Segmentation(DenseEvaluator):
  """`<name>/miou`, `<name>/pixel_accuracy`, `<name>/iou/<class>` of a segmentation model."""

  TASK = 'segmentation'

  def __init__(self, name, entry, context, run_loss=''):
    self.num_classes = context.num_classes
    self.ignore = context.ignore_label
    super().__init__(name, entry, context, run_loss)

  def _sums(self, params, batch):
    pred = jnp.argmax(self.predict(params, batch['image']), axis=-1)
    return {'confusion': confusion_matrix(pred, batch['segmentation'], self.num_classes,
                                          self.ignore, batch['mask'])}

  def run(self, params: Any, step: int) -> dict[str, float]:
    del step
    metrics = segmentation_metrics(self._totals(params)['confusion'])
    if np.isnan(metrics['miou']):
      raise errors.UserError(f'config.evals.{self.name}: no labelled pixel in '
                             f'{self.source.name}.')
    names = self.source.class_names or [str(c) for c in range(self.num_classes)]
    result = {f'{self.name}/miou': metrics['miou'],
              f'{self.name}/pixel_accuracy': metrics['pixel_accuracy']}
    result.update({f'{self.name}/iou/{names[c]}': float(v)
                   for c, v in enumerate(metrics['iou']) if not np.isnan(v)})
    return result

  def summary(self, metrics: Mapping[str, float]) -> str:
    return (f'{self.name} mIoU {metrics[f"{self.name}/miou"]:.4f}, pixel accuracy '
            f'{metrics[f"{self.name}/pixel_accuracy"]:.4f}')


class Depth(DenseEvaluator):
  """`<name>/rmse`, `<name>/absrel`, `<name>/delta1` of a depth model (per image, averaged)."""

  TASK = 'depth'

  def _sums(self, params, batch):
    pred = self.predict(params, batch['image'])
    depth = batch['depth']
    valid = dense_lib.depth_valid(depth, self.model.min_depth, self.model.max_depth)
    return depth_sums(pred, depth, valid, batch['mask'])

  def run(self, params: Any, step: int) -> dict[str, float]:
    del step
    totals = self._totals(params)
    images = float(totals['images'])
    if not images:
      raise errors.UserError(f'config.evals.{self.name}: no image of {self.source.name} has a '
                             f'depth in ({self.model.min_depth}, {self.model.max_depth}].')
    return {f'{self.name}/{k}': float(totals[k]) / images for k in ('rmse', 'absrel', 'delta1')}

  def summary(self, metrics: Mapping[str, float]) -> str:
    return ', '.join(f'{self.name} {k} {metrics[f"{self.name}/{k}"]:.4f}'
                     for k in ('rmse', 'absrel', 'delta1'))
