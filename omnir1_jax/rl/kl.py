"""Per-token KL estimators to the reference policy (`jax_design_notes.md` §7.4), by name.

With d = log π_ref - log π_θ (clamped to ±``log_ratio_clip``): k1 = -d, k2 = d²/2,
k3 = exp(d) - d - 1 (≥ 0; Omni-R1's choice with β = 0.04), ``k3+`` = value of k3 with the gradient of k2.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp


def _k1(d: jax.Array) -> jax.Array:
    return -d


def _k2(d: jax.Array) -> jax.Array:
    return 0.5 * d * d


def _k3(d: jax.Array) -> jax.Array:
    return jnp.expm1(d) - d  # = exp(d) - d - 1, with less cancellation near d = 0


def _k3_plus(d: jax.Array) -> jax.Array:
    k2 = _k2(d)
    return k2 + jax.lax.stop_gradient(_k3(d) - k2)


KL_ESTIMATORS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "k1": _k1,
    "k2": _k2,
    "k3": _k3,
    "low_var_kl": _k3,
    "k3+": _k3_plus,
}


def kl_penalty(
    logp: jax.Array,
    ref_logp: jax.Array,
    estimator: str = "k3",
    *,
    log_ratio_clip: float | None = 20.0,
    value_clip: float | None = None,
) -> jax.Array:
    """Per-token KL estimate ``[N, L]``; ``value_clip`` clamps the output to ±value_clip (verl: 10)."""
    if estimator not in KL_ESTIMATORS:
        raise KeyError(f"unknown KL estimator {estimator!r}; choose from {sorted(KL_ESTIMATORS)}")
    d = jnp.asarray(ref_logp, jnp.float32) - jnp.asarray(logp, jnp.float32)
    if log_ratio_clip is not None:
        d = jnp.clip(d, -log_ratio_clip, log_ratio_clip)
    kl = KL_ESTIMATORS[estimator](d)
    if value_clip is not None:
        kl = jnp.clip(kl, -value_clip, value_clip)
    return kl
