"""Model variant configs (`vit_jax.configs.models`)."""
