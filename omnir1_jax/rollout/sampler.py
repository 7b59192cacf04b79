"""In-graph group sampler: prefill once per prompt, repeat the KV cache G times, decode in a while_loop.

Works with any Flax Linen model exposing the thinker interface (``embed``, ``embed_tokens``, ``decode``,
``logits`` methods and a module-level ``init_cache(config, batch, max_length, dtype)`` in the model
class's module, optionally with ``CACHE_LOGICAL_AXES`` naming the cache's dimensions; the cache is
indexed ``[layers, batch, ...]``).  Completions are laid out prompt-major: completion ``n = b * G + g``.

Positions of generated text tokens follow transformers' Qwen2.5-Omni ``generate``: the three M-RoPE
components are equal, the first generated token sits at ``max(prompt positions of row b) + 1`` (which is
what ``cumsum(attention_mask) - 1 + rope_deltas`` evaluates to), then ``+1`` per step.

The whole ``sample`` is jittable (``sample_jit``, with ``model`` and ``cfg`` static) and is meant to be
called inside the GRPO step's jit.  The cache never crosses the jit boundary: it is created inside,
repeated G times once, and carried through the ``lax.while_loop`` (loop carries are updated in place, the
in-graph equivalent of tunix's donated sampling state).  Every prompt needs at least one real token.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from omnir1_jax.rollout import sampling_ops

# Fallback names for models whose module has no CACHE_LOGICAL_AXES (the thinker's layout [layers, N, KV, S, hd]).
_CACHE_AXES = ("layers", "cache_batch", "cache_kv_heads", "cache_length", "cache_head_dim")


# Largest vocabulary for which the CPU default skips the top-p fast path.  Measured (same process, 16 rows): at
# 512 ids the bisection alone is faster on flat and peaked logits; at 32768 it is faster on flat logits and
# 0.5 ms per step slower on peaked ones (a trained policy).  The crossover lies between; 4096 is not measured.
CPU_BISECTION_MAX_VOCAB = 4096


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """Static sampling settings (hashable: passed to ``jax.jit`` as a static argument)."""

    num_generations: int = 1  # G completions per prompt
    max_new_tokens: int = 32  # T
    temperature: float = 1.0  # log-probs are under softmax(logits / temperature), also when greedy
    top_p: float = 1.0  # nucleus mass (1.0 = off)
    top_k: int = 0  # 0 = off
    greedy: bool = False  # argmax decoding (grounding, evaluation)
    stop_ids: tuple[int, ...] = ()  # e.g. (<|im_end|>, <|endoftext|>)
    pad_id: int = 0  # written after the stop token
    cache_dtype: Any = jnp.float32
    # Top-p fast-path cap (sampling_ops.sample_top_p); 0 = always the bisection; -1 = by backend and vocabulary:
    # 0 on CPU for vocabularies <= CPU_BISECTION_MAX_VOCAB, where XLA's top_k costs more than the whole
    # bisection even on peaked logits (benchmarks/README.md §6), else 64.
    top_p_candidates: int = -1
    return_cache: bool = False  # return the final (repeated) KV cache and its key mask

    def candidates(self, vocab_size: int) -> int:
        """The top-p fast-path cap in effect (resolves -1 by the default backend and ``vocab_size``)."""
        if self.top_p_candidates >= 0:
            return self.top_p_candidates
        return 0 if jax.default_backend() == "cpu" and vocab_size <= CPU_BISECTION_MAX_VOCAB else 64

    def __post_init__(self):
        if self.num_generations < 1 or self.max_new_tokens < 1:
            raise ValueError("num_generations and max_new_tokens must be >= 1")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 (use greedy=True for argmax), got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if self.top_p_candidates < -1:
            raise ValueError(f"top_p_candidates must be >= 0, or -1 (by backend), got {self.top_p_candidates}")
        object.__setattr__(self, "stop_ids", tuple(int(s) for s in self.stop_ids))


@flax.struct.dataclass
class SampleOutput:
    """Completions of ``N = B * G`` rows (prompt-major) and their sampling statistics."""

    tokens: jax.Array  # [N, T] int32, pad_id after the first stop token
    logprobs: jax.Array  # [N, T] float32, full-softmax log-prob at the sampling temperature (0 on pad)
    mask: jax.Array  # [N, T] int32, 1 up to and including the first stop token
    lengths: jax.Array  # [N] int32, number of generated tokens (incl. the stop token)
    truncated: jax.Array  # [N] bool, no stop token within max_new_tokens
    num_steps: jax.Array  # [] int32, decode iterations actually run (< T on early stop)
    cache: Any = None  # the model's cache (thinker: {"k","v": [layers, N, kv_heads, P+T, head_dim]}) if return_cache
    cache_mask: Any = None  # [N, P+T] valid key slots of ``cache`` when cfg.return_cache


@flax.struct.dataclass
class _LoopState:
    """Carry of the decode loop."""

    step: jax.Array  # [] int32
    tokens: jax.Array  # [N, T]
    logprobs: jax.Array  # [N, T]
    done: jax.Array  # [N] bool
    lengths: jax.Array  # [N] int32
    logits: jax.Array  # [N, V] logits for the token of this step
    cache: Any
    key_mask: jax.Array  # [N, S]


def _default_init_cache(model: nn.Module) -> Callable[..., Any]:
    """Finds the module-level ``init_cache`` next to the model class."""
    fn = getattr(sys.modules[type(model).__module__], "init_cache", None)
    if fn is None:
        raise ValueError(f"no init_cache in {type(model).__module__}; pass init_cache_fn")
    return fn


def _cache_axes(model: nn.Module) -> tuple[str, ...]:
    """Logical names of the cache's dimensions (``CACHE_LOGICAL_AXES`` next to the model class)."""
    return getattr(sys.modules[type(model).__module__], "CACHE_LOGICAL_AXES", _CACHE_AXES)


