"""Group-relative advantage estimators over rewards ``[B, G]`` (B prompts × G completions), by name.

Registry :data:`ADVANTAGES` maps config strings to pure functions ``fn(rewards, *, ddof, eps) -> [B, G]``.
Omni-R1 uses ``grpo`` with the unbiased std (ddof = 1) and ε = 1e-4 (`omni_r1.md` §7).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp


def _centered(r: jax.Array) -> jax.Array:
    """r - mean_g r, exactly 0 for constant groups (no float residue, no 0/0 later)."""
    const = jnp.max(r, axis=-1, keepdims=True) == jnp.min(r, axis=-1, keepdims=True)
    return jnp.where(const, 0.0, r - jnp.mean(r, axis=-1, keepdims=True))


def _safe_div(x: jax.Array, den: jax.Array) -> jax.Array:
    return jnp.where(den > 0, x / jnp.where(den > 0, den, 1.0), 0.0)


def grpo_advantages(rewards: jax.Array, *, ddof: int = 1, eps: float = 1e-4) -> jax.Array:
    """A = (r - mean_g r) / (std_g r + ε); zero-std groups give exactly 0."""
    r = jnp.asarray(rewards, jnp.float32)
    return _safe_div(_centered(r), jnp.std(r, axis=-1, ddof=ddof, keepdims=True) + eps)


def drgrpo_advantages(rewards: jax.Array, *, ddof: int = 1, eps: float = 1e-4) -> jax.Array:
    """Dr.GRPO: A = r - mean_g r (no std normalisation)."""
    del ddof, eps
    r = jnp.asarray(rewards, jnp.float32)
    return _centered(r)


def rloo_advantages(rewards: jax.Array, *, ddof: int = 1, eps: float = 1e-4) -> jax.Array:
    """RLOO: A_i = r_i - mean_{j != i} r_j = G/(G-1)·(r_i - mean_g r)."""
    del ddof, eps
    r = jnp.asarray(rewards, jnp.float32)
    g = r.shape[-1]
    return _centered(r) * (g / max(g - 1, 1))


def batch_std_advantages(rewards: jax.Array, *, ddof: int = 1, eps: float = 1e-4) -> jax.Array:
    """A = (r - mean_g r) / (std over the whole batch + ε) (TRL ``scale_rewards='batch'``)."""
    r = jnp.asarray(rewards, jnp.float32)
    return _safe_div(_centered(r), jnp.std(r, ddof=ddof) + eps)


ADVANTAGES: dict[str, Callable[..., jax.Array]] = {
    "grpo": grpo_advantages,
    "drgrpo": drgrpo_advantages,
    "rloo": rloo_advantages,
    "batch_std": batch_std_advantages,
}


def compute_advantages(name: str, rewards: jax.Array, *, ddof: int = 1, eps: float = 1e-4) -> jax.Array:
    """Advantages ``[B, G]`` with the estimator registered under ``name``."""
    if name not in ADVANTAGES:
        raise KeyError(f"unknown advantage estimator {name!r}; choose from {sorted(ADVANTAGES)}")
    return ADVANTAGES[name](rewards, ddof=ddof, eps=eps)


def group_stats(rewards: jax.Array, advantages: jax.Array, *, tol: float = 1e-6) -> dict[str, jax.Array]:
    """Per-step diagnostics: fraction of zero-std groups and of nonzero advantages, mean |A|."""
    r = jnp.asarray(rewards, jnp.float32)
    spread = jnp.max(r, axis=-1) - jnp.min(r, axis=-1)
    return {
        "frac_reward_zero_std": jnp.mean(spread <= tol),
        "advantage/nonzero_frac": jnp.mean(jnp.abs(advantages) > 0),
        "advantage/abs_mean": jnp.mean(jnp.abs(advantages)),
    }
