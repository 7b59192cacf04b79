"""Where the GRPO update half's time goes: its pieces and settings variants, timed side by side in one process.

Builds the benchmark's tiny GRPO setup (``grpo_step.build_env``), runs the rollout half once, then times,
interleaved: the update jit (``GRPOStep(split=True).update``) under each settings variant (``GRPOSettings``
field overrides), and at the base settings its pieces: the reference log-probs pass alone (forward, all
completions), the policy loss and gradients alone (``loss_and_grads``), and the optimizer + guard alone.

    python -m benchmarks.grpo_update_profile --json benchmarks/results/grpo_update_profile.json \\
        --variants "base;logprob_chunk_size=4096;micro_batch_completions=16;share_prompt_prefix=False"

``--rollout-variants "sam_tracks_per_clip=0;base"`` also times the rollout half (``GRPOStep(split=True).rollout``)
and SAM2's stage alone (``grpo_rollout.segment``, every completion prompting object 0 on keyframes 0..K-1, as
the torch recipe does) under each settings variant.
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

from benchmarks import common


def parse_variant(text: str) -> dict[str, Any]:
    """``"a=1,b=False"`` -> ``{"a": 1, "b": False}`` (``"base"`` -> ``{}``)."""
    out: dict[str, Any] = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        if item == "base":
            continue
        key, value = item.split("=", 1)
        out[key] = {"True": True, "False": False}.get(value, None)
        if out[key] is None:
            out[key] = float(value) if "." in value else int(value)
    return out


def rollout_pieces(e: dict[str, Any], step: Any, st: Any) -> dict[str, Any]:
    """Cumulative prefixes of the rollout half as separate jits: sample; sample + parse + ground; all."""
    from omnir1_jax.rl import grpo_rollout

    m, s, shapes, batch = e["models"], e["s"], e["shapes"], e["batch"]
    rng = step.step_rng(st)

    def sample_only(p_):
        return grpo_rollout.rollout(m, s, shapes, p_, batch, rng)[2].tokens

    def through_ground(p_, ref_):
        _, _, out = grpo_rollout.rollout(m, s, shapes, p_, batch, rng)
        parsed = grpo_rollout.parse(e["spec"], s, batch, out)
        return grpo_rollout.ground(m, s, e["spec"], ref_, batch, out, parsed).boxes

    f1, f2 = jax.jit(sample_only), jax.jit(through_ground)
    return {"rollout piece: encode + sample": lambda: f1(st.params),
            "rollout piece: + parse + ground (reference, greedy)": lambda: f2(st.params, e["ref"]),
            "rollout half (+ SAM2 + rewards)": lambda: step.rollout(shapes, st.params, e["ref"], e["sam_params"],
                                                                    batch, rng)}


def rollout_variants(e: dict[str, Any], st: Any, variants: str) -> dict[str, Any]:
    """The rollout half and SAM2's segment stage alone, per ``GRPOSettings`` variant (``"a=1;base"``)."""
    from omnir1_jax.rl import grpo, grpo_rollout

    b, g = e["B"], e["G"]
    k, o = e["s"].max_keyframes, e["s"].max_objects
    boxes = jnp.broadcast_to(jnp.asarray([16.0, 16.0, 47.0, 39.0]), (b, g, k, o, 4))
    frames = jnp.broadcast_to(jnp.arange(k, dtype=jnp.int32), (b, g, k))
    valid = jnp.zeros((b, g, k, o), bool).at[..., 0].set(True)  # one object per completion
    fns: dict[str, Any] = {}
    for v in filter(None, variants.split(";")):
        s = dataclasses.replace(e["s"], **parse_variant(v))
        step = grpo.GRPOStep(e["models"], s, e["spec"], e["tx"], split=True)
        seg = jax.jit(lambda p_, bt, bx, fr, va, s=s: grpo_rollout.segment(e["models"], s, p_, bt, bx, fr, va))
        fns[f"rollout half[{v}]"] = lambda step=step: step.rollout(e["shapes"], st.params, e["ref"],
                                                                   e["sam_params"], e["batch"], step.step_rng(st))
        fns[f"piece: SAM2 segment alone[{v}]"] = lambda seg=seg: seg(e["sam_params"], e["batch"], boxes, frames,
                                                                      valid)
    return fns


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Times the variants and pieces; prints a table and returns / writes the JSON result."""
    from benchmarks.grpo_step import build_env, smoke_shape
    from omnir1_jax.rl import grpo
    from omnir1_jax.rl.state import guarded_apply

    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--G", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--variants", default="base;logprob_chunk_size=4096;micro_batch_completions=16")
    p.add_argument("--no-pieces", action="store_true")
    p.add_argument("--rollout-pieces", action="store_true",
                   help="also time the rollout half cumulatively: sample; + parse + ground; the whole half")
    p.add_argument("--rollout-variants", default="",
                   help="';'-separated GRPOSettings variants of the rollout half and SAM2 segment stage to time")
    args = p.parse_args(argv)
    G, T, B = smoke_shape() if args.smoke else (args.G, args.max_new_tokens, args.batch)
    repeats = args.repeats or (1 if args.smoke else 5)
    t0 = time.perf_counter()
    e = build_env(G, T, B)
    base = grpo.GRPOStep(e["models"], e["s"], e["spec"], e["tx"], split=True)
    st = e["fresh_state"]()
    ro = jax.block_until_ready(base.rollout(e["shapes"], st.params, e["ref"], e["sam_params"], e["batch"],
                                            base.step_rng(st)))
    fns, first, info = {}, {}, {}
    for v in filter(None, args.variants.split(";")):
        s = dataclasses.replace(e["s"], **parse_variant(v))
        step = grpo.GRPOStep(e["models"], s, e["spec"], e["tx"], split=True)
        box = {"state": e["fresh_state"]()}

        def call(step=step, box=box):
            box["state"], upd = step.update(box["state"], e["ref"], e["batch"], ro)
            return upd

        fns[f"update[{v}]"] = call
    if not args.no_pieces:
        s, m, params = e["s"], e["models"], e["fresh_state"]().params
        rows = jnp.arange(B * G)
        ref_fn = jax.jit(lambda p_: grpo.sequence_logprobs(m, s, p_, e["batch"], ro, rows))
        grads_fn = jax.jit(lambda p_, r_: grpo.loss_and_grads(m, s, p_, r_, e["batch"], ro, None))
        zero = jax.tree.map(jnp.zeros_like, params)
        opt_fn = jax.jit(lambda st_, g_: guarded_apply(st_, g_, e["tx"], jnp.float32(0)))
        st0 = e["fresh_state"]()
        fns["piece: reference log-probs (fwd, all rows)"] = lambda: ref_fn(e["ref"])
        fns["piece: loss_and_grads (policy fwd+bwd, ref fwd)"] = lambda: grads_fn(params, e["ref"])
        fns["piece: optimizer + guard"] = lambda: opt_fn(st0, zero)
    if args.rollout_pieces:
        fns.update(rollout_pieces(e, base, st))
    if args.rollout_variants:
        fns.update(rollout_variants(e, st, args.rollout_variants))
    for k, fn in fns.items():
        first[k], _ = common.timed(fn)
        print(f"[profile] compiled {k} in {first[k]:.1f}s", file=sys.stderr)
    times = common.interleaved(fns, repeats, warmup=1)
    rows_out = [{"what": k, "median_s": common.summary(v)["median_s"], "first_call_s": first[k],
                 "samples": common.summary(v)} for k, v in times.items()]
    print(common.table(rows_out, ["what", "median_s", "first_call_s"]), file=sys.stderr)
    print(f"[profile] done in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    info.update(B=B, G=G, T=T, prompt_len=int(e["batch"]["input_ids"].shape[1]),
                vocab=int(e["cfg"].vocab_size), settings=str(e["s"]))
    return common.finish({"benchmark": "grpo_update_profile", "repeats": repeats, "setup": info,
                          "rows": rows_out}, args.json)


if __name__ == "__main__":
    main()
