"""Box IoU in Omni-R1's +1-pixel convention and exact Hungarian matching for a few objects.

Omni-R1 (`omni_r1.md` §6.2 item 5) computes box IoU with inclusive pixel extents (width = x2 - x1 + 1)
and forces the IoU to 0 when the GT box has ``x1 <= 0`` (a quirk of the released code that also zeroes
dummy ``[-1, -1, -1, -1]`` GT boxes).  For the O <= 3 objects of a clip the optimal assignment is found
exactly by enumerating all O! permutations, which is static-shaped and jittable.
"""

from __future__ import annotations

import itertools

import jax.numpy as jnp
import numpy as np

DUMMY_BOX = (-1.0, -1.0, -1.0, -1.0)


def box_iou_plus1(pred: jnp.ndarray, gt: jnp.ndarray, *, gt_x1_quirk: bool = False) -> jnp.ndarray:
    """IoU of boxes ``[..., 4]`` (x1, y1, x2, y2) with inclusive (+1) extents; broadcasts.

    The union is guarded (``union <= 0`` gives 0).  With ``gt_x1_quirk`` the IoU is 0 whenever the GT
    box has ``x1 <= 0``, exactly as in the released ``iou_framewise_object_matching``.
    """
    pred = jnp.asarray(pred, jnp.float32)
    gt = jnp.asarray(gt, jnp.float32)
    iw = jnp.maximum(0.0, jnp.minimum(pred[..., 2], gt[..., 2]) - jnp.maximum(pred[..., 0], gt[..., 0]) + 1.0)
    ih = jnp.maximum(0.0, jnp.minimum(pred[..., 3], gt[..., 3]) - jnp.maximum(pred[..., 1], gt[..., 1]) + 1.0)
    inter = iw * ih
    area_p = (pred[..., 2] - pred[..., 0] + 1.0) * (pred[..., 3] - pred[..., 1] + 1.0)
    area_g = (gt[..., 2] - gt[..., 0] + 1.0) * (gt[..., 3] - gt[..., 1] + 1.0)
    union = area_p + area_g - inter
    ok = union > 0
    if gt_x1_quirk:
        ok = ok & (gt[..., 0] > 0)
    return jnp.where(ok, inter / jnp.where(ok, union, 1.0), 0.0)


def pairwise_iou_plus1(gt: jnp.ndarray, pred: jnp.ndarray, *, gt_x1_quirk: bool = True) -> jnp.ndarray:
    """IoU matrix ``[O_gt, O_pred]`` between GT boxes ``[O_gt, 4]`` and predictions ``[O_pred, 4]``."""
    return box_iou_plus1(pred[None, :, :], gt[:, None, :], gt_x1_quirk=gt_x1_quirk)


def permutations_table(n: int) -> np.ndarray:
    """All permutations of ``range(n)`` as a static int32 table ``[n!, n]``."""
    return np.asarray(list(itertools.permutations(range(n))), np.int32).reshape(-1, n)


def hungarian_max(score: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Maximum-weight perfect assignment of a square ``[n, n]`` score matrix by enumeration.

    Returns ``(perm [n], total [])`` where row ``i`` is assigned column ``perm[i]``.  Exact (equal to
    ``scipy.optimize.linear_sum_assignment(-score)`` in total); meant for n <= 4 (n! rows).
    """
    n = score.shape[-1]
    if score.shape[-2] != n:
        raise ValueError(f"hungarian_max needs a square matrix, got {score.shape}")
    perms = jnp.asarray(permutations_table(n))  # [P, n]
    totals = jnp.take_along_axis(score[None, :, :], perms[:, :, None], axis=2)[..., 0].sum(-1)  # [P]
    best = jnp.argmax(totals)
    return perms[best], totals[best]


def matched_iou(gt: jnp.ndarray, pred: jnp.ndarray, *, gt_x1_quirk: bool = True) -> jnp.ndarray:
    """IoU of each GT box with its Hungarian-matched prediction, ``[O]`` (square ``[O, 4]`` inputs)."""
    iou = pairwise_iou_plus1(gt, pred, gt_x1_quirk=gt_x1_quirk)  # [O, O]
    perm, _ = hungarian_max(iou)
    return jnp.take_along_axis(iou, perm[:, None], axis=1)[:, 0]
