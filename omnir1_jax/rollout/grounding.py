"""In-graph System-2 grounding: prompts from parsed completions -> frozen reference thinker (greedy) -> boxes.

One jittable `ground(...)`: `assemble` the (rollout, keyframe) grounding prompts (`grounding_assemble`),
run the REFERENCE params' vision encoder once per (clip, candidate high-resolution frame), gather each slot's
features by its parsed keyframe index into the image-token positions, compute TMRoPE positions
(`qwen_omni.rope.get_rope_index`, same as transformers for text + one image), greedy-decode with the rollout
sampler, parse `bbox_2d` boxes in-graph (`parse.parse_boxes`) and map them to ORIGINAL frame pixels by
dividing by the clip's resize ratios. Invalid slots are masked end to end (no valid box, zero counts).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from omnir1_jax.models.qwen_omni.rope import get_rope_index
from omnir1_jax.rollout.grounding_assemble import GroundingPrompts, assemble
from omnir1_jax.rollout.grounding_spec import GroundingSpec, build_spec, host_prompt_ids, host_prompt_text
from omnir1_jax.rollout.parse import parse_boxes
from omnir1_jax.rollout.sampler import SamplerConfig, sample

__all__ = [
    "GroundingConfig", "GroundingOutput", "GroundingPrompts", "GroundingSpec", "assemble", "build_spec",
    "encode_candidate_frames",
    "ground", "ground_jit", "grounding_embeds", "grounding_positions", "host_prompt_ids", "host_prompt_text",
    "parse_slot_boxes", "slot_frame_rows",
]


@dataclasses.dataclass(frozen=True)
class GroundingConfig:
    """Static settings of the grounder run (hashable)."""

    max_new_tokens: int = 64  # grounder budget (the reference uses max_completion_length)
    num_objects: int = 3  # O box slots per keyframe
    cache_dtype: Any = jnp.float32
    # Candidate frames per vision-encoder call (``lax.map`` over chunks of the B*F frames); 0 = all at once.
    # Each full-attention block holds [frames, heads, patches, patches] scores, so chunking bounds the memory.
    encode_chunk: int = 0


@flax.struct.dataclass
class GroundingOutput:
    """Boxes in original frame pixels per (rollout n, keyframe k) and the grounder's raw output."""

    boxes: jax.Array  # [N, K, O, 4] float32 (x1, y1, x2, y2), 0 where invalid
    box_valid: jax.Array  # [N, K, O] bool
    num_boxes: jax.Array  # [N, K] int32: `{...}` objects the grounder emitted (parse_boxes' n_json), 0 if invalid
    slot_valid: jax.Array  # [N, K] bool
    tokens: jax.Array  # [N, K, Tg] int32 grounder output (pad after the stop token)
    lengths: jax.Array  # [N, K] int32
    input_ids: jax.Array  # [N, K, Lg] int32 grounding prompts
    approx: jax.Array  # [N, K] bool, prompt possibly differs from the host path (see grounding_assemble)
    num_approx: jax.Array  # [] int32 metric


