"""Supervised classification (the paper's objective): the model's logits against the labels."""

from typing import Any

import jax
import jax.numpy as jnp

from vit_jax import losses
from vit_jax.models import sequences
from vit_jax.objectives import base


class Classification(base.Objective):
  """`loss` (softmax_xent | sigmoid_xent) of the logits against (mixed, smoothed) labels."""

  name = 'classification'

  def __init__(self, model, loss: str = 'softmax_xent', label_smoothing: float = 0.0):
    super().__init__(model)
    self.loss_fn = losses.get_loss(loss)
    self.label_smoothing = label_smoothing

  def loss(self, params: Any, inputs: dict[str, jax.Array], rng: jax.Array,
           extras: dict[str, Any]) -> tuple[jax.Array, dict[str, jax.Array]]:
    del extras
    if 'image' not in inputs:
      return self._sequence_loss(params, inputs, rng)
    logits = self.model.apply({'params': params}, inputs['image'], train=True,
                              rngs={'dropout': rng})
    per_example = self.loss_fn(logits, inputs['labels'], self.label_smoothing)
    return jnp.mean(per_example), {'accuracy': jnp.mean(losses.correct(logits, inputs['labels']))}

  def _sequence_loss(self, params, inputs, rng):
    """NaFlex batches: logits and labels per image slot [b, k, classes]; the means are over
    the slots that hold an image. `images_packed` counts them (per micro-batch when the step
    accumulates)."""
    seqs = sequences.from_batch(inputs)
    logits = self.model.apply({'params': params}, seqs, train=True, rngs={'dropout': rng})
    classes = logits.shape[-1]
    valid = sequences.valid_images(seqs.grids).reshape(-1).astype(jnp.float32)
    logits, labels = logits.reshape(-1, classes), inputs['labels'].reshape(-1, classes)
    count = jnp.maximum(jnp.sum(valid), 1.0)
    per_example = self.loss_fn(logits, labels, self.label_smoothing)
    return jnp.sum(per_example * valid) / count, {
        'accuracy': jnp.sum(losses.correct(logits, labels) * valid) / count,
        'images_packed': jnp.sum(valid)}  # of the step's images; the rest found no room


def read(config, model_config) -> None:
  del config, model_config  # nothing of its own


OBJECTIVE = Classification


def build(fields: None, context: base.Context) -> Classification:
  del fields
  return Classification(context.model, context.loss, context.label_smoothing)
