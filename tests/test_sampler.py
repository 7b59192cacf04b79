"""Tests of the in-graph group sampler (omnir1_jax.rollout.sampler / sampling_ops).

A tiny causal transformer with the thinker's interface lives in this file, so the sampler is tested
independently of the Qwen2.5-Omni port; the last tests run it on the real tiny thinker.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from omnir1_jax.rollout import sampling_ops
from omnir1_jax.rollout.sampler import SamplerConfig, generate_jit, prefill, sample_jit

_NEG = -1e9


# ----------------------------------------------------------------------------------------------------
# A tiny causal LM with the thinker's interface (text-only embed, 1-D positions broadcast to 3).
# ----------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TinyConfig:
    vocab: int = 37
    dim: int = 32
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    head_dim: int = 8


def init_cache(config: TinyConfig, batch: int, max_length: int, dtype=jnp.float32) -> dict:
    """Zero KV cache {"k","v": [layers, B, S, kv_heads, head_dim]}."""
    shape = (config.layers, batch, max_length, config.kv_heads, config.head_dim)
    return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}


def _rope(x, pos):  # x [B, L, H, hd], pos [B, L]
    half = x.shape[-1] // 2
    freq = 1.0 / (100.0 ** (jnp.arange(half) / half))
    ang = pos[..., None].astype(jnp.float32) * freq  # [B, L, half]
    cos, sin = jnp.cos(ang)[:, :, None], jnp.sin(ang)[:, :, None]
    x1, x2 = x[..., :half], x[..., half:]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


class Block(nn.Module):
    c: TinyConfig

    @nn.compact
    def __call__(self, x, pos, allowed, kv, start):
        c = self.c
        h = nn.RMSNorm()(x)
        b, l, _ = x.shape
        q = _rope(nn.Dense(c.heads * c.head_dim)(h).reshape(b, l, c.heads, c.head_dim), pos)
        k = _rope(nn.Dense(c.kv_heads * c.head_dim)(h).reshape(b, l, c.kv_heads, c.head_dim), pos)
        v = nn.Dense(c.kv_heads * c.head_dim)(h).reshape(b, l, c.kv_heads, c.head_dim)
        if kv is not None:
            k = jax.lax.dynamic_update_slice(kv[0], k.astype(kv[0].dtype), (0, start, 0, 0))
            v = jax.lax.dynamic_update_slice(kv[1], v.astype(kv[1].dtype), (0, start, 0, 0))
        rep = c.heads // c.kv_heads
        kk, vv = jnp.repeat(k, rep, axis=2), jnp.repeat(v, rep, axis=2)
        s = jnp.einsum("blhd,bshd->bhls", q, kk) / np.sqrt(c.head_dim)
        s = jnp.where(allowed[:, None], s, _NEG)
        o = jnp.einsum("bhls,bshd->blhd", jax.nn.softmax(s, -1), vv).reshape(b, l, -1)
        x = x + nn.Dense(c.dim)(o)
        x = x + nn.Dense(c.dim)(jax.nn.gelu(nn.Dense(2 * c.dim)(nn.RMSNorm()(x))))
        return x, (k, v)


class TinyLM(nn.Module):
    config: TinyConfig

    def setup(self):
        c = self.config
        self.embedding = nn.Embed(c.vocab, c.dim, embedding_init=nn.initializers.normal(1.0))
        self.blocks = [Block(c) for _ in range(c.layers)]
        self.norm = nn.RMSNorm()
        self.head = nn.Dense(c.vocab, use_bias=False, kernel_init=nn.initializers.normal(1.0))

    def embed_tokens(self, token_ids):
        return self.embedding(token_ids)

    def embed(self, input_ids, attention_mask=None, **_):
        mask = jnp.ones_like(input_ids) if attention_mask is None else attention_mask
        pos = jnp.where(mask == 0, 1, jnp.cumsum(mask, -1) - 1)
        return self.embedding(input_ids), jnp.broadcast_to(pos[None], (3,) + pos.shape), jnp.zeros(pos.shape[0])

    def decode(self, inputs_embeds, position_ids, attention_mask, cache=None, cache_index=None):
        b, l, _ = inputs_embeds.shape
        start = 0 if cache is None else cache_index
        s = l if cache is None else cache["k"].shape[2]
        causal = jnp.arange(s)[None, :] <= (start + jnp.arange(l))[:, None]  # [L, S]
        allowed = causal[None] & attention_mask.astype(bool)[:, None, :]  # [B, L, S]
        x, ks, vs = inputs_embeds, [], []
        for i, blk in enumerate(self.blocks):
            kv = None if cache is None else (cache["k"][i], cache["v"][i])
            x, (k, v) = blk(x, position_ids[0], allowed, kv, start)
            ks.append(k)
            vs.append(v)
        new_cache = None if cache is None else {"k": jnp.stack(ks), "v": jnp.stack(vs)}
        return self.norm(x), new_cache

    def logits(self, hidden):
        return self.head(hidden)

    def __call__(self, input_ids):
        e, p, _ = self.embed(input_ids)
        h, _ = self.decode(e, p, jnp.ones(input_ids.shape, jnp.int32))
        return self.logits(h)


CFG = TinyConfig()
MODEL = TinyLM(CFG)


@pytest.fixture(scope="module")
def params():
    return MODEL.init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"]


def _prompts(lengths=(5, 3), p=6, seed=1):
    """Left-padded prompt ids [B, P] and mask."""
    rs = np.random.RandomState(seed)
    ids = np.zeros((len(lengths), p), np.int32)
    mask = np.zeros((len(lengths), p), np.int32)
    for i, n in enumerate(lengths):
        ids[i, p - n:] = rs.randint(1, CFG.vocab, size=n)
        mask[i, p - n:] = 1
    return jnp.asarray(ids), jnp.asarray(mask)


def _embed(params, ids, mask):
    return MODEL.apply({"params": params}, ids, mask, method="embed")[:2]


@functools.partial(jax.jit, static_argnames=("g",))
def _teacher_logits(params, emb, pos, mask, tokens, g):
    """Full (cache-free) forward over prompt ⊕ tokens → logits predicting each token [N, T, V]."""
    emb, pos, mask = jnp.repeat(emb, g, 0), jnp.repeat(pos, g, 1), jnp.repeat(mask, g, 0)
    n, t = tokens.shape
    p = emb.shape[1]
    start = jnp.max(jnp.where(mask[None] > 0, pos, -1), axis=(0, 2)) + 1  # [N]
    gen_pos = jnp.broadcast_to((start[:, None] + jnp.arange(t))[None], (3, n, t))
    full_emb = jnp.concatenate([emb, MODEL.apply({"params": params}, tokens, method="embed_tokens")], 1)
    full_pos = jnp.concatenate([pos, gen_pos], 2)
    full_mask = jnp.concatenate([mask, jnp.ones((n, t), jnp.int32)], 1)
    h, _ = MODEL.apply({"params": params}, full_emb, full_pos, full_mask, method="decode")
    return MODEL.apply({"params": params}, h[:, p - 1:p + t - 1], method="logits")


def _reference_decode(params, emb, pos, mask, rng, cfg):
    """Step-by-step sampling with a full forward recomputation per step (no cache)."""
    g, t_max = cfg.num_generations, cfg.max_new_tokens
    n = emb.shape[0] * g
    tokens = np.full((n, t_max), cfg.pad_id, np.int32)
    logps = np.zeros((n, t_max), np.float32)
    done = np.zeros(n, bool)
    wide_steps = []  # steps on which the sampler must take the exact bisection fallback
    for t in range(t_max):
        # Causality: logits at step t only see tokens[:, :t]; later (pad) entries cannot leak in.
        logits = _teacher_logits(params, emb, pos, mask, jnp.asarray(tokens), g)[:, t]
        tok, lp = sampling_ops.select_tokens(
            jax.random.fold_in(rng, t), logits, temperature=cfg.temperature, top_p=cfg.top_p,
            top_k=cfg.top_k, greedy=cfg.greedy, candidates=cfg.candidates(logits.shape[-1]))
        tok, lp = np.asarray(tok), np.asarray(lp)
        nucleus = _np_nucleus(np.asarray(logits, np.float64) / cfg.temperature, cfg.top_p)
        wide_steps.append(bool((nucleus[~done].sum(-1) > cfg.candidates(logits.shape[-1])).any()))
        tokens[:, t] = np.where(done, cfg.pad_id, tok)
        logps[:, t] = np.where(done, 0.0, lp)
        done |= ~done & np.isin(tok, cfg.stop_ids)
        if done.all():
            break
    return tokens, logps, wide_steps


def _check_layout(out, cfg):
    """tokens/mask/lengths/truncated are mutually consistent (pad after the first stop)."""
    tokens, mask = np.asarray(out.tokens), np.asarray(out.mask)
    for row, m, n, tr in zip(tokens, mask, np.asarray(out.lengths), np.asarray(out.truncated)):
        stops = np.flatnonzero(np.isin(row, cfg.stop_ids))
        expect_len = stops[0] + 1 if len(stops) else cfg.max_new_tokens
        assert n == expect_len and tr == (len(stops) == 0)
        assert (m == (np.arange(len(row)) < n)).all()
        assert (row[n:] == cfg.pad_id).all()


# ----------------------------------------------------------------------------------------------------
# Sampler vs references.  Few distinct (cfg, shape) pairs, so the jit cache is shared across tests.
# ----------------------------------------------------------------------------------------------------
# Sampling with top-p whose nucleus often exceeds the 3-candidate cap: both top-p paths run.
SAMPLED = SamplerConfig(num_generations=3, max_new_tokens=6, temperature=0.9, top_p=0.8, stop_ids=(3, 7),
                        pad_id=0, top_p_candidates=3, return_cache=True)
GREEDY = SamplerConfig(num_generations=2, max_new_tokens=6, greedy=True, stop_ids=(3, 7))


@pytest.fixture(scope="module")
def batch(params):
    ids, mask = _prompts((6, 3), p=6)  # row 0 unpadded, row 1 left-padded
    emb, pos = _embed(params, ids, mask)
    return ids, mask, emb, pos


@pytest.fixture(scope="module")
def sampled(params, batch):
    _, mask, emb, pos = batch
    return sample_jit(MODEL, params, emb, pos, mask, jax.random.PRNGKey(5), SAMPLED)


@pytest.fixture(scope="module")
def greedy(params, batch):
    _, mask, emb, pos = batch
    return sample_jit(MODEL, params, emb, pos, mask, jax.random.PRNGKey(0), GREEDY)


def test_matches_uncached_reference_decode(params, batch, sampled):
    _, mask, emb, pos = batch
    ref_tokens, ref_logps, wide = _reference_decode(params, emb, pos, mask, jax.random.PRNGKey(5), SAMPLED)
    assert any(wide)  # the exact fallback was exercised inside the loop
    np.testing.assert_array_equal(np.asarray(sampled.tokens), ref_tokens)
    np.testing.assert_allclose(np.asarray(sampled.logprobs), ref_logps, atol=1e-4)
    _check_layout(sampled, SAMPLED)
    assert sampled.tokens.shape == (6, 6)
    assert len(set(map(tuple, np.asarray(sampled.tokens)))) > 2  # the groups actually diverge


def test_logprobs_equal_teacher_forced_forward(params, batch, sampled):
    _, mask, emb, pos = batch
    logits = _teacher_logits(params, emb, pos, mask, sampled.tokens, 3) / SAMPLED.temperature
    lp = jnp.take_along_axis(jax.nn.log_softmax(logits, -1), sampled.tokens[..., None], -1)[..., 0]
    m = np.asarray(sampled.mask).astype(bool)
    assert m.sum() > 6
    np.testing.assert_allclose(np.asarray(sampled.logprobs)[m], np.asarray(lp)[m], atol=1e-4)
    assert (np.asarray(sampled.logprobs)[~m] == 0).all()


def test_shared_prefill_equals_independent_prefills(params, batch, sampled):
    _, mask, emb, pos = batch
    g = SAMPLED.num_generations
    tiled = sample_jit(MODEL, params, jnp.repeat(emb, g, 0), jnp.repeat(pos, g, 1), jnp.repeat(mask, g, 0),
                       jax.random.PRNGKey(5), dataclasses.replace(SAMPLED, num_generations=1))
    np.testing.assert_array_equal(np.asarray(sampled.tokens), np.asarray(tiled.tokens))
    np.testing.assert_allclose(np.asarray(sampled.logprobs), np.asarray(tiled.logprobs), atol=1e-6)
    for key in ("k", "v"):
        assert sampled.cache[key].shape == (CFG.layers, 6, 6 + 6, CFG.kv_heads, CFG.head_dim)
        np.testing.assert_allclose(np.asarray(sampled.cache[key]), np.asarray(tiled.cache[key]), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(sampled.cache_mask), np.asarray(tiled.cache_mask))
    # Prefill logits: repeating once equals prefilling each copy.
    l1, _, _ = prefill(MODEL, params, emb, pos, mask, 2)
    l2, _, _ = prefill(MODEL, params, jnp.repeat(emb, g, 0), jnp.repeat(pos, g, 1), jnp.repeat(mask, g, 0), 2)
    np.testing.assert_allclose(np.repeat(np.asarray(l1), g, 0), np.asarray(l2), atol=1e-6)


def test_tiny_temperature_equals_greedy(params, batch, greedy):
    _, mask, emb, pos = batch
    cold = dataclasses.replace(GREEDY, greedy=False, temperature=1e-6)
    b = sample_jit(MODEL, params, emb, pos, mask, jax.random.PRNGKey(9), cold)
    np.testing.assert_array_equal(np.asarray(greedy.tokens), np.asarray(b.tokens))
    # Greedy rows of one group are identical; greedy log-probs are at temperature 1.
    np.testing.assert_array_equal(np.asarray(greedy.tokens)[0::2], np.asarray(greedy.tokens)[1::2])
    assert (np.asarray(greedy.logprobs) <= 0).all() and (np.asarray(greedy.logprobs) < -1e-3).any()


def test_early_stop_runs_fewer_steps(params, batch, greedy):
    _, mask, emb, pos = batch
    _check_layout(greedy, GREEDY)
    assert int(greedy.num_steps) == int(np.max(greedy.lengths))  # ends with the longest row
    every = dataclasses.replace(GREEDY, stop_ids=tuple(range(CFG.vocab)))
    out = sample_jit(MODEL, params, emb, pos, mask, jax.random.PRNGKey(0), every)
    assert int(out.num_steps) == 1 < GREEDY.max_new_tokens
    assert (np.asarray(out.lengths) == 1).all() and not np.asarray(out.truncated).any()
    assert (np.asarray(out.tokens)[:, 1:] == 0).all() and (np.asarray(out.mask).sum(1) == 1).all()
    # Rows stop at their own first stop token (here: greedy token 2 of prompt 0, token 1 of prompt 1).
    stop = (int(greedy.tokens[0, 2]), int(greedy.tokens[2, 1]))
    cfg = dataclasses.replace(GREEDY, stop_ids=stop)
    out = sample_jit(MODEL, params, emb, pos, mask, jax.random.PRNGKey(0), cfg)
    _check_layout(out, cfg)
    assert (np.asarray(out.lengths) <= np.array([3, 3, 2, 2])).all()
    assert int(out.num_steps) == int(np.max(out.lengths)) <= 3


def test_left_padding_matches_unpadded_single_prompt(params, batch, greedy):
    ids, _, _, _ = batch
    one_ids = ids[1:2, -3:]  # row 1 without its left padding
    one_mask = jnp.ones_like(one_ids)
    e1, p1 = _embed(params, one_ids, one_mask)
    single = sample_jit(MODEL, params, e1, p1, one_mask, jax.random.PRNGKey(0), GREEDY)
    np.testing.assert_array_equal(np.asarray(greedy.tokens[2:4]), np.asarray(single.tokens))
    np.testing.assert_allclose(np.asarray(greedy.logprobs[2:4]), np.asarray(single.logprobs), atol=1e-5)
    assert int(single.lengths[0]) > 1


def test_generate_embeds_then_samples(params, batch, greedy):
    ids, mask, _, _ = batch
    out = generate_jit(MODEL, params, {"input_ids": ids, "attention_mask": mask}, jax.random.PRNGKey(0), GREEDY)
    np.testing.assert_array_equal(np.asarray(out.tokens), np.asarray(greedy.tokens))
    np.testing.assert_allclose(np.asarray(out.logprobs), np.asarray(greedy.logprobs), atol=1e-6)


# ----------------------------------------------------------------------------------------------------
# Sampling ops: allowed sets and distributions.
# ----------------------------------------------------------------------------------------------------
def _np_nucleus(logits, top_p, with_margin=False):
    """Sort-based nucleus keep-mask (transformers' TopPLogitsWarper rule), optionally |cum mass - top_p|."""
    order = np.argsort(-logits, axis=-1, kind="stable")
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    ps = np.take_along_axis(p, order, -1)
    keep_sorted = (np.cumsum(ps, -1) - ps) < top_p
    keep_sorted[:, 0] = True
    keep = np.zeros_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, -1)
    if not with_margin:
        return keep
    margin = np.zeros(keep.shape)
    np.put_along_axis(margin, order, np.abs(np.cumsum(ps, -1) - ps - top_p), -1)
    return keep, margin