def slot_frame_rows(key_frames: jax.Array, num_clips: int, num_frames: int) -> jax.Array:
    """Row of (clip, frame) for each slot [N*K]: clip = n // G (prompt-major completions)."""
    N, K = key_frames.shape
    g = N // num_clips
    clip = jnp.repeat(jnp.arange(N) // g, K)
    return clip * num_frames + jnp.clip(key_frames.reshape(-1), 0, num_frames - 1)


def encode_candidate_frames(model: nn.Module, params: Any, spec: GroundingSpec, frame_patches: jax.Array,
                            chunk: int = 0) -> jax.Array:
    """Vision features ``[B*F, n_img, D]`` of every high-res candidate frame, ``chunk`` frames per encoder call.

    Every frame has its own attention segments, so chunking (a ``lax.map`` over chunks, the last one padded
    with zero frames) changes nothing but peak memory.
    """
    B, F, Np, Pd = frame_patches.shape
    grid = tuple(spec.grid_thw)

    def encode(patches: jax.Array) -> jax.Array:  # [n, Np, Pd] -> [n, n_img, D]
        n = patches.shape[0]
        feats = model.apply({"params": params}, patches.reshape(n * Np, Pd), (grid,) * n,
                            method=lambda m, x, g: m.visual(x, g))
        return feats.reshape(n, spec.n_image_tokens, -1)

    flat = frame_patches.reshape(B * F, Np, Pd)
    if chunk <= 0 or chunk >= B * F:
        return encode(flat)
    n_chunks = -(-B * F // chunk)
    padded = jnp.pad(flat, ((0, n_chunks * chunk - B * F), (0, 0), (0, 0)))  # zero frames, dropped below
    feats = jax.lax.map(encode, padded.reshape(n_chunks, chunk, Np, Pd))  # [n_chunks, chunk, n_img, D]
    return feats.reshape(n_chunks * chunk, *feats.shape[2:])[: B * F]


def grounding_embeds(
    model: nn.Module,
    params: Any,
    spec: GroundingSpec,
    prompts: GroundingPrompts,
    frame_patches: jax.Array,
    frame_rows: jax.Array,
    encode_chunk: int = 0,
) -> tuple[jax.Array, jax.Array]:
    """Prompt embeddings [S, Lg, D] with each slot's keyframe features placed, and positions [3, S, Lg].

    frame_patches [B, F, Np, patch_dim] (static grid `spec.grid_thw` per frame); frame_rows [S] = b * F + f.
    The vision encoder runs once per (clip, frame), ``encode_chunk`` frames at a time (0: all at once).
    """
    feats = encode_candidate_frames(model, params, spec, frame_patches, encode_chunk)  # [B*F, n_img, D]
    ids = prompts.input_ids
    x = model.apply({"params": params}, ids, method="embed_tokens")  # [S, Lg, D]
    is_img = (ids == spec.image_token_id) & (prompts.attention_mask == 1)
    rank = jnp.clip(jnp.cumsum(is_img, axis=1) - 1, 0, spec.n_image_tokens - 1)  # [S, Lg]
    placed = feats[frame_rows[:, None], rank].astype(x.dtype)  # [S, Lg, D]
    x = jnp.where(is_img[..., None], placed, x)
    return x, grounding_positions(model.config, spec, prompts)


def grounding_positions(config: Any, spec: GroundingSpec, prompts: GroundingPrompts) -> jax.Array:
    """TMRoPE positions [3, S, Lg] of the grounding prompts (text + one image each), as transformers computes."""
    S = prompts.input_ids.shape[0]
    pos, _ = get_rope_index(config, prompts.input_ids, prompts.attention_mask, (tuple(spec.grid_thw),) * S)
    return pos


def parse_slot_boxes(
    spec: GroundingSpec, tokens: jax.Array, lengths: jax.Array, slot_valid: jax.Array, ratios: jax.Array, O: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Boxes [S, O, 4] in original pixels, box_valid [S, O], n_json [S] of grounder outputs, masked by slot.

    tokens [S, Tg] with S = B * G * K rows clip-major; ratios [B, 2] = (w_ratio, h_ratio) per clip.
    """
    S, B = tokens.shape[0], ratios.shape[0]
    slot_ratio = jnp.repeat(ratios.astype(jnp.float32), S // B, axis=0)  # [S, 2]
    res = parse_boxes(tokens, lengths, spec.byte_table, spec.tok_lens, slot_ratio, O=O)
    box_valid = res["box_valid"] & slot_valid[:, None]
    boxes = jnp.where(box_valid[..., None], res["boxes"], 0.0)
    return boxes, box_valid, jnp.where(slot_valid, res["n_json"], 0).astype(jnp.int32)


def ground(
    model: nn.Module,
    ref_params: Any,
    spec: GroundingSpec,
    completion_tokens: jax.Array,
    parsed: dict,
    frame_patches: jax.Array,
    ratios: jax.Array,
    cfg: GroundingConfig,
) -> GroundingOutput:
    """Ground every (rollout, keyframe) description on its high-resolution keyframe with the frozen thinker.

    Args:
      completion_tokens: [N, T] policy completions, prompt-major (n = b * G + g).
      parsed: `parse.parse_completions` output: key_frames, key_valid, key_desc_tokens [N, K, 2]
        (and optionally key_desc_tok_exact).
      frame_patches: [B, F, Np, patch_dim] high-resolution candidate frames of each clip.
      ratios: [B, 2] (w_ratio, h_ratio) = resized / original size of the clip's frames.
    """
    N, K = parsed["key_valid"].shape
    B, F = frame_patches.shape[:2]
    span = parsed["key_desc_tokens"]
    prompts = assemble(spec, completion_tokens, span[..., 0], span[..., 1], parsed["key_valid"],
                       parsed.get("key_desc_tok_exact"))
    rows = slot_frame_rows(jnp.where(parsed["key_valid"], parsed["key_frames"], 0), B, F)
    x, pos = grounding_embeds(model, ref_params, spec, prompts, frame_patches, rows, cfg.encode_chunk)
    scfg = SamplerConfig(max_new_tokens=cfg.max_new_tokens, greedy=True, stop_ids=spec.stop_ids,
                         pad_id=spec.pad_id, cache_dtype=cfg.cache_dtype)
    out = sample(model, ref_params, x, pos, prompts.attention_mask, jax.random.PRNGKey(0), scfg)
    boxes, box_valid, num_boxes = parse_slot_boxes(spec, out.tokens, out.lengths, prompts.slot_valid, ratios,
                                                    cfg.num_objects)
    valid = prompts.slot_valid
    O = cfg.num_objects
    return GroundingOutput(
        boxes=boxes.reshape(N, K, O, 4),
        box_valid=box_valid.reshape(N, K, O),
        num_boxes=num_boxes.reshape(N, K),
        slot_valid=valid.reshape(N, K),
        tokens=out.tokens.reshape(N, K, -1),
        lengths=jnp.where(valid, out.lengths, 0).reshape(N, K),
        input_ids=prompts.input_ids.reshape(N, K, -1),
        approx=prompts.approx.reshape(N, K),
        num_approx=jnp.sum(prompts.approx, dtype=jnp.int32),
    )


ground_jit = jax.jit(ground, static_argnames=("model", "cfg"))
