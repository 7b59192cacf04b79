"""Figures for looking at what the model does: one rollout as a PNG, and training curves over steps.

Uses matplotlib's Agg canvas directly (``Figure`` + ``FigureCanvasAgg``), never pyplot, so nothing
needs a display and no global figure state leaks between calls (safe in tests and worker threads).
"""

from __future__ import annotations

import json
import math
import os
import textwrap
from typing import Any, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

HIGHLIGHT = (1.0, 0.0, 1.0)  # keyframe border colour (magenta); kept out of OBJECT_COLORS so tests can find it
OBJECT_COLORS = ((0.12, 0.47, 0.71), (1.0, 0.5, 0.05), (0.17, 0.63, 0.17), (0.84, 0.15, 0.16),
                 (0.09, 0.75, 0.81), (0.74, 0.74, 0.13))
MASK_ALPHA = 0.45
MAX_STRIP = 12  # clip frames shown in the strip (keyframes always included)
DEFAULT_KEYS = ("reward_mean", "reward_std", "format_rate", "r_keyframe", "r_align", "r_mask", "length_bonus",
                "kl", "loss", "completion_len", "val_JF", "val_J", "val_F")


def _save(fig: Figure, out_png: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(out_png, format="png")
    return out_png


def _as_object_masks(masks: Any, t: int, h: int, w: int) -> np.ndarray:
    """``[T,H,W]`` or ``[O,T,H,W]`` -> bool ``[O,T,H,W]`` resized (nearest) to the clip; None -> no objects."""
    if masks is None:
        return np.zeros((0, t, h, w), bool)
    m = np.asarray(masks).astype(bool)
    if m.ndim == 3:
        m = m[None]
    if m.ndim != 4 or m.shape[1] != t:
        raise ValueError(f"masks must be [T,H,W] or [O,T,H,W] with T={t}; got shape {np.shape(masks)}")
    if m.shape[2:] != (h, w):
        rows = (np.arange(h) * m.shape[2] // h).clip(0, m.shape[2] - 1)
        cols = (np.arange(w) * m.shape[3] // w).clip(0, m.shape[3] - 1)
        m = m[:, :, rows][:, :, :, cols]
    return m


def overlay_masks(frame: np.ndarray, masks: np.ndarray, alpha: float = MASK_ALPHA) -> np.ndarray:
    """Blends one colour per object into ``frame`` [H,W,3] uint8 where ``masks`` [O,H,W] is set."""
    out = np.asarray(frame, np.float32).copy()
    for o, m in enumerate(masks):
        c = np.asarray(OBJECT_COLORS[o % len(OBJECT_COLORS)], np.float32) * 255.0
        out[m] = (1 - alpha) * out[m] + alpha * c
    return out.clip(0, 255).astype(np.uint8)


def _strip_indices(t: int, keyframes: Sequence[int]) -> list[int]:
    """Evenly spaced frames plus every valid keyframe, at most ``MAX_STRIP`` + #keyframes columns."""
    base = np.unique(np.linspace(0, t - 1, min(t, MAX_STRIP)).round().astype(int)).tolist() if t else []
    return sorted(set(base) | {k for k in keyframes if 0 <= k < t})


def _frame_axes(ax, highlight: bool) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_edgecolor(HIGHLIGHT if highlight else (0.8, 0.8, 0.8))
        s.set_linewidth(5 if highlight else 0.5)


def _wrap(text: str, width: int, max_lines: int) -> str:
    lines = textwrap.wrap(text or "", width) or [""]
    return "\n".join(lines[:max_lines] + (["…"] if len(lines) > max_lines else []))


def rollout_figure(frames_lowres: np.ndarray, keyframes: Sequence[int], descriptions: Sequence[str],
                   hires_keyframes: Sequence[np.ndarray], boxes: Sequence[np.ndarray], masks: np.ndarray | None,
                   query: str, completion_text: str | None, out_png: str) -> str:
    """Writes one PNG of a rollout and returns its path.

    Top: the low-res clip with mask overlays, chosen keyframes framed in ``HIGHLIGHT`` with their index.
    Middle: the high-res keyframes (the low-res frame when none is given) with the grounded boxes
    ``[n,4]`` (x1,y1,x2,y2, hi-res pixels) and the rewritten description underneath.  Bottom: the
    completion text.  Zero keyframes, zero boxes and empty masks all render.
    """
    frames = np.asarray(frames_lowres)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames_lowres must be [T,H,W,3]; got {frames.shape}")
    t, h, w, _ = frames.shape
    omasks = _as_object_masks(masks, t, h, w)  # [O,T,H,W]
    keys = [int(k) for k in keyframes]
    strip = _strip_indices(t, keys)
    n_kf = len(keys)
    cols_top, cols_mid = max(len(strip), 1), max(n_kf, 1)
    fig_w = max(1.5 * cols_top * w / max(h, 1), 2.6 * cols_mid, 8.0)
    heights = [1.0, 1.7] + ([0.9] if completion_text else [])
    fig = Figure(figsize=(min(fig_w, 30.0), 2.2 * sum(heights)), dpi=80, layout="constrained")
    fig.suptitle(_wrap(query, 120, 3), fontsize=12, parse_math=False)
    subs = fig.subfigures(len(heights), 1, height_ratios=heights)

    top = subs[0].subplots(1, cols_top, squeeze=False)[0]
    for ax, idx in zip(top, strip):
        ax.imshow(overlay_masks(frames[idx], omasks[:, idx]), interpolation="nearest")
        is_kf = idx in keys
        _frame_axes(ax, is_kf)
        label = f"#{idx}" + (f"  K{keys.index(idx) + 1}" if is_kf else "")
        ax.set_title(label, fontsize=8, color=HIGHLIGHT if is_kf else "black", fontweight="bold" if is_kf else None)
    if not strip:
        top[0].text(0.5, 0.5, "empty clip", ha="center", va="center")
        top[0].set_axis_off()

    mid = subs[1].subplots(1, cols_mid, squeeze=False)[0]
    for i, k in enumerate(keys):
        ax = mid[i]
        img = hires_keyframes[i] if i < len(hires_keyframes) and hires_keyframes[i] is not None else (
            frames[k] if 0 <= k < t else np.zeros((h, w, 3), np.uint8))
        ax.imshow(np.asarray(img), interpolation="nearest")
        _frame_axes(ax, True)
        bx = np.asarray(boxes[i], np.float32).reshape(-1, 4) if i < len(boxes) and boxes[i] is not None else np.zeros((0, 4))
        for j, (x1, y1, x2, y2) in enumerate(bx):
            if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
                continue
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, linewidth=2,
                                   edgecolor=OBJECT_COLORS[j % len(OBJECT_COLORS)]))
        where = f"frame #{k}" if 0 <= k < t else f"frame #{k} (outside the clip)"
        ax.set_title(f"K{i + 1}: {where}  ({len(bx)} box{'es' if len(bx) != 1 else ''})", fontsize=8)
        desc = descriptions[i] if i < len(descriptions) else ""
        ax.set_xlabel(_wrap(desc, 34, 4), fontsize=8, parse_math=False)
    if not keys:
        mid[0].text(0.5, 0.5, "no keyframes selected", ha="center", va="center", fontsize=11)
        mid[0].set_axis_off()

    if completion_text:
        ax = subs[2].subplots()
        ax.set_axis_off()
        ax.text(0.0, 1.0, _wrap(completion_text.replace("\n", " "), 150, 8), ha="left", va="top",
                family="monospace", fontsize=7, parse_math=False, transform=ax.transAxes)
    return _save(fig, out_png)


def _read_rows(path: str) -> list[dict]:
    """Rows of a ``metrics.jsonl``; a line cut short by a crash is skipped, not fatal."""
    rows = []
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict) and "step" in obj:
                rows.append(obj)
    return rows


