"""Per-token clipped policy-gradient losses (`jax_design_notes.md` §7.2-7.3), by name.

ρ = exp(clamp(log π_θ - log π_old, ±20)); ℓ = max(-ρA, -clip(ρ, 1-ε_low, 1+ε_high)·A), and for
A < 0 the dual clip ℓ = min(ℓ, -c·A).  With μ = 1 (Omni-R1) ``old_logp`` is omitted:
π_old = stop_grad(π_θ), so ρ ≡ 1 and ∇ℓ = -A∇log π_θ.  ``gspo`` uses the sequence-level ratio
exp(mean_t(log π_θ - log π_old)) with a per-token gradient.  Losses are returned per token; reduce
with :mod:`omnir1_jax.rl.aggregation`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from omnir1_jax.rl.kl import kl_penalty

Pair = tuple[jax.Array, jax.Array]


@dataclasses.dataclass(frozen=True)
class PolicyLossConfig:
    """Clip ranges (ε_low, ε_high), dual-clip constant c (None = off) and the log-ratio clamp."""

    eps_low: float = 0.2
    eps_high: float = 0.2
    dual_clip_c: float | None = None
    log_ratio_clamp: float = 20.0


def _masked_pair(x: jax.Array, mask: jax.Array) -> Pair:
    m = mask.astype(jnp.float32)
    return jnp.sum(x.astype(jnp.float32) * m), jnp.sum(m)


def token_ratio(logp: jax.Array, old_logp: jax.Array, mask: jax.Array, clamp: float) -> jax.Array:
    """Per-token importance ratio exp(clamp(log π_θ - log π_old)) ``[N, L]``."""
    del mask
    return jnp.exp(jnp.clip(logp - old_logp, -clamp, clamp))


def sequence_ratio(logp: jax.Array, old_logp: jax.Array, mask: jax.Array, clamp: float) -> jax.Array:
    """GSPO ratio: value s_i = exp(mean_t m·(log π_θ - log π_old)), gradient per token ``[N, L]``."""
    m = mask.astype(jnp.float32)
    seq_log = jnp.sum((logp - old_logp) * m, axis=-1) / jnp.maximum(jnp.sum(m, axis=-1), 1.0)  # [N]
    s = jax.lax.stop_gradient(jnp.exp(jnp.clip(seq_log, -clamp, clamp)))
    return s[:, None] * jnp.exp(logp - jax.lax.stop_gradient(logp))


RATIOS: dict[str, Callable[..., jax.Array]] = {"token": token_ratio, "sequence": sequence_ratio}
POLICY_LOSSES: dict[str, str] = {"grpo": "token", "ppo": "token", "gspo": "sequence"}


def policy_loss(
    logp: jax.Array,
    advantages: jax.Array,
    mask: jax.Array,
    old_logp: jax.Array | None = None,
    *,
    name: str = "grpo",
    cfg: PolicyLossConfig = PolicyLossConfig(),
) -> tuple[jax.Array, dict[str, Pair]]:
    """Clipped surrogate per token ``[N, L]`` and masked ``(sum, count)`` metrics.

    ``logp``/``old_logp``/``mask``: ``[N, L]``; ``advantages``: ``[N]`` (broadcast over tokens).
    Metrics: ``pg_clipfrac`` (clipped term active), ``pg_clipfrac_high``/``low``, ``pg_clipfrac_dual``,
    ``ppo_kl`` (mean -log ρ) and ``is_ratio``.
    """
    if name not in POLICY_LOSSES:
        raise KeyError(f"unknown policy loss {name!r}; choose from {sorted(POLICY_LOSSES)}")
    logp = jnp.asarray(logp, jnp.float32)
    old = jax.lax.stop_gradient(logp if old_logp is None else jnp.asarray(old_logp, jnp.float32))
    ratio = RATIOS[POLICY_LOSSES[name]](logp, old, mask, cfg.log_ratio_clamp)  # [N, L]
    adv = jnp.asarray(advantages, jnp.float32)[:, None]  # [N, 1]
    unclipped = -adv * ratio
    clipped = -adv * jnp.clip(ratio, 1.0 - cfg.eps_low, 1.0 + cfg.eps_high)
    loss = jnp.maximum(unclipped, clipped)
    dual_active = jnp.zeros_like(loss, dtype=bool)
    if cfg.dual_clip_c is not None:
        dual_bound = -cfg.dual_clip_c * adv
        dual_active = (adv < 0) & (loss > dual_bound)
        loss = jnp.where(adv < 0, jnp.minimum(loss, dual_bound), loss)
    r = jax.lax.stop_gradient(ratio)
    metrics = {
        "pg_clipfrac": _masked_pair(clipped > unclipped, mask),
        "pg_clipfrac_high": _masked_pair((r > 1.0 + cfg.eps_high) & (adv > 0), mask),
        "pg_clipfrac_low": _masked_pair((r < 1.0 - cfg.eps_low) & (adv < 0), mask),
        "pg_clipfrac_dual": _masked_pair(dual_active, mask),
        "ppo_kl": _masked_pair(old - jax.lax.stop_gradient(logp), mask),
        "is_ratio": _masked_pair(r, mask),
    }
    return loss, metrics


def grpo_token_loss(
    logp: jax.Array,
    advantages: jax.Array,
    mask: jax.Array,
    old_logp: jax.Array | None = None,
    ref_logp: jax.Array | None = None,
    *,
    beta: float = 0.04,
    kl_estimator: str = "k3",
    name: str = "grpo",
    cfg: PolicyLossConfig = PolicyLossConfig(),
) -> tuple[jax.Array, dict[str, Pair]]:
    """Per-token ℓ = surrogate + β·KL (the KL-in-loss form); Omni-R1: -(ρA - β·k3)."""
    loss, metrics = policy_loss(logp, advantages, mask, old_logp, name=name, cfg=cfg)
    static_zero = isinstance(beta, (int, float)) and beta == 0.0
    if ref_logp is not None and not static_zero:
        kl = kl_penalty(logp, jax.lax.stop_gradient(ref_logp), kl_estimator)
        loss = loss + beta * kl
        metrics["kl"] = _masked_pair(jax.lax.stop_gradient(kl), mask)
    return loss, metrics
