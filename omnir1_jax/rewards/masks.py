"""Mask IoU (DAVIS J) in JAX for R_G: region similarity with empty-vs-empty scored as 1."""

from __future__ import annotations

import jax.numpy as jnp


def mask_iou(pred: jnp.ndarray, gt: jnp.ndarray) -> jnp.ndarray:
    """DAVIS J of binary masks ``[..., h, w]`` (nonzero = foreground); 1 where both are empty."""
    p = jnp.asarray(pred) != 0
    g = jnp.asarray(gt) != 0
    inter = jnp.sum(p & g, axis=(-2, -1)).astype(jnp.float32)
    union = jnp.sum(p | g, axis=(-2, -1)).astype(jnp.float32)
    return jnp.where(union > 0, inter / jnp.maximum(union, 1.0), 1.0)


def clip_mean_iou(pred: jnp.ndarray, gt: jnp.ndarray, n_frames: jnp.ndarray | int) -> jnp.ndarray:
    """Mean J over the first ``n_frames`` frames of ``[T, h, w]`` masks (padding frames ignored)."""
    j = mask_iou(pred, gt)  # [T]
    valid = jnp.arange(j.shape[0]) < n_frames
    return jnp.sum(jnp.where(valid, j, 0.0)) / jnp.maximum(jnp.sum(valid), 1)


def union_over_objects(masks: jnp.ndarray, obj_valid: jnp.ndarray) -> jnp.ndarray:
    """Union of per-object masks ``[O, T, h, w]`` over the valid objects ``[O]`` -> bool ``[T, h, w]``."""
    m = (jnp.asarray(masks) != 0) & obj_valid[:, None, None, None]
    return jnp.any(m, axis=0)
