"""Metric logging researchers can plot: ``metrics.jsonl`` (one object per logged step), TensorBoard
event files (tensorboardX, no TensorFlow needed) and a progress bar with ETA."""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Mapping

import numpy as np


def _to_float(v: Any) -> float | None:
    try:
        f = float(np.asarray(v))
    except (TypeError, ValueError):
        return None
    return f


class MetricWriter:
    """Appends metrics to ``<workdir>/metrics.jsonl`` and TensorBoard events under ``<workdir>/tb``.

    Only process 0 writes (multi-host runs log once).  Non-finite values are written as ``null`` in
    JSON (strict JSON has no NaN) and skipped in TensorBoard.
    """

    def __init__(self, workdir: str, *, tensorboard: bool = True, enabled: bool = True, filename: str = "metrics.jsonl"):
        self.enabled = enabled
        self.path = os.path.join(workdir, filename)
        self._tb = None
        if enabled:
            os.makedirs(workdir, exist_ok=True)
            if tensorboard:
                from tensorboardX import SummaryWriter

                self._tb = SummaryWriter(os.path.join(workdir, "tb"))

    def write(self, step: int, metrics: Mapping[str, Any]) -> dict:
        """Logs one step; returns the row as written."""
        row: dict[str, Any] = {"step": int(step), "time": time.time()}
        for k, v in metrics.items():
            f = _to_float(v)
            if f is None:
                continue
            row[k] = f if math.isfinite(f) else None
        if not self.enabled:
            return row
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for k, v in row.items():
                if k not in ("step", "time") and v is not None:
                    self._tb.add_scalar(k, v, step)
            self._tb.flush()
        return row

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_jsonl(path: str) -> list[dict]:
    """Reads a metrics file written by :class:`MetricWriter`."""
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def truncate_jsonl_after(path: str, step: int) -> None:
    """Drops rows logged after ``step`` (used when resuming from an older checkpoint)."""
    if not os.path.exists(path):
        return
    rows = [r for r in read_jsonl(path) if r.get("step", 0) <= step]
    with open(path, "w") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
