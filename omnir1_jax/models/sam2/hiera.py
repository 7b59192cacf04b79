"""Hiera image encoder (SAM2's hierarchical ViT with windowed attention and query pooling)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from omnir1_jax.models.sam2.common import FeedForward, bicubic_matrix, conv, dense, layer_norm, pinit, resize_2d
from omnir1_jax.models.sam2.config import Sam2Config


def max_pool(x: jax.Array, stride: tuple[int, int] | None) -> jax.Array:
    """2-D max pooling with kernel == stride (floor mode) over [B, H, W, C]."""
    if stride is None:
        return x
    return nn.max_pool(x, stride, strides=stride, padding="VALID")


def window_partition(x: jax.Array, ws: int) -> tuple[jax.Array, tuple[int, int]]:
    """[B, H, W, C] -> [B * nWin, ws, ws, C], zero-padding H, W up to multiples of ws."""
    b, h, w, c = x.shape
    ph, pw = (-h) % ws, (-w) % ws
    x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)))
    hp, wp = h + ph, w + pw
    x = x.reshape(b, hp // ws, ws, wp // ws, ws, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws, ws, c), (hp, wp)


def window_unpartition(x: jax.Array, ws: int, pad_hw: tuple[int, int], hw: tuple[int, int]) -> jax.Array:
    """Inverse of :func:`window_partition` (drops the padding)."""
    hp, wp = pad_hw
    b = x.shape[0] // ((hp // ws) * (wp // ws))
    x = x.reshape(b, hp // ws, wp // ws, ws, ws, -1).transpose(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    return x[:, : hw[0], : hw[1]]


class MultiScaleAttention(nn.Module):
    """Full attention within a window, with optional query max-pooling (stage transitions)."""

    dim_out: int
    heads: int
    query_stride: tuple[int, int] | None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, H, W, C]
        b, h, w, _ = x.shape
        hd = self.dim_out // self.heads
        qkv = dense(3 * self.dim_out, ("sam_embed", "sam_heads"), name="qkv")(x).reshape(b, h * w, 3, self.heads, hd)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [B, HW, nh, hd]
        if self.query_stride:
            q = max_pool(q.reshape(b, h, w, -1), self.query_stride)
            h, w = q.shape[1:3]
            q = q.reshape(b, h * w, self.heads, hd)
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) * hd**-0.5
        out = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1), v).reshape(b, h, w, self.dim_out)
        return dense(self.dim_out, ("sam_heads", "sam_embed"), name="proj")(out)


class MultiScaleBlock(nn.Module):
    """Pre-norm Hiera block: (windowed) attention + MLP, with projection/pooling at stage changes."""

    cfg: Sam2Config
    dim: int
    dim_out: int
    heads: int
    window: int
    query_stride: tuple[int, int] | None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, H, W, dim] -> [B, H', W', dim_out]
        eps = self.cfg.backbone_layer_norm_eps
        residual = x
        x = layer_norm(eps, name="layer_norm1")(x)
        if self.dim != self.dim_out:
            residual = max_pool(dense(self.dim_out, name="proj")(x), self.query_stride)
        ws = self.window
        if ws > 0:
            hw = x.shape[1:3]
            x, pad_hw = window_partition(x, ws)
        x = MultiScaleAttention(self.dim_out, self.heads, self.query_stride, name="attn")(x)
        if self.query_stride and self.window > 0:
            ws = self.window // self.query_stride[0]
            hw = residual.shape[1:3]
            pad_hw = (hw[0] + (-hw[0]) % ws, hw[1] + (-hw[1]) % ws)
        if self.window > 0:
            x = window_unpartition(x, ws, pad_hw, hw)
        x = residual + x
        y = layer_norm(eps, name="layer_norm2")(x)
        return x + FeedForward(int(self.dim_out * self.cfg.mlp_ratio), self.dim_out, 2, "gelu", name="mlp")(y)


class PatchEmbed(nn.Module):
    """Strided conv patchifier (7x7, stride 4 in SAM2)."""

    cfg: Sam2Config

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, H, W, 3] -> [B, H/4, W/4, C]
        cfg = self.cfg
        return conv(cfg.hiera_hidden_size, cfg.patch_kernel_size[0], cfg.patch_stride[0], cfg.patch_padding[0],
                    name="projection")(x)


class HieraBackbone(nn.Module):
    """Patch embedding + windowed positional embedding + Hiera blocks; returns each stage's output."""

    cfg: Sam2Config

    @nn.compact
    def __call__(self, pixel_values: jax.Array) -> list[jax.Array]:  # [B, 3, H, W] -> [[B, h_s, w_s, C_s]]
        cfg = self.cfg
        c = cfg.hiera_hidden_size
        x = jnp.transpose(pixel_values, (0, 2, 3, 1))
        x = PatchEmbed(cfg, name="patch_embed")(x)
        x = nn.with_logical_constraint(x, ("act_batch", "act_spatial", None, "act_embed"))
        names = ("unsharded", "sam_embed", "unsharded_2", "unsharded_3")
        pos = self.param("pos_embed", pinit(nn.initializers.zeros, names), (1, c, *cfg.window_pos_embed_bkg_size))
        ws0 = cfg.window_size_per_stage[0]
        pos_win = self.param("pos_embed_window", pinit(nn.initializers.zeros, names), (1, c, ws0, ws0))
        h, w = x.shape[1:3]
        pe = resize_2d(pos[0], bicubic_matrix(pos.shape[2], h), bicubic_matrix(pos.shape[3], w))  # [C, h, w]
        pe = pe + jnp.tile(pos_win[0], (1, h // ws0, w // ws0))
        x = x + jnp.transpose(pe, (1, 2, 0))[None]
        outs, ends = [], set(cfg.stage_ends())
        for i, spec in enumerate(cfg.block_specs()):
            x = MultiScaleBlock(cfg, **spec, name=f"blocks_{i}")(x)
            if i in ends:
                outs.append(x)
        return outs
