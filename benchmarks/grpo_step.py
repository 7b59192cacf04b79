"""Full GRPO step: our one-jit step (``GRPOStep``) vs the Omni-R1 recipe in PyTorch, same weights and inputs.

Ours: sample G completions -> in-graph parse -> frozen-reference grounding -> SAM2 -> rewards -> update, one
``jax.jit``; SAM2 tracks the prompted objects in ``--sam-tracks`` slots per clip (default G, the torch side's
one object per completion; 0 = all G x O).  Theirs (``benchmarks/torch_recipe.py``): transformers
``generate`` -> host decode/regex -> batched greedy grounding ``generate`` -> one ``Sam2VideoModel`` session
per completion -> host rewards -> reference log-probs + forward/backward + ``torch.optim.AdamW``.  Same tiny
thinker (exported with ``export_hf``), same tiny SAM2 (``flax_to_hf_state_dict``), same prompts / pixels,
exactly ``T`` policy tokens on both sides (no stop token).  Steps are interleaved; medians; our compile time
(first call) apart.  Our rollout half vs update half comes from ``GRPOStep(split=True)``.

    python -m benchmarks.grpo_step --json benchmarks/results/grpo_step.json
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from typing import Any

if __package__ in (None, ""):  # run as a file: make ``benchmarks`` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common

F, S, M = 4, 64, 16  # frames, SAM2 input side, reward-mask side
VGRID, HGRID = (2, 4, 4), (1, 4, 4)
QUERY = "the red circle"


def video_grid(frames: int) -> tuple[int, int, int]:
    """The low-res video grid of a clip of ``frames`` frames (temporal patch 2, 4 x 4 patches)."""
    return (max(frames // 2, 1),) + VGRID[1:]


def host_batch(tok: Any, cfg: Any, B: int, frames: int = F, query: str = QUERY) -> dict[str, np.ndarray]:
    """One VOS batch of B left-padded prompts (two prompt lengths), video / key-frame / SAM2 pixels, GT (NumPy)."""
    from omnir1_jax import prompts

    vgrid = video_grid(frames)
    text = prompts.render_prompt(tok, "vos", query, frames, seed_key="a")
    ids = tok.encode(prompts.expand_placeholders(text, video_grids=[vgrid]))
    rows = [prompts.left_pad(ids if b % 2 == 0 else ids[:-2] + ids[-1:], len(ids) + 3, tok.pad_id) for b in range(B)]
    rng = np.random.default_rng(0)
    gt = np.zeros((B, 3, frames, M, M), bool)
    gt[:, 0, :, 4:10, 4:12] = True
    boxes = np.full((B, 3, frames, 4), -1.0, np.float32)
    boxes[:, 0] = [16, 16, 47, 39]
    return {
        "input_ids": np.stack([r for r, _ in rows]).astype(np.int32),
        "attention_mask": np.stack([m for _, m in rows]).astype(np.int32),
        "pixel_values_videos": rng.normal(size=(B * int(np.prod(vgrid)), cfg.vision.patch_dim)).astype(np.float32),
        "hires_patches": rng.normal(size=(B, frames, int(np.prod(HGRID)), cfg.vision.patch_dim)).astype(np.float32),
        "ground_ratio": np.ones((B, 2), np.float32),
        "sam_pixels": rng.normal(size=(B, frames, 3, S, S)).astype(np.float32),
        "sam_scale": np.ones((B, 2), np.float32),
        "gt_masks": gt, "gt_boxes": boxes,
        "obj_valid": np.asarray([[True, False, False]] * B), "num_frames": np.asarray([frames] * B, np.int32),
    }


def build_env(G: int, T: int, B: int = 2, Tg: int = 8, lr: float = 1e-6, micro_batch: int = 8,
              sam_tracks: int = -1, frames: int = F, query: str = QUERY, hidden: int = 64,
              layers: int = 2) -> dict[str, Any]:
    """Tiny thinker + tiny SAM2 + one VOS batch + settings + optimizer (the construction of test_grpo_step).

    ``sam_tracks``: ``GRPOSettings.sam_tracks_per_clip``; -1 = G (one object per completion, the torch
    recipe's work), 0 = all G * O tracks.  ``frames`` / ``query`` set the clip length and the prompt length;
    ``hidden`` / ``layers`` size the thinker's language model (``tiny_thinker_config``).
    """
    from omnir1_jax import parallel
    from omnir1_jax.models.qwen_omni import Thinker, init_params
    from omnir1_jax.models.sam2.config import Sam2Config
    from omnir1_jax.models.sam2.model import Sam2VideoModel
    from omnir1_jax.rewards.combine import RewardWeights
    from omnir1_jax.rl import grpo_rollout, optim
    from omnir1_jax.rl.grpo_settings import BatchShapes, GRPOSettings
    from omnir1_jax.rl.state import TrainState
    from omnir1_jax.rl.task import tiny_thinker_config
    from omnir1_jax.rollout.grounding import build_spec
    from omnir1_jax.text import SyntheticTokenizer

    tok = SyntheticTokenizer()
    cfg = tiny_thinker_config(tok, hidden=hidden, layers=layers)
    thinker = Thinker(cfg)
    params = parallel.unbox(jax.jit(init_params, static_argnums=0)(thinker, jax.random.key(0)))
    sam_cfg = Sam2Config.tiny()
    sam = Sam2VideoModel(sam_cfg)
    init_sam = lambda r: sam.init(r, jnp.zeros((1, 3, S, S)), method=Sam2VideoModel.init_all)["params"]  # noqa: E731
    sam_params = parallel.unbox(jax.jit(init_sam)(jax.random.key(1)))
    host = host_batch(tok, cfg, B, frames, query)
    shapes = BatchShapes.from_host(video_grid_thw=[video_grid(frames)] * B, hires_grid_thw=HGRID)
    spec = build_spec(tok, HGRID, max_desc_tokens=8, vocab_size=cfg.vocab_size)
    s = GRPOSettings(task="vos", num_generations=G, max_new_tokens=T, stop_ids=(), pad_id=tok.pad_id,
                     grounding_max_new_tokens=Tg, micro_batch_completions=min(micro_batch, B * G),
                     logprob_chunk_size=128, sam_tracks_per_clip=G if sam_tracks < 0 else sam_tracks,
                     weights=RewardWeights(alpha_g=2.0))
    tx, _ = optim.make_optimizer(params, learning_rate=lr, total_steps=1000, freeze=("visual", "audio_tower"))

    def fresh_state():
        p = jax.tree.map(jnp.copy, params)
        return TrainState(step=jnp.int32(0), params=p, opt_state=tx.init(p), rng=jax.random.key_data(jax.random.key(3)))

    return dict(tok=tok, cfg=cfg, params=params, sam_cfg=sam_cfg, sam_params=sam_params, host=host,
                batch={k: jnp.asarray(v) for k, v in host.items()}, shapes=shapes, spec=spec, s=s, tx=tx,
                models=grpo_rollout.StepModels(thinker, sam), ref=jax.tree.map(jnp.copy, params),
                fresh_state=fresh_state, G=G, T=T, Tg=Tg, B=B, frames=frames, query=query,
                prompt_len=int(host["input_ids"].shape[1]))


def ours_fns(e: dict[str, Any], split: bool) -> dict[str, Any]:
    """Zero-argument calls of our step: ``step`` (fused or split), or ``rollout`` / ``update`` halves."""
    from omnir1_jax.rl import grpo

    step = grpo.GRPOStep(e["models"], e["s"], e["spec"], e["tx"], split=split)
    box = {"state": e["fresh_state"]()}
    args = (e["ref"], e["sam_params"], e["batch"])
    if not split:
        def call():
            box["state"], m = step(box["state"], *args, e["shapes"])
            return m
        return {"step": call}

    def rollout():
        st = box["state"]
        box["ro"] = step.rollout(e["shapes"], st.params, e["ref"], e["sam_params"], e["batch"], step.step_rng(st))
        return box["ro"]

    def update():
        box["state"], upd = step.update(box["state"], e["ref"], e["batch"], box["ro"])
        return upd

    return {"rollout": rollout, "update": update}


def theirs_recipe(e: dict[str, Any], tmp: str) -> Any:
    """The PyTorch recipe on the same weights (policy and reference exported separately)."""
    from benchmarks.torch_recipe import TorchRecipe, hf_sam2, hf_thinker

    policy = hf_thinker(e["params"], e["cfg"], os.path.join(tmp, "policy"))
    ref = hf_thinker(e["ref"], e["cfg"], os.path.join(tmp, "ref"))
    return TorchRecipe(policy, ref, hf_sam2(e["sam_cfg"], e["sam_params"]), e["tok"], e["host"],
                       video_grid(e["frames"]), HGRID, G=e["G"], T=e["T"], Tg=e["Tg"], K=e["s"].max_keyframes,
                       query=e["query"],
                       variant=e["spec"].variant)


def run(G: int, T: int, repeats: int, torch_threads: int, B: int = 2, micro_batch: int = 8,
        sam_tracks: int = -1) -> dict[str, Any]:
    """Interleaved steps of both sides; medians, ratio, per-stage breakdowns, our compile time."""
    import torch

    torch.set_num_threads(torch_threads)
    t0 = time.perf_counter()
    e = build_env(G, T, B, micro_batch=micro_batch, sam_tracks=sam_tracks)
    fused, halves = ours_fns(e, split=False), ours_fns(e, split=True)
    log = lambda msg: print(f"[grpo_step] {msg} at {time.perf_counter() - t0:.1f}s", file=sys.stderr)  # noqa: E731
    log(f"built (SAM2 track slots per clip: {e['s'].sam_tracks_per_clip or 'all'}, "
        f"of G x O = {G * e['s'].max_objects})")
    first_s, metrics = common.timed(fused["step"])
    log("fused step compiled")
    first_ro, _ = common.timed(halves["rollout"])
    first_up, _ = common.timed(halves["update"])
    log("split step compiled")
    with tempfile.TemporaryDirectory() as tmp:
        recipe = theirs_recipe(e, tmp)
    log("torch recipe built")
    stages: list[dict[str, float]] = []
    fns = {"ours": fused["step"], "ours_rollout": halves["rollout"], "ours_update": halves["update"],
           "theirs": lambda: stages.append(recipe.step())}
    times = common.interleaved(fns, repeats, warmup=1)
    stages = stages[1:]  # drop the warmup call
    assert recipe.last_tokens == (B * G, T), recipe.last_tokens
    med = {k: common.summary(v)["median_s"] for k, v in times.items()}
    breakdown = {k: float(np.median([s[k] for s in stages])) for k in stages[0]}
    return {
        "B": B, "G": G, "completions": B * G, "micro_batch_completions": min(micro_batch, B * G),
        "max_new_tokens": T, "grounding_max_new_tokens": e["Tg"],
        "keyframes": e["s"].max_keyframes, "objects": e["s"].max_objects,
        "sam_tracks_per_clip": e["s"].sam_tracks_per_clip,  # 0 = all G x O tracks
        "sam_tracks_prompted": float(metrics["sam_tracks_prompted"]),  # first step, whole batch
        "sam_tracks_dropped": float(metrics["sam_tracks_dropped"]),
        "frames": e["frames"], "prompt_len": e["prompt_len"], "sam_side": S, "torch_threads": torch_threads,
        "ours_step_s": med["ours"], "theirs_step_s": med["theirs"], "ratio": med["theirs"] / med["ours"],
        "ours_compile_s": max(first_s - med["ours"], 0.0), "ours_first_call_s": first_s,
        "ours_split_compile_s": max(first_ro + first_up - med["ours_rollout"] - med["ours_update"], 0.0),
        "ours_rollout_half_s": med["ours_rollout"], "ours_update_half_s": med["ours_update"],
        "theirs_stages_s": breakdown,
        "ours_completion_len": float(metrics["completion_len"]), "theirs_last_loss": recipe.last_loss,
        **{f"{k}_samples_s": common.summary(v) for k, v in times.items()},
    }


def smoke_shape() -> tuple[int, int, int]:
    """(G, max_new_tokens, prompts) of ``--smoke``."""
    return 2, 4, 1


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the comparison, prints a table and returns / writes the JSON result."""
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--G", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--batch", type=int, default=2, help="prompts per step (each sampled G times)")
    p.add_argument("--torch-threads", type=int, default=1,
                   help="torch.set_num_threads (1 is the fastest on an oversubscribed shared CPU)")
    p.add_argument("--micro-batch", type=int, default=8,
                   help="our update's micro-batch of completions (torch runs all completions in one batch)")
    p.add_argument("--sam-tracks", type=int, default=-1,
                   help="our SAM2 track slots per clip (GRPOSettings.sam_tracks_per_clip): -1 = G (one object "
                        "per completion, as the torch recipe tracks), 0 = all G x O tracks")
    args = p.parse_args(argv)
    G, T, B = smoke_shape() if args.smoke else (args.G, args.max_new_tokens, args.batch)
    repeats = args.repeats or (1 if args.smoke else 5)
    t0 = time.perf_counter()
    row = run(G, T, repeats, args.torch_threads, B, args.micro_batch, args.sam_tracks)
    print(f"[grpo_step] done in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    flat = {**row, **{f"theirs_{k}_s": v for k, v in row["theirs_stages_s"].items()}}
    print(common.table([flat], ["completions", "max_new_tokens", "sam_tracks_per_clip", "ours_step_s",
                                "theirs_step_s", "ratio", "ours_compile_s", "ours_rollout_half_s",
                                "ours_update_half_s"]), file=sys.stderr)
    print(common.table([flat], [f"theirs_{k}_s" for k in row["theirs_stages_s"]]), file=sys.stderr)
    result = {"benchmark": "grpo_step", "target_ratio": 3.0, "repeats": repeats, "smoke": args.smoke,
              "row": row, "ratio": row["ratio"]}
    return common.finish(result, args.json)


if __name__ == "__main__":
    main()
