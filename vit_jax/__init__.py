"""vit_jax: the Vision Transformer family in JAX/Flax."""

__version__ = '0.1.0'
