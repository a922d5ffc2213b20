"""Masked-autoencoder pretraining (He et al. 2021): reconstruct the masked patches' pixels.

No labels. Which patches are masked is drawn per example from (run seed, the example's stream
position), as the device augmentations draw theirs, so a resumed run masks the same patches at
the same step. Evaluators and exports see the encoder as a ViT (`models.mae.encoder_params`).
"""

import dataclasses
from typing import Any

import jax
import ml_collections

from vit_jax import errors
from vit_jax.data import device_randaugment
from vit_jax.models import mae as mae_lib
from vit_jax.models import vit as vit_lib
from vit_jax.objectives import base

MASK_STREAM = 1 << 20  # folded into an example's key: apart from the device pp ops' streams


@dataclasses.dataclass(frozen=True)
class Fields:
  """`config.mae`."""

  mask_ratio: float
  decoder_width: int
  decoder_depth: int
  decoder_heads: int
  decoder_mlp_dim: int
  norm_pix_loss: bool


def read(config: ml_collections.ConfigDict, model_config: ml_collections.ConfigDict) -> Fields:
  if config.mixup.kind:
    raise errors.UserError(f'config.mixup.kind={config.mixup.kind!r} mixes labels; '
                           'config.objective=mae has none: unset it.')
  scored = [k for k, e in (config.get('evals') or {}).items() if e.get('kind') != 'fewshot']
  if scored:
    raise errors.UserError(f'config.evals.{scored[0]} scores a classifier; '
                           'config.objective=mae trains an encoder without a head: keep '
                           'few-shot evaluators only.')
  mae = config.mae
  fields = Fields(mask_ratio=float(mae.mask_ratio), decoder_width=int(mae.decoder_width),
                  decoder_depth=int(mae.decoder_depth), decoder_heads=int(mae.decoder_heads),
                  decoder_mlp_dim=int(mae.decoder_mlp_dim), norm_pix_loss=bool(mae.norm_pix_loss))
  mae_lib.check(model_config, fields.mask_ratio, fields.decoder_width, fields.decoder_heads,
                int(config.image_size))
  return fields


class MaskedAutoencoding(base.Objective):
  """The masked patches' reconstruction error (per-patch normalised pixels by default)."""

  name = 'mae'
  end_figure = 'reconstruction'
  needs_labels = False
  needs_positions = True

  def __init__(self, model: vit_lib.VisionTransformer, model_config: ml_collections.ConfigDict,
               fields: Fields, *, image_size: int, seed: int):
    super().__init__(model)
    self.fields, self.image_size, self.seed = fields, image_size, seed
    self.model_config = model_config
    self.patch = tuple(model_config.patches.size)[0]
    self.autoencoder = mae_lib.MaskedAutoencoder(
        encoder={**model_config.to_dict(), 'remat': model.remat}, mask_ratio=fields.mask_ratio,
        decoder_width=fields.decoder_width, decoder_depth=fields.decoder_depth,
        decoder_heads=fields.decoder_heads, decoder_mlp_dim=fields.decoder_mlp_dim,
        dtype=model.compute_dtype)
    _, encoder_config = mae_lib.encoder_params({'Transformer': {}}, model_config, image_size)
    self.encoder = vit_lib.VisionTransformer(num_classes=None, **encoder_config)

  def with_model(self, model):
    clone = super().with_model(model)
    clone.autoencoder = self.autoencoder.clone(encoder={**self.autoencoder.encoder,
                                                        'remat': model.remat})
    return clone

  @property
  def train_model(self):
    return self.autoencoder

  @property
  def eval_model(self):
    return self.encoder

  def eval_params(self, params: Any) -> Any:
    return self.saved_backbone(params, self.model_config, self.image_size)[0]

  @classmethod
  def saved_backbone(cls, params, model_config, image_size):
    """The encoder, as a ViT without a head (mae_lib.encoder_params)."""
    return (*mae_lib.encoder_params(params, model_config, image_size), False)

  def noise(self, positions: jax.Array) -> jax.Array:
    """[b, patches] uniform noise of each example's masking, from its stream position."""
    length = (self.image_size // self.patch) ** 2
    keys = device_randaugment.example_keys(self.seed, positions)
    return jax.vmap(lambda key: jax.random.uniform(jax.random.fold_in(key, MASK_STREAM),
                                                   (length,)))(keys)

  def reconstruct(self, params: Any, images: jax.Array, positions: jax.Array
                  ) -> tuple[jax.Array, jax.Array]:
    """(predicted pixels [b, L, p*p*3], mask [b, L]) in inference mode."""
    return self.autoencoder.apply({'params': params}, images, self.noise(positions), train=False)

  def loss(self, params: Any, inputs: dict[str, jax.Array], rng: jax.Array,
           extras: dict[str, Any]) -> tuple[jax.Array, dict[str, jax.Array]]:
    del extras
    images = inputs['image']
    pred, mask = self.autoencoder.apply({'params': params}, images,
                                        self.noise(inputs['position']), train=True,
                                        rngs={'dropout': rng})
    loss = mae_lib.reconstruction_loss(pred, images, mask, self.patch, self.fields.norm_pix_loss)
    return loss, {}


OBJECTIVE = MaskedAutoencoding


def build(fields: Fields, context: base.Context) -> MaskedAutoencoding:
  return MaskedAutoencoding(context.model, context.model_config, fields,
                            image_size=context.image_size, seed=context.seed)
