"""Video memory: memory encoder (mask downsampler + ConvNeXt fuser) and memory attention with 2-D axial RoPE."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from omnir1_jax.models.sam2.common import ACTS, conv, dense, gelu, layer_norm, pinit, sine_position_encoding
from omnir1_jax.models.sam2.config import Sam2Config


# ----------------------------------------------------------------------------- memory encoder
class MaskDownSamplerLayer(nn.Module):
    """Strided conv + channel LayerNorm + GELU."""

    cfg: Sam2Config
    out_channels: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.cfg
        x = conv(self.out_channels, cfg.mask_downsampler_kernel_size, cfg.mask_downsampler_stride,
                 cfg.mask_downsampler_padding, name="conv")(x)
        return gelu(layer_norm(1e-6, name="layer_norm")(x))


class MaskDownSampler(nn.Module):
    """Downsamples a [N, H, W, 1] mask by ``total_stride`` to [N, h, w, embed_dim]."""

    cfg: Sam2Config

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.cfg
        n = int(math.log2(cfg.mask_downsampler_total_stride) // math.log2(cfg.mask_downsampler_stride))
        ch = 1
        for i in range(n):
            ch = ch * cfg.mask_downsampler_stride**2
            x = MaskDownSamplerLayer(cfg, ch, name=f"layers_{i}")(x)
        return conv(cfg.mask_downsampler_embed_dim, 1, name="final_conv")(x)


class FuserBlock(nn.Module):
    """ConvNeXt block: depthwise 7x7 (shifted multiply-adds, see ``common.DepthwiseConv``), LayerNorm, pointwise MLP,
    layer scale, residual."""

    cfg: Sam2Config

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.cfg
        c = cfg.memory_fuser_embed_dim
        y = conv(c, cfg.memory_fuser_kernel_size, 1, cfg.memory_fuser_padding, groups=c, name="depthwise_conv")(x)
        y = layer_norm(1e-6, name="layer_norm")(y)
        y = gelu(dense(cfg.memory_fuser_intermediate_dim, name="pointwise_conv1")(y))
        y = dense(c, ("sam_mlp", "sam_embed"), name="pointwise_conv2")(y)
        scale = self.param("scale", pinit(nn.initializers.constant(1e-6), ("sam_embed",)), (c,))
        return x + scale * y


class MemoryFuser(nn.Module):
    """Stack of :class:`FuserBlock`."""

    cfg: Sam2Config

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i in range(self.cfg.memory_fuser_num_layers):
            x = FuserBlock(self.cfg, name=f"layers_{i}")(x)
        return x


class MemoryEncoder(nn.Module):
    """Fuses frame features [N, h, w, C] with a mask [N, H, W] into memory features [N, h, w, mem_dim]."""

    cfg: Sam2Config

    @nn.compact
    def __call__(self, feats: jax.Array, masks: jax.Array) -> tuple[jax.Array, jax.Array]:
        cfg = self.cfg
        m = MaskDownSampler(cfg, name="mask_downsampler")(masks[..., None])
        x = conv(cfg.memory_encoder_hidden_size, 1, name="feature_projection")(feats) + m
        x = MemoryFuser(cfg, name="memory_fuser")(x)
        x = conv(cfg.memory_encoder_output_channels, 1, name="projection")(x)
        h, w = x.shape[-3:-1]
        pos = jnp.asarray(sine_position_encoding(h, w, cfg.memory_encoder_output_channels // 2))
        return x, pos


# ----------------------------------------------------------------------------- memory attention
def axial_rope(cfg: Sam2Config) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin tables [h*w, head_dim] of SAM2's axial 2-D RoPE (x then y frequencies, pairwise layout)."""
    dim = cfg.memory_attention_hidden_size // (cfg.memory_attention_downsample_rate * cfg.memory_attention_num_heads)
    sd = dim // 2
    inv = 1.0 / (cfg.memory_attention_rope_theta ** (np.arange(0, sd, 2, dtype=np.float32) / sd))
    inv = inv.astype(np.float32)
    fw, fh = cfg.memory_attention_rope_feat_sizes
    hh, ww = np.meshgrid(np.arange(fh), np.arange(fw), indexing="ij")
    pos = np.stack([ww.reshape(-1), hh.reshape(-1)], axis=-1).astype(np.float32)  # [N, 2]
    freqs = pos[..., None] * inv  # [N, 2, sd/2]
    freqs = np.concatenate([freqs[:, 0], freqs[:, 1]], axis=-1)
    freqs = np.repeat(freqs, 2, axis=-1)
    return np.cos(freqs).astype(np.float32), np.sin(freqs).astype(np.float32)


