"""Shared Linen building blocks: RMSNorm, multimodal rotary, GQA attention with a KV cache, SwiGLU, chunked LM head.

Every parameter carries logical axis names (see ``omnir1_jax.parallel.rules.LOGICAL_AXES``); compute runs
in ``dtype`` while parameters live in ``param_dtype`` (fp32 master weights with bf16 compute).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any
Array = jax.Array

# Finite "minus infinity" so that fully masked rows (left padding) give a uniform softmax, never NaN.
MASK_VALUE = -0.7 * float(np.finfo(np.float32).max)


def _init(std: float, names: Sequence[str | None]):
    """Normal(std) initialiser boxed with logical axis names."""
    return nn.with_logical_partitioning(nn.initializers.normal(std), tuple(names))


def constrain(x: Array, names: Sequence[str | None]) -> Array:
    """Logical sharding constraint on an activation (no-op outside a mesh / rules context)."""
    return nn.with_logical_constraint(x, tuple(names))


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in fp32, scaled after casting back (Qwen2 semantics)."""

    eps: float = 1e-6
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        scale = self.param(
            "scale", nn.with_logical_partitioning(nn.initializers.ones, ("norm",)), (x.shape[-1],),
            self.param_dtype,
        )
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return scale.astype(self.dtype) * y.astype(self.dtype)


def mrope_cos_sin(position_ids: Array, head_dim: int, theta: float, mrope_section: Sequence[int]
                  ) -> tuple[Array, Array]:
    """cos/sin tables ``[B, L, head_dim]`` for 3-D (t, h, w) positions ``[3, B, L]`` (M-RoPE).

    Frequency ``j`` of the half-dimension takes its position from axis ``section_of(j) % 3``, exactly as
    transformers' ``recomposition_frequencies``; with equal t/h/w positions this is plain 1-D RoPE.
    """
    half = head_dim // 2
    if sum(mrope_section) != half:
        raise ValueError(f"mrope_section {tuple(mrope_section)} must sum to head_dim/2 = {half}")
    inv_freq = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))  # [half]
    axis_of = np.concatenate([np.full(n, i % 3) for i, n in enumerate(mrope_section)])  # [half]
    onehot = (axis_of[None, :] == np.arange(3)[:, None]).astype(np.int32)  # [3, half]
    pos = position_ids.astype(jnp.int32)  # [3, B, L]
    pos_sel = jnp.einsum("abl,ah->blh", pos, jnp.asarray(onehot))  # [B, L, half] (exact integers)
    freqs = pos_sel.astype(jnp.float32) * jnp.asarray(inv_freq.astype(np.float32))
    emb = jnp.concatenate([freqs, freqs], axis=-1)  # [B, L, head_dim]
    return jnp.cos(emb), jnp.sin(emb)


def apply_rotary(x: Array, cos: Array, sin: Array) -> Array:
    """Rotate-half RoPE on ``x [B, L, H, hd]`` with ``cos/sin [B, L, hd]`` (computed in fp32)."""
    half = x.shape[-1] // 2
    x32 = x.astype(jnp.float32)
    rot = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
    out = x32 * cos[:, :, None, :] + rot * sin[:, :, None, :]
    return out.astype(x.dtype)


class HeadsIn(nn.Module):
    """Per-head projection ``[B, L, D] -> [B, L, heads, head_dim]`` (kernel ``[D, heads, head_dim]``)."""

    heads: int
    head_dim: int
    head_axis: str
    use_bias: bool = True
    init_std: float = 0.02
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        shape = (x.shape[-1], self.heads, self.head_dim)
        kernel = self.param("kernel", _init(self.init_std, ("embed", self.head_axis, "head_dim")), shape,
                            self.param_dtype)
        y = jnp.einsum("bld,dhk->blhk", x.astype(self.dtype), kernel.astype(self.dtype))
        if self.use_bias:
            bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, (self.head_axis, "head_dim")),
                              shape[1:], self.param_dtype)
            y = y + bias.astype(self.dtype)
        return y


class HeadsOut(nn.Module):
    """Output projection ``[B, L, heads, head_dim] -> [B, L, features]`` (kernel ``[heads, head_dim, features]``)."""

    features: int
    init_std: float = 0.02
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kernel = self.param("kernel", _init(self.init_std, ("heads", "head_dim", "embed")),
                            (x.shape[-2], x.shape[-1], self.features), self.param_dtype)
        return jnp.einsum("blhk,hkd->bld", x.astype(self.dtype), kernel.astype(self.dtype))


CACHE_LAYER_AXES = ("cache_batch", "cache_kv_heads", "cache_length", "cache_head_dim")  # one layer's cache


