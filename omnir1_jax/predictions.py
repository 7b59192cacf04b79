"""Prediction files in the two standard layouts, plus per-expression records (resumable, written atomically).

``shared/reference/datasets_and_metrics.md`` §2.5:
  * VISA / MeViS / Ref-YouTube-VOS layout: ``<out>/Annotations/<video>/<exp_id>/<frame>.png``, grayscale 0/255.
  * Sa2VA layout: ``<out>/results.json`` = ``{video: {exp_id: {"prediction_masks": [COCO RLE per frame]}}}``.
Each expression also gets ``<out>/expressions/<video>/<exp_id>.json`` (keyframes, descriptions, boxes,
completion text and its RLE masks).  That record is written last, so its presence marks the expression done;
``results.json`` is assembled from the records (never rewritten per expression, so resuming stays linear).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from PIL import Image

from data_pipelines.formats import rle

ANNOTATIONS = "Annotations"
EXPRESSIONS = "expressions"
RESULTS_JSON = "results.json"


def _safe(name: str) -> str:
    """A path component for ``name``: rejects separators and parent references (ids come from data files)."""
    name = str(name)
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise ValueError(f"{name!r} cannot be used as a file or folder name")
    return name


def png_dir(out_dir: str, video: str, exp_id: str) -> str:
    """``<out>/Annotations/<video>/<exp_id>`` (VISA layout)."""
    return os.path.join(out_dir, ANNOTATIONS, _safe(video), _safe(exp_id))


def record_path(out_dir: str, video: str, exp_id: str) -> str:
    """``<out>/expressions/<video>/<exp_id>.json`` (per-expression record; its presence = done)."""
    return os.path.join(out_dir, EXPRESSIONS, _safe(video), _safe(exp_id) + ".json")


def _atomic_write_json(path: str, obj: Any) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp_", suffix=".json")
    with os.fdopen(fd, "w") as fh:
        json.dump(obj, fh)
    os.replace(tmp, path)


def write_png_masks(out_dir: str, video: str, exp_id: str, frame_names: Sequence[str], masks: np.ndarray) -> str:
    """Writes ``masks [T, H, W]`` (nonzero = foreground) as 0/255 PNGs named by ``frame_names``; atomic per folder."""
    masks = np.asarray(masks)
    if masks.ndim != 3 or masks.shape[0] != len(frame_names):
        raise ValueError(f"masks {masks.shape} do not match {len(frame_names)} frame names")
    final = png_dir(out_dir, video, exp_id)
    parent = os.path.dirname(final)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=".tmp_")
    for name, m in zip(frame_names, masks):
        Image.fromarray(((m != 0) * 255).astype(np.uint8), mode="L").save(os.path.join(tmp, _safe(name) + ".png"))
    if os.path.isdir(final):
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def read_png_masks(out_dir: str, video: str, exp_id: str, frame_names: Sequence[str]) -> np.ndarray:
    """Reads the VISA-layout PNGs of one expression as uint8 ``[T, H, W]`` in {0, 1} (nonzero = 1)."""
    d = png_dir(out_dir, video, exp_id)
    out = []
    for name in frame_names:
        path = os.path.join(d, _safe(name) + ".png")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"prediction {path} does not exist")
        out.append((np.asarray(Image.open(path).convert("L")) > 0).astype(np.uint8))
    return np.stack(out)


def encode_masks(masks: np.ndarray) -> list[dict]:
    """``[T, H, W]`` -> one COCO RLE (JSON-ready) per frame (Sa2VA ``prediction_masks``)."""
    return [rle.encode(m) for m in np.asarray(masks)]


def decode_masks(rles: Sequence[Mapping]) -> np.ndarray:
    """Inverse of :func:`encode_masks`: uint8 ``[T, H, W]`` in {0, 1}."""
    return np.stack([rle.decode(r) for r in rles])


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, (np.bool_,)):
        return bool(x)
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def write_expression(out_dir: str, video: str, exp_id: str, frame_names: Sequence[str], masks: np.ndarray,
                     info: Mapping[str, Any] | None = None) -> str:
    """Writes both layouts' data of one expression: PNGs first, then the record (with RLE masks) atomically."""
    write_png_masks(out_dir, video, exp_id, frame_names, masks)
    rec = {"video": str(video), "exp_id": str(exp_id), "frame_names": [str(f) for f in frame_names],
           **_jsonable(dict(info or {})), "prediction_masks": encode_masks(masks)}
    path = record_path(out_dir, video, exp_id)
    _atomic_write_json(path, rec)
    return path


def read_record(out_dir: str, video: str, exp_id: str) -> dict | None:
    """The per-expression record, or None when absent or unreadable (then the expression is redone)."""
    path = record_path(out_dir, video, exp_id)
    try:
        with open(path) as fh:
            rec = json.load(fh)
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and "prediction_masks" in rec else None


def is_done(out_dir: str, video: str, exp_id: str, frame_names: Sequence[str]) -> bool:
    """Both layouts of the expression exist: a readable record with one RLE per frame and every PNG."""
    rec = read_record(out_dir, video, exp_id)
    if rec is None or len(rec["prediction_masks"]) != len(frame_names):
        return False
    d = png_dir(out_dir, video, exp_id)
    return all(os.path.isfile(os.path.join(d, f"{n}.png")) for n in frame_names)


def iter_records(out_dir: str) -> Iterable[dict]:
    """Every per-expression record under ``out_dir`` (sorted by video, then exp_id)."""
    root = os.path.join(out_dir, EXPRESSIONS)
    if not os.path.isdir(root):
        return
    for video in sorted(os.listdir(root)):
        vdir = os.path.join(root, video)
        if not os.path.isdir(vdir):
            continue
        for name in sorted(os.listdir(vdir)):
            if name.endswith(".json") and not name.startswith(".tmp_"):
                rec = read_record(out_dir, video, name[: -len(".json")])
                if rec is not None:
                    yield rec


def write_results_json(out_dir: str, keys: Iterable[tuple[str, str]] | None = None) -> str:
    """Assembles the Sa2VA ``results.json`` from the records (all, or only ``keys`` = (video, exp_id))."""
    results: dict = {}
    recs = iter_records(out_dir) if keys is None else (read_record(out_dir, v, e) for v, e in keys)
    for rec in recs:
        if rec is None:
            continue
        results.setdefault(rec["video"], {})[rec["exp_id"]] = {"prediction_masks": rec["prediction_masks"]}
    path = os.path.join(out_dir, RESULTS_JSON)
    _atomic_write_json(path, results)
    return path


def read_results_json(path: str) -> dict[str, dict[str, np.ndarray]]:
    """Sa2VA ``results.json`` -> ``{video: {exp_id: uint8 [T, H, W]}}``."""
    with open(path) as fh:
        data = json.load(fh)
    return {v: {e: decode_masks(d["prediction_masks"]) for e, d in exps.items()} for v, exps in data.items()}
