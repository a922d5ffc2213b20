"""Per-example losses on logits [b, classes] and soft targets [b, classes]."""

import jax
import jax.numpy as jnp

from vit_jax import errors


def softmax_xent(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
  """-sum(targets * log_softmax(logits)) per example; targets optionally smoothed here."""
  if label_smoothing:
    labels = labels * (1.0 - label_smoothing) + label_smoothing / labels.shape[-1]
  return -jnp.sum(labels * jax.nn.log_softmax(logits.astype(jnp.float32)), axis=-1)


def sigmoid_xent(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
  """Independent binary cross-entropies summed over classes (the paper's pretraining loss)."""
  if label_smoothing:
    labels = labels * (1.0 - label_smoothing) + label_smoothing / labels.shape[-1]
  logits = logits.astype(jnp.float32)
  log_p, log_not_p = jax.nn.log_sigmoid(logits), jax.nn.log_sigmoid(-logits)
  return -jnp.sum(labels * log_p + (1.0 - labels) * log_not_p, axis=-1)


LOSSES = {'softmax_xent': softmax_xent, 'sigmoid_xent': sigmoid_xent}


def get_loss(name: str):
  if name not in LOSSES:
    raise errors.UserError(f'Unknown loss {name!r}; expected one of {sorted(LOSSES)}.')
  return LOSSES[name]


def correct(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """1.0 where the top logit is the (top) target class, per example."""
  return (jnp.argmax(logits, -1) == jnp.argmax(labels, -1)).astype(jnp.float32)
