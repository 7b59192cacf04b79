"""Per-step token selection: temperature, top-k, exact nucleus (top-p), greedy, full-softmax log-probs.

Top-p without a full sort of a ~152k vocabulary.  The nucleus keeps, in descending probability order,
every token whose *exclusive* cumulative mass is below ``top_p`` (the rule of transformers'
``TopPLogitsWarper``: ascending cumsum ``<= 1 - top_p`` is removed, the top token always survives).

* Fast path: ``lax.top_k`` with a capped ``k`` (``candidates``, e.g. 64) gives the head of the sorted
  distribution; the nucleus is exact for a row whenever the candidates' total mass reaches ``top_p``
  (then the next token's exclusive mass is already ``>= top_p``).  Cost ~O(V) per row, no sort.
* Exact fallback, taken through ``lax.cond`` only on steps where some row's nucleus is wider than the
  cap (the predicate is batch-wide: one wide row sends the whole batch through it for that step): a
  bisection over the float32 bit patterns of the probability threshold
  ``tau* = min{p : mass(p_i > p) < top_p}`` (32 passes of O(V), still no sort); the nucleus is then
  ``{i : p_i >= tau*}``.  This equals the sort-based set except that tokens *exactly tied* with the
  threshold are all kept (a sort keeps an arbitrary subset of them).  Trade-off: ~32 O(V) passes versus
  an O(V log V) sort that accelerators do poorly at V ~ 152k; a larger cap makes the fallback rarer but
  ``top_k`` itself slower.  ``candidates=0`` always uses the bisection.

The token is drawn by **inverse CDF with one uniform number per row** over the kept set's (unnormalised)
probabilities: the first index whose cumulative weight exceeds ``u * total``.  This samples the same
distribution as ``jax.random.categorical`` (up to float32 resolution of ``u``, 2**-23) with N random numbers
per step instead of N x V Gumbels; over a whole vocabulary the cumsum is two-level (block sums, then one
block) so no O(V)-deep scan runs.

The log-prob returned with each token is always under the **full** softmax at the sampling temperature
(not the truncated, renormalised distribution): the quantity GRPO importance ratios need.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

_BLOCK = 256  # entries per block of the two-level inverse CDF; rows up to 4 blocks use one cumsum


def scale_logits(logits: jax.Array, temperature: float) -> jax.Array:
    """Returns float32 ``logits / temperature`` (the sampling distribution's logits)."""
    return logits.astype(jnp.float32) / jnp.float32(temperature)


def full_logprob(scaled: jax.Array, tokens: jax.Array) -> jax.Array:
    """Log-prob of ``tokens`` [N] under the full softmax of ``scaled`` [N, V]."""
    picked = jnp.take_along_axis(scaled, tokens[:, None], axis=-1)[:, 0]
    return picked - jax.nn.logsumexp(scaled, axis=-1)


def nucleus_keep_sorted(sorted_logits: jax.Array, log_norm: jax.Array, top_p: float) -> jax.Array:
    """Keep-mask over descending ``sorted_logits`` [N, m]: exclusive cumulative mass < ``top_p``.

    ``log_norm`` [N] is the log-normaliser of the distribution the mass is measured in (the full vocab,
    or the top-k set when top-k is applied first).
    """
    probs = jnp.exp(sorted_logits - log_norm[:, None])  # [N, m]
    exclusive = jnp.cumsum(probs, axis=-1) - probs
    keep = exclusive < top_p
    return keep.at[:, 0].set(True)


def nucleus_threshold(scaled: jax.Array, top_p: float) -> jax.Array:
    """Exact nucleus probability threshold per row by bisection on float32 bits (no sort).

    Returns ``tau`` [N] such that the nucleus is ``softmax(scaled) >= tau``.
    """
    return _threshold_of_probs(jax.nn.softmax(scaled, axis=-1), top_p)


def _threshold_of_probs(probs: jax.Array, top_p: float) -> jax.Array:
    """``nucleus_threshold`` on precomputed probabilities [N, V] (the fallback reuses them)."""
    top = jnp.max(probs, axis=-1)  # mass(p > top) = 0 < top_p, so top qualifies
    lo = jnp.zeros(top.shape, jnp.int32)  # bits of +0.0
    hi = lax.bitcast_convert_type(top, jnp.int32)

    def mass_above(bits: jax.Array) -> jax.Array:  # [N]
        tau = lax.bitcast_convert_type(bits, jnp.float32)
        return jnp.sum(jnp.where(probs > tau[:, None], probs, 0.0), axis=-1)

    def body(_, carry):
        lo, hi = carry
        mid = lo + (hi - lo) // 2
        ok = mass_above(mid) < top_p  # f is non-increasing in the threshold
        return jnp.where(ok, lo, mid + 1), jnp.where(ok, mid, hi)

    # 2**31 positive bit patterns: 32 halvings always close the interval.
    _, hi = lax.fori_loop(0, 32, body, (lo, hi))
    return lax.bitcast_convert_type(hi, jnp.float32)


def _first_above(cdf: jax.Array, thr: jax.Array, weights: jax.Array) -> jax.Array:
    """First index with ``cdf > thr`` per row [N]; the last positive-weight index if rounding leaves none.

    The index found always has positive weight (``cdf`` rises there), so masked-out entries are never drawn.
    """
    above = cdf > thr[:, None]  # [N, m]
    first = jnp.argmax(above, axis=-1)
    m = weights.shape[-1]
    last = m - 1 - jnp.argmax((weights > 0)[:, ::-1], axis=-1)
    return jnp.where(jnp.any(above, axis=-1), first, last)


def inverse_cdf(u: jax.Array, weights: jax.Array, block: int = _BLOCK) -> jax.Array:
    """Index drawn per row from unnormalised ``weights`` [N, m] (>= 0, positive sum) with uniforms ``u`` [N].

    Returns the first index whose cumulative weight exceeds ``u * total``.  Rows longer than
    ``4 * block`` are split into blocks: block sums → cumsum over blocks → the same search inside the
    chosen block, against the residual threshold (two short scans instead of one over ``m``).
    """
    n, m = weights.shape
    if m <= 4 * block:
        cdf = jnp.cumsum(weights, axis=-1)  # [N, m]
        return _first_above(cdf, u * cdf[:, -1], weights)
    nb = -(-m // block)
    w = jnp.pad(weights, ((0, 0), (0, nb * block - m))).reshape(n, nb, block)  # [N, nb, block]
    sums = jnp.sum(w, axis=-1)  # [N, nb]
    cdf = jnp.cumsum(sums, axis=-1)
    thr = u * cdf[:, -1]
    b = _first_above(cdf, thr, sums)  # [N]
    before = jnp.where(b > 0, jnp.take_along_axis(cdf, jnp.maximum(b - 1, 0)[:, None], axis=-1)[:, 0], 0.0)
    inner = jnp.take_along_axis(w, b[:, None, None], axis=1)[:, 0]  # [N, block]
    # thr >= before (b is the first block past thr), so the residual is >= 0 and the pick has weight > 0.
    j = _first_above(jnp.cumsum(inner, axis=-1), jnp.maximum(thr - before, 0.0), inner)
    return b * block + j


def _draw(rng: jax.Array, weights: jax.Array) -> jax.Array:
    """One draw per row of ``weights`` [N, m] (unnormalised probabilities) from a single uniform per row."""
    u = jax.random.uniform(rng, weights.shape[:1], jnp.float32)  # [N]
    return inverse_cdf(u, weights)


def _sample_candidates(
    rng: jax.Array, cand_logits: jax.Array, cand_ids: jax.Array, keep: jax.Array
) -> jax.Array:
    """Samples one of the kept descending candidates per row (renormalised over them)."""
    weights = jnp.where(keep, jnp.exp(cand_logits - cand_logits[:, :1]), 0.0)  # [N, m], top = 1
    choice = _draw(rng, weights)  # [N]
    return jnp.take_along_axis(cand_ids, choice[:, None], axis=-1)[:, 0]


def sample_full(rng: jax.Array, scaled: jax.Array) -> jax.Array:
    """Plain sampling from ``softmax(scaled)`` [N, V] (top-p 1.0, no top-k)."""
    return _draw(rng, jnp.exp(scaled - jnp.max(scaled, axis=-1, keepdims=True)))


def sample_top_k_top_p(rng: jax.Array, scaled: jax.Array, top_k: int, top_p: float) -> jax.Array:
    """Top-k first, then top-p over the renormalised top-k set (transformers' warper order)."""
    k = min(top_k, scaled.shape[-1])
    cand_logits, cand_ids = lax.top_k(scaled, k)  # [N, k], descending
    if top_p < 1.0:
        keep = nucleus_keep_sorted(cand_logits, jax.nn.logsumexp(cand_logits, axis=-1), top_p)
    else:
        keep = jnp.ones(cand_logits.shape, bool)
    return _sample_candidates(rng, cand_logits, cand_ids, keep)


def sample_top_p(rng: jax.Array, scaled: jax.Array, top_p: float, candidates: int = 64) -> jax.Array:
    """Exact nucleus sampling: capped ``top_k`` fast path, bisection fallback when any row needs it."""
    vocab = scaled.shape[-1]

    def by_threshold(_):
        probs = jax.nn.softmax(scaled, axis=-1)  # [N, V]
        tau = _threshold_of_probs(probs, top_p)
        return _draw(rng, jnp.where(probs >= tau[:, None], probs, 0.0))  # nucleus in vocab order

    m = min(candidates, vocab)
    if m <= 0:
        return by_threshold(None)
    log_norm = jax.nn.logsumexp(scaled, axis=-1)  # [N], full-vocab normaliser
    cand_logits, cand_ids = lax.top_k(scaled, m)  # [N, m]
    keep = nucleus_keep_sorted(cand_logits, log_norm, top_p)
    head_mass = jnp.sum(jnp.exp(cand_logits - log_norm[:, None]), axis=-1)  # [N]
    # The fast path is exact when the head reaches top_p (or when it is the whole vocab).
    wide = jnp.any(head_mass < top_p) if m < vocab else jnp.array(False)

    def by_candidates(_):
        return _sample_candidates(rng, cand_logits, cand_ids, keep)

    return lax.cond(wide, by_threshold, by_candidates, None)


def select_tokens(
    rng: jax.Array,
    logits: jax.Array,
    *,
    temperature: float,
    top_p: float = 1.0,
    top_k: int = 0,
    greedy: bool = False,
    candidates: int = 64,
) -> tuple[jax.Array, jax.Array]:
    """Picks the next token of each row of ``logits`` [N, V]; returns (tokens [N], full-softmax logp [N])."""
    scaled = scale_logits(logits, temperature)
    if greedy:
        tokens = jnp.argmax(scaled, axis=-1)
    elif top_k > 0:
        tokens = sample_top_k_top_p(rng, scaled, top_k, top_p)
    elif top_p < 1.0:
        tokens = sample_top_p(rng, scaled, top_p, candidates)
    else:
        tokens = sample_full(rng, scaled)
    tokens = tokens.astype(jnp.int32)
    return tokens, full_logprob(scaled, tokens)