def next_positions(prompt_positions: jax.Array, prompt_mask: jax.Array) -> jax.Array:
    """Position of the first generated token per row: max valid prompt position + 1 → [B] int32."""
    valid = prompt_mask.astype(bool)[None]  # [1, B, P]
    masked = jnp.where(valid, prompt_positions, jnp.iinfo(jnp.int32).min)
    return (jnp.max(masked, axis=(0, 2)) + 1).astype(jnp.int32)


def _repeat_rows(tree: Any, g: int, axis: int) -> Any:
    """Repeats every leaf ``g`` times along ``axis`` (prompt-major: row b*g + j)."""
    return jax.tree.map(lambda x: jnp.repeat(x, g, axis=axis), tree)


def prefill(
    model: nn.Module,
    params: Any,
    prompt_embeds: jax.Array,
    prompt_positions: jax.Array,
    prompt_mask: jax.Array,
    max_new_tokens: int,
    cache_dtype: Any = jnp.float32,
    init_cache_fn: Callable[..., Any] | None = None,
) -> tuple[jax.Array, Any, jax.Array]:
    """Runs the prompt once; returns (last-position logits [B, V], cache, key mask [B, P+T])."""
    b, p, _ = prompt_embeds.shape
    init_cache_fn = init_cache_fn or _default_init_cache(model)
    cache = init_cache_fn(model.config, b, p + max_new_tokens, cache_dtype)
    key_mask = jnp.concatenate(
        [prompt_mask.astype(jnp.int32), jnp.zeros((b, max_new_tokens), jnp.int32)], axis=1
    )  # [B, S]
    hidden, cache = model.apply(
        {"params": params},
        prompt_embeds,
        prompt_positions.astype(jnp.int32),
        key_mask,
        cache=cache,
        cache_index=jnp.int32(0),
        method="decode",
    )  # hidden [B, P, D]
    # Left padding: the last position is every row's last real token.
    logits = model.apply({"params": params}, hidden[:, -1:], method="logits")[:, 0]  # [B, V]
    return logits, cache, key_mask


