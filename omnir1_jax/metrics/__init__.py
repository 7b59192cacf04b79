"""Official-parity evaluation metrics (host-side NumPy): DAVIS J/F, Ref-AVS J/F/S, ReVOS/MeViS."""

from omnir1_jax.metrics import davis, refavs, revos

__all__ = ["davis", "refavs", "revos"]
