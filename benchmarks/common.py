"""Shared benchmark helpers: warmup, interleaved repetitions, medians, environment info, ``--json`` output.

Timings on a shared machine are noisy, so every comparison runs its contenders side by side in one
process, interleaved (ours, theirs, ours, theirs, …), and reports medians and ratios of medians.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Sequence

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parser(description: str) -> argparse.ArgumentParser:
    """Argument parser with the flags every benchmark script takes (``--json``, ``--smoke``, ``--repeats``)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", default=None, metavar="PATH", help="write the figures to this JSON file")
    p.add_argument("--smoke", action="store_true", help="tiny shapes, one repeat: checks the script runs")
    p.add_argument("--repeats", type=int, default=None, help="timed repetitions per contender")
    return p


def block(x: Any) -> Any:
    """Waits for every JAX array in ``x`` (asynchronous dispatch must not leak out of a timing)."""
    import jax

    return jax.block_until_ready(x)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Wall seconds of one call of ``fn`` (results blocked on) and its result."""
    t0 = time.perf_counter()
    out = block(fn())
    return time.perf_counter() - t0, out


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Runs each contender ``warmup`` times, then ``repeats`` rounds of one call each, interleaved.

    Returns the per-round wall seconds of every contender (rounds alternate the order, so a noisy
    neighbour hits all contenders alike).
    """
    for _ in range(warmup):
        for fn in fns.values():
            timed(fn)
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(repeats):
        for k in names if r % 2 == 0 else names[::-1]:
            times[k].append(timed(fns[k])[0])
    return times


def summary(samples: Sequence[float]) -> dict[str, float]:
    """Median, min, max and count of a list of seconds."""
    return {"median_s": float(statistics.median(samples)), "min_s": float(min(samples)),
            "max_s": float(max(samples)), "n": len(samples)}


def loglog_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of log(y) on log(x): the fitted growth exponent ``y ~ x**slope``."""
    lx, ly = np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float))
    return float(np.polyfit(lx, ly, 1)[0])


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (falls back to ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment() -> dict[str, Any]:
    """Versions, CPU, core count, JAX device kind, load average and date of this run."""
    import jax

    env: dict[str, Any] = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "jax_backend": jax.default_backend(),
        "jax_devices": len(jax.devices()),
        "device_kind": jax.devices()[0].device_kind,
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "accelerator": "none (CPU only)" if jax.default_backend() == "cpu" else jax.default_backend(),
    }
    for mod in ("flax", "torch", "transformers"):
        if mod in sys.modules:
            env[mod] = getattr(sys.modules[mod], "__version__", "?")
    return env


def finish(result: dict[str, Any], json_path: str | None) -> dict[str, Any]:
    """Adds the environment, prints the result as JSON and writes it to ``json_path`` when given."""
    result = {**result, "environment": environment()}
    text = json.dumps(result, indent=2, sort_keys=False, default=_jsonable)
    print(text)
    if json_path:
        os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
        with open(json_path, "w") as f:
            f.write(text + "\n")
    return json.loads(text)


def _jsonable(x: Any) -> Any:
    """NumPy scalars / arrays / tuples as plain JSON values."""
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def table(rows: Sequence[dict[str, Any]], cols: Sequence[str]) -> str:
    """A small fixed-width text table of ``rows`` restricted to ``cols`` (floats with 4 significant digits)."""
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    cells = [[fmt(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)
