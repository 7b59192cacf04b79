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
    """The Flax modules of the step (static, hashable): policy/reference thinker and the segmenter."""

    thinker: nn.Module
    segmenter: nn.Module | None = None


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
                                        cache_dtype=s.cache_dtype)
    return grounding_lib.ground(models.thinker, grounder_params, spec, out.tokens, parsed,
                                batch["hires_patches"], batch["ground_ratio"], cfg)


def segment(models: StepModels, s: GRPOSettings, sam_params: Any, batch: Batch, boxes: jax.Array,
            frames: jax.Array, valid: jax.Array) -> jax.Array:
    """Stage D: SAM2 turns box prompts into union masks over the clip, ``[B, G, F, m, m]`` bool.

    ``boxes [B, G, K, O, 4]`` in original pixels on keyframes ``frames [B, G, K]``; ``valid [B, G, K, O]``.
    Image features are computed once per clip and shared by the G rollouts and the O objects.
    """
    b, g, k, o, _ = boxes.shape
    num_f = batch["sam_pixels"].shape[1]
    scale = jnp.concatenate([batch["sam_scale"], batch["sam_scale"]], axis=-1)  # [B, 4]
    prompts = boxes * scale[:, None, None, None, :]
    onehot = jax.nn.one_hot(frames, num_f, dtype=jnp.bool_)  # [B, G, K, F]
    # Scatter the K keyframe prompts into [O, F] per completion (each frame index appears at most once).
    sel = onehot[..., None, :] & valid[..., None]  # [B, G, K, O, F]
    box_valid = jnp.any(sel, axis=2)  # [B, G, O, F]
    box_prompts = jnp.einsum("bgkof,bgkoc->bgofc", sel.astype(prompts.dtype), prompts)  # [B, G, O, F, 4]
    prompted = jnp.any(box_valid, axis=-1)  # [B, G, O] objects SAM2 actually tracks

    def one_clip(pixels, p, v, obj_on):
        feats = sam_video.encode_frames(models.segmenter, sam_params, pixels)

        def one_rollout(pp, vv, on):
            logits = sam_video.propagate(models.segmenter, sam_params, pixels, pp, vv, s.sam_direction,
                                         max_cond_frames=min(k, num_f), features=feats)  # [O, F, h, w]
            return jnp.any((logits > 0) & on[:, None, None, None], axis=0)  # [F, h, w]

        return jax.vmap(one_rollout)(p, v, obj_on)

    masks = jax.vmap(one_clip)(batch["sam_pixels"], box_prompts, box_valid, prompted)  # [B, G, F, h, w]
    m = batch["gt_masks"].shape[-1]
    if masks.shape[-1] != m:
        masks = jax.image.resize(masks.astype(jnp.float32), masks.shape[:-2] + (m, m), "bilinear") > 0.5
    return masks