def test_nucleus_threshold_equals_sort():
    logits = jax.random.normal(jax.random.PRNGKey(0), (64, 300)) * 3.0
    for top_p in (0.05, 0.5, 0.9, 0.999):
        tau = sampling_ops.nucleus_threshold(logits, top_p)
        keep = np.asarray(jax.nn.softmax(logits, -1) >= tau[:, None])
        ref, margin = _np_nucleus(np.asarray(logits, np.float64), top_p, with_margin=True)
        clear = margin > 1e-5  # float32 vs float64 rounding can flip exact borderline cases only
        assert clear.mean() > 0.99
        np.testing.assert_array_equal(keep[clear], ref[clear])


@pytest.mark.parametrize("top_p,top_k,cand", [(0.7, 0, 6), (0.7, 0, 2), (0.7, 0, 0), (1.0, 3, 64), (0.6, 4, 64)])
def test_top_p_top_k_stay_in_allowed_set(top_p, top_k, cand):
    vocab, draws = 12, 4000
    base = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (2, vocab)) * 1.5, np.float64)
    temp = 0.8
    scaled = base / temp
    allowed = np.ones_like(scaled, bool)
    dist = np.exp(scaled - scaled.max(-1, keepdims=True))
    if top_k:
        kth = np.sort(scaled, -1)[:, -top_k][:, None]
        allowed &= scaled >= kth
        dist = np.where(allowed, dist, 0.0)
    if top_p < 1.0:
        masked = np.where(allowed, scaled, -np.inf)
        allowed &= _np_nucleus(masked, top_p)
    dist = np.where(allowed, dist, 0.0)
    dist /= dist.sum(-1, keepdims=True)
    if top_p < 1.0 and not top_k and cand:  # which top-p path runs: fast (cand=6) or bisection (cand=2)
        assert (allowed.sum(-1).max() > cand) == (cand == 2)
    logits = jnp.asarray(np.repeat(base, draws, 0), jnp.float32)  # [2*draws, V]
    tok, lp = jax.jit(functools.partial(sampling_ops.select_tokens, temperature=temp, top_p=top_p, top_k=top_k,
                                        candidates=cand))(jax.random.PRNGKey(2), logits)
    tok = np.asarray(tok).reshape(2, draws)
    for r in range(2):
        assert allowed[r][tok[r]].all(), "sampled outside the allowed set"
        freq = np.bincount(tok[r], minlength=vocab) / draws
        assert np.abs(freq - dist[r]).max() < 0.04
        assert (allowed[r].sum() == 1) or len(np.unique(tok[r])) > 1
    full = scaled - np.log(np.exp(scaled).sum(-1, keepdims=True))
    np.testing.assert_allclose(np.asarray(lp).reshape(2, draws), np.take_along_axis(full, tok, -1), atol=1e-5)


