"""The Qwen2.5-Omni thinker: towers -> features scattered into the token stream -> Qwen2 decoder -> LM head.

Interface (used by the rollout sampler): ``__call__`` (logits from transformers-named inputs), ``embed``
(multimodal embeddings + TMRoPE positions), ``embed_tokens``, ``decode`` (prefill / cached decode),
``logits``; module-level :func:`init_cache`, :func:`token_logprobs`, :func:`init_params`.
Grids and audio lengths are static: pass NumPy arrays or tuples, never traced arrays.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from omnir1_jax.models.layers import chunked_logprobs, constrain
from omnir1_jax.models.qwen_omni.config import ThinkerConfig
from omnir1_jax.models.qwen_omni.decoder import CACHE_AXES, TextDecoder
from omnir1_jax.models.qwen_omni.rope import get_rope_index

Dtype = Any
Array = jax.Array


def static_grid(grid: Any) -> tuple[tuple[int, int, int], ...] | None:
    """NumPy / nested-sequence grid ``[n, 3]`` -> tuple of int triples (a static, hashable value)."""
    if grid is None:
        return None
    if isinstance(grid, jax.core.Tracer):
        raise TypeError("grid_thw must be static (NumPy or tuples), not a traced array")
    return tuple(tuple(int(v) for v in row) for row in np.asarray(grid).reshape(-1, 3))


def static_lengths(feature_attention_mask: Any) -> tuple[int, ...] | None:
    """Per-audio mel-frame counts from a NumPy ``feature_attention_mask [n_audio, T]`` (static)."""
    if feature_attention_mask is None:
        return None
    if isinstance(feature_attention_mask, jax.core.Tracer):
        raise TypeError("feature_attention_mask must be static (NumPy), not a traced array")
    return tuple(int(n) for n in np.asarray(feature_attention_mask).sum(-1))


def _scatter_features(embeds: Array, is_slot: Array, feats: Array) -> Array:
    """Places ``feats [N, D]`` at the flagged slots of ``embeds [B, L, D]`` in row-major order (static shapes)."""
    B, L, _ = embeds.shape
    rank = jnp.cumsum(is_slot.reshape(-1).astype(jnp.int32)).reshape(B, L) - 1
    gathered = feats.astype(embeds.dtype)[jnp.clip(rank, 0, feats.shape[0] - 1)]  # [B, L, D]
    return jnp.where(is_slot[..., None], gathered, embeds)


class LMHead(nn.Module):
    """Vocabulary projection ``[D] -> [V]``; also the chunked log-softmax that never builds full logits."""

    vocab_size: int
    features_in: int
    init_std: float = 0.02
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        self.kernel = self.param(
            "kernel", nn.with_logical_partitioning(nn.initializers.normal(self.init_std), ("embed", "vocab")),
            (self.features_in, self.vocab_size), self.param_dtype,
        )

    def __call__(self, hidden: Array) -> Array:
        """Full logits ``[B, L, V]``."""
        logits = jnp.einsum("bld,dv->blv", hidden.astype(self.dtype), self.kernel.astype(self.dtype))
        return constrain(logits, ("act_batch", "act_length", "act_vocab"))

    def logprobs(self, hidden: Array, targets: Array, chunk_size: int, return_entropy: bool):
        """Chunked ``log p(targets)`` (and entropy) without full logits."""
        return chunked_logprobs(hidden, self.kernel, targets, chunk_size, self.dtype, return_entropy)


class Thinker(nn.Module):
    """Qwen2.5-Omni thinker in Linen; param tree: token_embedding, visual, audio_tower, decoder, lm_head."""

    config: ThinkerConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    remat: bool = False

    def setup(self):
        c, kw = self.config, dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.token_embedding = nn.Embed(
            c.vocab_size, c.hidden_size,
            embedding_init=nn.with_logical_partitioning(nn.initializers.normal(c.initializer_range),
                                                         ("vocab", "embed")),
            **kw,
        )
        self.decoder = TextDecoder(c, remat=self.remat, **kw)
        if not c.tie_word_embeddings:
            self.lm_head = LMHead(c.vocab_size, c.hidden_size, c.initializer_range, **kw)
        if c.vision is not None:
            from omnir1_jax.models.qwen_omni.vision import VisionEncoder

            self.visual = VisionEncoder(c.vision, remat=self.remat, **kw)
        if c.audio is not None:
            from omnir1_jax.models.qwen_omni.audio import AudioEncoder

            self.audio_tower = AudioEncoder(c.audio, remat=self.remat, **kw)

    # ------------------------------------------------------------------ pieces
    def embed_tokens(self, token_ids: Array) -> Array:
        """Token embeddings ``[B, L] -> [B, L, D]``."""
        x = self.token_embedding(token_ids)
        return constrain(x, ("act_batch", "act_length", "act_embed"))

    def audio_features(self, input_features: Array, feature_attention_mask: Any) -> Array:
        """Audio tower on ``[n_audio, mel, T]`` with a static mask (None: all frames valid) -> ``[N, D]``."""
        if self.config.audio is None:
            raise ValueError("input_features given but this thinker has no audio tower (config.audio is None)")
        if feature_attention_mask is None:
            feature_attention_mask = np.ones((input_features.shape[0], input_features.shape[-1]), np.int32)
        lens = static_lengths(feature_attention_mask)
        mask = np.asarray(feature_attention_mask).astype(bool)
        a_idx, t_idx = np.nonzero(mask)  # row-major == transformers' boolean indexing order
        feats = jnp.asarray(input_features)[jnp.asarray(a_idx), :, jnp.asarray(t_idx)].T  # [mel, sum(lens)]
        return self.audio_tower(feats, lens)

    def embed(self, input_ids: Array, attention_mask: Array | None = None, pixel_values: Array | None = None,
              image_grid_thw: Any = None, pixel_values_videos: Array | None = None, video_grid_thw: Any = None,
              input_features: Array | None = None, feature_attention_mask: Any = None,
              use_audio_in_video: bool = False, video_second_per_grid: Sequence[float] | None = None,
              ) -> tuple[Array, Array, Array]:
        """Multimodal embeddings ``[B, L, D]``, positions ``[3, B, L]`` and ``rope_deltas [B]``."""
        c = self.config
        image_grid, video_grid = static_grid(image_grid_thw), static_grid(video_grid_thw)
        x = self.embed_tokens(input_ids)
        if input_features is not None:
            if feature_attention_mask is None:
                feature_attention_mask = np.ones((input_features.shape[0], input_features.shape[-1]), np.int32)
            feats = self.audio_features(input_features, feature_attention_mask)
            x = _scatter_features(x, input_ids == c.audio_token_id, feats)
        if (pixel_values is not None or pixel_values_videos is not None) and c.vision is None:
            raise ValueError("pixel values given but this thinker has no vision tower (config.vision is None)")
        if pixel_values is not None:
            feats = self.visual(jnp.asarray(pixel_values), image_grid)
            x = _scatter_features(x, input_ids == c.image_token_id, feats)
        if pixel_values_videos is not None:
            feats = self.visual(jnp.asarray(pixel_values_videos), video_grid)
            x = _scatter_features(x, input_ids == c.video_token_id, feats)
        if video_second_per_grid is not None:
            video_second_per_grid = tuple(float(s) for s in np.asarray(video_second_per_grid).reshape(-1))
        position_ids, deltas = get_rope_index(
            c, input_ids, attention_mask, image_grid, video_grid, static_lengths(feature_attention_mask),
            use_audio_in_video, video_second_per_grid,
        )
        return x, position_ids, deltas

    def decode(self, inputs_embeds: Array, position_ids: Array, attention_mask: Array | None = None,
               cache: dict | None = None, cache_index: Array | None = None) -> tuple[Array, dict]:
        """Decoder over ``[B, L, D]``; with a cache, keys go to slots ``cache_index .. cache_index+L-1``.

        ``attention_mask [B, S]`` marks valid key slots (S == L without a cache, the cache length with one) and
        must already be 1 on the slots this block writes.  Attention is causal over absolute slots.
        Returns the final-normed hidden states and the updated cache (without a cache: this block's K/V).
        """
        B, L = inputs_embeds.shape[:2]
        if attention_mask is None:
            S = L if cache is None else cache["k"].shape[3]
            attention_mask = jnp.ones((B, S), jnp.int32)
        if position_ids.ndim == 2:
            position_ids = jnp.broadcast_to(position_ids[None], (3,) + position_ids.shape)
        return self.decoder(inputs_embeds, position_ids, attention_mask, cache, cache_index)

    def logits(self, hidden: Array) -> Array:
        """LM head ``[B, L, D] -> [B, L, V]``."""
        if self.config.tie_word_embeddings:
            logits = self.token_embedding.attend(hidden.astype(self.dtype))
            return constrain(logits, ("act_batch", "act_length", "act_vocab"))
        return self.lm_head(hidden)

    def token_logprobs(self, hidden: Array, targets: Array, chunk_size: int = 8192,
                       return_entropy: bool = False):
        """Chunked log p(targets) ``[B, L]`` (and entropy); see :func:`token_logprobs`."""
        if self.config.tie_word_embeddings:
            kernel = self.token_embedding.embedding.T
            return chunked_logprobs(hidden, kernel, targets, chunk_size, self.dtype, return_entropy)
        return self.lm_head.logprobs(hidden, targets, chunk_size, return_entropy)

    # ------------------------------------------------------------------ full forward
    def __call__(self, input_ids: Array, attention_mask: Array | None = None, pixel_values: Array | None = None,
                 image_grid_thw: Any = None, pixel_values_videos: Array | None = None, video_grid_thw: Any = None,
                 input_features: Array | None = None, feature_attention_mask: Any = None,
                 position_ids: Array | None = None, use_audio_in_video: bool = False,
                 video_second_per_grid: Sequence[float] | None = None) -> Array:
        """Logits ``[B, L, V]`` for transformers-named inputs (same result as the HF thinker's forward)."""
        if attention_mask is None:
            attention_mask = jnp.ones(input_ids.shape, jnp.int32)
        x, pos, _ = self.embed(input_ids, attention_mask, pixel_values, image_grid_thw, pixel_values_videos,
                               video_grid_thw, input_features, feature_attention_mask, use_audio_in_video,
                               video_second_per_grid)
        if position_ids is not None:
            pos = position_ids
        hidden, _ = self.decode(x, pos, attention_mask)
        return self.logits(hidden)

    def init_all(self, input_ids: Array, pixel_values: Array | None, grid: Any, input_features: Array | None,
                 feature_attention_mask: Any) -> Array:
        """Touches every submodule (towers included) so ``init`` creates the full param tree."""
        x = self.embed_tokens(input_ids)
        if pixel_values is not None:
            x = x + jnp.sum(self.visual(pixel_values, static_grid(grid))) * 0
        if input_features is not None:
            x = x + jnp.sum(self.audio_features(input_features, feature_attention_mask)) * 0
        pos = jnp.broadcast_to(jnp.arange(input_ids.shape[1])[None, None], (3,) + input_ids.shape)
        hidden, _ = self.decode(x, pos)
        return self.logits(hidden)


def init_params(model: Thinker, rng: Array) -> dict:
    """Randomly initialised params (boxed with logical axes) for every submodule of ``model``."""
    c = model.config
    pixels = grid = feats = fmask = None
    if c.vision is not None:
        m = c.vision.spatial_merge_size
        grid = ((1, m, m),)
        pixels = jnp.zeros((m * m, c.vision.patch_dim), jnp.float32)
    if c.audio is not None:
        feats = jnp.zeros((1, c.audio.num_mel_bins, 8), jnp.float32)
        fmask = np.ones((1, 8), np.int32)
    ids = jnp.zeros((1, 4), jnp.int32)
    return model.init(rng, ids, pixels, grid, feats, fmask, method=Thinker.init_all)["params"]


def init_cache(config: ThinkerConfig, batch: int, max_length: int, dtype: Dtype = jnp.float32) -> dict:
    """Zero KV cache ``{"k","v": [n_layers, B, kv_heads, S, head_dim]}`` (the layout the attention dots read)."""
    shape = (config.num_hidden_layers, batch, config.num_key_value_heads, max_length, config.head_dim)
    return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}


CACHE_LOGICAL_AXES = CACHE_AXES  # [layers, B, KV, S, hd], one definition (decoder.py)


def token_logprobs(model: Thinker, params: dict, hidden: Array, targets: Array, chunk_size: int = 8192,
                   return_entropy: bool = False):
    """log-softmax of ``targets [B, L]`` under the LM head, streamed in vocabulary chunks.

    Returns ``[B, L]`` fp32 log-probs, or ``(logprobs, entropy)`` with ``return_entropy=True``.
    """
    params = params.get("params", params) if isinstance(params, dict) else params
    return model.apply({"params": params}, hidden, targets, chunk_size, return_entropy,
                       method=Thinker.token_logprobs)
