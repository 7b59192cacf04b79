"""Qwen2.5-Omni thinker audio tower in Flax Linen.

Mirrors ``Qwen2_5OmniAudioEncoder``: each clip's log-mel frames are cut into chunks of ``2 * n_window``
frames (the last one shorter), every chunk goes through conv1 / conv2 (stride 2) with its own sinusoidal
positions, attention is restricted to each chunk, then the valid tokens of each clip are average-pooled in
pairs, normalised and projected to the LLM width. ``feature_lens`` is static (a tuple of ints); chunks are
kept padded as ``[num_chunks, chunk_tokens, D]`` through the layers, with padded keys masked.
Config and weight mapping live in :mod:`omnir1_jax.models.qwen_omni.audio_config`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from omnir1_jax.models.qwen_omni.audio_config import (  # noqa: F401  (re-exported API)
    AudioConfig,
    audio_flax_to_hf,
    audio_hf_to_flax,
)
from omnir1_jax.models.qwen_omni.encoder_blocks import activation, dense, layer_norm, masked_attention

Dtype = Any


def audio_output_lengths(feature_lens: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Per clip: tokens after the CNN (``aftercnn_lens``) and output tokens after pooling."""
    after_cnn = tuple((int(n) - 1) // 2 + 1 for n in feature_lens)
    return after_cnn, tuple((a - 2) // 2 + 1 for a in after_cnn)


@dataclasses.dataclass(frozen=True)
class AudioPlan:
    """Host-side indices for one static ``feature_lens``: chunking, valid tokens, pooling pairs."""

    frame_gather: np.ndarray  # [C, Lc] frame index of each padded chunk slot
    frame_mask: np.ndarray  # [C, Lc] bool, slot holds a real frame
    token_valid: np.ndarray  # [C, L2] bool, conv2 output is a real token
    valid_index: np.ndarray  # [N_valid] flat indices into [C * L2]
    pool_index: np.ndarray  # [N_out] first token of each averaged pair (into the valid tokens)


def audio_plan(feature_lens: Sequence[int], n_window: int) -> AudioPlan:
    """Computes chunking, valid-token and pooling indices exactly as the HF tower does."""
    size = 2 * n_window
    lens = [int(n) for n in feature_lens]
    if not lens or min(lens) <= 0:
        raise ValueError(f"feature_lens must be positive, got {feature_lens}")
    chunk_lens, chunk_starts, start = [], [], 0
    for n in lens:
        k = -(-n // size)
        cl = [size] * k
        cl[-1] = n % size or size
        chunk_starts += [start + i * size for i in range(k)]
        chunk_lens += cl
        start += n
    cl, cs = np.asarray(chunk_lens), np.asarray(chunk_starts)
    lc = int(cl.max())
    j = np.arange(lc)
    frame_gather = cs[:, None] + np.minimum(j[None, :], cl[:, None] - 1)
    frame_mask = j[None, :] < cl[:, None]
    after1 = (cl - 1) // 2 + 1
    l2 = (lc - 1) // 2 + 1
    token_valid = np.arange(l2)[None, :] < after1[:, None]
    valid_index = np.flatnonzero(token_valid.reshape(-1))
    after_cnn, n_out = audio_output_lengths(lens)
    offsets = np.concatenate([[0], np.cumsum(after_cnn)[:-1]])
    pool_index = np.concatenate([off + 2 * np.arange(k) for off, k in zip(offsets, n_out)])
    return AudioPlan(
        frame_gather.astype(np.int32),
        frame_mask,
        token_valid,
        valid_index.astype(np.int32),
        pool_index.astype(np.int32),
    )


def sinusoid_table(length: int, channels: int, max_timescale: float = 10000.0) -> np.ndarray:
    """Whisper sinusoidal positions ``[length, channels]`` (sin half, then cos half), float32 like HF."""
    if channels % 2:
        raise ValueError("sinusoidal positions need an even channel count")
    inc = np.float32(np.log(max_timescale) / (channels // 2 - 1))
    inv = np.exp(-inc * np.arange(channels // 2, dtype=np.float32))
    scaled = np.arange(length, dtype=np.float32)[:, None] * inv[None, :]
    return np.concatenate([np.sin(scaled), np.cos(scaled)], axis=1).astype(np.float32)


class AudioAttention(nn.Module):
    """Multi-head self-attention within each padded chunk (k_proj has no bias, as in Whisper)."""

    cfg: AudioConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, token_valid):  # x [C, L, D], token_valid [C, L]
        d, h = self.cfg.d_model, self.cfg.encoder_attention_heads
        c, l, _ = x.shape
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        proj = lambda nm, bias=True: dense(d, ("aud_embed", "aud_heads"), use_bias=bias, name=nm, **kw)(x)  # noqa: E731
        q, k, v = (proj("q_proj").reshape(c, l, h, -1), proj("k_proj", False).reshape(c, l, h, -1),
                   proj("v_proj").reshape(c, l, h, -1))  # fmt: skip
        q = nn.with_logical_constraint(q, (None, "act_length", "act_heads", None))
        out = masked_attention(q, k, v, token_valid, self.dtype).reshape(c, l, d)
        return dense(d, ("aud_heads", "aud_embed"), name="out_proj", **kw)(out)


class AudioLayer(nn.Module):
    """Pre-LayerNorm Whisper encoder layer."""

    cfg: AudioConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, token_valid):  # [C, L, D]
        cfg, kw = self.cfg, dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = layer_norm(eps=cfg.layer_norm_eps, name="self_attn_layer_norm", **kw)(x)
        x = x + AudioAttention(cfg, name="self_attn", **kw)(h, token_valid)
        h = layer_norm(eps=cfg.layer_norm_eps, name="final_layer_norm", **kw)(x)
        h = dense(cfg.encoder_ffn_dim, ("aud_embed", "aud_mlp"), name="fc1", **kw)(h)
        h = activation(cfg.activation_function)(h)
        h = nn.with_logical_constraint(h, (None, "act_length", "act_mlp"))
        x = x + dense(cfg.d_model, ("aud_mlp", "aud_embed"), name="fc2", **kw)(h)
        return nn.with_logical_constraint(x, (None, "act_length", "act_embed"))


def _conv(features: int, stride: int, dtype: Dtype, param_dtype: Dtype, name: str) -> nn.Conv:
    """Kernel-3, padding-1 1-D convolution (PyTorch ``Conv1d`` semantics), kernel ``[3, in, out]``."""
    return nn.Conv(
        features,
        kernel_size=(3,),
        strides=(stride,),
        padding=((1, 1),),
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=nn.with_logical_partitioning(
            nn.initializers.lecun_normal(), ("conv_spatial", "aud_mel", "aud_embed")
        ),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("aud_embed",)),
        name=name,
    )


class AudioEncoder(nn.Module):
    """The thinker's audio tower: ``input_features [n_mels, total_frames]`` -> ``[N_audio_tokens, output_dim]``.

    ``feature_lens`` (frames per clip, clips concatenated along time) must be static Python ints.
    """

    cfg: AudioConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    remat: bool = False

    @nn.compact
    def __call__(self, input_features: jax.Array, feature_lens: Sequence[int]) -> jax.Array:
        cfg, kw = self.cfg, dict(dtype=self.dtype, param_dtype=self.param_dtype)
        plan = audio_plan(feature_lens, cfg.n_window)
        if input_features.shape != (cfg.num_mel_bins, sum(int(n) for n in feature_lens)):
            raise ValueError(f"input_features shape {input_features.shape} does not match feature_lens {feature_lens}")
        # Embedding table exists in the checkpoint (used by the thinker, not by this forward); keep it for parity.
        nn.Embed(
            2,
            cfg.output_dim,
            embedding_init=nn.with_logical_partitioning(nn.initializers.normal(0.02), ("unsharded", "embed")),
            param_dtype=self.param_dtype,
            name="audio_bos_eos_token",
        )(jnp.arange(2))  # creates the table; the result is unused (dead code for XLA)
        frame_mask = jnp.asarray(plan.frame_mask)[..., None]
        x = input_features.T.astype(self.dtype)[jnp.asarray(plan.frame_gather)] * frame_mask  # [C, Lc, mel]
        x = jax.nn.gelu(_conv(cfg.d_model, 1, name="conv1", **kw)(x), approximate=False) * frame_mask
        x = jax.nn.gelu(_conv(cfg.d_model, 2, name="conv2", **kw)(x), approximate=False)  # [C, L2, D]
        if x.shape[1] > cfg.max_source_positions:
            raise ValueError(f"chunk of {x.shape[1]} tokens exceeds max_source_positions={cfg.max_source_positions}")
        x = x + jnp.asarray(sinusoid_table(x.shape[1], cfg.d_model), self.dtype)[None]
        x = nn.with_logical_constraint(x, (None, "act_length", "act_embed"))
        token_valid = jnp.asarray(plan.token_valid)
        layer_cls = nn.remat(AudioLayer) if self.remat else AudioLayer
        for i in range(cfg.encoder_layers):
            x = layer_cls(cfg, name=f"layers_{i}", **kw)(x, token_valid)
        x = x.reshape(-1, cfg.d_model)[jnp.asarray(plan.valid_index)]  # [N_valid, D]
        pool = jnp.asarray(plan.pool_index)
        x = (x[pool] + x[pool + 1]) / 2  # [N_out, D]
        x = layer_norm(eps=cfg.layer_norm_eps, name="ln_post", **kw)(x)
        return dense(cfg.output_dim, ("aud_embed", "embed"), name="proj", **kw)(x)