def test_inverse_cdf_two_level_equals_one_level_and_skips_zero_weights():
    rs = np.random.RandomState(0)
    w = rs.randint(0, 5, size=(6, 50)).astype(np.float32)  # small integers: every cumsum is exact
    w[:, 7:13] = 0.0
    w[:, -3:] = 0.0  # a zero tail past the last block boundary (block 4 → 13 blocks, 2 padded entries)
    u = jnp.asarray(np.linspace(0.0, 1.0 - 2 ** -23, 301, dtype=np.float32))  # [301]
    wj = jnp.asarray(np.repeat(w, len(u), 0))  # [6*301, 50]
    uu = jnp.tile(u, 6)
    one = np.asarray(sampling_ops.inverse_cdf(uu, wj, block=64))  # single cumsum (50 <= 4*64)
    two = np.asarray(sampling_ops.inverse_cdf(uu, wj, block=4))  # 13 blocks of 4
    np.testing.assert_array_equal(one, two)
    cdf = np.cumsum(w, -1)
    expect = np.argmax(cdf[:, None, :] > np.asarray(u)[None, :, None] * cdf[:, -1:, None], -1).reshape(-1)
    np.testing.assert_array_equal(one, expect)
    assert (np.repeat(w, len(u), 0)[np.arange(len(one)), one] > 0).all()
    assert len(np.unique(two)) > 20  # many indices reached, incl. across block boundaries


