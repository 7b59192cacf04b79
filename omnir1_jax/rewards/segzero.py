"""refCOCOg / SegZero reward (`omni_r1.md` §6.5), jittable, and the host-side GT point helper.

``acc = iou_r + point_r + box_r + fmt`` with ``iou_r = 2·max(0, IoU - 0.5) + 0.4·[IoU > 0.5]``,
``point_r = clip((150 - pointL1)·0.02, 0, 1)``, ``box_r = clip((30 - boxL1)·0.05, 0, 1)``.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from scipy.ndimage import distance_transform_edt

MISSING_L1 = 999.0  # distance the released code uses when a box / the points cannot be read


@flax.struct.dataclass
class SegZeroInputs:
    """Parsed first JSON object of one answer and its GT (coordinates: resized pred, original GT)."""

    pred_box: jax.Array  # [4] float32, resized-image pixels
    box_ok: jax.Array  # [] bool: a ``bbox`` key with 4 numbers
    pred_points: jax.Array  # [2, 2] float32 (x, y) x 2
    points_ok: jax.Array  # [] bool: two ``points`` keys with >= 2 numbers each
    format_ok: jax.Array  # [] bool: strict format (bbox_2d[4], points_1[2], points_2[2])
    gt_box: jax.Array  # [4] float32, original pixels
    gt_points: jax.Array  # [2, 2] float32, original pixels
    resize_ratio: jax.Array  # [2] float32 (w_ratio, h_ratio)


def _iou_strict(a: jax.Array, b: jax.Array) -> jax.Array:
    """SegZero's IoU: +1 extents, zero intersection unless x1 < x2 and y1 < y2 strictly."""
    ix1, iy1 = jnp.maximum(a[0], b[0]), jnp.maximum(a[1], b[1])
    ix2, iy2 = jnp.minimum(a[2], b[2]), jnp.minimum(a[3], b[3])
    inter = jnp.where((ix1 < ix2) & (iy1 < iy2), (ix2 - ix1 + 1.0) * (iy2 - iy1 + 1.0), 0.0)
    union = (a[2] - a[0] + 1.0) * (a[3] - a[1] + 1.0) + (b[2] - b[0] + 1.0) * (b[3] - b[1] + 1.0) - inter
    return jnp.where(union != 0, inter / jnp.where(union != 0, union, 1.0), 0.0)


def segzero_terms(x: SegZeroInputs) -> dict:
    """Every SegZero term (IoU, L1 distances, sub-rewards, ``acc``) for one completion."""
    f32 = jnp.float32
    ratio = jnp.asarray(x.resize_ratio, f32)
    gt_box = jnp.trunc(jnp.asarray(x.gt_box, f32) * jnp.concatenate([ratio, ratio]))  # int(c * r)
    gt_pts = jnp.trunc(jnp.asarray(x.gt_points, f32) * ratio[None, :])
    box = jnp.asarray(x.pred_box, f32)
    iou = jnp.where(x.box_ok, _iou_strict(box, gt_box), 0.0)
    box_l1 = jnp.where(x.box_ok, jnp.mean(jnp.abs(box - gt_box)), MISSING_L1)

    pts = jnp.trunc(jnp.asarray(x.pred_points, f32))  # int() of each coordinate
    inside = jnp.all((pts >= box[None, :2]) & (pts <= box[None, 2:]))
    d = lambda p, q: jnp.sqrt(jnp.sum((p - q) ** 2))  # noqa: E731
    direct = d(pts[0], gt_pts[0]) + d(pts[1], gt_pts[1])
    swapped = d(pts[0], gt_pts[1]) + d(pts[1], gt_pts[0])
    point_l1 = jnp.where(x.box_ok & x.points_ok & inside, jnp.minimum(direct, swapped) / 2.0, MISSING_L1)

    iou_r = 2.0 * jnp.maximum(0.0, iou - 0.5) + jnp.where(iou > 0.5, 0.4, 0.0)
    point_r = jnp.clip((150.0 - point_l1) * 0.02, 0.0, 1.0)
    box_r = jnp.clip((30.0 - box_l1) * 0.05, 0.0, 1.0)
    fmt = jnp.asarray(x.format_ok).astype(f32)
    return {
        "iou": iou,
        "box_l1": box_l1,
        "point_l1": point_l1,
        "iou_reward": iou_r,
        "point_reward": point_r,
        "box_reward": box_r,
        "seg_format_reward": fmt,
        "acc": iou_r + point_r + box_r + fmt,
    }


def top2_inscribed_circle_centers(
    mask: np.ndarray, min_distance: int = 10, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Centres of the two largest inscribed circles of a 2-D mask as ``[x1, y1, x2, y2]`` (host-side).

    First centre: the (first, row-major) maximum of the Euclidean distance transform; the second: the
    maximum of the distance transform recomputed after erasing a disc of radius ``min_distance`` around
    the first.  If nothing remains, a random mask pixel (from ``rng``) is used.  Empty mask → -1s.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    if not mask.any():
        return np.array([-1, -1, -1, -1])
    fg = mask != 0
    dist = distance_transform_edt(fg)
    y0, x0 = np.unravel_index(np.argmax(dist), dist.shape)
    yy, xx = np.ogrid[: fg.shape[0], : fg.shape[1]]
    rest = fg & (((yy - y0) ** 2 + (xx - x0) ** 2) > min_distance**2)
    y1, x1 = np.unravel_index(np.argmax(distance_transform_edt(rest)), dist.shape)
    if dist[y1, x1] == 0:
        rng = np.random.default_rng() if rng is None else rng
        pts = np.argwhere(fg)
        y1, x1 = pts[rng.integers(len(pts))]
    return np.array([x0, y0, x1, y1])