def sample(
    model: nn.Module,
    params: Any,
    prompt_embeds: jax.Array,
    prompt_positions: jax.Array,
    prompt_mask: jax.Array,
    rng: jax.Array,
    cfg: SamplerConfig,
    init_cache_fn: Callable[..., Any] | None = None,
) -> SampleOutput:
    """Samples ``cfg.num_generations`` completions for each left-padded prompt.

    Args:
      prompt_embeds: [B, P, D] input embeddings (encoder features already placed).
      prompt_positions: [3, B, P] M-RoPE positions of the prompt.
      prompt_mask: [B, P] 1 for real tokens (left padding = 0).
      rng: PRNG key; step t uses ``fold_in(rng, t)``.
    """
    g, t_max = cfg.num_generations, cfg.max_new_tokens
    b, p, _ = prompt_embeds.shape
    n = b * g

    logits, cache, key_mask = prefill(
        model, params, prompt_embeds, prompt_positions, prompt_mask, t_max, cfg.cache_dtype, init_cache_fn
    )
    # Share the prefill across the group: repeat cache, logits, masks and positions G times.
    cache = _repeat_rows(cache, g, axis=1)
    cache = jax.tree.map(lambda x: nn.with_logical_constraint(x, _cache_axes(model)), cache)
    logits = jnp.repeat(logits, g, axis=0)  # [N, V]
    key_mask = jnp.repeat(key_mask, g, axis=0)  # [N, S]
    start_pos = jnp.repeat(next_positions(prompt_positions, prompt_mask), g, axis=0)  # [N]
    stop_ids = jnp.asarray(cfg.stop_ids if cfg.stop_ids else (-1,), jnp.int32)

    def cond(s: _LoopState) -> jax.Array:
        return (s.step < t_max) & ~jnp.all(s.done)

    def body(s: _LoopState) -> _LoopState:
        step_rng = jax.random.fold_in(rng, s.step)
        tok, logp = sampling_ops.select_tokens(
            step_rng,
            s.logits,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            top_k=cfg.top_k,
            greedy=cfg.greedy,
            candidates=cfg.candidates(s.logits.shape[-1]),
        )
        live = ~s.done
        tok = jnp.where(live, tok, cfg.pad_id)
        logp = jnp.where(live, logp, 0.0)
        tokens = lax.dynamic_update_slice(s.tokens, tok[:, None], (0, s.step))
        logprobs = lax.dynamic_update_slice(s.logprobs, logp[:, None], (0, s.step))
        lengths = s.lengths + live.astype(jnp.int32)
        done = s.done | (live & jnp.any(tok[:, None] == stop_ids[None, :], axis=-1))

        # Feed the token: KV at slot P+step, position start+step (all three M-RoPE components).
        slot = p + s.step
        key_mask = lax.dynamic_update_slice(s.key_mask, jnp.ones((n, 1), jnp.int32), (0, slot))
        emb = model.apply({"params": params}, tok[:, None], method="embed_tokens")  # [N, 1, D]
        pos = jnp.broadcast_to((start_pos + s.step)[None, :, None], (3, n, 1))
        hidden, cache = model.apply(
            {"params": params}, emb, pos, key_mask, cache=s.cache, cache_index=slot, method="decode"
        )
        logits = model.apply({"params": params}, hidden, method="logits")[:, 0]  # [N, V]
        return _LoopState(s.step + 1, tokens, logprobs, done, lengths, logits, cache, key_mask)

    init = _LoopState(
        step=jnp.int32(0),
        tokens=jnp.full((n, t_max), cfg.pad_id, jnp.int32),
        logprobs=jnp.zeros((n, t_max), jnp.float32),
        done=jnp.zeros((n,), bool),
        lengths=jnp.zeros((n,), jnp.int32),
        logits=logits,
        cache=cache,
        key_mask=key_mask,
    )
    final = lax.while_loop(cond, body, init)
    mask = (jnp.arange(t_max)[None, :] < final.lengths[:, None]).astype(jnp.int32)
    return SampleOutput(
        tokens=final.tokens,
        logprobs=final.logprobs,
        mask=mask,
        lengths=final.lengths,
        truncated=~final.done,
        num_steps=final.step,
        cache=final.cache if cfg.return_cache else None,
        cache_mask=final.key_mask if cfg.return_cache else None,
    )


sample_jit = jax.jit(sample, static_argnames=("model", "cfg", "init_cache_fn"))


# Inputs the thinker's ``embed`` needs as concrete host values (they fix shapes): passed to jit as static.
STATIC_INPUTS = ("image_grid_thw", "video_grid_thw", "feature_attention_mask", "video_second_per_grid",
                 "use_audio_in_video")


def generate(
    model: nn.Module,
    params: Any,
    inputs: dict[str, Any],
    rng: jax.Array,
    cfg: SamplerConfig,
    init_cache_fn: Callable[..., Any] | None = None,
) -> SampleOutput:
    """Embeds transformers-style ``inputs`` (input_ids, attention_mask, pixel_values, …) and samples.

    Inside a jit, the entries of :data:`STATIC_INPUTS` must be concrete (``generate_jit`` handles that).
    """
    embeds, positions, _ = model.apply({"params": params}, **inputs, method="embed")
    mask = inputs.get("attention_mask")
    if mask is None:
        mask = jnp.ones(inputs["input_ids"].shape, jnp.int32)
    return sample(model, params, embeds, positions, mask, rng, cfg, init_cache_fn)


def _freeze(value: Any) -> Any:
    """Hashable copy of a static input (nested tuples), restored with ``np.asarray``."""
    arr = np.asarray(value)
    return (arr.dtype.str, arr.tolist() if arr.ndim == 0 else _tuples(arr.tolist()))


def _tuples(x: Any) -> Any:
    return tuple(_tuples(v) for v in x) if isinstance(x, list) else x


@functools.partial(jax.jit, static_argnames=("model", "cfg", "static", "init_cache_fn"))
def _generate_jit(model, params, arrays, rng, cfg, static, init_cache_fn):
    thawed = {k: np.asarray(v, dtype=np.dtype(dt)) for k, (dt, v) in static}
    return generate(model, params, {**arrays, **thawed}, rng, cfg, init_cache_fn)


def generate_jit(
    model: nn.Module,
    params: Any,
    inputs: dict[str, Any],
    rng: jax.Array,
    cfg: SamplerConfig,
    init_cache_fn: Callable[..., Any] | None = None,
) -> SampleOutput:
    """Jitted :func:`generate`; grids and audio masks become static arguments (one compile per layout)."""
    static = tuple(sorted((k, _freeze(v)) for k, v in inputs.items() if k in STATIC_INPUTS and v is not None))
    arrays = {k: v for k, v in inputs.items() if k not in STATIC_INPUTS and v is not None}
    return _generate_jit(model, params, arrays, rng, cfg, static, init_cache_fn)