def rotate_pairwise(x: jax.Array) -> jax.Array:
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...)."""
    x = x.reshape(*x.shape[:-1], -1, 2)
    return jnp.stack([-x[..., 1], x[..., 0]], axis=-1).reshape(*x.shape[:-2], -1)


class RoPEAttention(nn.Module):
    """Attention with axial RoPE on queries and the first keys (frames tiled); object-pointer keys skip RoPE."""

    cfg: Sam2Config
    kv_in_dim: int | None = None

    @nn.compact
    def __call__(self, q, k, v, num_k_exclude_rope: int = 0, key_mask: jax.Array | None = None):
        """q [B, Nq, C], k/v [B, Nk, Ck]; key_mask [B, Nk] bool (False = absent memory slot)."""
        cfg = self.cfg
        c = cfg.memory_attention_hidden_size
        inner = c // cfg.memory_attention_downsample_rate
        nh = cfg.memory_attention_num_heads
        hd = inner // nh
        split = lambda x: x.reshape(*x.shape[:-1], nh, hd)  # noqa: E731
        q = split(dense(inner, ("sam_embed", "sam_heads"), name="q_proj")(q))
        k = split(dense(inner, ("sam_embed", "sam_heads"), name="k_proj")(k))
        v = split(dense(inner, ("sam_embed", "sam_heads"), name="v_proj")(v))
        cos, sin = (jnp.asarray(t)[:, None, :] for t in axial_rope(cfg))  # [Nq, 1, hd]
        q = q * cos + rotate_pairwise(q) * sin
        n_rot = k.shape[1] - num_k_exclude_rope
        if n_rot > 0:
            rep = n_rot // q.shape[1]
            cos_k, sin_k = jnp.tile(cos, (rep, 1, 1)), jnp.tile(sin, (rep, 1, 1))
            k_rot = k[:, :n_rot] * cos_k + rotate_pairwise(k[:, :n_rot]) * sin_k
            k = jnp.concatenate([k_rot, k[:, n_rot:]], axis=1)
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) * hd**-0.5
        if key_mask is not None:
            logits = jnp.where(key_mask[:, None, None, :], logits, -1e30)
        out = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1), v).reshape(*q.shape[:2], inner)
        return dense(c, ("sam_heads", "sam_embed"), name="o_proj")(out)


class MemoryAttentionLayer(nn.Module):
    """Pre-norm: RoPE self-attention, RoPE cross-attention to memory, MLP."""

    cfg: Sam2Config

    @nn.compact
    def __call__(self, x, mem, mem_pos, num_ptr: int, key_mask):
        cfg = self.cfg
        c = cfg.memory_attention_hidden_size
        y = layer_norm(name="layer_norm1")(x)
        x = x + RoPEAttention(cfg, name="self_attn")(y, y, y)
        y = layer_norm(name="layer_norm2")(x)
        x = x + RoPEAttention(cfg, cfg.memory_encoder_output_channels, name="cross_attn_image")(
            y, mem + mem_pos, mem, num_k_exclude_rope=num_ptr, key_mask=key_mask)
        y = layer_norm(name="layer_norm3")(x)
        act = ACTS[cfg.memory_attention_ff_act]
        y = dense(c, ("sam_mlp", "sam_embed"), name="linear2")(
            act(dense(cfg.memory_attention_ff_size, name="linear1")(y)))
        return x + y


class MemoryAttention(nn.Module):
    """Conditions the current frame's features [B, HW, C] on the memory bank [B, Nm, mem_dim]."""

    cfg: Sam2Config

    @nn.compact
    def __call__(self, feats, feats_pos, mem, mem_pos, num_ptr: int, key_mask=None):
        x = feats + 0.1 * feats_pos
        for i in range(self.cfg.memory_attention_num_layers):
            x = MemoryAttentionLayer(self.cfg, name=f"layers_{i}")(x, mem, mem_pos, num_ptr, key_mask)
        return layer_norm(name="layer_norm")(x)
