"""What every objective provides to the one trainer (`vit_jax.train`).

An objective decides three things and nothing else: the module whose parameters the run trains
(`train_model`), the loss of a batch (`loss`), and the classifier-shaped view of those
parameters that evaluators and exports read (`eval_model`, `eval_params`). The loop, the
checkpoints and their exact resume, preemption, hosts, sharding, evaluators and the memory
planner are the same code for all of them.

  loss(params, inputs, rng, extras) -> (mean loss, {metric: mean value})
    inputs: the batch after the device preprocessing and mixing: 'image', and 'labels',
      'position' and per-pixel targets when the objective asks for them (`needs_labels`,
      `needs_positions`, `targets`)
    extras: arrays the step takes beside the state, placed once (a teacher's parameters)
"""

import copy
import dataclasses
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import ml_collections


class Objective:
  """The default shape: trains `model` itself; evaluators see it unchanged."""

  name = ''
  needs_labels = True  # the batch carries one-hot 'labels'
  needs_positions = False  # the batch carries each example's stream position ('position')
  targets: tuple[str, ...] = ()  # per-pixel batch entries the loss reads (dense tasks)
  fresh_params: tuple[str, ...] = ()  # parameter names a pretrained init leaves at their init
  # The figure a completed run writes (`vit_jax.viz.run_figures`): None, 'reconstruction',
  # 'predictions'.
  end_figure: Optional[str] = None

  def __init__(self, model: nn.Module):
    self.model = model

  @property
  def train_model(self) -> nn.Module:
    """The module the state's parameters belong to (initialised on images)."""
    return self.model

  @property
  def eval_model(self) -> nn.Module:
    """The ViT that evaluators and exports run on `eval_params(params)`."""
    return self.model

  def eval_params(self, params: Any) -> Any:
    return params

  @classmethod
  def frozen_params(cls, fields: Any) -> tuple[str, ...]:
    """Parameter names a run of this objective (with its read `fields`) freezes beside
    config.frozen; known before anything is built."""
    del fields
    return ()

  @classmethod
  def saved_backbone(cls, params: Any, model_config: ml_collections.ConfigDict,
                     image_size: int) -> tuple[Any, ml_collections.ConfigDict, bool]:
    """A saved run's parameters as the plain ViT that `weights.trained_model` rebuilds for
    exports, `infer` and `init_from`: (params, its model config, whether its head still
    predicts the run's classes)."""
    del image_size
    return params, model_config, True

  def with_model(self, model: nn.Module) -> 'Objective':
    """The same objective around `model` (the memory planner's remat choice)."""
    clone = copy.copy(self)
    clone.model = model
    return clone

  def target_spec(self, batch: int, image_shape: tuple[int, ...]) -> dict[str, tuple]:
    """{target: (global shape, dtype)} of `targets` ({}: none)."""
    del batch, image_shape
    return {}

  def extras(self) -> dict[str, Any]:
    """Host arrays the step takes beside the state ({}: none)."""
    return {}

  def extras_shardings(self, mesh: jax.sharding.Mesh, preset: str) -> dict[str, Any]:
    del mesh, preset
    return {}

  def loss(self, params: Any, inputs: dict[str, jax.Array], rng: jax.Array,
           extras: dict[str, Any]) -> tuple[jax.Array, dict[str, jax.Array]]:
    raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class Context:
  """What an objective is built from: the run's model and the options around it."""

  model: nn.Module  # the run's ViT (the student; the encoder for MAE)
  model_config: ml_collections.ConfigDict
  loss: str
  label_smoothing: float
  image_size: int
  num_classes: int
  seed: int
  input_pp: str  # the run's training input transform (its value op): what the model is fed
  # Reads a checkpoint (anything --checkpoint accepts) as a `weights.trained_model.TrainedModel`:
  # a distillation teacher. The setup hands it in, so that objectives import no `weights/` and
  # `weights/` can ask objectives how their saved runs are rebuilt (`saved_backbone`).
  load_checkpoint: Callable[[str], Any]
