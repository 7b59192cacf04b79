"""Stage E of the GRPO step: hierarchical rewards and group advantages, in-graph (omni_r1.md §6).

VOS: the parse/format term, R_K (frame count, diversity, saliency), R_A (Hungarian box IoU), the object-count
penalty and R_G (SAM2 mask IoU over the clip), alpha-weighted, plus format and the group-aware length bonus.
RefAVS: IoU of System 2's frame-0 box, plus format and length.  Returns every term ``[B, G]`` for logging.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from omnir1_jax.rewards import masks as mask_lib
from omnir1_jax.rewards.combine import combine_vos_terms
from omnir1_jax.rewards.refavs import refavs_reward
from omnir1_jax.rewards.shaping import total_reward
from omnir1_jax.rewards.vos import completion_from_parse, make_target, sam_prompt_boxes, vos_reward_batch
from omnir1_jax.rl.advantages import compute_advantages, group_stats
from omnir1_jax.rl.dynamic_sampling import dynamic_sampling_mask
from omnir1_jax.rl.grpo_settings import GRPOSettings

Batch = dict[str, jax.Array]


def _bg(x: jax.Array, b: int, g: int) -> jax.Array:
    return x.reshape((b, g) + x.shape[1:])


def vos_rewards(s: GRPOSettings, batch: Batch, parsed: dict, grounded, segment_fn: Callable | None) -> dict:
    """Every VOS term ``[B, G]``; ``segment_fn(boxes, frames, valid) -> (masks [B,G,F,m,m], counts)`` runs SAM2.

    The counts (``sam_tracks_prompted`` / ``sam_tracks_dropped``, ``[B]``) join the terms for the step metrics.
    """
    b = batch["input_ids"].shape[0]
    g = s.num_generations
    tgt = make_target(batch["gt_masks"], batch["gt_boxes"], batch["obj_valid"], batch["num_frames"],
                      batch["ground_ratio"], batch.get("gt_obj_area"))
    num_f = batch["gt_masks"].shape[2]
    m = batch["gt_masks"].shape[-1]
    ratio_rep = jnp.repeat(batch["ground_ratio"], g, axis=0)
    s2 = {"boxes": grounded.boxes, "box_valid": grounded.box_valid, "n_json": grounded.num_boxes}
    no_masks = jnp.zeros((b * g, num_f, m, m), bool)
    comp = completion_from_parse(parsed, s2, no_masks, s2_ratio=ratio_rep)  # s2 boxes back in resized pixels
    comp = jax.tree_util.tree_map(lambda x: _bg(x, b, g), comp)
    terms = vos_reward_batch(comp, tgt, s.weights, s.vos_cfg)
    if segment_fn is not None:
        prompts, valid = jax.vmap(jax.vmap(sam_prompt_boxes, in_axes=(0, None, 0)), in_axes=(0, 0, 0))(
            comp, tgt, terms)  # [B, G, K, O, 4] original pixels, [B, G, K, O]
        pred, tracks = segment_fn(prompts, terms["grounding_frames"], valid)  # [B, G, F, m, m], counts [B]
        gt_union = jax.vmap(mask_lib.union_over_objects)(tgt.gt_masks, tgt.obj_valid)  # [B, F, m, m]
        iou = jax.vmap(lambda p, gu, n: jax.vmap(lambda pp: mask_lib.clip_mean_iou(pp, gu, n))(p))(
            pred, gt_union, tgt.n_frames)  # [B, G]
        terms["sam_iou"] = jnp.where(terms["has_valid_bbox"], iou, 0.0)
        terms["acc"] = combine_vos_terms(terms, s.weights)
        terms["pred_masks"] = pred
        terms.update(tracks)
    return terms


def refavs_rewards(s: GRPOSettings, batch: Batch, parsed: dict, grounded) -> dict:
    """RefAVS detection reward ``[B, G]``: IoU of the frame-0 box vs the GT box (scaled to the resized image)."""
    b, g = batch["input_ids"].shape[0], s.num_generations
    ratio = jnp.repeat(batch["ground_ratio"], g, axis=0)  # [N, 2]
    scale = jnp.concatenate([ratio, ratio], -1)
    box = grounded.boxes[:, 0, 0] * scale  # first JSON object, back to resized pixels
    gt0 = jnp.repeat(batch["gt_boxes"][:, 0, 0], g, axis=0)  # object 0 on frame 0, original pixels
    nonempty = parsed["key_valid"][:, 0]
    acc = jax.vmap(refavs_reward)(nonempty, box, grounded.box_valid[:, 0, 0], gt0, ratio)
    return {"acc": _bg(acc, b, g), "box_iou": _bg(acc, b, g)}


def rewards_and_advantages(s: GRPOSettings, batch: Batch, parsed: dict, grounded, lengths: jax.Array,
                           segment_fn: Callable | None) -> tuple[jax.Array, jax.Array, jax.Array, dict]:
    """Total reward, advantages (both ``[B, G]``), a per-completion keep mask ``[B, G]`` and all terms."""
    b, g = batch["input_ids"].shape[0], s.num_generations
    if s.task == "vos":
        terms = vos_rewards(s, batch, parsed, grounded, segment_fn)
    else:
        terms = refavs_rewards(s, batch, parsed, grounded)
    tot = total_reward(terms["acc"], _bg(parsed["format_ok"], b, g), _bg(lengths, b, g), s.length_cfg)
    reward = tot["reward"]
    adv = compute_advantages(s.adv_estimator, reward, ddof=s.adv_std_ddof, eps=s.adv_eps)
    keep = jnp.ones((b, g), bool)
    if s.dynamic_sampling:  # filter on the raw task score, not the shaped reward (jax_design_notes §7.7)
        ds = dynamic_sampling_mask(terms["acc"])
        keep = ds["seq_mask"].astype(bool)
        terms["kept_frac"] = ds["kept_frac"]
    terms.update(tot)
    terms["group"] = group_stats(reward, adv)
    return reward, adv, keep, terms
