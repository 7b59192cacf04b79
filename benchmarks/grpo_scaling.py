"""Scaling of our one-jit GRPO step: compile time and steady step time as G, T, frames and prompt length grow.

Each case builds the step of ``benchmarks/grpo_step.py`` (tiny SAM2, 2 prompts, ``--thinker tiny`` = the test
thinker, 2 layers x 64, or ``small`` = 8 layers x 512 with the same towers and vocabulary), times the first
call (compile + run) and the median of steady calls, and fits log-log slopes of the steady and compile time
along each axis through the base case (the other axes at their base values):

* ``G`` (generations per prompt), ``max_new_tokens`` (T),
* ``frames`` (F: low-res video grid F/2 x 4 x 4, F high-res candidate frames, F SAM2 frames, F-frame masks),
* ``prompt_extra`` (longer query: ``prompt_extra // 2`` more words " the", two tokens each in the synthetic
  tokenizer; the VOS template quotes the query twice, so the prompt grows by about 2 x ``prompt_extra`` from
  ~760 tokens; each row records the real prompt length and the slope is fitted against it).

``--grid full`` runs every combination of the G and T lists instead (the old G x T grid).

    python -m benchmarks.grpo_scaling --json benchmarks/results/grpo_scaling.json
    python -m benchmarks.grpo_scaling --thinker small --axes none --json benchmarks/results/grpo_scaling_small.json
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from typing import Any

if __package__ in (None, ""):  # run as a file: make ``benchmarks`` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common

AXES = ("G", "max_new_tokens", "frames", "prompt_extra")
THINKERS = {"tiny": {"hidden": 64, "layers": 2}, "small": {"hidden": 512, "layers": 8}}


def cases(values: dict[str, list[int]], base: dict[str, int], axes: list[str], grid: str) -> list[dict[str, int]]:
    """The base case plus one line per axis through it, or (``grid == "full"``) every G x T pair at base F, P."""
    if grid == "full":
        return [dict(base, G=g, max_new_tokens=t) for g, t in itertools.product(values["G"], values["max_new_tokens"])]
    out = [dict(base)]
    for axis in axes:
        out += [dict(base, **{axis: v}) for v in values[axis] if v != base[axis]]
    return out


def time_case(case: dict[str, int], repeats: int, thinker: str, B: int = 2) -> dict[str, Any]:
    """First-call and steady seconds of the fused step for one case."""
    from benchmarks.grpo_step import QUERY, build_env, ours_fns

    query = QUERY + " the" * (case["prompt_extra"] // 2)
    e = build_env(case["G"], case["max_new_tokens"], B, frames=case["frames"], query=query, **THINKERS[thinker])
    step = ours_fns(e, split=False)["step"]
    first_s, _ = common.timed(step)
    steady = common.interleaved({"step": step}, repeats, warmup=0)["step"]
    med = common.summary(steady)["median_s"]
    return {**case, "thinker": thinker, "prompt_len": e["prompt_len"], "completions": B * case["G"],
            "first_call_s": first_s, "compile_s": max(first_s - med, 0.0), "step_s": med,
            "step": common.summary(steady), "tokens_per_s": B * case["G"] * case["max_new_tokens"] / med}


def slopes(rows: list[dict[str, Any]], base: dict[str, int]) -> dict[str, float]:
    """log-log slopes of step and compile time along each axis through the base case, where >= 2 points."""
    out = {}
    for axis in AXES:
        line = [r for r in rows if all(r[a] == base[a] for a in AXES if a != axis)]
        x_of = (lambda r: r["prompt_len"]) if axis == "prompt_extra" else (lambda r, a=axis: r[a])
        line.sort(key=x_of)
        if len({x_of(r) for r in line}) >= 2:
            name = "prompt_len" if axis == "prompt_extra" else axis
            for what in ("step_s", "compile_s"):
                out[f"{what}_vs_{name}"] = common.loglog_slope([x_of(r) for r in line],
                                                               [max(r[what], 1e-6) for r in line])
    return out


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the cases, prints a table with the fitted slopes, returns / writes the JSON result."""
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--thinker", choices=tuple(THINKERS), default="tiny")
    p.add_argument("--G", default="2,4,8")
    p.add_argument("--max-new-tokens", default="16,32,64")
    p.add_argument("--frames", default="4,8,16")
    p.add_argument("--prompt-extra", default="0,256,768", help="extra prompt tokens (in query words)")
    p.add_argument("--base", default="G=4,max_new_tokens=16,frames=4,prompt_extra=0")
    p.add_argument("--axes", default=",".join(AXES), help="axes to vary through the base case ('none': base only)")
    p.add_argument("--grid", choices=("axes", "full"), default="axes")
    args = p.parse_args(argv)
    base = {k: int(v) for k, v in (kv.split("=") for kv in args.base.split(","))}
    values = {"G": _ints(args.G), "max_new_tokens": _ints(args.max_new_tokens), "frames": _ints(args.frames),
              "prompt_extra": _ints(args.prompt_extra)}
    axes = [] if args.axes == "none" else args.axes.split(",")
    if args.smoke:
        base, values, axes = {"G": 2, "max_new_tokens": 4, "frames": 2, "prompt_extra": 0}, {"G": [2],
                              "max_new_tokens": [4, 8], "frames": [2], "prompt_extra": [0]}, ["max_new_tokens"]
    unknown = set(axes) - set(AXES) | set(base) ^ set(AXES)
    if unknown:
        p.error(f"unknown or missing axis names {sorted(unknown)}; axes are {AXES}")
    repeats = args.repeats or (1 if args.smoke else 3)
    rows = []
    for case in cases(values, base, axes, args.grid):
        t0 = time.perf_counter()
        rows.append(time_case(case, repeats, args.thinker))
        r = rows[-1]
        print(f"[grpo_scaling] {case} P={r['prompt_len']}: compile {r['compile_s']:.1f}s, step {r['step_s']:.3f}s "
              f"({time.perf_counter() - t0:.0f}s)", file=sys.stderr)
    fit = slopes(rows, base)
    print(common.table(rows, ["thinker", "G", "max_new_tokens", "frames", "prompt_len", "completions", "compile_s",
                              "step_s", "tokens_per_s"]), file=sys.stderr)
    print(fit, file=sys.stderr)
    return common.finish({"benchmark": "grpo_scaling", "thinker": args.thinker, "grid": args.grid, "base": base,
                          "repeats": repeats, "rows": rows, "slopes": fit}, args.json)


if __name__ == "__main__":
    main()
