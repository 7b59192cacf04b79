"""The thinker's Qwen2 decoder: pre-norm GQA + SwiGLU layers, scanned over depth, with M-RoPE and a KV cache.

The stacked cache ``{"k","v": [layers, B, KV, S, hd]}`` enters the layer scan read-only (``xs``); the scan
returns only the new block's keys/values (``ys``, ``[layers, B, KV, L, hd]``), written into the cache with
one ``dynamic_update_slice`` after the scan.  Inside a decode ``while_loop`` that update is in place, so a
step writes one slot per layer instead of rewriting the whole cache (XLA on CPU still materialises each
layer's ``xs`` slice once per step for the attention dots: one read + write of the cache per step).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from omnir1_jax.models.layers import CACHE_LAYER_AXES, Attention, RMSNorm, SwiGLU, constrain, mrope_cos_sin
from omnir1_jax.models.qwen_omni.config import ThinkerConfig

Dtype = Any
CACHE_AXES = ("layers",) + CACHE_LAYER_AXES  # the stacked cache [layers, B, KV, S, hd]


class DecoderLayer(nn.Module):
    """One Qwen2 layer: ``x + attn(norm(x))`` then ``x + mlp(norm(x))``; scan-compatible signature."""

    config: ThinkerConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, layer_cache: dict | None, cos: jax.Array, sin: jax.Array,
                 key_mask: jax.Array, cache_index: jax.Array) -> tuple[jax.Array, dict]:
        c = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = RMSNorm(c.rms_norm_eps, name="input_layernorm", **kw)(x)
        h, new_kv = Attention(
            c.num_attention_heads, c.num_key_value_heads, c.head_dim, qkv_bias=True,
            init_std=c.initializer_range, name="self_attn", **kw,
        )(h, cos, sin, key_mask, layer_cache, cache_index)
        x = x + h
        h = RMSNorm(c.rms_norm_eps, name="post_attention_layernorm", **kw)(x)
        x = x + SwiGLU(c.intermediate_size, init_std=c.initializer_range, name="mlp", **kw)(h)
        x = constrain(x, ("act_batch", "act_length", "act_embed"))
        return x, new_kv  # new_kv: this block's {"k","v": [B, KV, L, hd]}


class TextDecoder(nn.Module):
    """Stack of ``num_hidden_layers`` layers (params stacked on a leading ``layers`` axis) + final norm."""

    config: ThinkerConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    remat: bool = False

    @nn.compact
    def __call__(self, inputs_embeds: jax.Array, position_ids: jax.Array, attention_mask: jax.Array,
                 cache: dict | None = None, cache_index: jax.Array | None = None) -> tuple[jax.Array, dict]:
        """inputs ``[B, L, D]``, positions ``[3, B, L]``, mask ``[B, S]`` -> hidden ``[B, L, D]``, cache.

        With a cache, returns it with this block written at ``cache_index``; without, this block's K/V.
        """
        c = self.config
        cos, sin = mrope_cos_sin(position_ids, c.head_dim, c.rope_theta, c.mrope_section)  # [B, L, hd]
        cache_index = jnp.asarray(0 if cache_index is None else cache_index, jnp.int32)
        layer_cls = DecoderLayer
        if self.remat:
            layer_cls = nn.remat(layer_cls, prevent_cse=False,
                                 policy=jax.checkpoint_policies.nothing_saveable)
        stack = nn.scan(
            layer_cls,
            variable_axes={"params": 0, "intermediates": 0},  # sown attention maps stack per layer
            split_rngs={"params": True},
            in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast),
            length=c.num_hidden_layers,
            metadata_params={nn.PARTITION_NAME: "layers"},
        )(c, self.dtype, self.param_dtype, name="layers")
        x = constrain(inputs_embeds.astype(self.dtype), ("act_batch", "act_length", "act_embed"))
        x, new_kv = stack(x, cache, cos, sin, attention_mask, cache_index)  # {"k","v": [layers, B, KV, L, hd]}
        new_cache = new_kv
        if cache is not None:
            at = (0, 0, 0, cache_index, 0)
            new_cache = {name: constrain(jax.lax.dynamic_update_slice(cache[name], new_kv[name], at), CACHE_AXES)
                         for name in ("k", "v")}
        x = RMSNorm(c.rms_norm_eps, dtype=self.dtype, param_dtype=self.param_dtype, name="norm")(x)
        return x, new_cache
