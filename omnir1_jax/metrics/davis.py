"""DAVIS-2017 region J and boundary F, exactly as ``davis2017/metrics.py`` computes them.

Semantics (``shared/reference/datasets_and_metrics.md`` §3): masks are cast to bool (any nonzero value
is foreground); J of two empty masks is 1; F uses a 1-pixel boundary map offset toward the origin
(``seg2bmap``), a disk of radius ``ceil(bound_th * diagonal)`` dilated with OpenCV (zero border), and
the special cases P = R = 1 when both boundaries are empty, (P, R) = (1, 0) for an empty prediction
boundary and (0, 1) for an empty GT boundary.
"""

from __future__ import annotations

import math

import cv2
import numpy as np


def _as_bool(x) -> np.ndarray:
    return np.asarray(x) != 0


def _stacked(pred, gt) -> tuple[np.ndarray, np.ndarray, bool]:
    pred, gt = _as_bool(pred), _as_bool(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground-truth shape {gt.shape}")
    if pred.ndim not in (2, 3):
        raise ValueError(f"masks must be [H, W] or [T, H, W], got shape {pred.shape}")
    single = pred.ndim == 2
    return (pred[None], gt[None], True) if single else (pred, gt, False)


def jaccard(pred, gt):
    """Region similarity J: a float for ``[H, W]`` masks, a float64 array ``[T]`` for stacks."""
    p, g, single = _stacked(pred, gt)
    inter = np.sum(p & g, axis=(-2, -1)).astype(np.float64)
    union = np.sum(p | g, axis=(-2, -1)).astype(np.float64)
    j = np.where(union == 0, 1.0, inter / np.where(union == 0, 1.0, union))
    return float(j[0]) if single else j


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundary map of a binary mask (DAVIS ``_seg2bmap`` without resizing)."""
    s = _as_bool(seg)
    e = np.zeros_like(s)
    d = np.zeros_like(s)
    q = np.zeros_like(s)
    e[:, :-1] = s[:, 1:]
    d[:-1, :] = s[1:, :]
    q[:-1, :-1] = s[1:, 1:]
    b = (s ^ e) | (s ^ d) | (s ^ q)
    b[-1, :] = s[-1, :] ^ e[-1, :]
    b[:, -1] = s[:, -1] ^ d[:, -1]
    b[-1, -1] = False
    return b


def disk(radius: int) -> np.ndarray:
    """``skimage.morphology.disk(radius)``: 1 where x^2 + y^2 <= r^2, uint8 ``[2r+1, 2r+1]``."""
    r = np.arange(-radius, radius + 1)
    return ((r[:, None] ** 2 + r[None, :] ** 2) <= radius**2).astype(np.uint8)


def bound_pixels(shape: tuple[int, int], bound_th: float = 0.008) -> int:
    """Boundary tolerance in pixels for an image of ``shape`` (``bound_th >= 1`` is a pixel count)."""
    return int(bound_th) if bound_th >= 1 else int(math.ceil(bound_th * math.hypot(*shape)))


def _f_measure(pred: np.ndarray, gt: np.ndarray, bound_th: float) -> float:
    r = bound_pixels(pred.shape, bound_th)
    fg_b, gt_b = seg2bmap(pred), seg2bmap(gt)
    kernel = disk(r)
    fg_dil = cv2.dilate(fg_b.astype(np.uint8), kernel) > 0
    gt_dil = cv2.dilate(gt_b.astype(np.uint8), kernel) > 0
    n_fg, n_gt = int(fg_b.sum()), int(gt_b.sum())
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        precision = float(np.sum(fg_b & gt_dil)) / n_fg
        recall = float(np.sum(gt_b & fg_dil)) / n_gt
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def boundary_f(pred, gt, bound_th: float = 0.008):
    """Boundary F: a float for ``[H, W]`` masks, a float64 array ``[T]`` for stacks."""
    p, g, single = _stacked(pred, gt)
    f = np.array([_f_measure(p[t], g[t], bound_th) for t in range(p.shape[0])], dtype=np.float64)
    return float(f[0]) if single else f