def _chi2_pvalue(tokens: np.ndarray, probs: np.ndarray) -> float:
    """Chi-square goodness-of-fit p-value of sampled ``tokens`` against ``probs`` (zero-mass tokens must not occur)."""
    from scipy.stats import chisquare

    counts = np.bincount(tokens, minlength=len(probs)).astype(np.float64)
    live = probs > 0
    assert counts[~live].sum() == 0, "drew a token outside the kept set"
    return float(chisquare(counts[live], probs[live] / probs[live].sum() * counts.sum()).pvalue)


@pytest.mark.parametrize("path", ["fast", "fallback", "full", "top_k", "two_level"])
def test_inverse_cdf_sampling_matches_exact_distribution_chi2(path):
    """Every sampling path draws from the exact (top-k / top-p renormalised) distribution: chi-square over
    20k draws accepts it, and rejects the same counts against a plausible wrong distribution."""
    rs = np.random.RandomState(7)
    top_p, top_k, cand = {"fast": (0.8, 0, 8), "fallback": (0.8, 0, 2), "full": (1.0, 0, 64),
                          "top_k": (0.9, 5, 64), "two_level": (1.0, 0, 64)}[path]
    if path == "two_level":  # > 4 blocks of 256: the two-level cumsum; mass on 12 ids spread over the blocks
        vocab, draws = 1500, 4000
        logits = np.full(vocab, -40.0)
        hot = np.array([3, 255, 256, 257, 511, 700, 900, 1023, 1024, 1200, 1401, 1499])
        logits[hot] = rs.randn(12)
    else:
        vocab, draws = 14, 20000
        logits = rs.randn(vocab) * 1.2
    temp = 0.9
    scaled = logits / temp
    p = np.exp(scaled - scaled.max())
    p /= p.sum()
    keep = np.ones(vocab, bool)
    if top_k:
        keep &= scaled >= np.sort(scaled)[-top_k]
    if top_p < 1.0:
        keep &= _np_nucleus(np.where(keep, scaled, -np.inf)[None], top_p)[0]
    exact = np.where(keep, p, 0.0)
    exact /= exact.sum()
    if path in ("fast", "fallback"):  # the path the op must take: fallback iff the nucleus exceeds the cap
        assert (keep.sum() > cand) == (path == "fallback")
    rows = jnp.asarray(np.repeat(logits[None], draws, 0), jnp.float32)
    fn = jax.jit(functools.partial(sampling_ops.select_tokens, temperature=temp, top_p=top_p, top_k=top_k,
                                   candidates=cand))
    tok = np.asarray(fn(jax.random.PRNGKey(11), rows)[0])
    if path == "two_level":  # bucket the negligible tail (total mass ~1e-14) away
        assert np.isin(tok, hot).all()
        tok = np.searchsorted(hot, tok)
        exact = exact[hot] / exact[hot].sum()
    assert _chi2_pvalue(tok, exact) > 1e-3
    # Power: a wrong distribution (untruncated, or a tempered one without truncation) is rejected.
    wrong = p[hot] / p[hot].sum() if path == "two_level" else p
    if path in ("full", "two_level"):
        wrong = wrong ** 1.3 / (wrong ** 1.3).sum()
    counts = np.bincount(tok, minlength=len(wrong)).astype(np.float64)
    from scipy.stats import chisquare

    assert chisquare(counts, wrong * counts.sum()).pvalue < 1e-6


