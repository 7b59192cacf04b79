"""Rollout speed: our in-graph group sampler vs transformers' ``generate`` on the same thinker weights.

A random-weight transformers ``Qwen2_5OmniThinkerForConditionalGeneration`` is built from a config, and
converted in memory with ``load_hf`` (same weights on both sides).  Both sample G completions per prompt
(``num_return_sequences=G``, ``do_sample``, temperature, top-p, top-k off) for exactly ``max_new_tokens``
tokens (no stop token on either side), on left-padded text-only and image+text prompts.  Calls are
interleaved (ours, theirs, …); medians of generated tokens/s and their ratio ours/theirs are reported.
Our compile time (first call minus a steady call) is reported apart and excluded from the figure.
A breakdown (each side again with ``max_new_tokens=1``) splits prefill (+ encoders) from the decode steps.

    python -m benchmarks.rollout --json benchmarks/results/rollout.json
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

G = 8
TEMPERATURE, TOP_P = 1.0, 0.95


def thinker_config(name: str) -> Any:
    """The thinker configs compared: ``tiny`` (the test config) and ``small`` (8 x 512, 32k vocab)."""
    from omnir1_jax.models.qwen_omni import tiny
    from omnir1_jax.models.qwen_omni.audio_config import AudioConfig
    from omnir1_jax.models.qwen_omni.vision_config import VisionConfig

    def towers(d: int, **vision: Any) -> dict[str, Any]:
        # An explicit tiny audio tower: without one transformers builds its full-size default (~640M params).
        return dict(vision=dataclasses.replace(VisionConfig.tiny(), out_hidden_size=d, **vision),
                    audio=dataclasses.replace(AudioConfig.tiny(), output_dim=d))

    if name == "tiny":
        return tiny(vocab_size=512, **towers(64))
    if name == "small":
        return tiny(vocab_size=32768, hidden_size=512, intermediate_size=1408, num_hidden_layers=8,
                    num_attention_heads=8, num_key_value_heads=2, head_dim=64, mrope_section=(8, 12, 12),
                    **towers(512))
    if name == "smoke":
        return tiny(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                    **towers(32, depth=2, fullatt_block_indexes=(1,)))
    raise ValueError(f"unknown config {name!r}")


def build(name: str, seed: int = 0) -> tuple[Any, Any, Any]:
    """(transformers thinker in eval mode, our Thinker, our params) with the same random weights."""
    import torch
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    from omnir1_jax.models.qwen_omni import load_hf

    torch.manual_seed(seed)
    hf = Qwen2_5OmniThinkerForConditionalGeneration(thinker_config(name).to_hf()).eval()
    model, params = load_hf(hf)
    return hf, model, params


def make_prompts(cfg: Any, kind: str, batch: int, text_len: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``batch`` left-padded prompts in transformers' format; ``kind`` is ``text`` or ``image`` (+ text)."""
    rs = np.random.RandomState(seed)
    grid = (1, 8, 8)  # 64 patches -> 16 merged image tokens per prompt
    n_img = int(np.prod(grid)) // cfg.spatial_merge_size ** 2
    high = min(cfg.vocab_size - 16, 30000)  # ordinary text ids (the specials sit at the top)
    seqs = []
    for b in range(batch):
        words = list(rs.randint(0, high, text_len - 3 * b))
        if kind == "image":
            img = [cfg.vision_start_token_id] + [cfg.image_token_id] * n_img + [cfg.vision_end_token_id]
            words = words[:4] + img + words[4:]
        seqs.append(words)
    length = max(map(len, seqs))
    ids = np.full((batch, length), cfg.pad_token_id, np.int64)
    mask = np.zeros((batch, length), np.int64)
    for b, s in enumerate(seqs):
        ids[b, length - len(s):], mask[b, length - len(s):] = s, 1
    out = {"input_ids": ids, "attention_mask": mask}
    if kind == "image":
        out["pixel_values"] = rs.randn(batch * int(np.prod(grid)), cfg.vision.patch_dim).astype(np.float32)
        out["image_grid_thw"] = np.array([grid] * batch, np.int64)
    return out


def ours_fn(model: Any, params: Any, inputs: dict[str, np.ndarray], max_new_tokens: int):
    """A zero-argument call of our jitted group sampler on ``inputs`` (same rng every call)."""
    from omnir1_jax.rollout.sampler import SamplerConfig, generate_jit

    cfg = SamplerConfig(num_generations=G, max_new_tokens=max_new_tokens, temperature=TEMPERATURE, top_p=TOP_P,
                        stop_ids=(), pad_id=model.config.pad_token_id)
    arrays = {k: (v if k == "image_grid_thw" else jnp.asarray(v)) for k, v in inputs.items()}
    rng = jax.random.PRNGKey(0)
    return lambda: generate_jit(model, params, arrays, rng, cfg)


def theirs_fn(hf: Any, inputs: dict[str, np.ndarray], max_new_tokens: int, threads: int):
    """A zero-argument call of transformers' ``generate`` (sampling, G return sequences, no EOS)."""
    import torch

    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = hf.config.text_config.pad_token_id
    tensors = {k: torch.from_numpy(v) for k, v in inputs.items()}

    def call():
        torch.set_num_threads(threads)
        with torch.inference_mode():
            return hf.generate(**tensors, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                               do_sample=True, temperature=TEMPERATURE, top_p=TOP_P, top_k=0,
                               num_return_sequences=G)

    return call


