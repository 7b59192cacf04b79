"""Qwen2.5-Omni thinker vision tower (Qwen2.5-VL-style ViT) in Flax Linen.

Mirrors ``Qwen2_5OmniVisionEncoder``: patch embedding of flattened ``[C*T*P*P]`` patches, 2-D axial rotary,
window-attention blocks interleaved with full-attention blocks (``fullatt_block_indexes``), window
reordering and its inverse, and the 2x2 patch merger. ``grid_thw`` is static (a tuple of ``(t, h, w)``), so
every index (window order, segment boundaries, rotary positions) is computed with NumPy at trace time.
Config and weight mapping live in :mod:`omnir1_jax.models.qwen_omni.vision_config`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from omnir1_jax.models.qwen_omni.encoder_blocks import (
    RMSNorm,
    activation,
    dense,
    packed_segment_attention,
    segment_plan,
)
from omnir1_jax.models.qwen_omni.vision_config import (  # noqa: F401  (re-exported API)
    VisionConfig,
    vision_flax_to_hf,
    vision_hf_to_flax,
)

Dtype = Any
GridTHW = tuple[tuple[int, int, int], ...]


@dataclasses.dataclass(frozen=True)
class VisionPlan:
    """Host-side indices for one static ``grid_thw``: window order, rotary positions, attention segments."""

    window_index: np.ndarray  # [N / unit] merged-token order used inside the tower
    patch_perm: np.ndarray  # [N] patch order used inside the tower
    position_ids: np.ndarray  # [N, 2] (h, w) rotary positions in the tower order
    full_cu: np.ndarray  # per-frame boundaries (full-attention layers), tower order
    window_cu: np.ndarray  # per-window boundaries (window-attention layers), tower order


def normalize_grid(grid_thw: Sequence[Sequence[int]]) -> GridTHW:
    """Returns ``grid_thw`` as a hashable tuple of int triples."""
    return tuple((int(t), int(h), int(w)) for t, h, w in np.asarray(grid_thw).reshape(-1, 3).tolist())


def num_patches(grid_thw: Sequence[Sequence[int]]) -> int:
    """Number of input patches (rows of ``pixel_values``) for ``grid_thw``."""
    return sum(t * h * w for t, h, w in normalize_grid(grid_thw))


def num_merged_tokens(grid_thw: Sequence[Sequence[int]], spatial_merge_size: int = 2) -> int:
    """Number of output tokens (LLM placeholders) for ``grid_thw``."""
    return num_patches(grid_thw) // (spatial_merge_size**2)


def vision_plan(grid_thw: Sequence[Sequence[int]], cfg: VisionConfig) -> VisionPlan:
    """Computes window order, rotary positions and segment boundaries exactly as the HF tower does."""
    m = cfg.spatial_merge_size
    unit = m * m
    win = cfg.window_size // m // cfg.patch_size  # window side in merged tokens
    window_index, window_cu, full_cu, positions = [], [0], [0], []
    offset = 0
    for t, h, w in normalize_grid(grid_thw):
        if h % m or w % m:
            raise ValueError(f"grid {(t, h, w)} not divisible by spatial_merge_size={m}")
        lh, lw = h // m, w // m
        idx = np.arange(t * lh * lw).reshape(t, lh, lw)
        for ti in range(t):
            for wi in range(0, lh, win):
                for wj in range(0, lw, win):
                    block = idx[ti, wi : wi + win, wj : wj + win].reshape(-1)
                    window_index.append(block + offset)
                    window_cu.append(window_cu[-1] + block.size * unit)
            full_cu.append(full_cu[-1] + h * w)
        offset += t * lh * lw
        hpos, wpos = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        blocks = lambda a: a.reshape(lh, m, lw, m).transpose(0, 2, 1, 3).reshape(-1)  # noqa: E731
        positions.append(np.tile(np.stack([blocks(hpos), blocks(wpos)], axis=-1), (t, 1)))
    window_index = np.concatenate(window_index)
    patch_perm = (window_index[:, None] * unit + np.arange(unit)[None, :]).reshape(-1)
    position_ids = np.concatenate(positions)[patch_perm]
    return VisionPlan(window_index, patch_perm, position_ids, np.asarray(full_cu), np.asarray(window_cu))


def rotate_half(x: jax.Array) -> jax.Array:
    """``[x1, x2] -> [-x2, x1]`` along the last axis."""
    x1, x2 = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([-x2, x1], axis=-1)


def vision_rotary(position_ids: np.ndarray, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """Axial 2-D rotary tables ``cos, sin`` of shape ``[N, head_dim]`` (float32) from ``(h, w)`` positions."""
    spatial = head_dim // 2
    inv_freq = 1.0 / (np.float32(theta) ** (np.arange(0, spatial, 2, dtype=np.float32) / np.float32(spatial)))
    freqs = jnp.asarray(position_ids, jnp.float32)[..., None] * jnp.asarray(inv_freq, jnp.float32)  # [N, 2, hd/4]
    freqs = freqs.reshape(freqs.shape[0], -1)  # [N, hd/2]: h-frequencies then w-frequencies
    freqs = jnp.concatenate([freqs, freqs], axis=-1)  # [N, hd]
    return jnp.cos(freqs), jnp.sin(freqs)


def apply_vision_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array, dtype: Dtype) -> jax.Array:
    """Rotates ``x [N, H, Dh]`` by ``cos/sin [N, Dh]`` in float32, then casts to ``dtype`` (as HF does)."""
    xf = x.astype(jnp.float32)
    return (xf * cos[:, None, :] + rotate_half(xf) * sin[:, None, :]).astype(dtype)


class VisionAttention(nn.Module):
    """Multi-head self-attention with 2-D rotary, restricted to the segments given by gather indices."""

    cfg: VisionConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, cos, sin, gather, valid, back):  # x [N, D]
        d, h = self.cfg.hidden_size, self.cfg.num_heads
        n = x.shape[0]
        qkv = [
            dense(d, ("vis_embed", "vis_heads"), self.dtype, self.param_dtype, name=nm)(x).reshape(n, h, d // h)
            for nm in ("q", "k", "v")
        ]
        q, k, v = qkv  # [N, H, Dh]
        q, k = apply_vision_rotary(q, cos, sin, self.dtype), apply_vision_rotary(k, cos, sin, self.dtype)
        q = nn.with_logical_constraint(q, ("act_length", "act_heads", None))
        out = packed_segment_attention(q, k, v, gather, valid, back, self.dtype).reshape(n, d)
        return dense(d, ("vis_heads", "vis_embed"), self.dtype, self.param_dtype, name="proj")(out)


class VisionMLP(nn.Module):
    """Gated MLP ``down(act(gate(x)) * up(x))`` with biases."""

    cfg: VisionConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):  # [N, D]
        i, d = self.cfg.intermediate_size, self.cfg.hidden_size
        gate = dense(i, ("vis_embed", "vis_mlp"), self.dtype, self.param_dtype, name="gate_proj")(x)
        up = dense(i, ("vis_embed", "vis_mlp"), self.dtype, self.param_dtype, name="up_proj")(x)
        hidden = nn.with_logical_constraint(activation(self.cfg.hidden_act)(gate) * up, ("act_length", "act_mlp"))
        return dense(d, ("vis_mlp", "vis_embed"), self.dtype, self.param_dtype, name="down_proj")(hidden)


class VisionBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    cfg: VisionConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, cos, sin, gather, valid, back):  # x [N, D]
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = x + VisionAttention(self.cfg, name="attn", **kw)(
            RMSNorm(self.cfg.rms_norm_eps, name="norm1", **kw)(x), cos, sin, gather, valid, back
        )
        x = x + VisionMLP(self.cfg, name="mlp", **kw)(RMSNorm(self.cfg.rms_norm_eps, name="norm2", **kw)(x))
        return nn.with_logical_constraint(x, ("act_length", "act_embed"))


class PatchMerger(nn.Module):
    """RMSNorm, group 2x2 neighbouring patches, then ``Linear -> GELU -> Linear`` to the LLM width."""

    cfg: VisionConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):  # [N, D] -> [N / unit, out_hidden_size]
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        width = self.cfg.hidden_size * self.cfg.spatial_merge_size**2
        x = RMSNorm(self.cfg.rms_norm_eps, name="ln_q", **kw)(x).reshape(-1, width)
        x = dense(width, ("vis_embed", "vis_mlp"), name="mlp_0", **kw)(x)
        x = jax.nn.gelu(x, approximate=False)
        return dense(self.cfg.out_hidden_size, ("vis_mlp", "embed"), name="mlp_2", **kw)(x)


class PatchEmbed(nn.Module):
    """Conv3d with kernel == stride on pre-flattened patches, i.e. one matmul; kernel ``[C, T, P, P, D]``."""

    cfg: VisionConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, pixel_values):  # [N, C*T*P*P] -> [N, D]
        cfg = self.cfg
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(
                nn.initializers.lecun_normal(in_axis=(0, 1, 2, 3), out_axis=4),
                ("unsharded", "conv_spatial", "conv_spatial_2", "conv_spatial_3", "vis_embed"),
            ),
            (cfg.in_channels, cfg.temporal_patch_size, cfg.patch_size, cfg.patch_size, cfg.hidden_size),
            self.param_dtype,
        )
        return jnp.dot(pixel_values.astype(self.dtype), kernel.reshape(cfg.patch_dim, -1).astype(self.dtype))


class VisionEncoder(nn.Module):
    """The thinker's ViT: ``pixel_values [N_patches, C*T*P*P]`` -> ``[N_patches / 4, out_hidden_size]``.

    ``grid_thw`` must be static (Python ints); wrap ``apply`` with it closed over or as a static argument.
    """

    cfg: VisionConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    remat: bool = False

    @nn.compact
    def __call__(self, pixel_values: jax.Array, grid_thw: Sequence[Sequence[int]]) -> jax.Array:
        cfg = self.cfg
        plan = vision_plan(grid_thw, cfg)
        if pixel_values.shape != (plan.patch_perm.size, cfg.patch_dim):
            raise ValueError(
                f"pixel_values shape {pixel_values.shape} != ({plan.patch_perm.size}, {cfg.patch_dim}) for {grid_thw}"
            )
        x = PatchEmbed(cfg, self.dtype, self.param_dtype, name="patch_embed")(pixel_values)  # [N, D]
        x = x[jnp.asarray(plan.patch_perm)]  # tower (window) order
        x = nn.with_logical_constraint(x, ("act_length", "act_embed"))
        cos, sin = vision_rotary(plan.position_ids, cfg.head_dim, cfg.rope_theta)
        segs = {}
        for kind, cu in (("full", plan.full_cu), ("window", plan.window_cu)):
            sp = segment_plan(cu)
            segs[kind] = (jnp.asarray(sp.gather), jnp.asarray(sp.valid), jnp.asarray(sp.back))
        block_cls = nn.remat(VisionBlock) if self.remat else VisionBlock
        full = set(cfg.fullatt_block_indexes)
        for i in range(cfg.depth):
            seg = segs["full" if i in full else "window"]
            x = block_cls(cfg, self.dtype, self.param_dtype, name=f"blocks_{i}")(x, cos, sin, *seg)
        merged = PatchMerger(cfg, self.dtype, self.param_dtype, name="merger")(x)
        return merged[jnp.asarray(np.argsort(plan.window_index))]