# ----------------------------------------------------------------------------------------------------
# The real tiny thinker (audio + image prompts) against transformers.
# ----------------------------------------------------------------------------------------------------
def _thinker_inputs(cfg, g: int = 1) -> dict:
    """Two left-padded audio+image prompts in transformers' format, each row repeated ``g`` times."""
    from omnir1_jax.models.qwen_omni.audio import audio_output_lengths

    rs = np.random.RandomState(3)
    grids, flens = [[1, 4, 4], [1, 4, 6]], [40, 23]
    _, alens = audio_output_lengths(flens)
    seqs, pix = [], []
    for i in range(2):
        aud = [cfg.audio_start_token_id] + [cfg.audio_token_id] * int(alens[i]) + [cfg.audio_end_token_id]
        img = [cfg.vision_start_token_id] + [cfg.image_token_id] * (int(np.prod(grids[i])) // 4)
        seqs.append(list(rs.randint(0, 200, 3 - i)) + aud + img + [cfg.vision_end_token_id]
                    + list(rs.randint(0, 200, 4 - i)))
        pix.append(rs.randn(int(np.prod(grids[i])), cfg.vision.patch_dim).astype(np.float32))
    feats = rs.randn(2, cfg.audio.num_mel_bins, max(flens)).astype(np.float32)
    L = max(map(len, seqs)) + 1
    ids = np.full((2, L), cfg.pad_token_id, np.int64)
    mask = np.zeros((2, L), np.int64)
    fmask = np.zeros((2, max(flens)), np.int64)
    for b, s in enumerate(seqs):
        ids[b, L - len(s):], mask[b, L - len(s):], fmask[b, :flens[b]] = s, 1, 1
    rep = lambda x: np.repeat(x, g, 0)  # noqa: E731
    return {"input_ids": rep(ids), "attention_mask": rep(mask), "image_grid_thw": rep(np.array(grids)),
            "pixel_values": np.concatenate([p for p in pix for _ in range(g)]),
            "input_features": rep(feats), "feature_attention_mask": rep(fmask)}


@pytest.fixture(scope="module")
def thinker():
    import torch
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    from omnir1_jax.models.qwen_omni import load_hf, tiny
    from omnir1_jax.models.qwen_omni.audio_config import AudioConfig
    from omnir1_jax.models.qwen_omni.vision_config import VisionConfig

    cfg = tiny(vocab_size=256, vision=dataclasses.replace(VisionConfig.tiny(), out_hidden_size=64),
               audio=dataclasses.replace(AudioConfig.tiny(), output_dim=64))
    hf_cfg = cfg.to_hf()
    hf_cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    hf = Qwen2_5OmniThinkerForConditionalGeneration(hf_cfg).eval()
    model, params = load_hf(hf)
    return hf, model, params


def _torch(inputs):
    import torch

    return {k: torch.tensor(v) for k, v in inputs.items()}


def test_thinker_greedy_groups_match_transformers_generate(thinker):
    import torch

    hf, model, params = thinker
    inputs = _thinker_inputs(model.config)
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = model.config.pad_token_id
    with torch.no_grad():
        ref = hf.generate(**_torch(inputs), max_new_tokens=10, do_sample=False)[:, inputs["input_ids"].shape[1]:]
    cfg = SamplerConfig(num_generations=2, max_new_tokens=10, greedy=True)
    out = generate_jit(model, params, inputs, jax.random.PRNGKey(0), cfg)
    np.testing.assert_array_equal(np.asarray(out.tokens), np.repeat(ref.numpy(), 2, 0))
    assert len(np.unique(ref.numpy())) > 3


THINKER_SAMPLED = dict(num_generations=2, max_new_tokens=8, temperature=0.8, top_p=0.9)


@pytest.fixture(scope="module")
def thinker_sampled(thinker):
    _, model, params = thinker
    c = model.config
    cfg = SamplerConfig(**THINKER_SAMPLED, stop_ids=(c.eos_token_id,), pad_id=c.pad_token_id)
    return cfg, generate_jit(model, params, _thinker_inputs(c), jax.random.PRNGKey(1), cfg)


def test_thinker_sampled_logprobs_match_transformers_forward(thinker, thinker_sampled):
    import torch

    hf, model, params = thinker
    cfg, out = thinker_sampled
    g, t = cfg.num_generations, cfg.max_new_tokens
    _check_layout(out, cfg)
    # Teacher-forced transformers forward over prompt ⊕ completion (rows repeated G times).
    full = _thinker_inputs(model.config, g)
    p = full["input_ids"].shape[1]
    full["input_ids"] = np.concatenate([full["input_ids"], np.asarray(out.tokens)], 1)
    full["attention_mask"] = np.concatenate([full["attention_mask"], np.ones((2 * g, t), np.int64)], 1)
    with torch.no_grad():
        logits = hf(**_torch(full)).logits[:, p - 1:p + t - 1].double() / cfg.temperature
    ref = torch.log_softmax(logits, -1).gather(-1, torch.tensor(np.asarray(out.tokens))[..., None].long())[..., 0]
    m = np.asarray(out.mask).astype(bool)
    np.testing.assert_allclose(np.asarray(out.logprobs)[m], ref.numpy()[m], atol=1e-4)
    assert len(set(map(tuple, np.asarray(out.tokens)))) > 2


def test_thinker_sharded_sampling_equals_single_device(thinker, thinker_sampled):
    from omnir1_jax.models.qwen_omni import init_params
    from omnir1_jax.parallel.rules import get_rules
    from omnir1_jax.parallel.sharding import mesh_rules, sharded_fraction

    _, model, params = thinker
    cfg, ref = thinker_sampled
    mesh = jax.make_mesh((1, 2, 2), ("data", "fsdp", "tensor"), axis_types=(jax.sharding.AxisType.Auto,) * 3)
    rules = get_rules("sample")
    boxed = jax.eval_shape(lambda r: init_params(model, r), jax.random.PRNGKey(0))
    sharded = jax.device_put(params, nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed), mesh, rules))
    assert sharded_fraction(sharded) > 0.3
    with mesh_rules(mesh, rules):
        out = generate_jit(model, sharded, _thinker_inputs(model.config), jax.random.PRNGKey(1), cfg)
    np.testing.assert_array_equal(np.asarray(out.tokens), np.asarray(ref.tokens))
    np.testing.assert_allclose(np.asarray(out.logprobs), np.asarray(ref.logprobs), atol=1e-5)


