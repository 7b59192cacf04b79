"""Where the GRPO step's SAM2 stage spends its time: its pieces, timed side by side in one process.

The ``grpo_step.py`` setup (tiny SAM2, 64x64 frames): ``--clips`` clips of ``--frames`` frames, ``--tracks``
track slots per clip (``sam_tracks_per_clip``), each prompted by a box on ``--keyframes`` frames.  Pieces, all
batched over every track of every clip as ``grpo_rollout.segment`` batches them: image features; the
conditioning frames (decoder + memory encoder); the whole propagation; one tracking step and, at that step's
shapes, its memory attention, mask decoder, memory encoder and the encoder's two parts (mask downsampler,
ConvNeXt fuser).  The fuser's depthwise 7x7 convolution is also timed as XLA's grouped convolution
(``feature_group_count = C``, what the model ran before issue 9's fix) against the model's
``common.DepthwiseConv`` (49 shifted multiply-adds, checked equal); ``ratio`` = grouped / shifted.  Before/after:
the whole propagation again with the fuser built the old way (``conv(..., depthwise_impl="xla")`` patched into
``models/sam2/memory``, results checked equal); ``propagation_ratio`` = old / current.

    python -m benchmarks.sam2_stage_profile --json benchmarks/results/sam2_stage_profile.json
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

S = 64  # SAM2 input side of the tiny config
PROP = "whole propagation (features + conditioning + F tracking steps)"
PROP_OLD = "before: whole propagation, fuser depthwise as XLA grouped conv"


def depthwise_shifted(x: jax.Array, w: jax.Array) -> jax.Array:
    """The model's depthwise 'same' conv (``common.DepthwiseConv``, k*k shifted multiply-adds), zero bias."""
    from omnir1_jax.models.sam2.common import DepthwiseConv

    k, c = w.shape[0], w.shape[-1]
    return DepthwiseConv(c, k, k // 2).apply({"params": {"kernel": w, "bias": jnp.zeros((c,), w.dtype)}}, x)


def depthwise_grouped(x: jax.Array, w: jax.Array) -> jax.Array:
    """The same conv as XLA's grouped convolution (``feature_group_count = C``)."""
    k = w.shape[0]
    return jax.lax.conv_general_dilated(x, w, (1, 1), [(k // 2, k // 2)] * 2,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=x.shape[-1])


def build(clips: int, tracks: int, frames: int, keyframes: int) -> dict[str, Any]:
    """Tiny SAM2 (seeded random weights), pixels and box prompts; zero-argument jitted calls of every piece."""
    from omnir1_jax import parallel
    from omnir1_jax.models.sam2 import video as sv
    from omnir1_jax.models.sam2.config import Sam2Config
    from omnir1_jax.models.sam2.memory import MaskDownSampler, MemoryFuser
    from omnir1_jax.models.sam2.model import Sam2VideoModel as SVM

    cfg = Sam2Config.tiny()
    m = SVM(cfg)
    p = parallel.unbox(jax.jit(lambda r: m.init(r, jnp.zeros((1, 3, S, S)), method=SVM.init_all)["params"])(
        jax.random.key(1)))
    rng = np.random.default_rng(0)
    px = jnp.asarray(rng.normal(size=(clips, frames, 3, S, S)).astype(np.float32))
    boxes = jnp.broadcast_to(jnp.asarray([16.0, 16.0, 47.0, 39.0]), (clips, tracks, frames, 4))
    valid = jnp.zeros((clips, tracks, frames), bool).at[..., :keyframes].set(True)
    n = clips * tracks
    ap = sv._apply

    def features(p_, x):
        return jax.vmap(lambda xx: sv.encode_frames(m, p_, xx))(x)

    def conditioning(p_, x, b, v):
        def clip(xx, bb, vv):
            f = sv.encode_frames(m, p_, xx)
            return sv.conditioning_outputs(m, p_, lambda idx: {k: a[idx] for k, a in f.items()}, bb, vv, keyframes)
        return jax.vmap(clip)(x, b, v)  # every output kept (nothing dead-code eliminated)

    def propagate(p_, x, b, v):
        return jax.vmap(lambda xx, bb, vv: sv.propagate(m, p_, xx, bb, vv, "forward", keyframes))(x, b, v)

    feats = jax.jit(features)(p, px)
    cond = jax.jit(conditioning)(p, px, boxes, valid)
    flat = lambda a: a.reshape(n, *a.shape[2:])  # noqa: E731  [clips, tracks, ...] -> [N, ...]
    cond_n = jax.tree.map(flat, cond)
    frame = {k: a[0, min(1, frames - 1)] for k, a in feats.items()}  # one frame's features
    fo = {k: jnp.broadcast_to(a, (n, *a.shape)) for k, a in frame.items()}
    carry = sv.init_carry(m, n, frames)
    t = jnp.int32(min(1, frames - 1))
    md = cfg.memory_encoder_output_channels
    n_ptr = (keyframes + carry["ptr"].shape[1]) * max(cfg.hidden_size // md, 1)  # pointers split into md-wide tokens
    n_mem = (keyframes + cfg.num_maskmem - 1) * cfg.embed_size**2 + n_ptr
    mem = jnp.asarray(rng.normal(size=(n, n_mem, md)).astype(np.float32))
    dec = ap(m, p, SVM.frame_step, fo, fo["feat"], None, None, False)
    masks_in = jax.nn.sigmoid(dec["high_res_masks"])[..., None]
    me = p["memory_encoder"]
    hid = jnp.asarray(rng.normal(size=(n, cfg.embed_size, cfg.embed_size,
                                       cfg.memory_encoder_hidden_size)).astype(np.float32))
    dw = me["memory_fuser"]["layers_0"]["depthwise_conv"]["kernel"]
    jits = {
        "image features (all clips x frames)": (jax.jit(features), (p, px)),
        "conditioning frames (features + decoder + memory encoder, N x K)": (jax.jit(conditioning),
                                                                             (p, px, boxes, valid)),
        PROP: (jax.jit(propagate), (p, px, boxes, valid)),
        "one tracking step (N tracks, 1 frame)": (
            jax.jit(lambda p_, c, cr: sv.track_step(m, p_, c, cr, frame, t, frames)), (p, cond_n, carry)),
        "  memory attention": (jax.jit(lambda p_, mm: ap(m, p_, SVM.condition, fo["feat"], sv._frame_pos(m), mm, mm,
                                                         n_ptr, jnp.ones(mm.shape[:2], bool))), (p, mem)),
        "  mask decoder": (jax.jit(lambda p_: ap(m, p_, SVM.frame_step, fo, fo["feat"], None, None, False)), (p,)),
        "  memory encoder": (jax.jit(lambda p_, hr, ob: ap(m, p_, SVM.encode_memory, fo["feat"], hr, ob, False)),
                             (p, dec["high_res_masks"], dec["object_score_logits"])),
        "    mask downsampler": (jax.jit(lambda q, x: MaskDownSampler(cfg).apply({"params": q}, x)),
                                 (me["mask_downsampler"], masks_in)),
        "    fuser (ConvNeXt blocks, depthwise 7x7)": (jax.jit(lambda q, x: MemoryFuser(cfg).apply({"params": q}, x)),
                                                      (me["memory_fuser"], hid)),
        "depthwise 7x7 at the fuser's shape: XLA grouped conv": (jax.jit(depthwise_grouped), (hid, dw)),
        "depthwise 7x7 at the fuser's shape: 49 shifted multiply-adds": (jax.jit(depthwise_shifted), (hid, dw)),
    }
    np.testing.assert_allclose(np.asarray(jits["depthwise 7x7 at the fuser's shape: XLA grouped conv"][0](hid, dw)),
                               np.asarray(depthwise_shifted(hid, dw)), rtol=1e-4, atol=1e-4)
    import functools

    from omnir1_jax.models.sam2 import memory
    from omnir1_jax.models.sam2.common import conv

    orig = memory.conv
    memory.conv = functools.partial(conv, depthwise_impl="xla")  # the fuser as before issue 9's fix
    try:  # traced and compiled now, under the patch; later calls reuse that executable
        old = jax.jit(lambda p_, x, b, v: propagate(p_, x, b, v))
        old_out = old(p, px, boxes, valid)
    finally:
        memory.conv = orig
    current = jits[PROP][0](p, px, boxes, valid)
    np.testing.assert_allclose(np.asarray(old_out), np.asarray(current), rtol=1e-3, atol=1e-3)
    jits[PROP_OLD] = (old, (p, px, boxes, valid))
    return {"fns": {k: (lambda f=f, a=a: f(*a)) for k, (f, a) in jits.items()},
            "shapes": {"tracks_total": n, "memory_tokens": n_mem, "fuser_input": list(hid.shape),
                       "high_res_mask": list(dec["high_res_masks"].shape)}}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Times the pieces; prints a table and returns / writes the JSON result."""
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=2)
    p.add_argument("--tracks", type=int, default=8, help="track slots per clip (sam_tracks_per_clip)")
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--keyframes", type=int, default=4)
    args = p.parse_args(argv)
    clips, tracks, frames, kf = (1, 2, 2, 1) if args.smoke else (args.clips, args.tracks, args.frames, args.keyframes)
    repeats = args.repeats or (1 if args.smoke else 7)
    t0 = time.perf_counter()
    env = build(clips, tracks, frames, kf)
    first = {k: common.timed(fn)[0] for k, fn in env["fns"].items()}
    times = common.interleaved(env["fns"], repeats, warmup=1)
    rows = [{"what": k, "median_s": common.summary(v)["median_s"], "first_call_s": first[k],
             "samples": common.summary(v)} for k, v in times.items()]
    print(common.table(rows, ["what", "median_s"]), file=sys.stderr)
    med = {r["what"]: r["median_s"] for r in rows}
    ratio = (med["depthwise 7x7 at the fuser's shape: XLA grouped conv"]
             / med["depthwise 7x7 at the fuser's shape: 49 shifted multiply-adds"])
    prop_ratio = med[PROP_OLD] / med[PROP]
    print(f"[sam2_stage_profile] grouped / shifted depthwise conv: {ratio:.1f}x; propagation before / now: "
          f"{prop_ratio:.2f}x; done in "
          f"{time.perf_counter() - t0:.1f}s", file=sys.stderr)
    settings = {"clips": clips, "tracks_per_clip": tracks, "frames": frames, "keyframes": kf, "smoke": args.smoke,
                "repeats": repeats, **env["shapes"]}
    return common.finish({"benchmark": "sam2_stage_profile", "settings": settings, "rows": rows,
                          "ratio": float(ratio), "propagation_ratio": float(prop_ratio)}, args.json)


if __name__ == "__main__":
    main()