def run_case(hf, model, params, kind: str, batch: int, text_len: int, t: int, repeats: int,
             breakdown: bool) -> dict[str, Any]:
    """Interleaved timing of both samplers on one prompt kind; tokens/s, ratio, compile, breakdown.

    transformers runs with ``torch.set_num_threads(cores)`` as asked, and also with one thread: on a
    shared, oversubscribed machine OpenMP's spinning threads slow torch down many times over, so the
    headline ratio is against the faster of the two (the conservative figure).
    """
    cores = os.cpu_count() or 1
    inputs = make_prompts(model.config, kind, batch, text_len)
    p = inputs["input_ids"].shape[1]
    ours = ours_fn(model, params, inputs, t)
    first_s, out = common.timed(ours)
    fns = {"ours": ours, "theirs": theirs_fn(hf, inputs, t, cores)}
    if cores > 1:
        fns["theirs_1thread"] = theirs_fn(hf, inputs, t, 1)
    ref = fns["theirs"]()
    n_ours, n_theirs = int(np.asarray(out.tokens).size), int(ref[:, p:].numel())
    assert int(out.num_steps) == t and n_ours == n_theirs == batch * G * t, (out.num_steps, n_ours, n_theirs)
    if breakdown:  # the same calls with one new token: prefill (+ encoders, + cache repeat) only
        fns["ours_t1"], fns["theirs_1thread_t1"] = ours_fn(model, params, inputs, 1), theirs_fn(hf, inputs, 1, 1)
    times = common.interleaved(fns, repeats, warmup=1)
    med = {k: common.summary(v)["median_s"] for k, v in times.items()}
    best = min(med["theirs"], med.get("theirs_1thread", np.inf))
    tokens = batch * G * t
    row: dict[str, Any] = {
        "prompt_kind": kind, "batch_prompts": batch, "G": G, "prompt_len": p, "max_new_tokens": t,
        "generated_tokens": tokens,
        "ours_tokens_per_s": tokens / med["ours"], "theirs_tokens_per_s": tokens / best,
        "ratio": best / med["ours"], "ratio_vs_torch_threads_eq_cores": med["theirs"] / med["ours"],
        "theirs_best_threads": cores if med["theirs"] <= best else 1,
        "ours_first_call_s": first_s, "ours_compile_s": max(first_s - med["ours"], 0.0),
        **{f"{k}_s": common.summary(v) for k, v in times.items()},
    }
    if breakdown and t > 1:
        for side in ("ours", "theirs_1thread"):
            if side in med:
                row[f"{side}_prefill_s"] = med[f"{side}_t1"]
                row[f"{side}_decode_step_ms"] = 1e3 * (med[side] - med[f"{side}_t1"]) / (t - 1)
    return row


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs every (config, prompt kind) case, prints a table and returns / writes the JSON result."""
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--configs", default="tiny,small")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--text-len", type=int, default=48)
    p.add_argument("--batch", type=int, default=2, help="prompts per call (each sampled G times)")
    p.add_argument("--kinds", default="text,image", help="prompt kinds: text, image (+ text)")
    args = p.parse_args(argv)
    import torch

    threads_before = torch.get_num_threads()  # restored at the end (the script may run inside a test)
    torch.set_num_threads(os.cpu_count() or 1)
    configs = ["smoke"] if args.smoke else args.configs.split(",")
    t = 4 if args.smoke else args.max_new_tokens
    text_len = 8 if args.smoke else args.text_len
    repeats = args.repeats or (1 if args.smoke else 5)
    kinds = ["text"] if args.smoke else args.kinds.split(",")
    rows = []
    for name in configs:
        t0 = time.perf_counter()
        hf, model, params = build(name)
        n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
        n_text = n_params - sum(int(np.prod(x.shape)) for k in ("visual", "audio_tower") if k in params
                                for x in jax.tree.leaves(params[k]))
        for kind in kinds:
            row = run_case(hf, model, params, kind, args.batch, text_len, t, repeats, breakdown=not args.smoke)
            rows.append({"config": name, "params": n_params, "text_params": n_text, **row})
        print(f"[{name}] done in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    cols = ["config", "prompt_kind", "prompt_len", "generated_tokens", "ours_tokens_per_s", "theirs_tokens_per_s",
            "ratio", "ratio_vs_torch_threads_eq_cores", "ours_compile_s", "ours_prefill_s", "theirs_1thread_prefill_s",
            "ours_decode_step_ms", "theirs_1thread_decode_step_ms"]
    print(common.table(rows, cols), file=sys.stderr)
    result = {
        "benchmark": "rollout", "target_ratio": 5.0,
        "settings": {"G": G, "temperature": TEMPERATURE, "top_p": TOP_P, "top_k": "off",
                     "max_new_tokens": t, "repeats": repeats,
                     "torch_threads": f"{os.cpu_count()} and 1 (best reported)",
                     "hf_attn_implementation": hf.config._attn_implementation, "smoke": args.smoke},
        "rows": rows,
        "ratio": min(r["ratio"] for r in rows),  # the worst case across configs / prompt kinds
    }
    torch.set_num_threads(threads_before)
    return common.finish(result, args.json)


if __name__ == "__main__":
    main()
