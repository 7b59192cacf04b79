"""Roofline: this machine's measured matmul peak and memory bandwidth against the update phase and decode.

(a) Peak: best of N of large fp32 ``jnp.dot`` s in a jit (best size; measured before and after (b), the
    larger kept); bandwidth: best of N of a reduction over a large array (read) and an in-place scale (copy).
(b) Update phase on a small text thinker: forward + backward of teacher-forced ``token_logprobs`` and a
    policy-gradient loss.  FLOPs from XLA's ``cost_analysis`` and analytically (6 * params * tokens).
    XLA's cost analysis counts a ``while`` body once (the layer ``scan``), so the XLA figure is
    ``cost(full step) + (layers - 1) * cost(one layer's forward + backward)``, with the vocabulary streamed
    in a single chunk so the LM head is no loop.
(c) Decode: bytes one decode step must read (params bar the embedding table, plus the whole static KV
    cache) over the measured step time of our sampler (``T`` vs ``T=1`` difference), against bandwidth.

    python -m benchmarks.roofline --json benchmarks/results/roofline.json
"""

from __future__ import annotations

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


def best_of(fn, n: int) -> float:
    """Minimum wall seconds over ``n`` calls after one warmup call (best of N: the least disturbed run)."""
    common.timed(fn)
    return min(common.timed(fn)[0] for _ in range(n))


def xla_flops(compiled: Any) -> float:
    """FLOPs of a compiled executable from XLA's cost analysis (dict or list-of-dict across versions)."""
    ca = compiled.cost_analysis()
    if isinstance(ca, (list, tuple)):
        ca = ca[0]
    return float(ca.get("flops", 0.0))


def machine_peaks(sizes: tuple[int, ...], n_mem: int, repeats: int) -> dict[str, float]:
    """Measured fp32 matmul FLOP/s (best size, best of N) and memory bandwidth (read: a sum; copy: a
    donated in-place scale, so no fresh output pages are faulted in)."""
    best = (0.0, 0, 0.0)
    for n in sizes:
        a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
        b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
        dot = jax.jit(lambda x, y: jnp.dot(x, y, precision="highest"))
        t = best_of(lambda: dot(a, b), repeats)
        best = max(best, (2 * n ** 3 / t, n, t))
    red = jax.jit(lambda v: jnp.sum(v))
    cpy = jax.jit(lambda v: v * 1.0001, donate_argnums=0)
    box = [jnp.ones((n_mem,), jnp.float32)]

    def copy():
        box[0] = cpy(box[0])
        return box[0]

    t_red = best_of(lambda: red(box[0]), repeats)
    t_cpy = best_of(copy, repeats)
    nbytes = n_mem * 4
    return {"matmul_n": best[1], "matmul_s": best[2], "peak_flops": best[0], "matmul_sizes": list(sizes),
            "array_bytes": nbytes, "read_bandwidth_Bps": nbytes / t_red, "copy_bandwidth_Bps": 2 * nbytes / t_cpy}


def text_config(name: str) -> Any:
    """Text-only thinker configs: ``small`` (8 x 512, 32k vocab) or ``smoke``."""
    from omnir1_jax.models.qwen_omni import tiny

    if name == "small":
        return tiny(vocab_size=32768, hidden_size=512, intermediate_size=1408, num_hidden_layers=8,
                    num_attention_heads=8, num_key_value_heads=2, head_dim=64, mrope_section=(8, 12, 12))
    return tiny(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2)


