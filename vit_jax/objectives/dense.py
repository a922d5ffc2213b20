"""Dense tasks: semantic segmentation and depth from the backbone's patch maps (docs/dense.md).

`config.dense` chooses the task, the head (models/dense.py) and whether the backbone is frozen
(a probe: DINOv2's linear protocol) or fine-tuned with the head (Segmenter). The batch carries
a per-pixel target beside the image: `segmentation` (int32 classes, `ignore_label` ignored) or
`depth` (float32; pixels outside (min_depth, max_depth] are not measured). Losses: per-pixel
softmax cross-entropy over the labelled pixels; for depth the scale-invariant log loss
(Eigen et al. 2014, variance focus 0.85, as the DINOv2 depth probes) and/or L1.

A pretrained backbone (config.init_from: any checkpoint `trained_model.load` reads) fills the
backbone; the head starts fresh (`fresh_params`).
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from vit_jax import errors
from vit_jax.models import dense as dense_lib
from vit_jax.models import vit as vit_lib
from vit_jax.objectives import base

DEPTH_LOSSES = ('silog', 'l1', 'silog+l1')
VARIANCE_FOCUS = 0.85
EVAL_KINDS = {'segmentation': 'segmentation', 'depth': 'depth'}  # task -> evaluator kind


@dataclasses.dataclass(frozen=True)
class Fields:
  """`config.dense`, read and checked."""

  task: str
  head: str
  blocks: tuple[int, ...]
  frozen_backbone: bool
  ignore_label: int
  min_depth: float
  max_depth: float
  depth_loss: str
  decoder_width: int
  decoder_depth: int
  decoder_heads: int

  @property
  def target(self) -> str:
    """The batch entry the task learns: 'segmentation' or 'depth'."""
    return self.task


def read_fields(config: ml_collections.ConfigDict) -> Fields:
  dense = config.dense
  return Fields(task=dense.task, head=dense.head, blocks=tuple(int(i) for i in dense.blocks),
                frozen_backbone=bool(dense.frozen_backbone), ignore_label=int(dense.ignore_label),
                min_depth=float(dense.min_depth), max_depth=float(dense.max_depth),
                depth_loss=dense.depth_loss, decoder_width=int(dense.decoder_width),
                decoder_depth=int(dense.decoder_depth), decoder_heads=int(dense.decoder_heads))


def read(config: ml_collections.ConfigDict, model_config: ml_collections.ConfigDict) -> Fields:
  fields = read_fields(config)
  transformer = model_config.get('transformer')
  if not transformer:
    raise errors.UserError('config.objective=dense reads the patch maps of transformer blocks; '
                           'this model has none (transformer=None).')
  dense_lib.check(fields.task, fields.head, fields.blocks, int(transformer['num_layers']))
  if fields.task == 'segmentation' and 0 <= fields.ignore_label < int(config.num_classes):
    raise errors.UserError(f'config.dense.ignore_label={fields.ignore_label} is a class id '
                           f'(num_classes={config.num_classes}); use 255.')
  if fields.task == 'depth':
    if fields.depth_loss not in DEPTH_LOSSES:
      raise errors.UserError(f'config.dense.depth_loss={fields.depth_loss!r}; expected one of '
                             f'{", ".join(DEPTH_LOSSES)}.')
    if not 0 < fields.min_depth < fields.max_depth:
      raise errors.UserError(f'config.dense.min_depth={fields.min_depth} and max_depth='
                             f'{fields.max_depth}: expected 0 < min_depth < max_depth.')
  if config.get('pp_device') or config.mixup.get('kind'):
    raise errors.UserError('pp_device and mixup move or mix the image alone; a dense run '
                           'augments image and target together in pp_train: drop them.')
  if 'naflex(' in (config.pp_train or ''):
    raise errors.UserError('config.objective=dense takes square or rectangular images, not '
                           'NaFlex sequences: drop the naflex op from pp_train.')
  wanted = EVAL_KINDS[fields.task]
  for name, entry in (config.get('evals') or {}).items():
    if entry.get('kind') != wanted:
      raise errors.UserError(f'config.evals.{name}.kind={entry.get("kind")!r}; a dense '
                             f'{fields.task} run is scored by kind {wanted!r} evaluators.')
  return fields


def build_model(backbone: vit_lib.VisionTransformer, fields: Fields,
                num_classes: int) -> dense_lib.DenseModel:
  return dense_lib.DenseModel(
      backbone=backbone.clone(num_classes=None), task=fields.task,
      outputs=num_classes if fields.task == 'segmentation' else 1, head=fields.head,
      blocks=fields.blocks, frozen_backbone=fields.frozen_backbone, min_depth=fields.min_depth,
      max_depth=fields.max_depth, decoder_width=fields.decoder_width,
      decoder_depth=fields.decoder_depth, decoder_heads=fields.decoder_heads)


def segmentation_loss(logits: jax.Array, labels: jax.Array, ignore: int
                      ) -> tuple[jax.Array, jax.Array]:
  """(mean cross-entropy, pixel accuracy) over the pixels whose label is not `ignore`."""
  valid = labels != ignore
  safe = jnp.where(valid, labels, 0)
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(log_probs, safe[..., None], axis=-1)[..., 0]
  count = jnp.maximum(jnp.sum(valid), 1)
  correct = (jnp.argmax(logits, -1) == labels) & valid
  return jnp.sum(nll * valid) / count, jnp.sum(correct) / count


def depth_losses(pred: jax.Array, depth: jax.Array, valid: jax.Array) -> dict[str, jax.Array]:
  """{'silog': the scale-invariant log loss, 'l1': mean |pred - depth|} over `valid` pixels of
  the batch (pooled, as the DINOv2 depth probes' SigLoss)."""
  count = jnp.maximum(jnp.sum(valid), 1)
  safe = jnp.where(valid, depth, 1.0)
  g = jnp.where(valid, jnp.log(pred) - jnp.log(safe), 0.0)
  mean, mean_square = jnp.sum(g) / count, jnp.sum(g * g) / count
  silog = jnp.sqrt(jnp.maximum(mean_square - VARIANCE_FOCUS * mean**2, 1e-12))
  return {'silog': silog, 'l1': jnp.sum(jnp.abs(pred - safe) * valid) / count}


class Dense(base.Objective):
  """Per-pixel loss of the dense model's output against the batch's target."""

  name = 'dense'
  end_figure = 'predictions'
  needs_labels = False
  fresh_params = (r'dense_head/.*',)

  def __init__(self, model: vit_lib.VisionTransformer, fields: Fields, num_classes: int):
    super().__init__(model)
    self.fields, self.num_classes = fields, num_classes
    self.dense_model = build_model(model, fields, num_classes)
    self.targets = (fields.target,)

  def with_model(self, model):
    return Dense(model, self.fields, self.num_classes)

  @property
  def train_model(self):
    return self.dense_model

  @property
  def eval_model(self):
    return self.dense_model

  @classmethod
  def frozen_params(cls, fields):
    """A probe's frozen backbone: every parameter but the dense head's."""
    return (r'(?!dense_head/).*',) if fields.frozen_backbone else ()

  @classmethod
  def saved_backbone(cls, params, model_config, image_size):
    """The backbone; the dense head stays with the run (weights/dense_run.py reads both)."""
    del image_size
    return {k: v for k, v in dict(params).items() if k != 'dense_head'}, model_config, False

  def target_spec(self, batch: int, image_shape: tuple[int, ...]) -> dict[str, tuple]:
    dtype = jnp.int32 if self.fields.task == 'segmentation' else jnp.float32
    return {self.fields.target: ((batch, *image_shape[:2]), dtype)}

  def loss(self, params: Any, inputs: dict[str, jax.Array], rng: jax.Array,
           extras: dict[str, Any]) -> tuple[jax.Array, dict[str, jax.Array]]:
    del extras
    out = self.dense_model.apply({'params': params}, inputs['image'], train=True,
                                 rngs={'dropout': rng})
    fields = self.fields
    if fields.task == 'segmentation':
      loss, accuracy = segmentation_loss(out, inputs['segmentation'], fields.ignore_label)
      return loss, {'pixel_accuracy': accuracy}
    depth = inputs['depth']
    valid = dense_lib.depth_valid(depth, fields.min_depth, fields.max_depth)
    parts = depth_losses(out, depth, valid)
    loss = sum(parts[name] for name in fields.depth_loss.split('+'))
    return loss, {'silog': parts['silog'], 'l1': parts['l1']}


OBJECTIVE = Dense


def build(fields: Fields, context: base.Context) -> Dense:
  return Dense(context.model, fields, context.num_classes)
