"""Loss aggregation modes as exact ``(numerator, denominator)`` pairs (`jax_design_notes.md` §7.5).

Each mode returns sums that add up across micro-batches and devices; divide once per optimizer step
(:func:`finalize`), so e.g. DAPO's token-mean uses the *global* token count.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

Pair = tuple[jax.Array, jax.Array]


def _prep(per_token: jax.Array, mask: jax.Array, seq_mask: jax.Array | None):
    m = mask.astype(jnp.float32)
    s = jnp.ones(m.shape[:1], jnp.float32) if seq_mask is None else seq_mask.astype(jnp.float32)
    return per_token.astype(jnp.float32) * m, m, s


def seq_mean_token_mean(
    per_token: jax.Array, mask: jax.Array, seq_mask: jax.Array | None = None, max_len: int | None = None
) -> Pair:
    """(1/N) Σ_i [Σ_t m ℓ / Σ_t m]: original GRPO and Omni-R1."""
    del max_len
    lm, m, s = _prep(per_token, mask, seq_mask)
    per_seq = jnp.sum(lm, axis=-1) / jnp.maximum(jnp.sum(m, axis=-1), 1.0)
    return jnp.sum(per_seq * s), jnp.sum(s)


def token_mean(
    per_token: jax.Array, mask: jax.Array, seq_mask: jax.Array | None = None, max_len: int | None = None
) -> Pair:
    """Σ_{i,t} m ℓ / Σ_{i,t} m: DAPO (global token count)."""
    del max_len
    lm, m, s = _prep(per_token, mask, seq_mask)
    return jnp.sum(jnp.sum(lm, axis=-1) * s), jnp.sum(jnp.sum(m, axis=-1) * s)


def seq_mean_token_sum_norm(
    per_token: jax.Array, mask: jax.Array, seq_mask: jax.Array | None = None, max_len: int | None = None
) -> Pair:
    """Σ_{i,t} m ℓ / (N·L_max): Dr.GRPO with a constant L_max (default: the padded length)."""
    lm, _, s = _prep(per_token, mask, seq_mask)
    l_max = float(per_token.shape[-1] if max_len is None else max_len)
    return jnp.sum(jnp.sum(lm, axis=-1) * s) / l_max, jnp.sum(s)


def seq_mean_token_sum(
    per_token: jax.Array, mask: jax.Array, seq_mask: jax.Array | None = None, max_len: int | None = None
) -> Pair:
    """(1/N) Σ_i Σ_t m ℓ."""
    del max_len
    lm, _, s = _prep(per_token, mask, seq_mask)
    return jnp.sum(jnp.sum(lm, axis=-1) * s), jnp.sum(s)


AGGREGATIONS: dict[str, Callable[..., Pair]] = {
    "seq-mean-token-mean": seq_mean_token_mean,
    "token-mean": token_mean,
    "seq-mean-token-sum-norm": seq_mean_token_sum_norm,
    "seq-mean-token-sum": seq_mean_token_sum,
}


def aggregate(
    per_token: jax.Array,
    mask: jax.Array,
    mode: str = "seq-mean-token-mean",
    *,
    seq_mask: jax.Array | None = None,
    max_len: int | None = None,
) -> Pair:
    """``(numerator, denominator)`` of ``per_token [N, L]`` under ``mode``; ``seq_mask [N]`` drops rows."""
    if mode not in AGGREGATIONS:
        raise KeyError(f"unknown loss aggregation {mode!r}; choose from {sorted(AGGREGATIONS)}")
    return AGGREGATIONS[mode](per_token, mask, seq_mask, max_len)


def finalize(num: jax.Array, den: jax.Array) -> jax.Array:
    """numerator / denominator, 0 when nothing was counted."""
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)


def sum_pairs(pairs: list[Pair]) -> Pair:
    """Add ``(num, den)`` pairs from micro-batches (use ``lax.psum`` across devices likewise)."""
    return sum(p[0] for p in pairs), sum(p[1] for p in pairs)