def _gqa_scores(qg: Array, keys: Array, dtype: Dtype) -> Array:
    """Scores ``[B, KV, G, L, S]`` of grouped queries ``[B, L, KV, G, hd]`` against keys ``[B, KV, S, hd]``."""
    return jnp.einsum("blkgd,bksd->bkgls", qg, keys.astype(dtype), preferred_element_type=jnp.float32)


def _gqa_values(probs: Array, values: Array, dtype: Dtype) -> Array:
    """Weighted values ``[B, L, KV, G, hd]`` from probs ``[B, KV, G, L, S]`` and values ``[B, KV, S, hd]``."""
    return jnp.einsum("bkgls,bksd->blkgd", probs.astype(dtype), values.astype(dtype))


class Attention(nn.Module):
    """Grouped-query self-attention with rotary and an optional read-only KV cache.

    The cache is laid out ``[B, KV, S, hd]`` so the score and value dots read it without a transpose.  The
    module never writes the cache: it returns this block's keys/values ``[B, KV, L, hd]`` and the caller
    writes them at ``cache_index`` (once for all layers, in place, see ``TextDecoder``).  For a single-token
    step the new key is attended as a separate block (old slots ``< cache_index`` + the new one), so the
    step never writes into the cache; longer blocks (prefill) attend over a copy with the block written in.
    """

    num_heads: int
    num_kv_heads: int
    head_dim: int
    qkv_bias: bool = True
    init_std: float = 0.02
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, cos: Array, sin: Array, key_mask: Array, cache: dict | None,
                 cache_index: Array) -> tuple[Array, dict]:
        """x ``[B, L, D]``; key_mask ``[B, S]`` (valid key slots); cache ``{"k","v": [B, KV, S, hd]}`` or None.

        Returns ``(y [B, L, D], {"k","v": [B, KV, L, hd]})`` (the block's keys/values, in the cache dtype).
        """
        B, L, D = x.shape
        H, KV, hd = self.num_heads, self.num_kv_heads, self.head_dim

        def proj(name: str, heads: int, head_axis: str) -> Array:
            return HeadsIn(heads, hd, head_axis, self.qkv_bias, self.init_std, self.dtype, self.param_dtype,
                           name=name)(x)

        q = constrain(proj("q_proj", H, "heads"), ("act_batch", "act_length", "act_heads", None))
        k = constrain(proj("k_proj", KV, "kv_heads"), ("act_batch", "act_length", "act_kv_heads", None))
        v = constrain(proj("v_proj", KV, "kv_heads"), ("act_batch", "act_length", "act_kv_heads", None))
        q = apply_rotary(q, cos, sin)  # [B, L, H, hd]
        k = apply_rotary(k, cos, sin)  # [B, L, KV, hd]
        store = self.dtype if cache is None else cache["k"].dtype
        k_blk = k.transpose(0, 2, 1, 3).astype(store)  # [B, KV, L, hd]
        v_blk = v.transpose(0, 2, 1, 3).astype(store)
        qg = q.reshape(B, L, KV, H // KV, hd)  # head h = kv * G + g, as transformers' repeat_kv
        q_slot = cache_index + jnp.arange(L, dtype=jnp.int32)  # [L] absolute slot of each query
        kmask = key_mask.astype(bool)
        scale = hd ** -0.5

        if cache is not None and L == 1:
            # Old slots < cache_index (the cache's stale slot at cache_index is excluded) ++ the new key.
            S = cache["k"].shape[2]
            old_ok = (jnp.arange(S, dtype=jnp.int32) < cache_index)[None, :] & kmask  # [B, S]
            new_ok = jax.lax.dynamic_slice_in_dim(kmask, cache_index, 1, axis=1)  # [B, 1]
            allowed = jnp.concatenate([old_ok, new_ok], axis=1)[:, None, None, None, :]  # [B, 1, 1, 1, S+1]
            scores = jnp.concatenate([_gqa_scores(qg, cache["k"], self.dtype),
                                      _gqa_scores(qg, k_blk, self.dtype)], axis=-1) * scale  # [B, KV, G, 1, S+1]
            probs = jax.nn.softmax(jnp.where(allowed, scores, MASK_VALUE), axis=-1)
            out = (_gqa_values(probs[..., :S], cache["v"], self.dtype)
                   + _gqa_values(probs[..., S:], v_blk, self.dtype))
        else:
            if cache is None:
                keys, values = k_blk, v_blk  # S == L
            else:  # a block of L > 1 tokens (prefill): one copy of the layer's cache with the block written in
                start = (0, 0, cache_index, 0)
                keys = constrain(jax.lax.dynamic_update_slice(cache["k"], k_blk, start), CACHE_LAYER_AXES)
                values = constrain(jax.lax.dynamic_update_slice(cache["v"], v_blk, start), CACHE_LAYER_AXES)
            S = keys.shape[2]
            causal = jnp.arange(S, dtype=jnp.int32)[None, :] <= q_slot[:, None]  # [L, S]
            allowed = causal[None, :, :] & kmask[:, None, :]  # [B, L, S]
            scores = _gqa_scores(qg, keys, self.dtype) * scale  # [B, KV, G, L, S]
            scores = jnp.where(allowed[:, None, None, :, :], scores, MASK_VALUE)
            probs = jax.nn.softmax(scores, axis=-1)
            # Kept only when the caller makes "intermediates" mutable (as transformers' output_attentions);
            # otherwise sow is a no-op.  The warm-start's select loss reads it (warmstart.thinker.grounding_aux_loss).
            self.sow("intermediates", "attn_probs", probs.reshape(B, H, L, S))
            out = _gqa_values(probs, values, self.dtype)
        out = constrain(out.reshape(B, L, H, hd), ("act_batch", "act_length", "act_heads", None))
        y = HeadsOut(D, self.init_std, self.dtype, self.param_dtype, name="o_proj")(out)
        return y, {"k": k_blk, "v": v_blk}


class SwiGLU(nn.Module):
    """Gated SiLU feed-forward: ``down(silu(gate(x)) * up(x))``."""

    hidden: int
    init_std: float = 0.02
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        def dense(name: str, feats: int, names: tuple[str, str], y: Array) -> Array:
            return nn.Dense(feats, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
                            kernel_init=_init(self.init_std, names), name=name)(y)

        gate = dense("gate_proj", self.hidden, ("embed", "mlp"), x)
        up = dense("up_proj", self.hidden, ("embed", "mlp"), x)
        h = constrain(nn.silu(gate) * up, ("act_batch", "act_length", "act_mlp"))
        return dense("down_proj", x.shape[-1], ("mlp", "embed"), h)


def chunked_logprobs(hidden: Array, kernel: Array, targets: Array, chunk_size: int,
                     dtype: Dtype = jnp.float32, return_entropy: bool = False
                     ) -> Array | tuple[Array, Array]:
    """log p(target) ``[B, L]`` (and entropy) from ``hidden [B, L, D]`` and an LM-head ``kernel [D, V]``.

    Streams the vocabulary in chunks with an online log-sum-exp, so only ``[B, L, chunk]`` logits exist at a
    time (the full ``[B, L, 152k]`` tensor is never materialised).  Accumulation is in fp32.
    """
    V = kernel.shape[-1]
    chunk = max(1, min(int(chunk_size), V))
    n_full, rem = divmod(V, chunk)
    h = hidden.astype(dtype)
    B, L = targets.shape
    neg = jnp.full((B, L), -jnp.inf, jnp.float32)
    zero = jnp.zeros((B, L), jnp.float32)

    def update(carry, logits, start):
        m, s, t, tgt = carry
        m_new = jnp.maximum(m, jnp.max(logits, axis=-1))
        corr = jnp.exp(m - m_new)
        p = jnp.exp(logits - m_new[..., None])
        s = s * corr + jnp.sum(p, axis=-1)
        t = t * corr + jnp.sum(p * logits, axis=-1) if return_entropy else t
        local = targets - start
        inside = (local >= 0) & (local < logits.shape[-1])
        picked = jnp.take_along_axis(logits, jnp.clip(local, 0, logits.shape[-1] - 1)[..., None], -1)[..., 0]
        tgt = jnp.where(inside, picked, tgt)
        return m_new, s, t, tgt

    def chunk_logits(start, size):
        w = jax.lax.dynamic_slice_in_dim(kernel, start, size, axis=1).astype(dtype)  # [D, size]
        return jnp.einsum("bld,dv->blv", h, w, preferred_element_type=jnp.float32)

    def body(carry, i):
        start = i * chunk
        return update(carry, chunk_logits(start, chunk), start), None

    carry = (neg, zero, zero, zero)
    if n_full:
        carry, _ = jax.lax.scan(body, carry, jnp.arange(n_full, dtype=jnp.int32))
    if rem:
        carry = update(carry, chunk_logits(n_full * chunk, rem), n_full * chunk)
    m, s, t, tgt = carry
    lse = m + jnp.log(s)
    logp = tgt - lse
    if not return_entropy:
        return logp
    return logp, lse - t / s
