"""ReVOS evaluation exactly as VISA's ``tools/eval_revos.py`` (and MeViS valid_u as ``eval_mevis.py``).

``shared/reference/datasets_and_metrics.md`` §2.4, §3.5, §4.1.  Per expression, over all frames of the
video: J and F (DAVIS), A (pixel accuracy on raw integers), R (robustness, uint8 semantics), each stored
as ``round(100 * x, 2)`` before averaging; JF = ``round(100 * (j + f) / 2, 2)``.  Subsets: referring
(type_id 0) and reasoning (type_id 1); ``overall_X = (X_referring + X_reasoning) / 2``; type_id 2
(no-target) is excluded everywhere.  "Single"/"Multi" split by the number of annotated objects
(``len(anno_id) == 1`` vs ``> 1``) — **our assumption**: Omni-R1 does not publish its definition.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

import numpy as np

from omnir1_jax.metrics import davis


def robustness(pred, gt, fg, pred_scale: int = 1) -> np.ndarray:
    """Per-frame R ``[T]``: ``max(1 - neg / (pos + 1e-6), 0)`` with the official uint8 arithmetic.

    ``pred`` is binarised and scaled by ``pred_scale`` (255 reproduces VISA's 0/255 PNGs, 1 Sa2VA's 0/1
    RLE); ``gt`` is the uint8 *sum* of the expression's object masks (overlaps give 2, which wraps);
    ``fg`` the video's foreground mask.
    """
    p = ((np.asarray(pred) != 0).astype(np.uint8) * np.uint8(pred_scale)).astype(np.uint8)
    g = np.asarray(gt).astype(np.uint8)
    f = np.asarray(fg).astype(np.uint8)
    if p.ndim == 2:
        p, g, f = p[None], g[None], f[None]
    neg = np.sum((np.uint8(1) - g) * p, axis=(1, 2), dtype=np.uint64).astype(np.float64)  # wraps mod 256
    pos = np.sum(f, axis=(1, 2), dtype=np.uint64).astype(np.float64)
    return np.maximum(1.0 - neg / (pos + 1e-6), 0.0)


def accuracy(pred, gt, pred_scale: int = 1) -> np.ndarray:
    """Per-frame A: mean of ``gt == pred`` on raw integers (0/255 predictions never match foreground)."""
    p = (np.asarray(pred) != 0).astype(np.int64) * pred_scale
    g = np.asarray(gt).astype(np.int64)
    if p.ndim == 2:
        p, g = p[None], g[None]
    return np.mean(p == g, axis=(1, 2))


@dataclasses.dataclass(frozen=True)
class ExpressionScore:
    """Rounded per-expression values (x100, 2 decimals), as VISA stores them."""

    video: str
    exp_id: str
    type_id: int
    num_objects: int
    J: float
    F: float
    A: float
    R: float
    JF: float


def score_expression(pred, gt, fg, *, video: str = "", exp_id: str = "", type_id: int = 0, num_objects: int = 1,
                     pred_scale: int = 1) -> ExpressionScore:
    """Scores one expression: ``pred``/``gt``/``fg`` are ``[T, H, W]`` over all frames of the video."""
    j = float(np.mean(davis.jaccard(pred, gt)))
    f = float(np.mean(davis.boundary_f(pred, gt)))
    a = float(np.mean(accuracy(pred, gt, pred_scale)))
    r = float(np.mean(robustness(pred, gt, fg, pred_scale)))
    return ExpressionScore(video, exp_id, int(type_id), int(num_objects), round(100 * j, 2), round(100 * f, 2),
                           round(100 * a, 2), round(100 * r, 2), round(100 * (j + f) / 2, 2))


def _subset(rows: list[ExpressionScore]) -> dict:
    if not rows:
        return {k: float("nan") for k in ("J", "F", "A", "R", "JF")} | {"count": 0}
    out = {k: float(np.mean([getattr(r, k) for r in rows])) for k in ("J", "F", "A", "R")}
    out["JF"] = (out["J"] + out["F"]) / 2
    out["count"] = len(rows)
    return out


def aggregate(rows: Iterable[ExpressionScore]) -> dict:
    """referring / reasoning / overall (mean of the two subsets), plus single / multi (our assumption)."""
    rows = [r for r in rows if r.type_id in (0, 1)]  # type_id 2 (no target) is never reported
    res = {"referring": _subset([r for r in rows if r.type_id == 0]),
           "reasoning": _subset([r for r in rows if r.type_id == 1])}
    res["overall"] = {k: (res["referring"][k] + res["reasoning"][k]) / 2 for k in ("J", "F", "A", "R", "JF")}
    res["overall"]["count"] = len(rows)
    res["single"] = _subset([r for r in rows if r.num_objects == 1])
    res["multi"] = _subset([r for r in rows if r.num_objects > 1])
    res["protocol"] = "VISA eval_revos (per-expression rounding; single/multi = number of anno_ids, our assumption)"
    return res


def evaluate(items: Iterable[dict], pred_scale: int = 1) -> dict:
    """``items`` yield dicts with ``pred``, ``gt``, ``fg`` ``[T, H, W]`` and ``video``, ``exp_id``,
    ``type_id``, ``num_objects``; returns :func:`aggregate` of their scores plus the per-expression rows."""
    rows = [score_expression(it["pred"], it["gt"], it["fg"], video=it.get("video", ""), exp_id=it.get("exp_id", ""),
                             type_id=it.get("type_id", 0), num_objects=it.get("num_objects", 1),
                             pred_scale=pred_scale) for it in items]
    out = aggregate(rows)
    out["expressions"] = [dataclasses.asdict(r) for r in rows]
    return out


def evaluate_mevis(items: Iterable[dict]) -> dict:
    """MeViS valid_u: per-expression mean J and F over all frames, mean over expressions, x100 rounded
    to 2 decimals only at the end (``eval_mevis.py``)."""
    js, fs = [], []
    for it in items:
        js.append(float(np.mean(davis.jaccard(it["pred"], it["gt"]))))
        fs.append(float(np.mean(davis.boundary_f(it["pred"], it["gt"]))))
    j, f = (float(np.mean(js)), float(np.mean(fs))) if js else (float("nan"), float("nan"))
    return {"J": round(100 * j, 2), "F": round(100 * f, 2), "JF": round(100 * (j + f) / 2, 2), "count": len(js),
            "protocol": "MeViS eval_mevis (all frames, union GT)"}
