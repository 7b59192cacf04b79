"""``omnir1-plan``: per-device memory of the real GRPO step from XLA's memory analysis (DESIGN §5).

Builds the step of a config (thinker + SAM2 presets, optimizer, shardings, batch geometry) with ABSTRACT
shapes only (``jax.eval_shape`` / ``jax.ShapeDtypeStruct(..., sharding=...)``: no weights, nothing
allocated), lowers and compiles :class:`~omnir1_jax.rl.grpo.GRPOStep` on a simulated mesh of N CPU devices
and reads ``compiled.memory_analysis()``::

    omnir1-plan --config experiments/revos_omni_r1_7b.py:internal --mesh data=1,fsdp=8,tensor=1 \
        --mesh data=1,fsdp=4,tensor=2 --split --json plan.json [--layers 2] [--config.rl.prompts_per_step=16]

Each mesh runs in a subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (set before jax is
imported there).  ``--layers N`` plans the 7B shape with N decoder layers (and 2N), then extrapolates every
figure linearly in the layer count to the preset's depth; both measured and extrapolated rows are printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Sequence

MEM_FIELDS = ("argument", "output", "temp", "generated_code", "alias")
GIB = 1024 ** 3


# ------------------------------------------------------------------------------------------ CLI parsing
def parse_mesh(text: str) -> list[tuple[str, int]]:
    """``"data=1,fsdp=8,tensor=1"`` -> ``[("data", 1), ("fsdp", 8), ("tensor", 1)]`` (no -1: sizes are explicit)."""
    out = []
    for part in text.split(","):
        name, _, size = part.partition("=")
        if not size or int(size) < 1:
            raise ValueError(f"--mesh {text!r}: expected axis=size pairs with sizes >= 1")
        out.append((name.strip(), int(size)))
    return out


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["--config.rl.beta=0.0", ...]`` -> ``{"rl.beta": 0.0}`` (:func:`omnir1_jax.config.parse_overrides`)."""
    from omnir1_jax.config import parse_overrides as parse

    for item in items:
        if not item.startswith("--config.") or "=" not in item:
            raise ValueError(f"unrecognised argument {item!r}; overrides look like --config.rl.beta=0.0")
    return parse([item[len("--config."):] for item in items])


