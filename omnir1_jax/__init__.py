"""omnir1_jax: Omni-R1-style reinforcement learning of omnimodal models in JAX/Flax."""

__version__ = "0.1.0"
