"""DeiT distillation (Touvron et al. 2021): the student's distillation token learns the teacher.

The student is a ViT with DeiT's distillation token and second head (`model.distilled`). The
class head learns the labels; the distillation head learns the teacher's prediction on the same
(augmented, mixed) images, either its top class ('hard', DeiT's best) or its softened
distribution ('soft'). DeiT's weighting:

  hard: (1 - alpha) * CE(cls, labels) + alpha * CE(dist, argmax teacher)       (alpha 0.5)
  soft: (1 - alpha) * CE(cls, labels) + alpha * tau^2 * KL(teacher/tau || dist/tau) / classes

(DeiT's soft term sums the KL over the batch and divides by batch x classes; so does this one.)
At evaluation the two heads are averaged, as the model does outside training.

The teacher is any checkpoint `trained_model.load` reads, run without gradients inside the
step; its parameters are an argument of the step, placed once on the run's sharding preset (an
fsdp teacher is split like the student). Its input transform may differ from the student's:
each batch is mapped from the student's statistics to the teacher's (both affine in the pixel
values) and resized to the teacher's resolution.
"""

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vit_jax import errors
from vit_jax import losses
from vit_jax.models import vit as vit_lib
from vit_jax.objectives import base
from vit_jax.parallel import partitioning
from vit_jax.weights import transforms

KINDS = ('hard', 'soft')


@dataclasses.dataclass(frozen=True)
class Fields:
  """`config.distill`."""

  teacher: str
  kind: str
  alpha: float
  tau: float


def read(config: ml_collections.ConfigDict, model_config: ml_collections.ConfigDict) -> Fields:
  distill = config.distill
  if not distill.teacher:
    raise errors.UserError('config.objective=distillation needs a teacher: set '
                           '--config.distill.teacher to a workdir, .npz, timm or Hugging Face '
                           'checkpoint.')
  if distill.kind not in KINDS:
    raise errors.UserError(f'config.distill.kind={distill.kind!r}; expected one of '
                           f'{", ".join(KINDS)}.')
  if not 0.0 <= distill.alpha <= 1.0:
    raise errors.UserError(f'config.distill.alpha must be in [0, 1], found {distill.alpha}.')
  if not distill.tau > 0:
    raise errors.UserError(f'config.distill.tau must be positive, found {distill.tau}.')
  if not model_config.get('distilled') or model_config.get('distillation_head') is False:
    raise errors.UserError(
        f'config.objective=distillation needs a student with a distillation token and head; '
        f'{config.model_name} has none: add --config.model.distilled=True.')
  return Fields(teacher=str(distill.teacher), kind=distill.kind, alpha=float(distill.alpha),
                tau=float(distill.tau))


def load_teacher(fields: Fields, num_classes: int, load_checkpoint: Callable[[str], Any]) -> Any:
  """The teacher (a `weights.trained_model.TrainedModel`), read through `load_checkpoint` and
  checked against the student's classes."""
  teacher = load_checkpoint(fields.teacher)
  if teacher.num_classes != num_classes:
    raise errors.UserError(
        f'config.distill.teacher={fields.teacher} predicts {teacher.num_classes} classes but the '
        f'student has {num_classes} (config.num_classes); a teacher must share its classes.')
  return teacher


def input_map(student_pp: str, teacher_pp: str) -> tuple[np.ndarray, np.ndarray]:
  """(scale, shift) per channel taking student inputs to teacher inputs: both are
  (pixel / 255 - mean) / std with their own statistics."""
  s_mean, s_std = (np.asarray(v, np.float32) for v in transforms.statistics(student_pp))
  t_mean, t_std = (np.asarray(v, np.float32) for v in transforms.statistics(teacher_pp))
  # pixel / 255 = x * s_std + s_mean  ->  teacher = (x * s_std + s_mean - t_mean) / t_std
  return s_std / t_std, (s_mean - t_mean) / t_std


class Distillation(base.Objective):
  """Class head on the labels, distillation head on the teacher (hard or soft)."""

  name = 'distillation'

  def __init__(self, model: vit_lib.VisionTransformer, fields: Fields,
               teacher: Any, *, loss: str = 'softmax_xent',
               label_smoothing: float = 0.0, student_pp: str = 'value_range(-1, 1)'):
    super().__init__(model)
    self.fields, self.teacher = fields, teacher
    self.loss_fn = losses.get_loss(loss)
    self.label_smoothing = label_smoothing
    self.scale, self.shift = input_map(student_pp, teacher.pp)

  def extras(self) -> dict[str, Any]:
    return {'teacher': self.teacher.params}

  def extras_shardings(self, mesh: jax.sharding.Mesh, preset: str) -> dict[str, Any]:
    return {'teacher': partitioning.param_shardings(self.teacher.params, mesh, preset)}

  def teacher_logits(self, teacher_params: Any, images: jax.Array) -> jax.Array:
    images = images.astype(jnp.float32) * self.scale + self.shift
    size = self.teacher.image_size
    if images.shape[1:3] != (size, size):
      images = jax.image.resize(images, (images.shape[0], size, size, images.shape[3]),
                                'bilinear')
    logits = self.teacher.model.apply({'params': teacher_params}, images, train=False)
    return jax.lax.stop_gradient(logits.astype(jnp.float32))

  def loss(self, params: Any, inputs: dict[str, jax.Array], rng: jax.Array,
           extras: dict[str, Any]) -> tuple[jax.Array, dict[str, jax.Array]]:
    images, labels = inputs['image'], inputs['labels']
    logits, heads = self.model.apply({'params': params}, images, train=True,
                                     rngs={'dropout': rng}, mutable=[vit_lib.HEADS])
    cls_logits, dist_logits = heads[vit_lib.HEADS]['logits'][0]
    teacher = self.teacher_logits(extras['teacher'], images)
    base_loss = jnp.mean(self.loss_fn(cls_logits, labels, self.label_smoothing))
    alpha, tau = self.fields.alpha, self.fields.tau
    if self.fields.kind == 'hard':
      target = jax.nn.one_hot(jnp.argmax(teacher, -1), teacher.shape[-1])
      dist_loss = jnp.mean(losses.softmax_xent(dist_logits, target))
    else:
      log_student = jax.nn.log_softmax(dist_logits / tau)
      log_teacher = jax.nn.log_softmax(teacher / tau)
      kl = jnp.sum(jnp.exp(log_teacher) * (log_teacher - log_student))
      dist_loss = kl * tau * tau / dist_logits.size
    agree = jnp.argmax(dist_logits, -1) == jnp.argmax(teacher, -1)
    return (1 - alpha) * base_loss + alpha * dist_loss, {
        'accuracy': jnp.mean(losses.correct(logits, labels)),
        'teacher_agreement': jnp.mean(agree.astype(jnp.float32))}


OBJECTIVE = Distillation


def build(fields: Fields, context: base.Context) -> Distillation:
  """Loads the teacher (before the workdir is claimed: a bad teacher costs nothing)."""
  teacher = load_teacher(fields, context.num_classes, context.load_checkpoint)
  return Distillation(context.model, fields, teacher,
                      loss=context.loss, label_smoothing=context.label_smoothing,
                      student_pp=context.input_pp)
