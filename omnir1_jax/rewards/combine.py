"""The alpha-weighted hierarchical combination of Omni-R1's VOS reward terms (`omni_r1.md` §6.2-6.3).

``acc = c + α_k·(total_frame_reward + total_overlap_reward) + α_k_ratio·avg_ratio + α_a·avg_iou
        + object_num_mismatch + α_g·sam_iou``; the per-completion reward adds the format reward and the
group-aware length bonus (``shaping.py``).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class RewardWeights:
    """α weights of the hierarchical reward (hashable, so it can be a static jit argument).

    ``clip_reward`` is the released code's ``CLIP_REWARD=1``: if every term except ``c`` sums to
    ``<= 0`` the accuracy falls back to ``c``.  ``released_code_gating`` reproduces a quirk of the
    released ``vos_reward``: the System-2 terms (avg_iou, avg_ratio, object_num_mismatch, sam_iou)
    reach the reward only when System 2 produced at least one valid box AND ``α_g > 0``; otherwise
    only ``c + α_k·(frame + overlap)`` is used.  Off by default (the paper's formula, §6.2 item 8).
    """

    alpha_k: float = 1.0
    alpha_k_ratio: float = 1.0
    alpha_a: float = 1.0
    alpha_g: float = 0.0
    clip_reward: bool = False
    released_code_gating: bool = False


# §6.3: the released launch script (no SAM2 server) and the internal scripts / yaml (SAM2 needed).
WEIGHT_PRESETS: dict[str, RewardWeights] = {
    "released": RewardWeights(alpha_k=1.0, alpha_k_ratio=1.0, alpha_a=1.0, alpha_g=0.0),
    "internal": RewardWeights(alpha_k=1.0, alpha_k_ratio=0.0, alpha_a=1.0, alpha_g=2.0),
    "defaults": RewardWeights(alpha_k=1.0, alpha_k_ratio=1.0, alpha_a=1.0, alpha_g=1.0),
}


def get_weights(name: str, **overrides) -> RewardWeights:
    """A named preset (``released`` | ``internal`` | ``defaults``) with optional field overrides."""
    if name not in WEIGHT_PRESETS:
        raise KeyError(f"unknown reward weight preset {name!r}; choose from {sorted(WEIGHT_PRESETS)}")
    return dataclasses.replace(WEIGHT_PRESETS[name], **overrides)


def combine_vos_terms(terms: Mapping[str, jnp.ndarray], w: RewardWeights) -> jnp.ndarray:
    """Weighted VOS accuracy ``acc`` from the raw terms of :func:`omnir1_jax.rewards.vos.vos_terms`."""
    k_terms = w.alpha_k * (terms["total_frame_reward"] + terms["total_overlap_reward"])
    s2_terms = (
        w.alpha_k_ratio * terms["avg_ratio"]
        + w.alpha_a * terms["avg_iou"]
        + terms["object_num_mismatch"]
        + w.alpha_g * terms["sam_iou"]
    )
    if w.released_code_gating:
        use_s2 = terms["has_valid_bbox"] & (w.alpha_g > 1e-6)
        s2_terms = jnp.where(use_s2, s2_terms, 0.0)
    rest = jnp.where(terms["has_valid_segment"], k_terms + s2_terms, 0.0)
    acc = terms["c"] + rest
    if w.clip_reward:
        acc = jnp.where(terms["has_valid_segment"] & (rest <= 0.0), terms["c"], acc)
    return acc
