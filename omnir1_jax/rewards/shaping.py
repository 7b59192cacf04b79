"""Shaping terms added to the task accuracy: the format reward and the group-aware length bonus."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class LengthBonusConfig:
    """``--len_control``: among a group, if more than ``min_count - 1`` completions have
    ``acc > acc_threshold``, each of those whose length (tokens, incl. the first EOS) lies in
    ``[min_len, max_len]`` gets ``+bonus``."""

    enabled: bool = True
    min_len: int = 320
    max_len: int = 750
    acc_threshold: float = 0.1
    min_count: int = 2
    bonus: float = 1.0


def format_reward(format_ok: jax.Array) -> jax.Array:
    """1.0 where the completion full-matches ``<think>.*?</think>\\s*<answer>.*?</answer>``, else 0."""
    return jnp.asarray(format_ok).astype(jnp.float32)


def length_bonus(
    acc: jax.Array, lengths: jax.Array, cfg: LengthBonusConfig = LengthBonusConfig()
) -> jax.Array:
    """Group-aware length bonus ``[B, G]`` from accuracies ``[B, G]`` and completion lengths ``[B, G]``."""
    if not cfg.enabled:
        return jnp.zeros(acc.shape, jnp.float32)
    good = acc > cfg.acc_threshold  # [B, G]
    group_ok = jnp.sum(good, axis=-1, keepdims=True) >= cfg.min_count  # [B, 1]
    in_range = (lengths >= cfg.min_len) & (lengths <= cfg.max_len)
    return jnp.where(good & group_ok & in_range, cfg.bonus, 0.0).astype(jnp.float32)


def total_reward(
    acc: jax.Array, format_ok: jax.Array, lengths: jax.Array, cfg: LengthBonusConfig = LengthBonusConfig()
) -> dict:
    """Per-completion reward ``acc + format + len_bonus`` over ``[B, G]``, with its parts for logging."""
    fmt = format_reward(format_ok)
    bonus = length_bonus(acc, lengths, cfg)
    return {"reward": acc + fmt + bonus, "format_reward": fmt, "len_bonus": bonus, "acc": acc}
