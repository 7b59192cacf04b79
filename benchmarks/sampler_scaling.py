"""Sampler scaling: compile time and steady-state time of our group sampler as G, prompt length,
``max_new_tokens`` and video frames grow (tiny thinker), with a fitted log-log growth exponent per axis.

Each axis is swept around a base point with the others held.  Compile time is ``lower`` + ``compile`` of a
fresh jit (trace included); steady time is the median of repeated calls of the compiled executable.
Probes of known hotspots run at the base point: the top-p path (flat random-init logits take the bisection
fallback every step; a peaked head takes the top-k fast path), and recompiles (cache size after calls with
new values of the same shapes).

    python -m benchmarks.sampler_scaling --json benchmarks/results/sampler_scaling.json
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Any

if __package__ in (None, ""):  # run as a file: make ``benchmarks`` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common

TOP_P = 0.95


def setup(vision: bool, size: str = "tiny") -> tuple[Any, Any]:
    """The tiny (or ``small``: 8 x 512, 32k vocab) thinker, optionally with the tiny vision tower; random params."""
    from flax.core import meta

    from omnir1_jax.models.qwen_omni import Thinker, init_params, tiny
    from omnir1_jax.models.qwen_omni.vision_config import VisionConfig

    vis = dataclasses.replace(VisionConfig.tiny(), out_hidden_size=64) if vision else None
    dims = {} if size == "tiny" else dict(
        vocab_size=32768, hidden_size=512, intermediate_size=1408, num_hidden_layers=8, num_attention_heads=8,
        num_key_value_heads=2, head_dim=64, mrope_section=(8, 12, 12))
    model = Thinker(tiny(vision=vis, **dims))
    return model, meta.unbox(init_params(model, jax.random.PRNGKey(0)))


def text_inputs(model: Any, params: Any, p: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One text prompt of length ``p``: embeddings [1, P, D], positions [3, 1, P], mask [1, P]."""
    ids = jnp.asarray(np.random.RandomState(p).randint(0, model.config.vocab_size - 16, (1, p)), jnp.int32)
    emb = model.apply({"params": params}, ids, method="embed_tokens")
    pos = jnp.broadcast_to(jnp.arange(p, dtype=jnp.int32)[None, None], (3, 1, p))
    return emb, pos, jnp.ones((1, p), jnp.int32)


def sampler_cfg(g: int, t: int, **kw: Any) -> Any:
    from omnir1_jax.rollout.sampler import SamplerConfig

    return SamplerConfig(num_generations=g, max_new_tokens=t, top_p=kw.pop("top_p", TOP_P), **kw)


def measure(fn: Any, args: tuple, repeats: int) -> dict[str, float]:
    """Trace+lower and compile seconds of a fresh ``jax.jit(fn)``, then the median steady call."""
    jitted = jax.jit(fn)
    t0 = time.perf_counter()
    lowered = jitted.lower(*args)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    common.timed(lambda: compiled(*args))
    steady = [common.timed(lambda: compiled(*args))[0] for _ in range(repeats)]
    return {"lower_s": t1 - t0, "compile_s": t2 - t1, "steady_s": common.summary(steady)["median_s"]}


def text_point(model, params, g: int, p: int, t: int, repeats: int, **kw: Any) -> dict[str, Any]:
    """One grid point of the text sampler: fresh jit of ``sample`` with ``cfg`` closed over."""
    from omnir1_jax.rollout.sampler import sample

    cfg = sampler_cfg(g, t, **kw)
    emb, pos, mask = text_inputs(model, params, p)
    fn = lambda prm, e, ps, m, r: sample(model, prm, e, ps, m, r, cfg)  # noqa: E731
    res = measure(fn, (params, emb, pos, mask, jax.random.PRNGKey(0)), repeats)
    return {"G": g, "prompt_len": p, "max_new_tokens": t, **res,
            "steady_tokens_per_s": g * t / res["steady_s"]}


