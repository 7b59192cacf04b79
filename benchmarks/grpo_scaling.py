"""Scaling of our one-jit GRPO step: compile time and steady step time vs G and ``max_new_tokens``.

Each (G, T) case builds the step of ``benchmarks/grpo_step.py`` (tiny thinker + tiny SAM2, 2 prompts),
times the first call (compile + run) and the median of steady calls, and fits log-log slopes of the steady
time against G (at the smallest T) and against T (at the smallest G).  ``--grid full`` runs every pair of
G x T; the default ``axes`` runs the two axes through the smallest case (fewer compiles).

    python -m benchmarks.grpo_scaling --json benchmarks/results/grpo_scaling.json
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

if __package__ in (None, ""):  # run as a file: make ``benchmarks`` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common


def cases(gs: list[int], ts: list[int], grid: str) -> list[tuple[int, int]]:
    """(G, T) pairs: the full grid, or the two axes through (min G, min T)."""
    if grid == "full":
        return [(g, t) for g in gs for t in ts]
    g0, t0 = min(gs), min(ts)
    return sorted({(g, t0) for g in gs} | {(g0, t) for t in ts})


def time_case(G: int, T: int, repeats: int, B: int = 2) -> dict[str, Any]:
    """First-call and steady seconds of the fused step at (G, T)."""
    from benchmarks.grpo_step import build_env, ours_fns

    e = build_env(G, T, B)
    step = ours_fns(e, split=False)["step"]
    first_s, _ = common.timed(step)
    steady = common.interleaved({"step": step}, repeats, warmup=0)["step"]
    med = common.summary(steady)["median_s"]
    return {"G": G, "max_new_tokens": T, "completions": B * G, "first_call_s": first_s,
            "compile_s": max(first_s - med, 0.0), "step_s": med, "step": common.summary(steady),
            "tokens_per_s": B * G * T / med}


def slopes(rows: list[dict[str, Any]]) -> dict[str, float]:
    """log-log slopes of step and compile time vs G (at min T) and vs T (at min G), where >= 2 points."""
    out = {}
    g0, t0 = min(r["G"] for r in rows), min(r["max_new_tokens"] for r in rows)
    for axis, fixed, key in (("G", "max_new_tokens", t0), ("max_new_tokens", "G", g0)):
        sel = sorted((r for r in rows if r[fixed] == key), key=lambda r: r[axis])
        if len({r[axis] for r in sel}) >= 2:
            for what in ("step_s", "compile_s"):
                ys = [max(r[what], 1e-6) for r in sel]
                out[f"{what}_vs_{axis}"] = common.loglog_slope([r[axis] for r in sel], ys)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the cases, prints a table with the fitted slopes, returns / writes the JSON result."""
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--G", default="2,4,8")
    p.add_argument("--max-new-tokens", default="16,32,64")
    p.add_argument("--grid", choices=("axes", "full"), default="axes")
    args = p.parse_args(argv)
    gs = [2] if args.smoke else [int(v) for v in args.G.split(",")]
    ts = [4, 8] if args.smoke else [int(v) for v in args.max_new_tokens.split(",")]
    repeats = args.repeats or (1 if args.smoke else 3)
    rows = []
    for g, t in cases(gs, ts, args.grid):
        t0 = time.perf_counter()
        rows.append(time_case(g, t, repeats))
        print(f"[grpo_scaling] G={g} T={t} done in {time.perf_counter() - t0:.1f}s: {rows[-1]}", file=sys.stderr)
    fit = slopes(rows)
    print(common.table(rows, ["G", "max_new_tokens", "completions", "compile_s", "step_s", "tokens_per_s"]),
          file=sys.stderr)
    print(fit, file=sys.stderr)
    return common.finish({"benchmark": "grpo_scaling", "grid": args.grid, "repeats": repeats, "rows": rows,
                          "slopes": fit}, args.json)


if __name__ == "__main__":
    main()