# ------------------------------------------------------------------------------------------ the step, abstractly
def batch_geometry(config, thinker_cfg, sam_cfg) -> dict:
    """Static batch geometry from the config: B, P, F, video / grounding grids, SAM2 side, O, mask side."""
    from data_pipelines import preprocess as pp

    vis, d = thinker_cfg.vision, config.data
    factor = vis.patch_size * vis.spatial_merge_size
    h, w = d.ground_hw
    vh, vw = pp.smart_resize(h, w, factor, d.video_min_pixels, d.video_max_pixels)  # a clip of ground_hw's shape
    f = d.max_frames  # GRPO batches have one frame count (min_frames == max_frames at training time)
    tp = vis.temporal_patch_size
    gh, gw = pp.smart_resize(h, w, factor, d.ground_min_pixels, d.ground_max_pixels)
    return dict(prompts=config.rl.prompts_per_step, generations=config.rl.num_generations,
                prompt_len=config.rl.max_prompt_length, new_tokens=config.rl.max_new_tokens, frames=f,
                video_grid=(-(-f // tp), vh // vis.patch_size, vw // vis.patch_size),
                video_second_per_grid=tp / d.fps, hires_grid=(1, gh // vis.patch_size, gw // vis.patch_size),
                sam_size=sam_cfg.image_size, objects=d.max_objects, mask_size=config.segmenter.mask_size,
                patch_dim=vis.patch_dim)


def abstract_batch(geo: dict, mesh) -> dict:
    """``ShapeDtypeStruct``s (batch-sharded like ``task.device_put_batch``) of every array the step reads."""
    import jax
    import numpy as np

    from omnir1_jax.parallel import batch_sharding

    b, f, o, m, pd = geo["prompts"], geo["frames"], geo["objects"], geo["mask_size"], geo["patch_dim"]
    n_vid, n_hi, s = math.prod(geo["video_grid"]), math.prod(geo["hires_grid"]), geo["sam_size"]
    shapes = {
        "input_ids": ((b, geo["prompt_len"]), np.int32), "attention_mask": ((b, geo["prompt_len"]), np.int32),
        "pixel_values_videos": ((b * n_vid, pd), np.float32), "hires_patches": ((b, f, n_hi, pd), np.float32),
        "ground_ratio": ((b, 2), np.float32), "sam_pixels": ((b, f, 3, s, s), np.float32),
        "sam_scale": ((b, 2), np.float32), "gt_masks": ((b, o, f, m, m), np.bool_),
        "gt_boxes": ((b, o, f, 4), np.float32), "obj_valid": ((b, o), np.bool_), "num_frames": ((b,), np.int32),
    }
    return {k: jax.ShapeDtypeStruct(shp, dt, sharding=batch_sharding(mesh, len(shp))) for k, (shp, dt) in shapes.items()}


def _abstract(tree, shardings):
    import jax

    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), tree, shardings)


def bytes_per_device(tree) -> int:
    """Sum over leaves of the bytes of one device's shard (from each leaf's sharding)."""
    import jax
    import numpy as np

    total = 0
    for leaf in jax.tree_util.tree_leaves(tree):
        shape = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
        total += int(np.prod(shape, dtype=np.int64)) * np.dtype(leaf.dtype).itemsize
    return total


def memory_stats(compiled) -> dict:
    """XLA's per-device memory analysis as a dict of bytes; ``total = arg + out + temp + code - alias``."""
    ma = compiled.memory_analysis()
    out = {k: int(getattr(ma, f"{k}_size_in_bytes")) for k in MEM_FIELDS}
    out["total"] = out["argument"] + out["output"] + out["temp"] + out["generated_code"] - out["alias"]
    peak = getattr(ma, "peak_memory_in_bytes", None)
    if peak:
        out["peak"] = int(peak)
    return out


def build_inputs(config, mesh, layers: int | None = None) -> dict:
    """Models, settings, optimizer and abstract (sharded) state / reference / SAM2 params / batch of a config."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec as P

    from omnir1_jax.models.qwen_omni import Thinker, init_params
    from omnir1_jax.models.sam2 import Sam2Config, Sam2VideoModel
    from omnir1_jax.parallel import get_rules, unbox
    from omnir1_jax.rl.grpo_rollout import StepModels
    from omnir1_jax.rl.grpo_settings import BatchShapes, GRPOSettings
    from omnir1_jax.rl.state import TrainState
    from omnir1_jax.rl.task import build_thinker, setup_policy
    from omnir1_jax.rollout.grounding import build_spec
    from omnir1_jax.text import SyntheticTokenizer

    if config.data.dataset == "refavs":
        raise NotImplementedError("omnir1-plan plans the VOS step (ReVOS/MeViS); RefAVS audio inputs are not built")
    rules = get_rules("train")
    # The real tokenizer only fixes a few constant tables (byte table [V, MB]); shapes come from the model.
    tok = SyntheticTokenizer() if not (config.model.tokenizer_dir or config.model.hf_dir) else None
    if tok is None:
        from omnir1_jax.rl.task import build_tokenizer

        tok = build_tokenizer(config)
    model, _, _ = build_thinker(config, tok)
    if layers is not None:
        model = Thinker(dataclasses.replace(model.config, num_hidden_layers=int(layers)), dtype=model.dtype,
                        param_dtype=model.param_dtype, remat=model.remat)
    init_fn = lambda rng: init_params(model, rng)  # noqa: E731
    setup = setup_policy(config, mesh, init_fn, None, 1000, rules)
    abstract_params = unbox(jax.eval_shape(init_fn, jax.random.key(0)))
    abstract_state = jax.eval_shape(
        lambda p: TrainState(step=jnp.zeros((), jnp.int32), params=p, opt_state=setup.tx.init(p),
                             rng=jax.random.key_data(jax.random.key(0))), abstract_params)
    state = _abstract(abstract_state, setup.state_shardings)
    needs_ref = config.rl.beta > 0 or config.rl.grounder == "reference"
    ref = _abstract(abstract_params, setup.param_shardings) if needs_ref else None
    sam = Sam2VideoModel(Sam2Config.preset(config.segmenter.preset))
    size = sam.cfg.image_size
    sam_abs = jax.eval_shape(lambda k: unbox(sam.init(k, jnp.zeros((1, 3, size, size)),
                                                      method=Sam2VideoModel.init_all)["params"]), jax.random.key(0))
    rep = NamedSharding(mesh, P())
    sam_params = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rep), sam_abs)
    geo = batch_geometry(config, model.config, sam.cfg)
    n_data = mesh.shape["data"] * mesh.shape["fsdp"]
    if geo["prompts"] % n_data:
        raise ValueError(f"rl.prompts_per_step={geo['prompts']} must be divisible by the data*fsdp mesh size "
                         f"{n_data} (override it with --config.rl.prompts_per_step=...)")
    batch = abstract_batch(geo, mesh)
    shapes = BatchShapes.from_host(video_grid_thw=[geo["video_grid"]] * geo["prompts"],
                                   hires_grid_thw=geo["hires_grid"],
                                   video_second_per_grid=[geo["video_second_per_grid"]] * geo["prompts"])
    c = model.config
    tiny = config.model.preset == "tiny"
    stop_ids = tuple(tok.eos_ids) if tiny else (c.eos_token_id, c.pad_token_id)
    pad_id = tok.pad_id if tiny else c.pad_token_id
    s = GRPOSettings.from_config(config, task="vos", stop_ids=stop_ids, pad_id=pad_id)
    spec = build_spec(tok, geo["hires_grid"], max_desc_tokens=32, vocab_size=c.vocab_size)
    return dict(models=StepModels(model, sam), settings=s, spec=spec, tx=setup.tx, rules=rules,
                state_shardings=setup.state_shardings, state=state, ref=ref, sam=sam_params, batch=batch,
                shapes=shapes, geometry=geo, layers=c.num_hidden_layers)


def plan_mesh(config, mesh_spec: Sequence[tuple[str, int]], split: bool = False, layers: int | None = None,
              compile: bool = True, fused: bool = True) -> dict:
    """Lowers + compiles the fused step (and the split halves) on ``mesh_spec``; bytes per device.

    ``compile=False`` only computes the state bytes from the shardings (seconds instead of minutes).
    """
    import jax

    from omnir1_jax.parallel import make_mesh, mesh_rules, replicated
    from omnir1_jax.rl.grpo import GRPOStep

    n = math.prod(size for _, size in mesh_spec)
    if jax.device_count() < n:
        raise RuntimeError(f"mesh {dict(mesh_spec)} needs {n} devices, jax sees {jax.device_count()}: set "
                           f"XLA_FLAGS=--xla_force_host_platform_device_count={n} before importing jax")
    mesh = make_mesh(mesh_spec, devices=jax.devices()[:n])
    t0 = time.time()
    x = build_inputs(config, mesh, layers)
    st = x["state"]
    res = {"mesh": dict(mesh.shape), "devices": n, "layers": x["layers"], "geometry": x["geometry"],
           "state_bytes_per_device": {"params": bytes_per_device(st.params),
                                      "opt_state": bytes_per_device(st.opt_state),
                                      "ref_params": bytes_per_device(x["ref"]) if x["ref"] is not None else 0,
                                      "sam_params": bytes_per_device(x["sam"]),
                                      "batch": bytes_per_device(x["batch"])},
           "compiled": {}, "compile_seconds": {}}
    step = GRPOStep(x["models"], x["settings"], x["spec"], x["tx"], split=False, state_shardings=x["state_shardings"])
    if not compile:
        res["seconds"] = round(time.time() - t0, 1)
        return res
    with mesh_rules(mesh, x["rules"]):
        if fused:
            t1 = time.time()
            compiled = step._fused.lower(x["shapes"], st, x["ref"], x["sam"], x["batch"], None).compile()
            res["compiled"]["fused"] = memory_stats(compiled)
            res["compile_seconds"]["fused"] = round(time.time() - t1, 1)
        if split:
            rng_abs = jax.eval_shape(GRPOStep.step_rng, st)
            rng = jax.ShapeDtypeStruct(rng_abs.shape, rng_abs.dtype, sharding=replicated(mesh))
            t1 = time.time()
            ro_c = step.rollout.lower(x["shapes"], st.params, x["ref"], x["sam"], x["batch"], rng).compile()
            res["compiled"]["rollout"] = memory_stats(ro_c)
            ro_abs = jax.eval_shape(lambda *a: step.rollout(x["shapes"], *a), st.params, x["ref"], x["sam"],
                                    x["batch"], rng)
            ro = _abstract(ro_abs, ro_c.output_shardings)
            upd = step.update.lower(st, x["ref"], x["batch"], ro).compile()
            res["compiled"]["update"] = memory_stats(upd)
            res["compile_seconds"]["split"] = round(time.time() - t1, 1)
    res["seconds"] = round(time.time() - t0, 1)
    return res


def extrapolate(a: dict, b: dict, target_layers: int) -> dict:
    """Linear in the decoder depth: every byte count of ``a`` (La layers) and ``b`` (Lb) taken to ``target``."""
    la, lb = a["layers"], b["layers"]

    def lin(u, v):
        if isinstance(u, dict):
            return {k: lin(u[k], v[k]) for k in u}
        return int(round(u + (v - u) * (target_layers - la) / (lb - la)))

    out = {k: a[k] for k in ("mesh", "devices", "geometry")}
    out.update(layers=target_layers, extrapolated_from=[la, lb],
               state_bytes_per_device=lin(a["state_bytes_per_device"], b["state_bytes_per_device"]),
               compiled={k: lin(a["compiled"][k], b["compiled"][k]) for k in a["compiled"]})
    return out


# ------------------------------------------------------------------------------------------ report
def format_table(results: Sequence[dict]) -> str:
    """Markdown table, one row per (mesh, program): GiB (MiB for small models) per device."""
    big = max([m["total"] for r in results for m in r["compiled"].values()]
              + [sum(r["state_bytes_per_device"].values()) for r in results] + [0])
    unit, scale = ("GiB", GIB) if big >= GIB else ("MiB", 1024 ** 2)

    def _gib(v: int) -> str:
        return f"{v / scale:.2f}"

    head = (f"| mesh | layers | kind | program | params | opt state | ref | SAM2 | argument | output | temp "
            f"| code | alias | total ({unit} per device) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        mesh = ",".join(f"{k}={v}" for k, v in r["mesh"].items())
        kind = "extrapolated" if "extrapolated_from" in r else "measured"
        sb = r["state_bytes_per_device"]
        state = f"| {_gib(sb['params'])} | {_gib(sb['opt_state'])} | {_gib(sb['ref_params'])} | {_gib(sb['sam_params'])} "
        if not r["compiled"]:
            lines.append(f"| {mesh} | {r['layers']} | {kind} | (not compiled) {state}| - | - | - | - | - | - |")
        for prog, m in r["compiled"].items():
            mem = " | ".join(_gib(m[k]) for k in MEM_FIELDS)
            lines.append(f"| {mesh} | {r['layers']} | {kind} | {prog} {state}| {mem} | **{_gib(m['total'])}** |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ entry points
def _load(config_path: str, overrides: dict):
    from omnir1_jax.config import load_config

    return load_config(config_path, overrides=overrides)


def _worker(args, overrides: dict) -> None:
    """Child process: plans one mesh (devices already forced) and writes the JSON list to ``args.out``."""
    config = _load(args.config, overrides)
    spec = parse_mesh(args.mesh[0])
    if args.layers is None:
        results = [plan_mesh(config, spec, args.split, compile=not args.no_compile, fused=not args.no_fused)]
    else:
        a = plan_mesh(config, spec, args.split, args.layers, compile=not args.no_compile, fused=not args.no_fused)
        b = plan_mesh(config, spec, args.split, 2 * args.layers, compile=not args.no_compile, fused=not args.no_fused)
        full = _full_layers(config)
        results = [a, b, extrapolate(a, b, full)]
    with open(args.out, "w") as fh:
        json.dump(results, fh)


def _full_layers(config) -> int:
    from omnir1_jax.rl.task import build_thinker
    from omnir1_jax.text import SyntheticTokenizer

    return build_thinker(config, SyntheticTokenizer())[0].config.num_hidden_layers


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="omnir1-plan", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="experiments/<file>.py[:arg]")
    p.add_argument("--mesh", action="append", default=[], help="data=1,fsdp=8,tensor=1 (repeatable)")
    p.add_argument("--split", action="store_true", help="also compile the split halves (rollout, update)")
    p.add_argument("--no-fused", dest="no_fused", action="store_true", help="skip the fused step (with --split)")
    p.add_argument("--layers", type=int, default=None, help="plan N and 2N decoder layers, extrapolate linearly")
    p.add_argument("--no-compile", dest="no_compile", action="store_true",
                   help="only the params / optimizer / batch bytes per device from the shardings")
    p.add_argument("--json", default=None, help="write all results to this JSON file")
    p.add_argument("--timeout", type=float, default=None, help="seconds per mesh subprocess")
    p.add_argument("--_worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    return p


def run(argv: Sequence[str] | None = None) -> int:
    """Console entry: one subprocess per mesh (forced CPU device count), then the table and the JSON."""
    args, rest = _parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    overrides = parse_overrides(rest)
    if args._worker:
        _worker(args, overrides)
        return 0
    meshes = args.mesh or ["data=1,fsdp=8,tensor=1"]
    results: list[dict] = []
    failed = []
    for mesh in meshes:
        n = math.prod(size for _, size in parse_mesh(mesh))
        env = dict(os.environ, JAX_PLATFORMS="cpu",
                   XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={n}").strip())
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "plan.json")
            cmd = [sys.executable, "-m", "omnir1_jax.plan", "--_worker", "--out", out, "--config", args.config,
                   "--mesh", mesh] + (["--split"] if args.split else []) + \
                  (["--no-compile"] if args.no_compile else []) + (["--no-fused"] if args.no_fused else []) + \
                  (["--layers", str(args.layers)] if args.layers is not None else []) + list(rest)
            print(f"[omnir1-plan] {mesh}: lowering + compiling on {n} simulated CPU devices ...", flush=True)
            try:
                proc = subprocess.run(cmd, env=env, timeout=args.timeout)
                ok = proc.returncode == 0 and os.path.exists(out)
            except subprocess.TimeoutExpired:
                ok = False
            if not ok:
                failed.append(mesh)
                print(f"[omnir1-plan] {mesh}: FAILED", flush=True)
                continue
            with open(out) as fh:
                results += json.load(fh)
    print(format_table(results))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"config": args.config, "overrides": overrides, "split": args.split, "layers": args.layers,
                       "failed": failed, "results": results}, fh, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run())