def _run_labels(paths: Sequence[str]) -> list[str]:
    """The run directory's name per file (the file name when that is ambiguous)."""
    labels = [os.path.basename(os.path.dirname(os.path.abspath(p))) or p for p in paths]
    if len(set(labels)) < len(labels):
        labels = [os.path.relpath(p) for p in paths]
    return labels


def training_curves(metrics_jsonl: str | Sequence[str], out_png: str, keys: Sequence[str] | None = DEFAULT_KEYS,
                    labels: Sequence[str] | None = None) -> list[str]:
    """Plots each key present in any run over ``step`` (one subplot per key, runs overlaid with a legend).

    ``keys=None`` plots every numeric key found.  Returns the keys that were plotted; keys no run logs
    are skipped, and a run missing a key simply has no line in that subplot.
    """
    paths = [metrics_jsonl] if isinstance(metrics_jsonl, str) else list(metrics_jsonl)
    labels = list(labels) if labels is not None else _run_labels(paths)
    runs = [_read_rows(p) for p in paths]
    if keys is None:
        found: list[str] = []
        for rows in runs:
            for r in rows:
                found += [k for k, v in r.items() if k not in ("step", "time") and k not in found
                          and (v is None or isinstance(v, (int, float)))]
        keys = found
    present = [k for k in keys if any(r.get(k) is not None for rows in runs for r in rows)]
    n = max(len(present), 1)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.0 * nrows), dpi=80)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, key in zip(axes, present):
        for run_i, (rows, label) in enumerate(zip(runs, labels)):
            pts = sorted(((r["step"], r.get(key)) for r in rows if key in r), key=lambda p: p[0])
            if not pts:
                continue
            steps = np.array([p[0] for p in pts], np.float64)
            vals = np.array([np.nan if p[1] is None else p[1] for p in pts], np.float64)
            ax.plot(steps, vals, marker="." if len(pts) < 30 else None, label=label,
                    color=f"C{run_i % 10}", linewidth=1.4)
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
        if len(runs) > 1:
            ax.legend(fontsize=7)
    for ax in axes[len(present):]:
        ax.set_axis_off()
    if not present:
        axes[0].text(0.5, 0.5, "no matching metrics logged", ha="center", va="center")
    fig.tight_layout()
    _save(fig, out_png)
    return present
