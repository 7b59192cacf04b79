"""Stages A-D of the GRPO step: rollout, parse, ground, segment (DESIGN §1, omni_r1.md §4-5).

All functions are pure, jittable and static-shape; the step composes them inside one ``jax.jit``.
Shapes: B prompts (one task per batch), G generations, N = B*G completions (prompt-major, n = b*G + g),
T new tokens, F frames per clip, K keyframes, O objects, m reward-mask side.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from omnir1_jax.models.sam2 import video as sam_video
from omnir1_jax.rollout import grounding as grounding_lib
from omnir1_jax.rollout.parse import parse_completions
from omnir1_jax.rollout.sampler import SampleOutput, SamplerConfig, sample
from omnir1_jax.rl.grpo_settings import BatchShapes, GRPOSettings

Batch = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class StepModels:
    """The Flax modules of the step (static, hashable): policy/reference thinker and the segmenter.

    ``grounder`` is the frozen System-2 thinker's module when its architecture differs from the policy's (see
    :func:`omnir1_jax.eval_pipeline.grounder_module`); None: the grounder runs ``thinker``."""

    thinker: nn.Module
    segmenter: nn.Module | None = None
    grounder: nn.Module | None = None


def sampler_config(s: GRPOSettings) -> SamplerConfig:
    return SamplerConfig(num_generations=s.num_generations, max_new_tokens=s.max_new_tokens,
                         temperature=s.temperature, top_p=s.top_p, top_k=s.top_k, stop_ids=s.stop_ids,
                         pad_id=s.pad_id, cache_dtype=s.cache_dtype)


def embed_prompts(models: StepModels, params: Any, batch: Batch, shapes: BatchShapes):
    """Encoders once per prompt: ``(embeds [B,P,D], positions [3,B,P])``."""
    kw = shapes.embed_kwargs()
    for name in ("pixel_values", "pixel_values_videos", "input_features"):
        if name in batch:
            kw[name] = batch[name]
    embeds, pos, _ = models.thinker.apply({"params": params}, batch["input_ids"], batch["attention_mask"],
                                          method="embed", **kw)
    return embeds, pos


def rollout(models: StepModels, s: GRPOSettings, shapes: BatchShapes, params: Any, batch: Batch,
            rng: jax.Array) -> tuple[jax.Array, jax.Array, SampleOutput]:
    """Stage A: embed each prompt once, prefill once, sample G completions."""
    embeds, pos = embed_prompts(models, params, batch, shapes)
    out = sample(models.thinker, params, embeds, pos, batch["attention_mask"], rng, sampler_config(s))
    return embeds, pos, out


def parse(spec: grounding_lib.GroundingSpec, s: GRPOSettings, batch: Batch, out: SampleOutput) -> dict:
    """Stage B: format flag, keyframes and description spans of every completion ``[N, ...]``.

    RefAVS: the whole answer is the description and the single keyframe is frame 0.
    """
    g = s.num_generations
    n_frames = jnp.repeat(batch["num_frames"], g)
    num_f = batch["gt_masks"].shape[2]
    parsed = parse_completions(out.tokens, out.lengths, spec.byte_table, spec.tok_lens, n_frames,
                               J=s.max_json, K=s.max_keyframes, F=num_f)
    if s.task == "refavs":
        span = parsed["answer_tokens"]  # [N, 2]
        ok = parsed["answer_found"] & (parsed["answer_bytes"][:, 1] > parsed["answer_bytes"][:, 0])
        parsed = dict(parsed, key_frames=jnp.zeros((span.shape[0], 1), jnp.int32), key_valid=ok[:, None],
                      key_desc_tokens=span[:, None, :], key_desc_tok_exact=parsed["answer_tok_exact"][:, None])
    return parsed


def ground(models: StepModels, s: GRPOSettings, spec: grounding_lib.GroundingSpec, grounder_params: Any,
           batch: Batch, out: SampleOutput, parsed: dict) -> grounding_lib.GroundingOutput:
    """Stage C: the frozen grounder (greedy) boxes every (completion, keyframe) on its high-res frame."""
    cfg = grounding_lib.GroundingConfig(max_new_tokens=s.grounding_max_new_tokens, num_objects=s.max_objects,
                                        cache_dtype=s.cache_dtype, encode_chunk=s.ground_encode_chunk)
    module = models.thinker if models.grounder is None else models.grounder
    return grounding_lib.ground(module, grounder_params, spec, out.tokens, parsed,
                                batch["hires_patches"], batch["ground_ratio"], cfg)


def track_slots(prompted: jax.Array, capacity: int) -> tuple[jax.Array, jax.Array]:
    """Fixed-order SAM2 track slots of one clip: ``order [C]`` into the G*O (g, o) tracks, ``on [C]`` prompted.

    Prompted tracks come first, ranked by (object rank within its completion, g): with C = G every completion
    keeps its first prompted object, and a completion's extra objects are the first to be dropped beyond C.
    """
    g, o = prompted.shape
    rank = jnp.cumsum(prompted, axis=1) - 1  # [G, O] rank among the completion's prompted objects
    key = jnp.where(prompted, rank * g + jnp.arange(g)[:, None], g * o)  # unique for prompted tracks
    order = jnp.argsort(key.reshape(-1), stable=True)[:capacity]  # [C]
    return order, prompted.reshape(-1)[order]


def segment(models: StepModels, s: GRPOSettings, sam_params: Any, batch: Batch, boxes: jax.Array,
            frames: jax.Array, valid: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Stage D: SAM2 turns box prompts into union masks over the clip, ``[B, G, F, m, m]`` bool, plus track counts.

    ``boxes [B, G, K, O, 4]`` in original pixels on keyframes ``frames [B, G, K]``; ``valid [B, G, K, O]``.
    Image features are computed once per clip and shared by the G rollouts and the O objects.  With
    ``s.sam_tracks_per_clip = C`` in (0, G*O) the prompted (g, o) tracks of a clip are gathered into C slots
    (:func:`track_slots`), propagated as one SAM2 pass (omni_r1.md §5.6) and their masks scattered back to their
    completions; otherwise all G*O tracks run and unprompted ones are masked.  Objects are tracked
    independently, so both agree exactly whenever C >= the prompted count.  The counts ``[B]`` int32:
    ``sam_tracks_prompted`` and ``sam_tracks_dropped`` (prompted tracks beyond C, not segmented).
    """
    b, g, k, o, _ = boxes.shape
    num_f = batch["sam_pixels"].shape[1]
    cap = s.sam_tracks_per_clip
    compact = 0 < cap < g * o
    if compact and s.sam_direction == "bidirectional":
        raise ValueError("sam_tracks_per_clip > 0 needs forward or reverse propagation: a bidirectional pass "
                         "starts at the first prompted frame of its whole session, so merging rollouts changes it")
    scale = jnp.concatenate([batch["sam_scale"], batch["sam_scale"]], axis=-1)  # [B, 4]
    prompts = boxes * scale[:, None, None, None, :]
    onehot = jax.nn.one_hot(frames, num_f, dtype=jnp.bool_)  # [B, G, K, F]
    # Scatter the K keyframe prompts into [O, F] per completion (each frame index appears at most once).
    sel = onehot[..., None, :] & valid[..., None]  # [B, G, K, O, F]
    box_valid = jnp.any(sel, axis=2)  # [B, G, O, F]
    box_prompts = jnp.einsum("bgkof,bgkoc->bgofc", sel.astype(prompts.dtype), prompts)  # [B, G, O, F, 4]
    prompted = jnp.any(box_valid, axis=-1)  # [B, G, O] objects SAM2 actually tracks
    n_prompted = jnp.sum(prompted, axis=(1, 2)).astype(jnp.int32)  # [B]

    def run(pixels, feats, p, v):  # p [N, F, 4], v [N, F] -> logits [N, F, h, w]
        return sam_video.propagate(models.segmenter, sam_params, pixels, p, v, s.sam_direction,
                                   max_cond_frames=min(k, num_f), features=feats)

    def one_clip(pixels, p, v, obj_on):
        feats = sam_video.encode_frames(models.segmenter, sam_params, pixels)
        if not compact:
            logits = jax.vmap(lambda pp, vv: run(pixels, feats, pp, vv))(p, v)  # [G, O, F, h, w]
            return jnp.any((logits > 0) & obj_on[..., None, None, None], axis=1)  # [G, F, h, w]
        order, on = track_slots(obj_on, cap)  # [C]
        logits = run(pixels, feats, p.reshape(g * o, num_f, 4)[order], v.reshape(g * o, num_f)[order])
        owner = jax.nn.one_hot(order // o, g, dtype=jnp.float32) * on[:, None]  # [C, G]
        hit = jnp.einsum("cg,cfhw->gfhw", owner, (logits > 0).astype(jnp.float32))
        return hit > 0  # [G, F, h, w] union over the completion's kept tracks

    masks = jax.vmap(one_clip)(batch["sam_pixels"], box_prompts, box_valid, prompted)  # [B, G, F, h, w]
    m = batch["gt_masks"].shape[-1]
    if masks.shape[-1] != m:
        masks = jax.image.resize(masks.astype(jnp.float32), masks.shape[:-2] + (m, m), "bilinear") > 0.5
    dropped = jnp.maximum(n_prompted - cap, 0) if compact else jnp.zeros_like(n_prompted)
    return masks, {"sam_tracks_prompted": n_prompted, "sam_tracks_dropped": dropped}