def update_phase(cfg: Any, batch: int, length: int, repeats: int) -> dict[str, Any]:
    """Forward + backward of teacher-forced log-probs + loss: time, XLA and analytic FLOPs."""
    from flax.core import meta

    from omnir1_jax.models.qwen_omni import Thinker, init_params, token_logprobs
    from omnir1_jax.models.qwen_omni.decoder import DecoderLayer

    model = Thinker(cfg)
    params = meta.unbox(init_params(model, jax.random.PRNGKey(0)))
    rs = np.random.RandomState(0)
    ids = jnp.asarray(rs.randint(0, cfg.vocab_size - 16, (batch, length)), jnp.int32)
    adv = jnp.asarray(rs.randn(batch), jnp.float32)
    mask = jnp.ones((batch, length - 1), jnp.float32)
    pos = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32)[None, None], (3, batch, length))

    def loss_fn(p):
        x = model.apply({"params": p}, ids, method="embed_tokens")
        hidden, _ = model.apply({"params": p}, x, pos, method="decode")  # [B, L, D]
        logp = token_logprobs(model, p, hidden[:, :-1], ids[:, 1:], chunk_size=cfg.vocab_size)  # [B, L-1]
        return -jnp.sum(logp * adv[:, None] * mask) / jnp.sum(mask)

    step = jax.jit(jax.value_and_grad(loss_fn))
    t0 = time.perf_counter()
    compiled = step.lower(params).compile()
    compile_s = time.perf_counter() - t0
    flops_once = xla_flops(compiled)

    # One layer's forward + backward (params and input), to add the (layers - 1) scan iterations back.
    layer = DecoderLayer(cfg)
    x0 = jnp.zeros((batch, length, cfg.hidden_size), jnp.float32)
    cos = jnp.ones((batch, length, cfg.head_dim), jnp.float32)
    kmask = jnp.ones((batch, length), jnp.int32)
    lp = meta.unbox(layer.init(jax.random.PRNGKey(1), x0, None, cos, cos * 0, kmask, jnp.int32(0))["params"])
    layer_loss = lambda p, x: jnp.sum(layer.apply({"params": p}, x, None, cos, cos * 0, kmask, jnp.int32(0))[0])
    flops_layer = xla_flops(jax.jit(jax.grad(layer_loss, argnums=(0, 1))).lower(lp, x0).compile())
    flops_xla = flops_once + (cfg.num_hidden_layers - 1) * flops_layer

    t_step = best_of(lambda: compiled(params), repeats)
    n_all = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(params))
    n_embed = cfg.vocab_size * cfg.hidden_size  # the input table: a gather, no matmul
    tokens = batch * length
    attn = 3 * 4 * batch * length * length * cfg.num_attention_heads * cfg.head_dim * cfg.num_hidden_layers
    return {
        "config": {"vocab": cfg.vocab_size, "hidden": cfg.hidden_size, "layers": cfg.num_hidden_layers,
                   "heads": cfg.num_attention_heads, "kv_heads": cfg.num_key_value_heads,
                   "intermediate": cfg.intermediate_size},
        "batch": batch, "length": length, "tokens": tokens, "params": n_all, "params_matmul": n_all - n_embed,
        "compile_s": compile_s, "step_s": t_step,
        "xla_flops": flops_xla, "xla_flops_loop_body_once": flops_once, "xla_flops_per_layer": flops_layer,
        "analytic_flops_6NT": 6.0 * n_all * tokens,
        "analytic_flops_6NT_matmul_plus_attention": 6.0 * (n_all - n_embed) * tokens + attn,
        "achieved_flops_xla": flops_xla / t_step, "achieved_flops_6NT": 6.0 * n_all * tokens / t_step,
    }


