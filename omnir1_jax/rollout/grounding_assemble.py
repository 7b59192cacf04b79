"""In-graph assembly of System-2 grounding prompts from parsed policy completions (static shapes, jittable).

`assemble(spec, completion_tokens [N, T], desc_token_start/end [N, K], desc_valid [N, K])` builds one
left-padded prompt per (rollout n, keyframe k) slot, row `n * K + k`, all ending at position Lg - 1:
`prefix` + description tokens + `suffix` (see `grounding_spec`). Invalid slots get the dummy description
("Hello!", normalised) so every row is a well-formed prompt; `slot_valid` masks them downstream.

What is exact (equal to `grounding_spec.host_prompt_ids` of the description text):
  "words" mode (synthetic tokenizer): exact for every description whose bytes are ASCII and contain no `<|`
      (special-token literal), read within `max_desc_tokens` completion tokens and re-tokenized within
      `max_prompt_desc_tokens`: the description is lower-cased, stripped and re-tokenized from its bytes, so
      even non-canonical completion tokenizations give the host ids.
  "tokens" mode (byte-level BPE): each completion token is replaced by the tokenization of its
      ASCII-lower-cased bytes (host table), leading/trailing tokens made only of strip characters are
      dropped, and one leading whitespace byte of the first kept token is dropped through a second table.
      Exact when (a) the completion's description tokens are the canonical BPE tokenization of the
      description text (a policy can emit non-canonical token sequences; that is NOT detected), (b) the
      stripped description starts and ends with an ASCII letter/digit (then the Qwen2 pre-tokenizer splits at
      both quotes in the completion and in the prompt, so no token straddles a quote and the template's
      quotes tokenize as on the host), and (c) every token that lower-casing changes is a whole letter run
      (e.g. `ĠThe`), since BPE of a lower-cased multi-token word can merge differently (detected, counted).
Counted approximations (`approx [N*K]`, only where the slot is valid): non-ASCII bytes, `<|`, more than
`max_desc_tokens` / `max_prompt_desc_tokens` tokens (truncated), span not on token boundaries
(`desc_exact=False`), and in "tokens" mode a non-alphanumeric first/last byte, a partially stripped token (other
than one leading whitespace byte) or a token whose lower-cased form is not tabulated (> `lower_width` tokens,
or not valid UTF-8 on its own).
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
from jax import lax

from omnir1_jax.rollout.grounding_spec import GroundingSpec


@flax.struct.dataclass
class GroundingPrompts:
    """Left-padded grounding prompts, one row per (rollout, keyframe) slot."""

    input_ids: jax.Array  # [S, Lg] int32, S = N * K
    attention_mask: jax.Array  # [S, Lg] int32 (left padding = 0)
    slot_valid: jax.Array  # [S] bool, False: dummy prompt, ignore downstream
    approx: jax.Array  # [S] bool, valid slot whose prompt may differ from the host path
    desc_len: jax.Array  # [S] int32, description tokens placed in the prompt


def _isin(x: jax.Array, chars: bytes) -> jax.Array:
    out = jnp.zeros(x.shape, bool)
    for c in chars:
        out = out | (x == c)
    return out


def _compact(values: jax.Array, keep: jax.Array, width: int, fill: int) -> tuple[jax.Array, jax.Array]:
    """Left-compacts `values [S, M]` where `keep`, into [S, width]; returns (out, count before truncation)."""
    S = values.shape[0]
    dest = jnp.where(keep, jnp.cumsum(keep, axis=1) - 1, width)
    out = jnp.full((S, width), fill, values.dtype).at[jnp.arange(S)[:, None], dest].set(values, mode="drop")
    return out, jnp.sum(keep, axis=1).astype(jnp.int32)


def _windows(spec: GroundingSpec, tokens, start, end):
    """Completion tokens of each description span, [S, Ld], and their validity; S = N * K."""
    N, T = tokens.shape
    Ld = spec.max_desc_tokens
    start, end = start.reshape(-1), end.reshape(-1)
    j = jnp.arange(Ld)[None]
    idx = jnp.clip(start[:, None] + j, 0, T - 1)
    rows = jnp.repeat(jnp.arange(N), start.shape[0] // N)
    win = tokens[rows[:, None], idx]  # [S, Ld]
    ok = j < (end - start)[:, None]
    return win, ok, (end - start) > Ld


def _bytes(spec: GroundingSpec, win, ok):
    """Compact bytes [S, M] (-1 past nb) of the window tokens, M = Ld * MB."""
    S, Ld = win.shape
    MB = spec.byte_table.shape[1]
    win = jnp.clip(win, 0, spec.byte_table.shape[0] - 1)
    tb = spec.byte_table[win].astype(jnp.int32).reshape(S, Ld * MB)
    tl = jnp.where(ok, spec.tok_lens[win], 0)
    keep = (jnp.arange(MB)[None, None] < tl[..., None]).reshape(S, Ld * MB)
    return _compact(tb, keep, Ld * MB, -1)


def _lower_strip(spec: GroundingSpec, b, nb):
    """ASCII lower-case then strip `spec.strip_chars`: returns (bytes [S, M], length [S], non-ASCII flag)."""
    S, M = b.shape
    pos = jnp.arange(M)[None]
    valid = pos < nb[:, None]
    b = jnp.where((b >= 65) & (b <= 90), b + 32, b)
    keep = valid & ~_isin(b, spec.strip_chars)
    first = jnp.min(jnp.where(keep, pos, M), axis=1)
    last = jnp.max(jnp.where(keep, pos, -1), axis=1)
    n = jnp.maximum(last - first + 1, 0)
    out = jnp.take_along_axis(b, jnp.clip(first[:, None] + pos, 0, M - 1), axis=1)
    out = jnp.where(pos < n[:, None], out, -1)
    non_ascii = jnp.any(valid & (b >= 128), axis=1)
    special = jnp.any((out[:, :-1] == ord("<")) & (out[:, 1:] == ord("|")), axis=1)
    return out, n, non_ascii | special


def _word_tokens(spec: GroundingSpec, b, n):
    """Synthetic-tokenizer encoding of bytes [S, M]: known letter runs -> word id, everything else bytes."""
    S, M = b.shape
    pos = jnp.arange(M)[None]
    valid = pos < n[:, None]
    letter = valid & (((b >= 97) & (b <= 122)) | ((b >= 65) & (b <= 90)))
    prev = jnp.pad(letter, ((0, 0), (1, 0)))[:, :-1]
    run_start = letter & ~prev
    nonletter_at = jnp.where(~letter, pos, M)
    run_len = lax.cummin(nonletter_at, axis=1, reverse=True) - pos  # letters from p on
    W = spec.word_bytes.shape[1]
    h = jnp.zeros((S, M), jnp.uint32)
    mult = jnp.uint32(1)
    for i in range(W):
        c = jnp.take_along_axis(b, jnp.clip(pos + i, 0, M - 1), axis=1)
        h = h + jnp.where(i < run_len, c, 0).astype(jnp.uint32) * mult
        mult = mult * jnp.uint32(spec.hash_mult)
    idx = jnp.clip(jnp.searchsorted(spec.word_hash, h), 0, spec.word_hash.shape[0] - 1)  # [S, M]
    cand = spec.word_bytes[idx]  # [S, M, W]
    run_bytes = jnp.stack([jnp.take_along_axis(b, jnp.clip(pos + i, 0, M - 1), axis=1) for i in range(W)], -1)
    same = jnp.all((cand == run_bytes) | (jnp.arange(W) >= run_len[..., None]), axis=-1)
    found = run_start & (run_len <= W) & (spec.word_hash[idx] == h) & (spec.word_lens[idx] == run_len) & same
    start_of = lax.cummax(jnp.where(run_start, pos, 0), axis=1)  # run start of each letter
    in_found = letter & jnp.take_along_axis(found, start_of, axis=1)
    word = spec.word_ids[jnp.take_along_axis(idx, start_of, axis=1)]
    tok = jnp.where(in_found, word, spec.byte_ids[jnp.clip(b, 0, 255)])
    keep = valid & (~in_found | run_start)
    return _compact(tok, keep, spec.max_prompt_desc_tokens, spec.pad_id)


def _copy_tokens(spec: GroundingSpec, win, ok):
    """BPE mode: per-token lower-case table; whole strip-only tokens dropped at both ends, one leading
    whitespace byte of the first kept token dropped through the `strip1` table (` the` -> `the`)."""
    S, Ld = win.shape
    MB = spec.byte_table.shape[1]
    w = jnp.clip(win, 0, spec.byte_table.shape[0] - 1)
    tb = spec.byte_table[w].astype(jnp.int32)  # [S, Ld, MB]
    tl = spec.tok_lens[w]
    inb = jnp.arange(MB)[None, None] < tl[..., None]
    all_strip = jnp.all(_isin(tb, spec.strip_chars) | ~inb, axis=-1) & ok  # also empty (special) tokens
    body = ok & ~all_strip
    j = jnp.arange(Ld)[None]
    first = jnp.min(jnp.where(body, j, Ld), axis=1)
    last = jnp.max(jnp.where(body, j, -1), axis=1)
    kept = ok & (j >= first[:, None]) & (j <= last[:, None])
    fi, li = jnp.clip(first, 0, Ld - 1)[:, None], jnp.clip(last, 0, Ld - 1)[:, None]
    frow = jnp.take_along_axis(tb, fi[..., None], axis=1)[:, 0]  # [S, MB]
    lrow = jnp.take_along_axis(tb, li[..., None], axis=1)[:, 0]
    ftok = jnp.take_along_axis(w, fi, axis=1)[:, 0]
    lead_ws = _isin(frow[:, 0], spec.strip_chars)  # first kept token starts with whitespace
    use_s1 = lead_ws & (spec.strip1_lens[ftok] >= 0)
    fb = jnp.where(lead_ws, frow[:, 1], frow[:, 0])
    lpos = jnp.clip(jnp.take_along_axis(tl, li, axis=1)[:, 0] - 1, 0, MB - 1)
    lb = jnp.take_along_axis(lrow, lpos[:, None], axis=1)[:, 0]
    fb = jnp.where((fb >= 65) & (fb <= 90), fb + 32, fb)
    lb = jnp.where((lb >= 65) & (lb <= 90), lb + 32, lb)
    alnum = lambda c: ((c >= 97) & (c <= 122)) | ((c >= 48) & (c <= 57))  # noqa: E731
    edge_ok = (last < first) | (alnum(fb) & alnum(lb) & (use_s1 | ~lead_ws))
    LW = spec.lower_ids.shape[1]
    is_first = (j == first[:, None]) & use_s1[:, None]  # [S, Ld]
    lens = jnp.where(is_first, spec.strip1_lens[w], spec.lower_lens[w])  # [S, Ld]
    table = jnp.where(is_first[..., None], spec.strip1_ids[w], spec.lower_ids[w])  # [S, Ld, LW]
    untab = jnp.any(kept & (lens < 0), axis=1)
    # A lower-cased token inside a multi-token letter run: BPE of the lower-cased word may merge differently.
    is_letter = lambda c: ((c >= 65) & (c <= 90)) | ((c >= 97) & (c <= 122))  # noqa: E731
    last_b = jnp.take_along_axis(tb, jnp.clip(tl - 1, 0, MB - 1)[..., None], axis=2)[..., 0]  # [S, Ld]
    joined = is_letter(last_b[:, :-1]) & is_letter(tb[:, 1:, 0]) & kept[:, :-1] & kept[:, 1:]  # j with j+1
    joined_next = jnp.pad(joined, ((0, 0), (0, 1)))
    joined_prev = jnp.pad(joined, ((0, 0), (1, 0)))
    changed = (lens != 1) | (table[..., 0] != w)
    split_word = jnp.any(kept & changed & (joined_next | joined_prev), axis=1)
    rep = jnp.where(lens[..., None] < 0, jnp.pad(w[..., None], ((0, 0), (0, 0), (0, LW - 1))), table)
    n_rep = jnp.where(lens < 0, 1, lens)
    keep = kept[..., None] & (jnp.arange(LW)[None, None] < n_rep[..., None])
    out, count = _compact(rep.reshape(S, Ld * LW), keep.reshape(S, Ld * LW), spec.max_prompt_desc_tokens,
                          spec.pad_id)
    return out, count, untab | ~edge_ok | split_word


def _place(spec: GroundingSpec, desc, n_desc):
    """Left-padded prefix + desc[:n_desc] + suffix rows, [S, Lg]."""
    P, X = spec.prefix_ids.shape[0], spec.suffix_ids.shape[0]
    Lg = spec.prompt_length
    row_len = P + n_desc + X  # [S]
    i = jnp.arange(Lg)[None] - (Lg - row_len)[:, None]  # index into the unpadded row
    pre = spec.prefix_ids[jnp.clip(i, 0, P - 1)]
    mid = jnp.take_along_axis(desc, jnp.clip(i - P, 0, desc.shape[1] - 1), axis=1)
    suf = spec.suffix_ids[jnp.clip(i - P - n_desc[:, None], 0, X - 1)]
    ids = jnp.where(i < P, pre, jnp.where(i < P + n_desc[:, None], mid, suf))
    mask = i >= 0
    return jnp.where(mask, ids, spec.pad_id).astype(jnp.int32), mask.astype(jnp.int32)


def assemble(
    spec: GroundingSpec,
    completion_tokens: jax.Array,
    desc_token_start: jax.Array,
    desc_token_end: jax.Array,
    desc_valid: jax.Array,
    desc_exact: jax.Array | None = None,
) -> GroundingPrompts:
    """Grounding prompts for every (rollout n, keyframe k), row n * K + k (see module docstring).

    Args: completion_tokens [N, T]; desc_token_start/end [N, K] token span of each keyframe description
    (`parse.parse_completions` "key_desc_tokens"); desc_valid [N, K]; desc_exact [N, K] optional
    ("key_desc_tok_exact": the span sits on token boundaries).
    """
    valid = desc_valid.reshape(-1).astype(bool)
    win, ok, too_long = _windows(spec, completion_tokens, desc_token_start, desc_token_end)
    b, nb = _bytes(spec, win, ok)
    if spec.mode == "words":
        lb, n, odd = _lower_strip(spec, b, nb)
        desc, count = _word_tokens(spec, lb, n)
    else:
        _, _, odd = _lower_strip(spec, b, nb)
        desc, count, odd2 = _copy_tokens(spec, win, ok)
        odd = odd | odd2
    Lo = spec.max_prompt_desc_tokens
    approx = odd | too_long | (count > Lo)
    if desc_exact is not None:
        approx = approx | ~desc_exact.reshape(-1).astype(bool)
    desc = jnp.where(valid[:, None], desc, spec.dummy_ids[None])
    n_desc = jnp.where(valid, jnp.minimum(count, Lo), spec.dummy_len)
    ids, mask = _place(spec, desc, n_desc)
    return GroundingPrompts(input_ids=ids, attention_mask=mask, slot_valid=valid, approx=approx & valid,
                            desc_len=n_desc.astype(jnp.int32))