def test_7b_shaped_sampler_traces_with_static_shapes():
    from omnir1_jax.models.qwen_omni import Thinker, init_params, qwen2_5_omni_7b

    model = Thinker(qwen2_5_omni_7b(with_towers=False), dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    params = nn.unbox(jax.eval_shape(lambda r: init_params(model, r), jax.random.PRNGKey(0)))
    b, p, g, t = 2, 32, 8, 16
    cfg = SamplerConfig(num_generations=g, max_new_tokens=t, top_p=0.95, stop_ids=(151645,),
                        cache_dtype=jnp.bfloat16, return_cache=True)
    emb = jax.ShapeDtypeStruct((b, p, model.config.hidden_size), jnp.bfloat16)
    pos = jax.ShapeDtypeStruct((3, b, p), jnp.int32)
    mask = jax.ShapeDtypeStruct((b, p), jnp.int32)
    out = jax.eval_shape(functools.partial(sample_jit, model, cfg=cfg), params, emb, pos, mask,
                         jax.random.PRNGKey(0))
    assert out.tokens.shape == out.logprobs.shape == out.mask.shape == (b * g, t)
    assert out.cache["k"].shape == (28, b * g, 4, p + t, 128) and out.cache["k"].dtype == jnp.bfloat16


def test_top_p_candidates_default_follows_the_backend_and_vocab():
    """-1 (default): the bisection alone on CPU for small vocabularies (XLA:CPU's top_k is the slower path there),
    the 64-candidate fast path otherwise; explicit values pass through."""
    from omnir1_jax.rollout.sampler import CPU_BISECTION_MAX_VOCAB

    cpu = jax.default_backend() == "cpu"
    assert SamplerConfig().candidates(512) == (0 if cpu else 64)
    assert SamplerConfig().candidates(CPU_BISECTION_MAX_VOCAB + 1) == 64
    assert SamplerConfig(top_p_candidates=7).candidates(512) == 7
    assert SamplerConfig(top_p_candidates=0).candidates(152064) == 0
    with pytest.raises(ValueError, match="top_p_candidates"):
        SamplerConfig(top_p_candidates=-2)
