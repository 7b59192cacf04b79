"""DAPO-style dynamic sampling as a static-shape mask (`jax_design_notes.md` §7.6-7.7).

Groups whose *raw task score* (e.g. the task accuracy or IoU, never the shaped reward with format and
length bonuses) is constant within ``tol`` carry no signal and are masked out of the loss.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp


def keep_all(raw_score: jax.Array, tol: float = 1e-6) -> dict[str, jax.Array]:
    """No filtering: every group kept."""
    del tol
    keep = jnp.ones(raw_score.shape[:-1], bool)
    return _result(keep, raw_score)


def drop_constant_groups(raw_score: jax.Array, tol: float = 1e-6) -> dict[str, jax.Array]:
    """Keep groups (rows of ``[B, G]``) whose raw score spread max - min exceeds ``tol``."""
    r = jnp.asarray(raw_score, jnp.float32)
    keep = (jnp.max(r, axis=-1) - jnp.min(r, axis=-1)) > tol
    return _result(keep, r)


def _result(keep: jax.Array, raw_score: jax.Array) -> dict[str, jax.Array]:
    seq_mask = jnp.broadcast_to(keep[:, None], raw_score.shape)  # [B, G]
    return {"group_keep": keep, "seq_mask": seq_mask, "kept_frac": jnp.mean(keep.astype(jnp.float32))}


DYNAMIC_SAMPLING: dict[str, Callable[..., dict[str, jax.Array]]] = {
    "none": keep_all,
    "constant_score": drop_constant_groups,
}


def dynamic_sampling_mask(raw_score: jax.Array, mode: str = "constant_score", tol: float = 1e-6) -> dict:
    """``{group_keep [B], seq_mask [B, G], kept_frac []}`` for raw scores ``[B, G]``."""
    if mode not in DYNAMIC_SAMPLING:
        raise KeyError(f"unknown dynamic sampling mode {mode!r}; choose from {sorted(DYNAMIC_SAMPLING)}")
    return DYNAMIC_SAMPLING[mode](raw_score, tol)