def decode_phase(cfg: Any, batch: int, prompt_len: int, g: int, t: int, repeats: int) -> dict[str, Any]:
    """Per-step time of our sampler's decode loop and the bytes each step must read."""
    from flax.core import meta

    from omnir1_jax.models.qwen_omni import Thinker, init_params
    from omnir1_jax.rollout.sampler import SamplerConfig, sample_jit

    model = Thinker(cfg)
    params = meta.unbox(init_params(model, jax.random.PRNGKey(0)))
    rs = np.random.RandomState(1)
    ids = jnp.asarray(rs.randint(0, cfg.vocab_size - 16, (batch, prompt_len)), jnp.int32)
    emb = model.apply({"params": params}, ids, method="embed_tokens")
    pos = jnp.broadcast_to(jnp.arange(prompt_len, dtype=jnp.int32)[None, None], (3, batch, prompt_len))
    mask = jnp.ones((batch, prompt_len), jnp.int32)
    rng = jax.random.PRNGKey(0)

    def call(steps: int):
        sc = SamplerConfig(num_generations=g, max_new_tokens=steps, top_p=0.95)
        return lambda: sample_jit(model, params, emb, pos, mask, rng, sc)

    fns = {"T": call(t), "T1": call(1)}
    times = common.interleaved(fns, repeats, warmup=1)
    med = {k: common.summary(v)["median_s"] for k, v in times.items()}
    step_s = (med["T"] - med["T1"]) / (t - 1)
    n = batch * g
    s_len = prompt_len + t  # static cache length: every step attends over all of it
    kv = 2 * cfg.num_hidden_layers * n * s_len * cfg.num_key_value_heads * cfg.head_dim * 4
    n_all = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(params))
    param_bytes = 4 * (n_all - cfg.vocab_size * cfg.hidden_size)
    step_bytes = param_bytes + kv
    return {"rows": n, "prompt_len": prompt_len, "max_new_tokens": t, "cache_len": s_len,
            "decode_step_s": step_s, "sampler_T_s": med["T"], "sampler_T1_s": med["T1"],
            "param_bytes_per_step": param_bytes, "kv_bytes_per_step": kv, "bytes_per_step": step_bytes,
            "bytes_per_token": step_bytes / n, "achieved_Bps": step_bytes / step_s,
            "tokens_per_s": n / step_s}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Measures peaks, the update phase and decode; prints and returns / writes the JSON result."""
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--length", type=int, default=256)
    args = p.parse_args(argv)
    smoke = args.smoke
    repeats = args.repeats or (1 if smoke else 5)
    peaks = machine_peaks((256,) if smoke else (1024, 2048, 3072), (1 << 20) if smoke else (1 << 26),
                          repeats if smoke else 2 * repeats)
    cfg = text_config("smoke" if smoke else "small")
    upd = update_phase(cfg, 2 if smoke else args.batch, 16 if smoke else args.length, repeats)
    again = machine_peaks((256,) if smoke else (2048,), 1 << 20, repeats)  # after: the load may have changed
    if again["peak_flops"] > peaks["peak_flops"]:
        peaks.update({k: again[k] for k in ("matmul_n", "matmul_s", "peak_flops")})
    upd["fraction_of_peak_xla"] = upd["achieved_flops_xla"] / peaks["peak_flops"]
    upd["fraction_of_peak_6NT"] = upd["achieved_flops_6NT"] / peaks["peak_flops"]
    dec = decode_phase(cfg, 2, 8 if smoke else 64, 2 if smoke else 8, 3 if smoke else 33, repeats)
    dec["fraction_of_read_bandwidth"] = dec["achieved_Bps"] / peaks["read_bandwidth_Bps"]
    result = {
        "benchmark": "roofline", "target_fraction_of_peak": 0.5, "peaks": peaks, "update": upd, "decode": dec,
        "ratio": upd["fraction_of_peak_xla"],  # achieved / measured peak FLOP/s of the update phase
        "settings": {"repeats": repeats, "smoke": smoke},
    }
    g = 1e9
    print(f"peak {peaks['peak_flops'] / g:.1f} GFLOP/s, read {peaks['read_bandwidth_Bps'] / g:.1f} GB/s, "
          f"copy {peaks['copy_bandwidth_Bps'] / g:.1f} GB/s\n"
          f"update: {upd['achieved_flops_xla'] / g:.1f} GFLOP/s (XLA count) = {upd['fraction_of_peak_xla']:.0%} "
          f"of peak; 6NT: {upd['fraction_of_peak_6NT']:.0%}\n"
          f"decode: {dec['bytes_per_token'] / 1e6:.2f} MB/token, {dec['achieved_Bps'] / g:.1f} GB/s = "
          f"{dec['fraction_of_read_bandwidth']:.0%} of read bandwidth", file=sys.stderr)
    return common.finish(result, args.json)


if __name__ == "__main__":
    main()
