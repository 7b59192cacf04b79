"""Ref-AVS Bench metrics with the official protocol (``GeWu-Lab/Ref-AVS utils/metric/utility.py``).

``shared/reference/datasets_and_metrics.md`` §1.4-1.6.  One official batch is 4 expressions x 10 frames
(N = 40) at 256x256, in CSV order; the split value is the plain mean of the per-batch values.

- J (``mask_iou``): sigmoid > 0.4 (strict); an empty-GT frame scores the fraction of pixels predicted as
  background; per-frame ``inter / (union + 1e-7)`` averaged over the batch.
- F (``f_measure``): region F-beta with beta^2 = 0.3 over 255 float32 thresholds (``sigmoid >= t``),
  empty-GT frames skipped, the *max over thresholds of the batch-averaged curve*; 0 without a valid frame.
- S (``null_s``): sqrt of the fraction of pixels with sigmoid > 0.5 (strict), per batch.

Our pipeline produces binary masks; feeding 0/1 into the official J would count every pixel as
foreground (sigmoid(0) = 0.5 > 0.4).  :func:`binary_to_logits` maps them to +-10 first.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

import cv2
import numpy as np

from omnir1_jax.metrics import davis

BETA2 = 0.3
NUM_THRESHOLDS = 255
OFFICIAL_SIZE = 256
OFFICIAL_BATCH = 4  # expressions per batch (x 10 frames)
PROTOCOLS = ("official", "per_expression", "davis")


def _sigmoid(x) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


def thresholds(num: int = NUM_THRESHOLDS) -> np.ndarray:
    """``torch.linspace(0, 1 - 1e-10, num)`` in float32, reproducing torch's two-sided CPU kernel."""
    start, end = np.float32(0.0), np.float32(1 - 1e-10)  # rounds to exactly 1.0 in float32
    step = np.float32((end - start) / np.float32(num - 1))
    idx = np.arange(num)
    lo = start + step * idx.astype(np.float32)
    hi = end - step * (num - idx - 1).astype(np.float32)
    return np.where(idx < num // 2, lo, hi).astype(np.float32)


def binary_to_logits(mask, magnitude: float = 10.0) -> np.ndarray:
    """Maps a binary (or [0, 1] soft) mask to logits so the official thresholds behave as intended."""
    p = np.clip(np.asarray(mask, np.float32), 0.0, 1.0)
    with np.errstate(divide="ignore"):
        logits = np.log(p) - np.log1p(-p)
    return np.clip(logits, -magnitude, magnitude).astype(np.float32)


def mask_iou(logits, gt) -> float:
    """Official J of one batch: ``logits [N, H, W]`` real-valued, ``gt [N, H, W]`` in {0, 1}."""
    p = (_sigmoid(logits) > 0.4).astype(np.float32)
    g = (np.asarray(gt) > 0).astype(np.float32)
    n, h, w = p.shape
    inter = np.sum(p * g, axis=(1, 2))
    union = np.sum(np.maximum(p, g), axis=(1, 2))
    empty = np.sum(g, axis=(1, 2)) == 0
    inter = np.where(empty, np.sum((1 - g) * (1 - p), axis=(1, 2)), inter)
    union = np.where(empty, np.float32(h * w), union)
    return float(np.mean((inter / (union + np.float32(1e-7))).astype(np.float32)))


def f_measure(logits, gt, num_thresholds: int = NUM_THRESHOLDS) -> float:
    """Official F of one batch (max over thresholds of the mean F-beta curve of non-empty-GT frames)."""
    s = _sigmoid(logits)
    g = (np.asarray(gt) > 0).astype(np.float32)
    ths = thresholds(num_thresholds)
    curves = []
    for i in range(s.shape[0]):
        if float(np.mean(g[i])) == 0.0:
            continue
        y = (s[i][None] >= ths[:, None, None]).astype(np.float32)  # [K, H, W]
        tp = np.sum(y * g[i][None], axis=(1, 2))
        prec = tp / (np.sum(y, axis=(1, 2)) + np.float32(1e-20))
        rec = tp / (np.sum(g[i]) + np.float32(1e-20))
        with np.errstate(invalid="ignore", divide="ignore"):
            f = (1 + BETA2) * prec * rec / (BETA2 * prec + rec)
        curves.append(np.nan_to_num(f, nan=0.0).astype(np.float32))
    if not curves:
        return 0.0
    return float(np.max(np.mean(np.stack(curves), axis=0)))


def null_s(logits) -> float:
    """Official S of one batch of a Null-split prediction (lower is better)."""
    p = _sigmoid(logits) > 0.5
    return float(np.sqrt(np.sum(p) / p.size))


def official_gt(mask: np.ndarray, size: int = OFFICIAL_SIZE) -> np.ndarray:
    """GT as the official loader sees it: cv2 INTER_LINEAR resize to ``size`` x ``size``, then ``> 0``."""
    m = np.asarray(mask).astype(np.uint8)
    if m.max() == 1:
        m = m * 255
    return (cv2.resize(m, (size, size)) > 0).astype(np.float32)


def official_pred(mask_or_logits: np.ndarray, size: int = OFFICIAL_SIZE, *, is_logits: bool = False) -> np.ndarray:
    """A prediction at 256x256 as logits.

    Logit maps are resized bilinearly (as EEMC's post-processor does).  Binary masks go through exactly the
    GT's path (INTER_LINEAR, then ``> 0``) and are then mapped to +-10 logits, so a prediction equal to the
    GT scores J = F = 100 at any source resolution (resizing a binary mask and thresholding at the
    official 0.4 would otherwise drop the boundary pixels the GT's ``> 0`` keeps).
    """
    x = np.asarray(mask_or_logits, np.float32)
    if is_logits:
        return cv2.resize(x, (size, size), interpolation=cv2.INTER_LINEAR)
    return binary_to_logits(official_gt(x > 0.5, size))


@dataclasses.dataclass(frozen=True)
class RefAVSResult:
    J: float  # percent
    F: float  # x100
    JF: float
    S: float | None
    num_expressions: int
    protocol: str

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def evaluate(preds: Iterable[np.ndarray], gts: Iterable[np.ndarray], *, protocol: str = "official",
             null_split: bool = False, preds_are_logits: bool = False) -> RefAVSResult:
    """Scores a split: ``preds``/``gts`` yield one ``[10, H, W]`` stack per expression, in CSV order.

    ``protocol``: ``official`` (256x256, batches of 4 expressions, the official J/F), ``per_expression``
    (the official J/F per expression, then the mean), or ``davis`` (DAVIS J/F at native resolution,
    binarised at 0.5 / logit 0).  ``null_split`` computes S instead (official batching).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown RefAVS protocol {protocol!r}; expected one of {PROTOCOLS}")
    pairs = list(zip(preds, gts))
    if protocol == "davis" and not null_split:
        js, fs = [], []
        for p, g in pairs:
            pb = (np.asarray(p) > 0) if preds_are_logits else (np.asarray(p) >= 0.5)
            js.append(np.mean(davis.jaccard(pb, g)))
            fs.append(np.mean(davis.boundary_f(pb, g)))
        j, f = float(np.mean(js)), float(np.mean(fs))
        return RefAVSResult(100 * j, 100 * f, 50 * (j + f), None, len(pairs), "davis@native")
    prepped = [(np.stack([official_pred(x, is_logits=preds_are_logits) for x in p]),
                np.stack([official_gt(x) for x in g])) for p, g in pairs]
    group = OFFICIAL_BATCH if protocol == "official" else 1
    batches = [prepped[i:i + group] for i in range(0, len(prepped), group)]
    cat = [(np.concatenate([p for p, _ in b]), np.concatenate([g for _, g in b])) for b in batches]
    name = f"{protocol}@{OFFICIAL_SIZE}" + ("/batch4" if protocol == "official" else "")
    if null_split:
        s = float(np.mean([null_s(p) for p, _ in cat])) if cat else 0.0
        return RefAVSResult(float("nan"), float("nan"), float("nan"), s, len(pairs), name + "/null")
    j = float(np.mean([mask_iou(p, g) for p, g in cat])) if cat else 0.0
    f = float(np.mean([f_measure(p, g) for p, g in cat])) if cat else 0.0
    return RefAVSResult(100 * j, 100 * f, (100 * j + 100 * f) / 2, None, len(pairs), name)