def video_point(model, params, frames: int, g: int, t: int, repeats: int) -> dict[str, Any]:
    """One grid point with a video prompt of ``frames`` frames (16 tokens per 2 frames) + 32 text tokens."""
    from omnir1_jax.rollout.sampler import generate

    c, v = model.config, model.config.vision
    grid = ((frames // v.temporal_patch_size, 8, 8),)
    n_vid = int(np.prod(grid[0])) // c.spatial_merge_size ** 2
    rs = np.random.RandomState(frames)
    ids = list(rs.randint(0, c.vocab_size - 16, 16)) + [c.vision_start_token_id] + [c.video_token_id] * n_vid \
        + [c.vision_end_token_id] + list(rs.randint(0, c.vocab_size - 16, 16))
    ids = jnp.asarray([ids], jnp.int32)
    pix = jnp.asarray(rs.randn(int(np.prod(grid[0])), v.patch_dim), jnp.float32)
    cfg = sampler_cfg(g, t)

    def fn(prm, i, px, r):
        inputs = {"input_ids": i, "attention_mask": jnp.ones_like(i), "pixel_values_videos": px,
                  "video_grid_thw": np.asarray(grid), "video_second_per_grid": (1.0,)}
        return generate(model, prm, inputs, r, cfg)

    res = measure(fn, (params, ids, pix, jax.random.PRNGKey(0)), repeats)
    return {"frames": frames, "G": g, "prompt_len": int(ids.shape[1]), "max_new_tokens": t, **res,
            "steady_tokens_per_s": g * t / res["steady_s"]}


def fit(rows: list[dict[str, Any]], axis: str) -> dict[str, float | None]:
    """Log-log slopes of steady and compile time along ``axis`` (None with fewer than two points)."""
    xs = [r[axis] for r in rows]
    if len(set(xs)) < 2:
        return {"steady_exponent": None, "compile_exponent": None}
    return {"steady_exponent": common.loglog_slope(xs, [r["steady_s"] for r in rows]),
            "compile_exponent": common.loglog_slope(xs, [r["lower_s"] + r["compile_s"] for r in rows])}


def probes(model, params, g: int, p: int, t: int, repeats: int, base_steady: float,
           smoke: bool = False) -> dict[str, Any]:
    """Hotspot probes at one point: top-p paths and recompiles (``smoke``: flat vs peaked only)."""
    from omnir1_jax.rollout.sampler import sample_jit

    out: dict[str, Any] = {}
    peaked = jax.tree_util.tree_map_with_path(
        lambda path, x: x * 40.0 if "lm_head" in jax.tree_util.keystr(path) else x, params)
    variants = {
        "top_p_0.95_flat_logits": (params, {}),
        "top_p_0.95_always_bisection": (params, {"top_p_candidates": 0}),
        "top_p_0.95_peaked_logits": (peaked, {}),
        "top_p_1.0_flat_logits": (params, {"top_p": 1.0}),
        "greedy": (params, {"greedy": True}),
    }
    out["top_p_0.95_flat_logits"] = base_steady  # the base point of the sweep
    for name, (prm, kw) in variants.items():
        if name in out or (smoke and name != "top_p_0.95_peaked_logits"):
            continue
        out[name] = text_point(model, prm, g, p, t, repeats, **kw)["steady_s"]
    # Fraction of next-token distributions (over the prompt's positions) whose nucleus is wider than the
    # top-64 cap: the sampler takes the bisection fallback for the whole batch on such a step.
    emb, pos, mask = text_inputs(model, params, p)
    for name, prm in (("flat", params), ("peaked", peaked)):
        hidden = model.apply({"params": prm}, emb, pos, mask, method="decode")[0]
        probs = jax.nn.softmax(model.apply({"params": prm}, hidden, method="logits"), -1)  # [1, P, V]
        head = jnp.sum(jax.lax.top_k(probs, 64)[0], -1)
        out[f"fallback_fraction_{name}"] = float(jnp.mean(head < TOP_P))
    # Recompiles: same shapes, new values (rng, params, prompt) must hit the jit cache.
    cfg = sampler_cfg(g, t)
    call = lambda prm, e, r: jax.block_until_ready(sample_jit(model, prm, e, pos, mask, r, cfg).tokens)  # noqa
    call(params, emb, jax.random.PRNGKey(0))
    before = sample_jit._cache_size()
    for seed in range(1, 4):
        call(jax.tree.map(lambda x: x * (1 + 0.01 * seed), params), emb + seed, jax.random.PRNGKey(seed))
    out["recompiles_over_3_calls"] = sample_jit._cache_size() - before
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Sweeps each axis around the base point, fits exponents, runs the probes; prints and writes JSON."""
    ap = common.parser(__doc__.splitlines()[0])
    ap.add_argument("--no-frames", action="store_true", help="skip the video-frames axis")
    ap.add_argument("--probes-only", default=None, choices=("tiny", "small"),
                    help="only the hotspot probes, on this config (G=8, prompt 64, T=32)")
    args = ap.parse_args(argv)
    smoke = args.smoke
    if args.probes_only:
        model, params = setup(vision=False, size=args.probes_only)
        g, p, t = 8, 64, 32
        base_steady = text_point(model, params, g, p, t, args.repeats or 3)["steady_s"]
        pr = probes(model, params, g, p, t, args.repeats or 3, base_steady)
        print("probes:", pr, file=sys.stderr)
        return common.finish({
            "benchmark": "sampler_probes", "config": args.probes_only, "base": dict(g=g, p=p, t=t), "probes": pr,
            "ratio": pr["top_p_0.95_flat_logits"] / pr["top_p_0.95_peaked_logits"],
            "settings": {"repeats": args.repeats or 3, "smoke": False}}, args.json)
    repeats = args.repeats or (1 if smoke else 3)
    if smoke:
        base, grids = dict(g=2, p=8, t=4), {"G": [1, 2], "prompt_len": [8], "max_new_tokens": [4]}
        frames = []
    else:
        base = dict(g=8, p=256, t=64)
        grids = {"G": [1, 4, 8, 16], "prompt_len": [64, 256, 1024], "max_new_tokens": [16, 64, 256]}
        frames = [] if args.no_frames else [4, 8, 16]
    key = {"G": "g", "prompt_len": "p", "max_new_tokens": "t"}
    model, params = setup(vision=False)
    cache: dict[tuple, dict[str, Any]] = {}
    axes: dict[str, Any] = {}
    for axis, values in grids.items():
        rows = []
        for v in values:
            pt = {**base, key[axis]: v}
            k = (pt["g"], pt["p"], pt["t"])
            if k not in cache:
                cache[k] = text_point(model, params, *k, repeats)
                print(f"  {axis}={v}: {cache[k]}", file=sys.stderr)
            rows.append(cache[k])
        axes[axis] = {"rows": rows, **fit(rows, axis)}
    if frames:
        vmodel, vparams = setup(vision=True)
        rows = [video_point(vmodel, vparams, f, base["g"], 16, repeats) for f in frames]
        axes["frames"] = {"rows": rows, **fit(rows, "frames")}
    base_steady = cache[(base["g"], base["p"], base["t"])]["steady_s"]
    pr = probes(model, params, base["g"], base["p"], base["t"], repeats, base_steady, smoke)
    for axis, a in axes.items():
        fmt = lambda e: "n/a" if e is None else f"{e:.2f}"  # noqa: E731
        print(f"\n{axis}: steady ~ x^{fmt(a['steady_exponent'])}, compile ~ x^{fmt(a['compile_exponent'])}",
              file=sys.stderr)
        print(common.table(a["rows"], [axis, "lower_s", "compile_s", "steady_s", "steady_tokens_per_s"]),
              file=sys.stderr)
    print("\nprobes:", pr, file=sys.stderr)
    result = {
        "benchmark": "sampler_scaling", "base": base, "top_p": TOP_P, "axes": axes, "probes": pr,
        # top-p on flat (random-init) logits vs a peaked head: what the bisection fallback costs.
        "ratio": pr["top_p_0.95_flat_logits"] / pr["top_p_0.95_peaked_logits"],
        "settings": {"repeats": repeats, "smoke": smoke, "config": "tiny (2 x 64, vocab 512)"},
    }
    return common.finish(result, args.json)


if __name__ == "__main__":
    main()
