"""Before/after A/B of our sampler's decode: a git revision's ``omnir1_jax`` vs the working tree, one process.

The revision is exported with ``git archive`` into a temporary directory and imported under another
package name (``omnir1_jax_rev``), so both versions run side by side, interleaved, on the same params,
prompts and keys.  Per case it reports the sampler call time for ``T`` new tokens and for one token, the
decode step time ``(t_T - t_1) / (T - 1)`` and the ratio before/after; and, from the compiled HLO, how many
cache-sized buffers (one layer's ``[N, ...S...]`` slice or the whole stacked cache) each decode step
copies, transposes, slices or updates.

    python -m benchmarks.ab_revision --rev HEAD --json benchmarks/results/ab_decode.json
"""

from __future__ import annotations

import collections
import functools
import os
import re
import subprocess
import sys
import tempfile
from typing import Any

if __package__ in (None, ""):  # run as a file: make ``benchmarks`` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common

REV_PKG = "omnir1_jax_rev"
_OPS = ("copy", "transpose", "dynamic-slice", "dynamic-update-slice", "fusion")


def export_revision(rev: str, dest: str) -> str:
    """Writes ``omnir1_jax`` at git ``rev`` to ``dest/omnir1_jax_rev`` (imports renamed); returns ``dest``."""
    archive = subprocess.run(["git", "-C", common.REPO_ROOT, "archive", rev, "omnir1_jax"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", dest], input=archive, check=True)
    os.rename(os.path.join(dest, "omnir1_jax"), os.path.join(dest, REV_PKG))
    for root, _, files in os.walk(os.path.join(dest, REV_PKG)):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                with open(path) as f:
                    text = re.sub(r"\bomnir1_jax\b", REV_PKG, f.read())
                with open(path, "w") as f:
                    f.write(text)
    return dest


def _modules(pkg: str) -> tuple[Any, Any]:
    qwen = __import__(f"{pkg}.models.qwen_omni", fromlist=["Thinker"])
    sampler = __import__(f"{pkg}.rollout.sampler", fromlist=["sample"])
    return qwen, sampler


def cache_ops(hlo: str, layer_shape: tuple[int, ...], full_shape: tuple[int, ...]) -> dict[str, int]:
    """Counts the ops of the decode loop whose result is one layer's cache slice or the whole cache.

    A result matches when its dimensions (unit dimensions dropped) are those of ``layer_shape`` /
    ``full_shape`` in any order, so both cache layouts are recognised.

    The decode loop's computations are those (not the entry, not fused or wrapped) holding an op traced under
    ``jit(...)/while/body`` (the prefill's layer scan is ``jit(...)/Thinker.decode/...``); every op there
    counts, including the copies XLA inserted without metadata.
    """
    key = lambda dims: tuple(sorted(d for d in dims if d != 1))  # noqa: E731
    layer_key, full_key = key(layer_shape), key(full_shape)
    counts: collections.Counter = collections.Counter()
    pattern = re.compile(r"=\s*\w+\[([\d,]*)\]\{[^}]*\}\s+([\w\-]+)\(")
    for comp in re.split(r"\n(?=\S)", hlo):
        header = comp.split("\n", 1)[0]
        in_loop = re.search(r'op_name="jit\([^)]*\)/while/body', comp)
        if header.startswith("ENTRY") or "fused" in header or "wrapped" in header or not in_loop:
            continue
        for line in comp.splitlines()[1:]:
            m = pattern.search(line)
            if not m or m.group(2) not in _OPS:
                continue
            dims = key(int(d) for d in m.group(1).split(",") if d)
            size = "full" if dims == full_key else "layer" if dims == layer_key else None
            if size:
                counts[f"{size}:{m.group(2)}"] += 1
    return dict(sorted(counts.items()))


def run_case(cfg_name: str, prompt_len: int, t: int, g: int, batch: int, repeats: int,
             with_hlo: bool) -> dict[str, Any]:
    """Interleaved before/after sampler timing (T tokens and 1 token) on one config and prompt length."""
    import flax.linen as nn

    from benchmarks.rollout import thinker_config

    c = thinker_config(cfg_name)
    fns, hlo = {}, {}
    params = None
    for side, pkg in (("before", REV_PKG), ("after", "omnir1_jax")):
        qwen, smp = _modules(pkg)
        model = qwen.Thinker(c)
        if params is None:
            params = nn.unbox(qwen.init_params(model, jax.random.PRNGKey(0)))
        rs = np.random.RandomState(0)
        ids = jnp.asarray(rs.randint(0, min(c.vocab_size - 16, 30000), (batch, prompt_len)), jnp.int32)
        emb = model.apply({"params": params}, ids, method="embed_tokens")
        pos = jnp.broadcast_to(jnp.arange(prompt_len, dtype=jnp.int32)[None, None], (3, batch, prompt_len))
        mask = jnp.ones((batch, prompt_len), jnp.int32)
        jit = jax.jit(smp.sample, static_argnames=("model", "cfg", "init_cache_fn"))  # own cache per side
        for steps in (t, 1):
            cfg = smp.SamplerConfig(num_generations=g, max_new_tokens=steps, top_p=0.95, stop_ids=(),
                                    pad_id=c.pad_token_id)
            fns[f"{side}_t{steps}"] = functools.partial(jit, model, params, emb, pos, mask, jax.random.PRNGKey(1),
                                                        cfg)
            if with_hlo and steps == t:
                hlo[side] = jit.lower(model, params, emb, pos, mask, jax.random.PRNGKey(1), cfg).compile().as_text()
    same = bool(np.array_equal(np.asarray(fns[f"before_t{t}"]().tokens), np.asarray(fns[f"after_t{t}"]().tokens)))
    times = common.interleaved(fns, repeats, warmup=1)
    med = {k: common.summary(v)["median_s"] for k, v in times.items()}
    n = batch * g
    row: dict[str, Any] = {"config": cfg_name, "prompt_len": prompt_len, "max_new_tokens": t, "G": g,
                           "rows": n, "cache_len": prompt_len + t, "same_tokens": same}
    for side in ("before", "after"):
        row[f"{side}_call_s"] = med[f"{side}_t{t}"]
        row[f"{side}_decode_step_ms"] = 1e3 * (med[f"{side}_t{t}"] - med[f"{side}_t1"]) / (t - 1)
        row[f"{side}_tokens_per_s"] = n * t / med[f"{side}_t{t}"]
    row["ratio_step_before_over_after"] = row["before_decode_step_ms"] / max(row["after_decode_step_ms"], 1e-9)
    row["ratio_call_before_over_after"] = row["before_call_s"] / row["after_call_s"]
    if with_hlo:
        s, kv, hd, layers = prompt_len + t, c.num_key_value_heads, c.head_dim, c.num_hidden_layers
        for side, text in hlo.items():
            row[f"{side}_hlo_cache_ops_in_loops"] = cache_ops(text, (n, kv, s, hd), (layers, n, kv, s, hd))
    row["times"] = {k: common.summary(v) for k, v in times.items()}
    return row


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the cases (config:prompt_len), prints a table and returns / writes the JSON result."""
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--rev", default="HEAD", help="git revision of the 'before' side")
    p.add_argument("--cases", default="tiny:48,tiny:1024,small:48,small:512",
                   help="comma-separated config:prompt_len")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--G", type=int, default=8)
    p.add_argument("--batch", type=int, default=2)
    args = p.parse_args(argv)
    cases = [(c.split(":")[0], int(c.split(":")[1])) for c in args.cases.split(",")]
    t, repeats = args.max_new_tokens, args.repeats or 5
    if args.smoke:
        cases, t, repeats = [("smoke", 8)], 4, 1
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sys.path.insert(0, export_revision(args.rev, tmp))
        for name, plen in cases:
            row = run_case(name, plen, t, args.G, args.batch, repeats, with_hlo=True)
            rows.append(row)
            print(f"{name:6s} P={plen:5d} S={row['cache_len']:5d}  step ms before {row['before_decode_step_ms']:8.2f}"
                  f"  after {row['after_decode_step_ms']:8.2f}  x{row['ratio_step_before_over_after']:.2f}"
                  f"  call x{row['ratio_call_before_over_after']:.2f}  same tokens {row['same_tokens']}")
            print(f"        HLO in loops: before {row['before_hlo_cache_ops_in_loops']}"
                  f"  after {row['after_hlo_cache_ops_in_loops']}")
    return common.finish({"benchmark": "ab_revision", "rev": args.rev, "cases": rows}, args.json)


if __name__ == "__main__":
    main()
