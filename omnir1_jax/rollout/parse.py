"""Jittable, batched parsers of policy completions and grounder outputs (Omni-R1 reference §4).

Inputs: token ids `[B, T]` int32, lengths `[B]` (tokens past it are ignored), and the host byte table
(`text.byte_table`: `[V, MB]` uint8 + `[V]` int32). Tokens are expanded to a compact byte stream `[B, L]`,
L = `max_stream_bytes` (default T*MB; bytes beyond are dropped), valid below `nb [B]`; `owner [B, L]` is the
token that produced each byte. Everything after is vectorised over positions (cumsum/cummax/cummin tricks,
static-shift window compares) except the flat-JSON DFA (`json_dfa.py`): `dfa_mode="scan"` is a `lax.scan`
over L with a `[B]` carry, `"assoc"` an associative scan over per-byte transition maps `[B, L, 82]` int8
(log-depth, more memory; for accelerators). All rules match `parse_ref.py` exactly. Requires
1 <= n_frames <= F.

Rules (bytes; regex `\\s` = ASCII whitespace ` \\t\\n\\r\\v\\f`):
  format_ok     whole completion full-matches `<think>.*?</think>\\s*<answer>.*?</answer>` (DOTALL).
  answer        first `<answer>\\s*(.*?)\\s*</answer>` (DOTALL), stripped -> byte span (0, 0) if absent.
  objects       `({[\\s\\S]*?})` matches inside the answer (first `{`, then the first `}`); each must be a
                flat JSON object (members' values: string, number, true/false/null/NaN/Infinity/-Infinity, or
                an array of those). Keys compare as raw bytes; the last duplicate key wins.
  well-formed   start_time and end_time are strings whose raw content matches `(\\d+):(\\d+)\\.(\\d+)` at its
                start, and description exists and is not null. Time = (mm*60+ss)*100+ff hundredths (ff read as
                an integer of hundredths whatever its digit count, e.g. "0:1.5" = 1.05 s, "0:1.500" = 6 s);
                components saturate at 1e5 (exact for n_frames < 2000).
  consistent    well-formed and start <= end <= n/2 s; frames idx(t) = min(t // 50, n-1) (fps 2), inclusive.
  key frames    the first K unique frames (sorted) over consistent segments; each takes the description of
                the first segment that contains it: raw string content (escapes undecoded) or the raw value.
  boxes         first O `{...}` matches of the whole grounder output, one slot each in order; a slot is valid
                if its object is flat JSON with `bbox_2d` an array of exactly 4 numbers. Number -> float32 as
                float32(M) * 10^E (or / 10^-E), M = first 9 significant digits (truncated), E clamped to
                [-30, 30]; then divided by (w_ratio, h_ratio, w_ratio, h_ratio).

Deviations from the Python original (`json.loads` on `str`): key escapes are not decoded, nested arrays are
rejected, escapes inside time strings are not decoded, non-ASCII/`\\x1c-\\x1f` whitespace is not `\\s`, times
are compared exactly in hundredths (the original's float64 can differ by one ulp for one instant written two
ways, e.g. "0:1.30" vs "0:0.130"), and non-number box elements (true, "12") are invalid.

Outputs of `parse_completions` (B rows; fill 0/False where invalid):
  format_ok [B] bool, answer_found [B] bool, answer_bytes [B,2], answer_tokens [B,2], answer_tok_exact [B],
  n_objects, n_wellformed, n_consistent [B]      counts over ALL objects of the answer,
  n_indices [B]  sum of consistent segment lengths; n_unique [B]  distinct frames over them,
  obj_wellformed, obj_consistent [B,J] bool, obj_frames [B,J,2] (start idx, end idx) for the first J objects,
  frame_cover [B,F]  consistent segments covering each frame,
  cover_by_len [B,F,F]  [l-1, f]: consistent segments of length l covering frame f (for exact mask ratios),
  key_frames [B,K], key_valid [B,K], key_desc_bytes [B,K,2], key_desc_tokens [B,K,2] (tokens overlapping the
  byte span; empty span -> (token at start, same)), key_desc_tok_exact [B,K] (span on token boundaries).
Outputs of `parse_boxes`: boxes [B,O,4] float32, box_valid [B,O] bool, n_json [B] (all `{...}` matches).
RefAVS: the answer span is the description.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from omnir1_jax.rollout import json_dfa as dfa
from omnir1_jax.rollout.parse_ref import E10_MAX, E10_MIN, POW10, SIG_DIGITS

RE_WS = b" \t\n\r\x0b\x0c"
JSON_WS = b" \t\n\r"


# ---------------------------------------------------------------------------------------- helpers
def _isin(x: jax.Array, chars: bytes) -> jax.Array:
    return functools.reduce(jnp.logical_or, [x == c for c in chars])


def _shift(x: jax.Array, k: int, fill=0) -> jax.Array:
    """y[:, p] = x[:, p + k] (fill past the end)."""
    if k == 0:
        return x
    pad = jnp.full(x.shape[:1] + (k,) + x.shape[2:], fill, x.dtype)
    return jnp.concatenate([x[:, k:], pad], axis=1)


def _at(x: jax.Array, idx: jax.Array, fill=0) -> jax.Array:
    """Gather x[b, idx[b, ...]] with out-of-range indices giving `fill`."""
    L = x.shape[1]
    flat = idx.reshape(idx.shape[0], -1)
    v = jnp.take_along_axis(x, jnp.clip(flat, 0, L - 1), axis=1)
    v = jnp.where((flat >= 0) & (flat < L), v, fill)
    return v.reshape(idx.shape)


def _match(b: jax.Array, lit: bytes) -> jax.Array:
    """[B, L] bool: `lit` starts at p."""
    return functools.reduce(jnp.logical_and, [_shift(b, i, -1) == c for i, c in enumerate(lit)])


def _next_true(m: jax.Array) -> jax.Array:
    """[B, L] index of the first True at or after p (L if none)."""
    L = m.shape[1]
    idx = jnp.where(m, jnp.arange(L), L)
    return lax.cummin(idx, axis=1, reverse=True)


def _prev_true(m: jax.Array) -> jax.Array:
    """[B, L] index of the last True at or before p (-1 if none)."""
    L = m.shape[1]
    return lax.cummax(jnp.where(m, jnp.arange(L), -1), axis=1)


def _byte_stream(ids, lengths, table, tok_lens, max_stream_bytes: int | None):
    """Compact bytes [B, L] int32 (-1 past nb), nb [B], owner token [B, L]; bytes past L are dropped."""
    B, T = ids.shape
    MB = table.shape[1]
    L = T * MB if max_stream_bytes is None else int(max_stream_bytes)
    ids = jnp.clip(ids, 0, table.shape[0] - 1)
    tb = jnp.asarray(table)[ids].astype(jnp.int32)  # [B, T, MB]
    tl = jnp.where(jnp.arange(T)[None] < lengths[:, None], jnp.asarray(tok_lens)[ids], 0)  # [B, T]
    valid = jnp.arange(MB)[None, None] < tl[:, :, None]  # [B, T, MB]
    valid = valid.reshape(B, T * MB)
    dest = jnp.where(valid, jnp.cumsum(valid, axis=1) - 1, L)
    rows = jnp.arange(B)[:, None]
    b = jnp.full((B, L), -1, jnp.int32).at[rows, dest].set(tb.reshape(B, -1), mode="drop")
    tok = jnp.broadcast_to(jnp.arange(T)[None, :, None], (B, T, MB)).reshape(B, -1)
    owner = jnp.zeros((B, L), jnp.int32).at[rows, dest].set(tok, mode="drop")
    return b, jnp.minimum(valid.sum(axis=1), L).astype(jnp.int32), owner


class _Stream:
    """Per-position helper arrays over the compact byte stream."""

    def __init__(self, b, nb, owner, n_tok):
        self.b, self.nb, self.owner, self.n_tok = b, nb, owner, n_tok
        L = b.shape[1]
        self.pos = jnp.broadcast_to(jnp.arange(L), b.shape)
        self.digit = (b >= 48) & (b <= 57)
        nondigit_next = _next_true(~self.digit)
        self.run = nondigit_next - self.pos  # digits starting at p
        self.next_nonzero = _next_true(b != 48)
        self.next_nonws_re = _next_true(~_isin(b, RE_WS))
        self.next_nonws_json = _next_true(~_isin(b, JSON_WS))

    def run_value(self, p, cap_digits: int):
        """min(int(digit run at p), 10**cap_digits), vectorised over index array p."""
        r = _at(self.run, p)
        end = p + r
        z = jnp.minimum(_at(self.next_nonzero, p, fill=2**30), end)
        eff = end - z
        val = jnp.zeros_like(p)
        for i in range(cap_digits):
            d = _at(self.b, z + i) - 48
            val = jnp.where(i < eff, val * 10 + d, val)
        return jnp.where(eff > cap_digits, 10**cap_digits, val)

    def tok_span(self, bs, be):
        """Tokens overlapping bytes [bs, be) and whether both ends sit on token boundaries."""
        nb = self.nb.reshape((-1,) + (1,) * (bs.ndim - 1))
        n_tok = self.n_tok.reshape(nb.shape)
        ts = jnp.where(bs < nb, _at(self.owner, bs), n_tok)
        te = jnp.where(be > bs, _at(self.owner, be - 1) + 1, ts)
        start_ok = (bs >= nb) | (bs == 0) | (_at(self.owner, bs - 1) != _at(self.owner, bs))
        end_ok = (be >= nb) | (be == 0) | (_at(self.owner, be) != _at(self.owner, be - 1))
        return ts, te, start_ok & end_ok


def _run_dfa(b, lo, hi, mode: str):
    """States before/after each byte [B, L] for the span [lo, hi) (bytes outside force OUT).

    mode "scan": `lax.scan` over L with a [B] carry (O(L) sequential steps, tiny memory);
    mode "assoc": `lax.associative_scan` over per-byte transition maps [B, L, S] (O(log L) depth).
    """
    L = b.shape[1]
    p = jnp.arange(L)[None]
    cls = jnp.where((p >= lo[:, None]) & (p < hi[:, None]) & (b >= 0), b, 256)
    table = jnp.asarray(dfa.TABLE)
    if mode == "scan":

        def step(state, c):
            return table[state, c], state

        _, before = lax.scan(step, jnp.zeros(b.shape[0], jnp.int32), cls.T)
        before = before.T
    elif mode == "assoc":
        maps = jnp.asarray(dfa.TABLE.T.astype(np.int8))[cls]  # [B, L, S]: state -> next state

        def compose(f, g):  # apply f, then g
            return jnp.take_along_axis(g, f.astype(jnp.int32), axis=-1)

        after = lax.associative_scan(compose, maps, axis=1)[..., dfa.OUT].astype(jnp.int32)
        before = jnp.concatenate([jnp.full_like(after[:, :1], dfa.OUT), after[:, :-1]], axis=1)
    else:
        raise ValueError(f"unknown DFA mode {mode!r}")
    return before, table[before, cls]


def _objects(s: _Stream, lo, hi, mode: str):
    """Regex-delimited objects in [lo, hi): is_close [B, L], open position and validity at each close."""
    before, after = _run_dfa(s.b, lo, hi, mode)
    in_obj = before != dfa.OUT
    is_close = in_obj & (s.b == ord("}")) & (s.pos < hi[:, None])
    is_open = (before == dfa.OUT) & (after == dfa.O_OPEN)
    open_pos = _prev_true(is_open)
    ok = jnp.asarray(dfa.CLOSE_OK)[before] & is_close
    return before, after, is_close, open_pos, ok


def _member(s: _Stream, before, name: bytes, is_close, open_pos):
    """At each close: (present, value start) of the last `name` member of that object."""
    key_at = ((before == dfa.O_OPEN) | (before == dfa.O_KEYNEXT)) & _match(s.b, b'"' + name + b'"')
    last = _prev_true(key_at)
    present = is_close & (last > open_pos)
    colon = _at(s.next_nonws_json, last + len(name) + 2, fill=2**30)
    v0 = _at(s.next_nonws_json, colon + 1, fill=2**30)
    return present, v0


def _value_end(s: _Stream, after, v0):
    """Raw end of the top-level value starting at v0, and the string content end (closing quote)."""
    exit_ = ~jnp.isin(after, jnp.asarray(dfa.O_VALUE_STATES))
    p = _at(_next_true(exit_), v0, fill=0)
    c0, c1 = _at(s.b, v0), _at(s.b, v0 + 1)
    is_num = (_isin(c0, b"0123456789") | (c0 == ord("-"))) & (c1 != ord("I"))
    return jnp.where(is_num, p, p + 1), p


def _time_at(s: _Stream, q):
    """Hundredths of `(\\d+):(\\d+)\\.(\\d+)` matched at q, or -1."""
    r1 = _at(s.run, q)
    a = q + r1
    r2 = _at(s.run, a + 1)
    c = a + 1 + r2
    r3 = _at(s.run, c + 1)
    ok = (r1 > 0) & (_at(s.b, a) == ord(":")) & (r2 > 0) & (_at(s.b, c) == ord(".")) & (r3 > 0)
    mm, ss, ff = jnp.unstack(s.run_value(jnp.stack([q, a + 1, c + 1], axis=1), 5), axis=1)  # one batched gather
    return jnp.where(ok, (mm * 60 + ss) * 100 + ff, -1)


# ---------------------------------------------------------------------------------------- VOS / answer
def _format_and_answer(s: _Stream):
    nb = s.nb[:, None]
    think_o, think_c = _match(s.b, b"<think>"), _match(s.b, b"</think>")
    ans_o, ans_c = _match(s.b, b"<answer>"), _match(s.b, b"</answer>")
    q = _at(s.next_nonws_re, s.pos + 8, fill=2**30)
    mid = think_c & (s.pos >= 7) & _at(ans_o, q, fill=False) & (q + 8 <= nb - 9)
    last_ans_c = jnp.max(jnp.where(ans_c, s.pos, -1), axis=1)
    fmt = think_o[:, 0] & (last_ans_c == s.nb - 9) & jnp.any(mid, axis=1)
    p0 = jnp.min(jnp.where(ans_o, s.pos, 2**30), axis=1)
    found = (p0 < 2**30) & (last_ans_c >= p0 + 8)
    gs = _at(s.next_nonws_re, (p0 + 8)[:, None])[:, 0]
    c = _at(_next_true(ans_c), gs[:, None])[:, 0]
    prev_nonws = _prev_true(~_isin(s.b, RE_WS))
    e = jnp.maximum(gs, _at(prev_nonws, (c - 1)[:, None])[:, 0] + 1)
    a0, a1 = jnp.where(found, gs, 0), jnp.where(found, e, 0)
    return fmt, found, a0, a1


def _parse(ids, lengths, table, tok_lens, n_frames, J: int, K: int, F: int, max_stream_bytes, dfa_mode: str):
    b, nb, owner = _byte_stream(ids, lengths, table, tok_lens, max_stream_bytes)
    s = _Stream(b, nb, owner, lengths.astype(jnp.int32))
    B, L = b.shape
    rows = jnp.arange(B)[:, None]
    fmt, found, a0, a1 = _format_and_answer(s)
    before, after, is_close, open_pos, ok = _objects(s, a0, a1, dfa_mode)

    st_in, st_v = _member(s, before, b"start_time", is_close, open_pos)
    en_in, en_v = _member(s, before, b"end_time", is_close, open_pos)
    de_in, de_v = _member(s, before, b"description", is_close, open_pos)
    t_s, t_e = jnp.unstack(_time_at(s, jnp.stack([st_v + 1, en_v + 1], axis=1)), axis=1)
    wf = (ok & st_in & en_in & de_in & (_at(b, st_v) == ord('"')) & (_at(b, en_v) == ord('"'))
          & (_at(b, de_v) != ord("n")) & (t_s >= 0) & (t_e >= 0))
    n = n_frames.astype(jnp.int32)[:, None]
    cons = wf & (t_s <= t_e) & (t_e <= 50 * n)
    si, ei = jnp.minimum(t_s // 50, n - 1), jnp.minimum(t_e // 50, n - 1)
    raw_end, str_end = _value_end(s, after, de_v)
    is_str = _at(b, de_v) == ord('"')
    d0 = jnp.where(is_str, de_v + 1, de_v)
    d1 = jnp.where(is_str, str_end, raw_end)

    # first J objects
    rank = jnp.cumsum(is_close, axis=1) - 1
    slot = jnp.where(is_close & (rank < J), rank, J)
    obj_pos = jnp.full((B, J), -1, jnp.int32).at[rows, slot].set(s.pos, mode="drop")
    has = obj_pos >= 0
    obj_wf = has & _at(wf, obj_pos, fill=False)
    obj_cons = has & _at(cons, obj_pos, fill=False)
    obj_frames = jnp.where(obj_cons[..., None], jnp.stack([_at(si, obj_pos), _at(ei, obj_pos)], -1), 0)

    # frame coverage over all consistent segments
    seg_len = ei - si + 1
    start_idx = jnp.where(cons, si, F + 1)
    stop_idx = jnp.where(cons, ei + 1, F + 1)
    diff = jnp.zeros((B, F + 1), jnp.int32).at[rows, start_idx].add(1, mode="drop")
    diff = diff.at[rows, stop_idx].add(-1, mode="drop")
    cover = jnp.cumsum(diff, axis=1)[:, :F]
    len_idx = jnp.where(cons, seg_len - 1, F)
    diff2 = (jnp.zeros((B, F, F + 1), jnp.int32).at[rows, len_idx, start_idx].add(1, mode="drop")
             .at[rows, len_idx, stop_idx].add(-1, mode="drop"))
    cover_by_len = jnp.cumsum(diff2, axis=2)[:, :, :F]
    n_unique = jnp.sum(cover > 0, axis=1)

    # key frames and their descriptions
    covered = cover > 0
    frank = jnp.cumsum(covered, axis=1) - 1
    fslot = jnp.where(covered & (frank < K), frank, K)
    key_frames = jnp.zeros((B, K), jnp.int32).at[rows, fslot].set(jnp.arange(F)[None].repeat(B, 0), mode="drop")
    key_valid = jnp.arange(K)[None] < n_unique[:, None]
    f = key_frames[:, :, None]  # [B, K, 1]
    cand = cons[:, None] & (si[:, None] <= f) & (ei[:, None] >= f)  # [B, K, L]
    first = jnp.argmax(cand, axis=2)  # [B, K]
    kd = jnp.stack([_at(d0, first), _at(d1, first)], -1)
    kd = jnp.where(key_valid[..., None], kd, 0)
    kts, kte, kx = s.tok_span(kd[..., 0], kd[..., 1])
    ats, ate, ax = s.tok_span(a0[:, None], a1[:, None])

    return {
        "format_ok": fmt,
        "answer_found": found,
        "answer_bytes": jnp.stack([a0, a1], -1),
        "answer_tokens": jnp.where(found[:, None], jnp.concatenate([ats, ate], -1), 0),
        "answer_tok_exact": found & ax[:, 0],
        "n_objects": jnp.sum(is_close, axis=1, dtype=jnp.int32),
        "n_wellformed": jnp.sum(wf, axis=1, dtype=jnp.int32),
        "n_consistent": jnp.sum(cons, axis=1, dtype=jnp.int32),
        "n_indices": jnp.sum(jnp.where(cons, seg_len, 0), axis=1, dtype=jnp.int32),
        "n_unique": n_unique.astype(jnp.int32),
        "obj_wellformed": obj_wf,
        "obj_consistent": obj_cons,
        "obj_frames": obj_frames.astype(jnp.int32),
        "frame_cover": cover,
        "cover_by_len": cover_by_len,
        "key_frames": jnp.where(key_valid, key_frames, 0),
        "key_valid": key_valid,
        "key_desc_bytes": kd.astype(jnp.int32),
        "key_desc_tokens": jnp.where(key_valid[..., None], jnp.stack([kts, kte], -1), 0).astype(jnp.int32),
        "key_desc_tok_exact": key_valid & kx,
    }


@functools.partial(jax.jit, static_argnames=("J", "K", "F", "max_stream_bytes", "dfa_mode"))
def parse_completions(
    ids: jax.Array, lengths: jax.Array, table: jax.Array, tok_lens: jax.Array, n_frames: jax.Array,
    J: int = 8, K: int = 4, F: int = 32, max_stream_bytes: int | None = None, dfa_mode: str = "scan",
) -> dict[str, jax.Array]:
    """Format flag, answer span and VOS keyframe parse of policy completions (see module docstring).

    n_frames [B] (<= F, < 2000): sampled frames per sample. max_stream_bytes: static byte-stream length
    (default T * max_bytes); bytes beyond it are dropped, as `parse_ref` does with the same argument.
    """
    return _parse(ids, lengths, table, tok_lens, n_frames, J, K, F, max_stream_bytes, dfa_mode)


# ---------------------------------------------------------------------------------------- grounder boxes
def _number_f32(s: _Stream, p):
    """float32 value of the JSON number starting at p (contract of `parse_ref.parse_number_f32`)."""
    neg = _at(s.b, p) == ord("-")
    i0 = p + neg
    r1 = _at(s.run, i0)
    has_frac = _at(s.b, i0 + r1) == ord(".")
    f0 = i0 + r1 + 1
    r2 = jnp.where(has_frac, _at(s.run, f0), 0)
    e_at = jnp.where(has_frac, f0 + r2, i0 + r1)
    has_exp = _isin(_at(s.b, e_at), b"eE")
    sgn_c = _at(s.b, e_at + 1)
    e_neg = has_exp & (sgn_c == ord("-"))
    x0 = e_at + 1 + _isin(sgn_c, b"+-")
    exp = jnp.where(has_exp, s.run_value(x0, 7), 0)
    exp = jnp.where(e_neg, -exp, exp)
    int_zero = _at(s.b, i0) == ord("0")  # JSON: a leading 0 is the whole integer part
    z = jnp.minimum(_at(s.next_nonzero, f0, fill=2**30), f0 + r2)  # first significant frac digit
    n_sig = jnp.where(int_zero, f0 + r2 - z, r1 + r2)
    kept = jnp.minimum(n_sig, SIG_DIGITS)
    mant = jnp.zeros_like(p)
    for k in range(SIG_DIGITS):
        pos = jnp.where(int_zero, z + k, jnp.where(k < r1, i0 + k, f0 + (k - r1)))
        mant = jnp.where(k < kept, mant * 10 + (_at(s.b, pos) - 48), mant)
    e10 = jnp.clip(exp - r2 + (n_sig - kept), E10_MIN, E10_MAX)
    pw = jnp.asarray(POW10)[jnp.abs(e10)]
    m = mant.astype(jnp.float32)
    val = jnp.where(e10 >= 0, m * pw, m / pw)
    return jnp.where(neg, -val, val)


@functools.partial(jax.jit, static_argnames=("O", "max_stream_bytes", "dfa_mode"))
def parse_boxes(
    ids: jax.Array, lengths: jax.Array, table: jax.Array, tok_lens: jax.Array, ratios: jax.Array,
    O: int = 3, max_stream_bytes: int | None = None, dfa_mode: str = "scan",
) -> dict[str, jax.Array]:
    """`bbox_2d` boxes of the first O JSON objects of grounder outputs, mapped back by ratios [B, 2] = (w, h)."""
    b, nb, owner = _byte_stream(ids, lengths, table, tok_lens, max_stream_bytes)
    s = _Stream(b, nb, owner, lengths.astype(jnp.int32))
    B, L = b.shape
    rows = jnp.arange(B)[:, None]
    before, after, is_close, open_pos, ok = _objects(s, jnp.zeros_like(nb), nb, dfa_mode)
    present, v0 = _member(s, before, b"bbox_2d", is_close, open_pos)
    raw_end, _ = _value_end(s, after, v0)
    elem = jnp.isin(before, jnp.asarray(dfa.ARR_ELEM_STATES)) & ~jnp.isin(after, jnp.asarray(dfa.ARR_ELEM_STATES))
    elem = elem & (b != ord("]"))
    ecum = jnp.cumsum(elem, axis=1)  # inclusive count of element starts
    base = _at(ecum, v0)  # '[' itself is never an element start
    count = _at(ecum, raw_end - 1) - base
    box_ok = ok & present & (_at(b, v0) == ord("[")) & (count == 4)

    rank = jnp.cumsum(is_close, axis=1) - 1
    slot = jnp.where(is_close & (rank < O), rank, O)
    obj_pos = jnp.full((B, O), -1, jnp.int32).at[rows, slot].set(s.pos, mode="drop")
    valid = (obj_pos >= 0) & _at(box_ok, obj_pos, fill=False)
    baseo = _at(base, obj_pos)  # [B, O]
    targets = (baseo[..., None] + jnp.arange(1, 5)).reshape(B, -1)  # i-th element start after '['
    epos = jax.vmap(lambda e, t: jnp.searchsorted(e, t, side="left"))(ecum, targets).reshape(B, O, 4)
    c0 = _at(b, epos)
    is_num = (_isin(c0, b"0123456789") | (c0 == ord("-"))) & (_at(b, epos + 1) != ord("I"))
    valid = valid & jnp.all(is_num, axis=-1)
    vals = _number_f32(s, epos)
    scale = jnp.concatenate([ratios, ratios], axis=-1).astype(jnp.float32)[:, None, :]  # [B, 1, 4]
    # Materialise the divisor: XLA rewrites x / broadcast(r) as x * broadcast(1 / r), which rounds differently.
    vals, scale = lax.optimization_barrier((vals, jnp.broadcast_to(scale, vals.shape)))
    boxes = jnp.where(valid[..., None], vals / scale, 0.0)
    return {"boxes": boxes, "box_valid": valid, "n_json": jnp.sum(is_close, axis=1, dtype=jnp.int32)}
