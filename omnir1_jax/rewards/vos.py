"""Omni-R1's VOS reward (`omni_r1.md` §6.2), jittable, static shapes, every term returned for logging.

One completion's parsed answer + System-2 output (:class:`VOSCompletion`) is scored against its clip's
ground truth (:class:`VOSTarget`).  Terms, with J = #JSON objects, O = #GT objects, K = #grounding frames:

* ``c``: (0.2·J + 0.2·#well-formed + 0.2·#in-range + Σ_valid-seg mask_ratio) / J (0 if J = 0);
* ``total_frame_reward``: 0.4·U if U <= 4 else 0.4·(7 - U), U = #unique frame indices;
* ``total_overlap_reward``: Σ_seg min(0, -0.2·(len - 1)) - 0.5·(#indices - U);
* ``avg_ratio`` (saliency): mean over grounding frames of area(f) / (max_f' area(f') + 1e-6);
* ``avg_iou`` (R_A): mean Hungarian-matched +1-pixel box IoU (``x1 <= 0`` quirk) over the
  (object, grounding frame) pairs whose GT box exists;
* ``object_num_mismatch``: 0.5·(offset / (O + 1e-6)) / K, offset = -Σ_k max(0, #S2-JSON_k - O);
* ``sam_iou`` (R_G): mean DAVIS J over the clip of the SAM2 union mask vs the GT union mask (0 if
  System 2 produced no valid box).

Segments enter as exact sufficient statistics over ALL valid segments (``cover_by_len[l-1, f]`` = number
of valid segments of length l covering frame f, as ``rollout.parse.parse_completions`` returns it), so there
is no cap on the number of JSON objects.  Grounding frames are derived from the coverage (first K unique
frame indices in sorted order), the parser's rule, so System-2 slot ``k`` is the k-th grounding frame.
:func:`completion_from_segments` builds the statistics from per-object arrays, and
:func:`completion_from_parse` from the parser's outputs.
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp

from omnir1_jax.rewards.boxes import hungarian_max, pairwise_iou_plus1
from omnir1_jax.rewards.combine import RewardWeights, combine_vos_terms
from omnir1_jax.rewards.masks import clip_mean_iou, union_over_objects


@dataclasses.dataclass(frozen=True)
class VOSRewardConfig:
    """Constants of the released ``time_reward_multi_time`` / ``grounding2sam_process_reward``."""

    match_reward: float = 0.2  # per JSON object found
    element_reward: float = 0.2  # start/end/description present and well-formed
    time_consistency_reward: float = 0.2  # start <= end <= n/2
    mask_ratio_reward: float = 1.0
    interval_length_penalty: float = 0.2  # per extra frame in a segment
    overlap_penalty: float = 0.5  # per duplicated frame index
    gap_reward: float = 0.4  # per unique frame up to target_frames
    target_frames: int = 4  # N
    mismatch_weight: float = 0.5
    ratio_eps: float = 1e-6


@flax.struct.dataclass
class VOSCompletion:
    """Parsed fields of one completion (F frame slots, K grounding frames, O object slots).

    ``num_json`` counts every ``{…}`` object of the answer, ``num_wellformed`` those with well-formed
    start/end/description, ``num_consistent`` those also with start <= end <= n/2 (valid segments).
    ``cover_by_len[l-1, f]``: valid segments of length l covering frame f (frame index min(int(t·2), n-1)).
    ``s2_boxes`` are System 2's ``bbox_2d`` in *resized-image* pixels, slot ``j`` = the j-th JSON object
    it wrote on grounding frame ``k`` (no valid bbox → ``s2_valid = False``); ``s2_num_json`` counts all
    its ``{…}`` objects.  ``pred_masks`` is SAM2's union mask over the clip.
    """

    num_json: jax.Array  # [] int32
    num_wellformed: jax.Array  # [] int32
    num_consistent: jax.Array  # [] int32
    cover_by_len: jax.Array  # [F, F] int32
    s2_boxes: jax.Array  # [K, O, 4] float32
    s2_valid: jax.Array  # [K, O] bool
    s2_num_json: jax.Array  # [K] int32
    pred_masks: jax.Array  # [T, h, w] bool


@flax.struct.dataclass
class VOSTarget:
    """Ground truth of one clip, padded to O objects and T frames.

    ``gt_boxes`` are in original-image pixels, ``[-1, -1, -1, -1]`` where the object is absent;
    ``gt_obj_area`` is each object's mask area per frame (any resolution; full resolution reproduces
    the released code exactly); ``resize_ratio`` = (resized_w / w, resized_h / h) of the grounding image.
    """

    gt_masks: jax.Array  # [O, T, h, w] bool, reward resolution
    gt_obj_area: jax.Array  # [O, T] float32
    gt_boxes: jax.Array  # [O, T, 4] float32
    obj_valid: jax.Array  # [O] bool
    n_frames: jax.Array  # [] int32
    resize_ratio: jax.Array  # [2] float32


def make_target(gt_masks, gt_boxes, obj_valid, n_frames, resize_ratio, gt_obj_area=None) -> VOSTarget:
    """Build a :class:`VOSTarget`; the per-object areas default to those of ``gt_masks``."""
    gt_masks = jnp.asarray(gt_masks) != 0
    if gt_obj_area is None:
        gt_obj_area = jnp.sum(gt_masks, axis=(-2, -1)).astype(jnp.float32)
    return VOSTarget(
        gt_masks=gt_masks,
        gt_obj_area=jnp.asarray(gt_obj_area, jnp.float32),
        gt_boxes=jnp.asarray(gt_boxes, jnp.float32),
        obj_valid=jnp.asarray(obj_valid, bool),
        n_frames=jnp.asarray(n_frames, jnp.int32),
        resize_ratio=jnp.asarray(resize_ratio, jnp.float32),
    )


def segment_cover(
    seg_start: jax.Array, seg_end: jax.Array, seg_valid: jax.Array, num_frames: int
) -> jax.Array:
    """``cover_by_len [F, F]`` of segments ``[J]``: [l-1, f] = valid segments of length l covering frame f."""
    f = jnp.arange(num_frames)
    length = seg_end - seg_start + 1  # [J]
    covers = seg_valid[:, None] & (f[None, :] >= seg_start[:, None]) & (f[None, :] <= seg_end[:, None])
    by_len = (length[:, None] == jnp.arange(1, num_frames + 1)[None, :])  # [J, F(l)]
    return jnp.einsum("jl,jf->lf", by_len.astype(jnp.int32), covers.astype(jnp.int32))


def grounding_frames(cover: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """The first ``k`` covered frames in sorted order: ``(frames [k] int32, valid [k] bool)``."""
    present = cover > 0
    rank = jnp.cumsum(present) - 1
    hit = present[None, :] & (rank[None, :] == jnp.arange(k)[:, None])  # [k, F]
    return jnp.argmax(hit, axis=1).astype(jnp.int32), jnp.any(hit, axis=1)


def _fit_frames(cover_by_len: jax.Array, num_t: int) -> jax.Array:
    """Pad / crop the parser's frame cap F to the target's T (frames >= n are never covered)."""
    f = cover_by_len.shape[-1]
    if f >= num_t:
        return cover_by_len[:num_t, :num_t]
    return jnp.pad(cover_by_len, ((0, num_t - f), (0, num_t - f)))


def completion_from_segments(
    num_json, json_present, fields_ok, range_ok, seg_start, seg_end, num_frames: int, **s2_and_masks
) -> VOSCompletion:
    """:class:`VOSCompletion` from per-JSON-object arrays ``[J]`` (all objects of the answer)."""
    present = jnp.asarray(json_present, bool)
    fields = present & jnp.asarray(fields_ok, bool)
    valid = fields & jnp.asarray(range_ok, bool)
    start, end = jnp.asarray(seg_start, jnp.int32), jnp.asarray(seg_end, jnp.int32)
    return VOSCompletion(
        num_json=jnp.asarray(num_json, jnp.int32),
        num_wellformed=jnp.sum(fields).astype(jnp.int32),
        num_consistent=jnp.sum(valid).astype(jnp.int32),
        cover_by_len=segment_cover(start, end, valid, num_frames),
        **s2_and_masks,
    )


def completion_from_parse(
    parsed: dict, s2: dict, pred_masks: jax.Array, s2_ratio: jax.Array | None = None
) -> VOSCompletion:
    """:class:`VOSCompletion` (batched like its inputs) from ``parse_completions`` / ``parse_boxes`` dicts.

    ``s2`` holds ``boxes [..., K, O, 4]``, ``box_valid [..., K, O]``, ``n_json [..., K]``.  Call
    ``parse_boxes`` with ratios = 1 to get resized-image pixels; if it mapped them to original pixels,
    pass the same ``s2_ratio [..., 2]`` and the boxes are scaled back.
    """
    boxes = s2["boxes"]
    if s2_ratio is not None:
        r = jnp.asarray(s2_ratio, jnp.float32)
        boxes = boxes * jnp.concatenate([r, r], axis=-1)[..., None, None, :]
    return VOSCompletion(
        num_json=parsed["n_objects"],
        num_wellformed=parsed["n_wellformed"],
        num_consistent=parsed["n_consistent"],
        cover_by_len=parsed["cover_by_len"],
        s2_boxes=boxes,
        s2_valid=s2["box_valid"],
        s2_num_json=s2["n_json"],
        pred_masks=pred_masks,
    )


def vos_terms(comp: VOSCompletion, tgt: VOSTarget, cfg: VOSRewardConfig = VOSRewardConfig()) -> dict:
    """Every raw VOS reward term of one completion (unweighted), plus validity flags."""
    f32 = jnp.float32
    num_t = tgt.gt_obj_area.shape[1]
    num_k = comp.s2_boxes.shape[0]
    num_o = tgt.obj_valid.shape[0]
    n_obj = jnp.sum(tgt.obj_valid).astype(f32)
    jn = comp.num_json.astype(f32)

    # ---- 1. parse/format shaping c -----------------------------------------------------------
    cbl = _fit_frames(comp.cover_by_len, num_t).astype(f32)  # [T(l), T(f)]
    lens = jnp.arange(1, num_t + 1, dtype=f32)  # segment length l
    t = jnp.arange(num_t)
    objs_with_mask = jnp.sum((tgt.gt_obj_area > 0) & tgt.obj_valid[:, None], axis=0).astype(f32)  # [T]
    # Σ_seg mask_ratio = Σ_seg Σ_{f in seg} objs_with_mask[f] / (len_seg · O)
    ratio_sum = jnp.sum(cbl * objs_with_mask[None, :] / lens[:, None]) / jnp.maximum(n_obj, 1.0)
    n_consistent = comp.num_consistent.astype(f32)
    c_sum = (
        cfg.match_reward * jn
        + cfg.element_reward * comp.num_wellformed.astype(f32)
        + cfg.time_consistency_reward * n_consistent
        + cfg.mask_ratio_reward * ratio_sum
    )
    c = jnp.where(jn > 0, c_sum / jnp.maximum(jn, 1.0), 0.0)
    has_valid_segment = (n_consistent > 0) & (jn > 0)

    # ---- 2-3. frame count and overlap (R_num, R_diversity) ---------------------------------------
    count = jnp.sum(cbl, axis=0)  # [T] valid segments covering each frame
    frames, frames_valid = grounding_frames(count, num_k)
    uniq = jnp.sum(count > 0).astype(f32)
    dup = jnp.sum(count) - uniq
    n_tgt = cfg.target_frames
    total_frame_reward = cfg.gap_reward * jnp.where(uniq <= n_tgt, uniq, 2 * n_tgt - 1 - uniq)
    segs_per_len = jnp.sum(cbl, axis=1) / lens  # [T] number of segments of each length
    length_pen = jnp.minimum(0.0, -cfg.interval_length_penalty * (lens - 1.0))
    total_overlap_reward = jnp.sum(segs_per_len * length_pen) - cfg.overlap_penalty * dup

    # ---- 4. saliency ---------------------------------------------------------------------------
    frame_area = jnp.sum(jnp.where(tgt.obj_valid[:, None], tgt.gt_obj_area, 0.0), axis=0)  # [T]
    clip_max = jnp.max(jnp.where(t < tgt.n_frames, frame_area, 0.0))
    ratio = frame_area / (clip_max + cfg.ratio_eps)
    n_kf = jnp.sum(frames_valid).astype(f32)
    avg_ratio = jnp.sum(jnp.where(frames_valid, ratio[frames], 0.0)) / jnp.maximum(n_kf, 1.0)

    # ---- 5. alignment: Hungarian-matched box IoU on each grounding frame -------------------------
    scale = jnp.concatenate([tgt.resize_ratio, tgt.resize_ratio])  # [4] (w, h, w, h)
    gt_k = jnp.transpose(tgt.gt_boxes[:, frames, :], (1, 0, 2))  # [K, O, 4]
    gt_exists = jnp.all(gt_k != -1.0, axis=-1) & tgt.obj_valid[None, :]  # [K, O]
    gt_scaled = jnp.where(tgt.obj_valid[None, :, None], gt_k * scale, -1.0)
    slot_ok = comp.s2_valid & (jnp.arange(num_o)[None, :] < n_obj)  # only the first O slots count
    pred = jnp.where(slot_ok[..., None], comp.s2_boxes.astype(f32), -1.0)

    def _frame_iou(g, p):
        iou = pairwise_iou_plus1(g, p, gt_x1_quirk=True)  # [O, O]
        perm, _ = hungarian_max(iou)
        return jnp.take_along_axis(iou, perm[:, None], axis=1)[:, 0], perm

    matched, perm = jax.vmap(_frame_iou)(gt_scaled, pred)  # [K, O], [K, O]
    iou_ok = gt_exists & frames_valid[:, None]
    avg_iou = jnp.sum(jnp.where(iou_ok, matched, 0.0)) / jnp.maximum(jnp.sum(iou_ok), 1)

    # ---- 6. object-count penalty -----------------------------------------------------------------
    extra = jnp.maximum(comp.s2_num_json.astype(f32) - n_obj, 0.0)
    offset = -jnp.sum(jnp.where(frames_valid & (comp.s2_num_json.astype(f32) > n_obj), extra, 0.0))
    mismatch = jnp.where(
        n_kf > 0, cfg.mismatch_weight * (offset / (n_obj + 1e-6)) / jnp.maximum(n_kf, 1.0), 0.0
    )

    # ---- 7. R_G --------------------------------------------------------------------------------
    box_real = slot_ok & jnp.all(pred != -1.0, axis=-1) & frames_valid[:, None]
    has_valid_bbox = jnp.any(box_real)
    gt_union = union_over_objects(tgt.gt_masks, tgt.obj_valid)
    sam_iou = jnp.where(has_valid_bbox, clip_mean_iou(comp.pred_masks, gt_union, tgt.n_frames), 0.0)

    zero_if_invalid = lambda x: jnp.where(has_valid_segment, x, 0.0)  # noqa: E731
    return {
        "c": c,
        "total_frame_reward": zero_if_invalid(total_frame_reward),
        "total_overlap_reward": zero_if_invalid(total_overlap_reward),
        "avg_ratio": zero_if_invalid(avg_ratio),
        "avg_iou": zero_if_invalid(avg_iou),
        "object_num_mismatch": zero_if_invalid(mismatch),
        "sam_iou": zero_if_invalid(sam_iou),
        "num_unique_frames": uniq,
        "has_valid_segment": has_valid_segment,
        "has_valid_bbox": has_valid_bbox & has_valid_segment,
        "grounding_frames": frames,
        "grounding_valid": frames_valid,
        "match_perm": perm,  # [K, O]: GT object o ↔ System-2 slot perm[k, o]
    }


def vos_reward(
    comp: VOSCompletion,
    tgt: VOSTarget,
    weights: RewardWeights = RewardWeights(),
    cfg: VOSRewardConfig = VOSRewardConfig(),
) -> dict:
    """All VOS terms of one completion plus the weighted accuracy ``acc``."""
    terms = vos_terms(comp, tgt, cfg)
    terms["acc"] = combine_vos_terms(terms, weights)
    return terms


def vos_reward_batch(
    comp: VOSCompletion,
    tgt: VOSTarget,
    weights: RewardWeights = RewardWeights(),
    cfg: VOSRewardConfig = VOSRewardConfig(),
) -> dict:
    """:func:`vos_reward` over completions ``[B, G, ...]`` against targets ``[B, ...]`` (shared by G)."""
    one = lambda c, t: vos_reward(c, t, weights, cfg)  # noqa: E731
    return jax.vmap(jax.vmap(one, in_axes=(0, None)), in_axes=(0, 0))(comp, tgt)


def sam_prompt_boxes(comp: VOSCompletion, tgt: VOSTarget, terms: dict) -> tuple[jax.Array, jax.Array]:
    """SAM2 box prompts aligned to GT object ids: ``([K, O, 4] original pixels, [K, O] valid)``.

    Object o on grounding frame k is prompted with System 2's slot ``match_perm[k, o]`` (the Hungarian
    match), mapped back to original pixels; invalid / dummy slots are not prompted.
    """
    perm = terms["match_perm"]
    n_obj = jnp.sum(tgt.obj_valid)
    boxes = jnp.take_along_axis(comp.s2_boxes, perm[..., None], axis=1)  # [K, O, 4]
    valid = jnp.take_along_axis(comp.s2_valid & (jnp.arange(perm.shape[1])[None] < n_obj), perm, axis=1)
    valid = valid & jnp.all(boxes != -1.0, axis=-1) & terms["grounding_valid"][:, None] & tgt.obj_valid[None]
    scale = jnp.concatenate([tgt.resize_ratio, tgt.resize_ratio])
    return boxes / scale, valid
