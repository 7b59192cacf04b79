"""Greedy decoding with the thinker's KV cache: one prefill, then one cached step per token (one jit).

A reference for the rollout sampler and the frozen grounder; parity-tested against transformers' ``generate``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from omnir1_jax.models.qwen_omni.rope import decode_position_ids
from omnir1_jax.models.qwen_omni.thinker import Thinker, init_cache


def greedy_generate(model: Thinker, params: dict, input_ids: jax.Array, attention_mask: jax.Array,
                    max_new_tokens: int, eos_token_id: int | None = None, pad_token_id: int = 0,
                    **mm_inputs: Any) -> jax.Array:
    """Greedy continuation ``[B, max_new_tokens]`` of left-padded prompts (multimodal inputs as in ``embed``).

    After ``eos_token_id`` a row emits ``pad_token_id`` (as transformers does). Call inside ``jax.jit`` with
    grids / audio masks closed over (they are static).
    """
    B, L = input_ids.shape
    S = L + max_new_tokens
    apply = lambda method, *a, **k: model.apply({"params": params}, *a, method=method, **k)  # noqa: E731
    x, pos, deltas = apply(Thinker.embed, input_ids, attention_mask, **mm_inputs)
    key_mask = jnp.concatenate([attention_mask.astype(jnp.int32), jnp.zeros((B, max_new_tokens), jnp.int32)], 1)
    cache = init_cache(model.config, B, S, model.dtype)
    hidden, cache = apply(Thinker.decode, x, pos, key_mask, cache, jnp.int32(0))
    first = jnp.argmax(apply(Thinker.logits, hidden[:, -1:]), axis=-1)[:, 0].astype(jnp.int32)  # [B]
    n_valid = jnp.sum(attention_mask, axis=-1).astype(jnp.int32)
    out = jnp.zeros((B, max_new_tokens), jnp.int32)
    done = jnp.zeros((B,), bool)

    def step(s, carry):
        tok, cache, key_mask, out, done = carry
        tok = jnp.where(done, pad_token_id, tok)
        out = out.at[:, s].set(tok)
        if eos_token_id is not None:
            done = done | (tok == eos_token_id)
        key_mask = key_mask.at[:, L + s].set(1)
        emb = apply(Thinker.embed_tokens, tok[:, None])
        p = decode_position_ids(deltas, n_valid + s)
        h, cache = apply(Thinker.decode, emb, p, key_mask, cache, L + s)
        nxt = jnp.argmax(apply(Thinker.logits, h), axis=-1)[:, 0].astype(jnp.int32)
        return nxt, cache, key_mask, out, done

    carry = jax.lax.fori_loop(0, max_new_tokens, step, (first, cache, key_mask, out, done))
    return carry[3]
