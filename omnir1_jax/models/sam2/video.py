"""In-graph SAM2 video propagation: box prompts on any frames -> mask logits for every (object, frame).

Semantics follow transformers' ``Sam2VideoModel`` driven the way Omni-R1 drives SAM2: each (object, frame) box
is first run as an *initial conditioning frame* (no memory; box = two points labelled 2/3; single-mask output
with the stability fallback; its memory uses the binarised mask), then ``propagate_in_video_iterator`` runs every
frame (forward from frame 0, or reverse from the last frame). A frame that carries an object's box reuses the
conditioning output for that object; other frames are tracked with memory attention over

* all of the object's conditioning frames (temporal code ``num_maskmem - 1``),
* the ``num_maskmem - 1`` most recent tracked (non-conditioning) frames (codes ``offset - 1``),
* object pointers of conditioning frames at or before the current frame (in time order of the pass) and of the
  ``min(T, max_object_pointers_in_encoder) - 1`` most recent tracked frames.

Everything is static-shape: conditioning frames sit in ``max_cond_frames`` slots per object, recent memories and
pointers in fixed ring buffers carried by a ``lax.scan``; absent entries are masked out of the attention, so the
carry does not grow with the video length.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from omnir1_jax.models.sam2.common import sine_position_encoding
from omnir1_jax.models.sam2.model import Sam2VideoModel

Params = Any


def _apply(model: Sam2VideoModel, params: Params, method: Any, *args: Any) -> Any:
    return model.apply({"params": params}, *args, method=method)


def encode_frames(model: Sam2VideoModel, params: Params, pixel_values: jax.Array) -> dict[str, jax.Array]:
    """Per-frame image features (computed once, shared across objects and rollouts): dict of [T, ...] arrays."""
    feats = jax.lax.map(lambda x: _apply(model, params, Sam2VideoModel.image_features, x[None]), pixel_values)
    return {k: v[:, 0] for k, v in feats.items() if k != "pos"}


def _frame_pos(model: Sam2VideoModel) -> jax.Array:
    """Sine encoding of the top-level feature map, [h, w, C] (a constant of the config)."""
    s = model.cfg.embed_size
    return jnp.asarray(sine_position_encoding(s, s, model.cfg.hidden_size // 2))


def _multimask(cfg: Any, num_points: int, init_cond: bool) -> bool:
    return bool(cfg.multimask_output_in_sam and (init_cond or cfg.multimask_output_for_tracking)
                and cfg.multimask_min_pt_num <= num_points <= cfg.multimask_max_pt_num)


def _split_pointers(ptr: jax.Array, pos: jax.Array, valid: jax.Array, mem_dim: int):
    """Splits C-wide pointers into C/mem_dim tokens: ptr [O,n,C], pos [O,n,mem], valid [O,n] -> token arrays."""
    o, n, c = ptr.shape
    s = max(c // mem_dim, 1)
    if s == 1:
        return ptr, pos, valid
    return (ptr.reshape(o, n * s, mem_dim), jnp.repeat(pos, s, axis=1), jnp.repeat(valid, s, axis=1))


def conditioning_outputs(model: Sam2VideoModel, params: Params, get_features: Callable[[jax.Array], Any],
                         box_prompts: jax.Array, box_valid: jax.Array, max_cond_frames: int) -> dict[str, jax.Array]:
    """Runs every object's box frames (up to ``max_cond_frames``, earliest first) as initial conditioning frames.

    ``get_features(frame_idx [N]) -> dict`` gives those frames' :func:`encode_frames` features.
    Returns frame ``idx`` [O,K], ``valid`` [O,K], low-res ``masks`` [O,K,h,w], ``mem`` [O,K,hw,mem], ``ptr`` [O,K,C].
    """
    cfg = model.cfg
    o, k = box_valid.shape[0], max_cond_frames
    order = jnp.argsort(jnp.logical_not(box_valid), axis=1, stable=True)[:, :k]  # [O, K]
    valid = jnp.take_along_axis(box_valid, order, axis=1)
    boxes = jnp.take_along_axis(box_prompts, order[..., None], axis=1)  # [O, K, 4]
    f = get_features(order.reshape(-1))
    embed = f["feat"] + params["no_memory_embedding"][0]
    pts = boxes.reshape(o * k, 1, 2, 2)
    labels = jnp.broadcast_to(jnp.array([2, 3], jnp.int32), (o * k, 1, 2))
    out = _apply(model, params, Sam2VideoModel.frame_step, f, embed, pts, labels, _multimask(cfg, 2, True))
    mem = _apply(model, params, Sam2VideoModel.encode_memory, f["feat"], out["high_res_masks"],
                 out["object_score_logits"], True)
    return {"idx": order, "valid": valid, "masks": out["pred_masks"].reshape(o, k, *out["pred_masks"].shape[1:]),
            "mem": mem.reshape(o, k, -1, mem.shape[-1]), "ptr": out["object_pointer"].reshape(o, k, -1)}


def init_carry(model: Sam2VideoModel, num_objects: int, num_frames: int) -> dict[str, jax.Array]:
    """Empty ring buffers: recent memories [O,R,hw,mem] and pointers [O,P-1,C] with validity flags."""
    cfg = model.cfg
    r = cfg.num_maskmem - 1
    p = min(num_frames, cfg.max_object_pointers_in_encoder) - 1
    hw, c, m = cfg.embed_size**2, cfg.hidden_size, cfg.memory_encoder_output_channels
    return {"mem": jnp.zeros((num_objects, r, hw, m)), "mem_ok": jnp.zeros((num_objects, r), bool),
            "ptr": jnp.zeros((num_objects, p, c)), "ptr_ok": jnp.zeros((num_objects, p), bool)}


def track_step(model: Sam2VideoModel, params: Params, cond: dict[str, jax.Array], carry: dict[str, jax.Array],
               frame: dict[str, jax.Array], t: jax.Array, num_frames: int, reverse: bool = False,
               active: jax.Array | bool = True, heads: Callable | None = None) -> tuple:
    """One propagation step at frame ``t`` for all objects: returns (new carry, low-res mask logits [O,h,w]).

    ``num_frames`` (static) only bounds the pointer window: ``min(num_frames, max_object_pointers_in_encoder)``.
    ``heads(frame, pix_feat, multimask) -> (out, extra)`` replaces the decoder call (training needs its raw
    outputs); then the step returns ``(new carry, logits, extra)``.
    """
    cfg = model.cfg
    o, k = cond["idx"].shape
    md = cfg.memory_encoder_output_channels
    r, p1 = carry["mem"].shape[1], carry["ptr"].shape[1]
    max_ptr = min(num_frames, cfg.max_object_pointers_in_encoder)
    hit = (cond["idx"] == t) & cond["valid"]  # [O, K]
    is_cond = jnp.any(hit, axis=1)
    slot = jnp.argmax(hit, axis=1)
    # ---- spatial memory: conditioning frames, then recent tracked frames
    codes = _apply(model, params, Sam2VideoModel.temporal_codes)  # [M, mem]
    mpos = _apply(model, params, Sam2VideoModel.memory_pos)  # [hw, mem]
    hw = mpos.shape[0]
    mem = jnp.concatenate([cond["mem"], carry["mem"]], axis=1).reshape(o, (k + r) * hw, md)
    frame_codes = jnp.concatenate([jnp.broadcast_to(codes[-1], (k, md)), codes[:r]], axis=0)  # [K+R, mem]
    pos = (mpos[None] + frame_codes[:, None]).reshape(1, (k + r) * hw, md)
    ok = jnp.repeat(jnp.concatenate([cond["valid"], carry["mem_ok"]], axis=1), hw, axis=1)
    # ---- object pointers: eligible conditioning frames, then recent tracked frames
    cdiff = jnp.where(reverse, cond["idx"] - t, t - cond["idx"])  # `reverse` may be traced
    celig = cond["valid"] & jnp.where(reverse, cond["idx"] >= t, cond["idx"] <= t)
    diffs = jnp.concatenate([cdiff, jnp.broadcast_to(jnp.arange(1, p1 + 1), (o, p1))], axis=1)
    ptr_pos = _apply(model, params, Sam2VideoModel.pointer_pos, diffs, max_ptr)
    ptr, ptr_pos, ptr_ok = _split_pointers(jnp.concatenate([cond["ptr"], carry["ptr"]], axis=1), ptr_pos,
                                           jnp.concatenate([celig, carry["ptr_ok"]], axis=1), md)
    n_ptr = ptr.shape[1]
    mem = jnp.concatenate([mem, ptr], axis=1)
    pos = jnp.concatenate([jnp.broadcast_to(pos, (o, *pos.shape[1:])), ptr_pos], axis=1)
    ok = jnp.concatenate([ok, ptr_ok], axis=1)
    # ---- condition, decode, encode the new memory
    fo = {n: jnp.broadcast_to(v, (o, *v.shape)) for n, v in frame.items()}
    pix = _apply(model, params, Sam2VideoModel.condition, fo["feat"], _frame_pos(model), mem, pos, n_ptr,
                 ok)
    if heads is None:
        out, extra = _apply(model, params, Sam2VideoModel.frame_step, fo, pix, None, None,
                            _multimask(cfg, 0, False)), None
    else:
        out, extra = heads(fo, pix, _multimask(cfg, 0, False))
    new_mem = _apply(model, params, Sam2VideoModel.encode_memory, fo["feat"], out["high_res_masks"],
                     out["object_score_logits"], False).reshape(o, 1, hw, md)
    tracked = jnp.logical_and(jnp.logical_not(is_cond), active)  # [O]
    new = {"mem": jnp.concatenate([new_mem, carry["mem"][:, :-1]], axis=1) if r else carry["mem"],
           "mem_ok": jnp.concatenate([tracked[:, None], carry["mem_ok"][:, :-1]], axis=1) if r else carry["mem_ok"],
           "ptr": jnp.concatenate([out["object_pointer"][:, None], carry["ptr"][:, :-1]], axis=1),
           "ptr_ok": jnp.concatenate([tracked[:, None], carry["ptr_ok"][:, :-1]], axis=1)}
    cond_mask = jnp.take_along_axis(cond["masks"], slot[:, None, None, None], axis=1)[:, 0]
    logits = jnp.where(is_cond[:, None, None], cond_mask, out["pred_masks"])
    return (new, logits) if heads is None else (new, logits, extra)


def propagate(model: Sam2VideoModel, params: Params, pixel_values: jax.Array, box_prompts: jax.Array,
              box_valid: jax.Array, direction: str = "forward", max_cond_frames: int | None = None,
              features: dict[str, jax.Array] | None = None, per_frame_features: bool = False) -> jax.Array:
    """Segments O objects over T frames from box prompts; jit-able, static shapes.

    Args:
      pixel_values: [T, 3, S, S] normalised frames at ``cfg.image_size``.
      box_prompts: [O, T, 4] boxes (x1, y1, x2, y2) in the same pixel frame; read only where ``box_valid``.
      box_valid: [O, T] bool, which (object, frame) pairs carry a box (conditioning frames).
      direction: ``forward`` (from frame 0, Omni-R1 training), ``reverse`` (from the last frame) or
        ``bidirectional`` (forward pass, then a reverse pass from the first prompted frame that overwrites the
        frames up to it, as ``propagate_in_video_iterator`` then ``(reverse=True)`` do).
      max_cond_frames: conditioning slots per object (default T: exact); boxes beyond the first K are ignored.
      features: precomputed :func:`encode_frames` output (share it across G rollouts with ``vmap``).
      per_frame_features: encode each frame inside the scan instead (activation memory flat in T).
    Returns:
      low-resolution mask logits [O, T, 4*S/16, 4*S/16]; masks are ``logits > 0``.
    """
    t_len, o = pixel_values.shape[0], box_prompts.shape[0]
    k = min(max_cond_frames or t_len, t_len)
    if per_frame_features:
        get = lambda idx: encode_frames(model, params, pixel_values[idx])  # noqa: E731
    else:
        if features is None:
            features = encode_frames(model, params, pixel_values)
        get = lambda idx: {n: v[idx] for n, v in features.items()}  # noqa: E731
    cond = conditioning_outputs(model, params, get, box_prompts, box_valid, k)

    def frame_at(t: jax.Array) -> dict[str, jax.Array]:
        if per_frame_features:
            f = _apply(model, params, Sam2VideoModel.image_features, pixel_values[t][None])
            return {n: v[0] for n, v in f.items() if n != "pos"}
        return {n: v[t] for n, v in features.items()}

    def step(carry, t, reverse, active):
        return track_step(model, params, cond, carry, frame_at(t), t, t_len, reverse, active)

    carry0 = init_carry(model, o, t_len)
    fwd = jnp.arange(t_len)
    if direction == "forward":
        _, m = jax.lax.scan(lambda c, t: step(c, t, False, True), carry0, fwd)
        return jnp.moveaxis(m, 0, 1)
    if direction == "reverse":
        _, m = jax.lax.scan(lambda c, t: step(c, t, True, True), carry0, fwd[::-1])
        return jnp.moveaxis(m[::-1], 0, 1)
    if direction == "bidirectional":
        return _bidirectional(step, carry0, box_valid, t_len)
    raise ValueError(f"unknown direction {direction!r}")


def _bidirectional(step: Callable, carry0: dict[str, jax.Array], box_valid: jax.Array, t_len: int) -> jax.Array:
    """Forward from the first prompted frame s, then reverse from s to 0 (HF's two iterator passes).

    One ``lax.scan`` of 2T steps (one compiled body): steps < T run forward (frames < s inactive), steps >= T run
    frames T-1..0 in reverse (frames > s frozen). The reverse pass at s needs the forward pass's tracked memories
    of frames s+1.. : they are snapshotted from the ring buffers during the forward steps, so nothing per-frame
    is kept.
    """
    r, p1 = carry0["mem"].shape[1], carry0["ptr"].shape[1]
    s = jnp.clip(jnp.min(jnp.where(box_valid, jnp.arange(t_len)[None], t_len)), 0, t_len - 1)
    tau_m, tau_p = jnp.minimum(s + r, t_len - 1), jnp.minimum(s + p1, t_len - 1)

    def regather(buf, ok, tau, n):
        # reverse ring slot i (offset i+1 from s) holds frame s+1+i = forward ring slot tau - s - 1 - i
        j = tau - s - 1 - jnp.arange(n)
        jc = jnp.clip(j, 0, max(n - 1, 0))
        return jnp.take(buf, jc, axis=1), jnp.take(ok, jc, axis=1) & ((j >= 0) & (j < n))[None]

    def body(c, i):
        ring, snap = c
        backward = i >= t_len
        t = jnp.where(backward, 2 * t_len - 1 - i, i)
        start = dict(ring)
        if r:
            start["mem"], start["mem_ok"] = regather(snap["mem"], snap["mem_ok"], tau_m, r)
        if p1:
            start["ptr"], start["ptr_ok"] = regather(snap["ptr"], snap["ptr_ok"], tau_p, p1)
        ring = jax.tree.map(lambda a, b: jnp.where(i == t_len, a, b), start, ring)
        active = jnp.where(backward, t <= s, t >= s)
        new, m = step(ring, t, backward, active)
        ring = jax.tree.map(lambda a, b: jnp.where(backward & (t > s), b, a), new, ring)
        take_m, take_p = ~backward & (t == tau_m), ~backward & (t == tau_p)
        snap = {"mem": jnp.where(take_m, new["mem"], snap["mem"]),
                "mem_ok": jnp.where(take_m, new["mem_ok"], snap["mem_ok"]),
                "ptr": jnp.where(take_p, new["ptr"], snap["ptr"]),
                "ptr_ok": jnp.where(take_p, new["ptr_ok"], snap["ptr_ok"])}
        return (ring, snap), m

    _, m = jax.lax.scan(body, (carry0, carry0), jnp.arange(2 * t_len))
    m_fwd, m_rev = m[:t_len], m[t_len:][::-1]
    m = jnp.where((jnp.arange(t_len) <= s)[:, None, None, None], m_rev, m_fwd)
    return jnp.moveaxis(m, 0, 1)


def propagate_groups(model: Sam2VideoModel, params: Params, pixel_values: jax.Array, box_prompts: jax.Array,
                     box_valid: jax.Array, direction: str = "forward",
                     max_cond_frames: int | None = None) -> jax.Array:
    """G rollouts over one clip: boxes [G,O,T,4], valid [G,O,T] -> logits [G,O,T,h,w].

    The clip's image features are computed once and shared by every rollout (``vmap`` over G only).
    """
    feats = encode_frames(model, params, pixel_values)
    fn = lambda b, v: propagate(model, params, pixel_values, b, v, direction, max_cond_frames, feats)  # noqa: E731
    return jax.vmap(fn)(box_prompts, box_valid)
