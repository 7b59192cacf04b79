"""Plain-Python reference parser (host side, NumPy outputs) with exactly the contract of `parse.py`.

Used by evaluation and as the oracle of the in-graph parser. The regexes are the reference's, applied to the
completion's bytes (bytes patterns: `\\s` is ASCII whitespace). Objects are validated with a small flat-JSON
reader (see `parse.py` for the contract and its documented deviations from `json.loads`).
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

FORMAT_RE = re.compile(rb"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
ANSWER_RE = re.compile(rb"<answer>\s*(.*?)\s*</answer>", re.DOTALL)
JSON_RE = re.compile(rb"({[\s\S]*?})")
TIME_RE = re.compile(rb"(\d+):(\d+)\.(\d+)")

TIME_CAP = 100_000  # time components saturate here (exact for n_frames < 2000)
EXP_CAP = 10_000_000  # number exponents saturate here
SIG_DIGITS = 9  # significant digits kept (truncated) of a box coordinate; < 2**31
E10_MIN, E10_MAX = -30, 30
POW10 = np.array([10.0**k for k in range(E10_MAX + 1)], np.float32)  # shared with parse.py
FPS = 2

_WS = b" \t\n\r"
_LITERALS = (b"true", b"false", b"null", b"NaN", b"Infinity", b"-Infinity")
_ESC = b'"\\/bfnrt'
_HEX = b"0123456789abcdefABCDEF"
_NUM_RE = re.compile(rb"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")


# ---------------------------------------------------------------------------------------- flat JSON
class _Bad(Exception):
    pass


def _skip_ws(s: bytes, i: int) -> int:
    while i < len(s) and s[i] in _WS:
        i += 1
    return i


def _string(s: bytes, i: int) -> int:
    """s[i] == '"'; return the index of the closing quote."""
    i += 1
    while True:
        if i >= len(s):
            raise _Bad
        c = s[i]
        if c == 0x22:
            return i
        if c < 0x20:
            raise _Bad
        if c == 0x5C:
            if i + 1 >= len(s):
                raise _Bad
            e = s[i + 1]
            if e in _ESC:
                i += 2
            elif e == ord("u"):
                if len(s) < i + 6 or any(h not in _HEX for h in s[i + 2 : i + 6]):
                    raise _Bad
                i += 6
            else:
                raise _Bad
        else:
            i += 1


def _scalar(s: bytes, i: int) -> tuple[str, int, int]:
    """Parse a string/number/literal at i; return (kind, raw_start, raw_end)."""
    if i >= len(s):
        raise _Bad
    if s[i] == 0x22:
        return "str", i, _string(s, i) + 1
    for lit in _LITERALS:
        if s.startswith(lit, i):
            return ("null" if lit == b"null" else "lit"), i, i + len(lit)
    m = _NUM_RE.match(s, i)
    if m is None:
        raise _Bad
    return "num", i, m.end()


def _value(s: bytes, i: int) -> tuple[str, int, int, list]:
    if i < len(s) and s[i] == ord("["):
        elems = []
        j = _skip_ws(s, i + 1)
        if j < len(s) and s[j] == ord("]"):
            return "arr", i, j + 1, elems
        while True:
            kind, a, b = _scalar(s, j)  # nested arrays are outside the flat contract
            elems.append((kind, a, b))
            j = _skip_ws(s, b)
            if j < len(s) and s[j] == ord(","):
                j = _skip_ws(s, j + 1)
                continue
            if j < len(s) and s[j] == ord("]"):
                return "arr", i, j + 1, elems
            raise _Bad
    kind, a, b = _scalar(s, i)
    return kind, a, b, []


def parse_flat_object(s: bytes) -> dict | None:
    """Members {raw key bytes: (kind, raw_start, raw_end, elements)} of a flat JSON object (last key wins)."""
    try:
        if not s or s[0] != ord("{"):
            raise _Bad
        out: dict = {}
        i = _skip_ws(s, 1)
        if i < len(s) and s[i] == ord("}"):
            if i + 1 != len(s):
                raise _Bad
            return out
        while True:
            if i >= len(s) or s[i] != 0x22:
                raise _Bad
            k_end = _string(s, i)
            key = s[i + 1 : k_end]
            i = _skip_ws(s, k_end + 1)
            if i >= len(s) or s[i] != ord(":"):
                raise _Bad
            i = _skip_ws(s, i + 1)
            out[key] = _value(s, i)
            i = _skip_ws(s, out[key][2])
            if i < len(s) and s[i] == ord(","):
                i = _skip_ws(s, i + 1)
                continue
            if i < len(s) and s[i] == ord("}") and i + 1 == len(s):
                return out
            raise _Bad
    except _Bad:
        return None


# ---------------------------------------------------------------------------------------- scalars
def parse_time_hundredths(content: bytes) -> int | None:
    """`(\\d+):(\\d+)\\.(\\d+)` matched at the start; (mm*60+ss)*100+ff with components capped at TIME_CAP."""
    m = TIME_RE.match(content)
    if m is None:
        return None
    mm, ss, ff = (min(int(g), TIME_CAP) for g in m.groups())
    return (mm * 60 + ss) * 100 + ff


def parse_number_f32(text: bytes) -> np.float32:
    """JSON number -> float32 from M = first 9 significant digits (truncated) and E10 clamped to [-30, 30]."""
    m = _NUM_RE.fullmatch(text)
    assert m is not None, text
    int_part, frac = m.group(1), (m.group(2) or b".")[1:]
    exp = 0
    if m.group(3):
        e = m.group(3)[1:]
        sign = -1 if e[:1] == b"-" else 1
        exp = sign * min(int(e.lstrip(b"+-")), EXP_CAP)
    digits = (int_part + frac).lstrip(b"0")
    kept = digits[:SIG_DIGITS]
    mant = int(kept) if kept else 0
    e10 = exp - len(frac) + (len(digits) - len(kept))
    e10 = min(max(e10, E10_MIN), E10_MAX)
    val = np.float32(mant) * POW10[e10] if e10 >= 0 else np.float32(mant) / POW10[-e10]
    return np.float32(-val) if text[:1] == b"-" else np.float32(val)


# ---------------------------------------------------------------------------------------- one completion
def _stream(
    ids: Sequence[int], length: int, table: np.ndarray, lengths: np.ndarray, max_stream_bytes: int | None = None
) -> tuple[bytes, list[int]]:
    """Completion bytes and the token of each byte (cut at max_stream_bytes, default T * max_bytes)."""
    cap = len(ids) * table.shape[1] if max_stream_bytes is None else max_stream_bytes
    data, owner = bytearray(), []
    for t, i in enumerate(ids[:length]):
        n = int(lengths[i])
        data += table[i, :n].tobytes()
        owner += [t] * n
    return bytes(data[:cap]), owner[:cap]


def _tok_span(bs: int, be: int, owner: list[int], n_tok: int) -> tuple[int, int, bool]:
    """Tokens overlapping bytes [bs, be); exact = the span starts and ends on token boundaries."""
    nb = len(owner)
    ts = owner[bs] if bs < nb else n_tok
    te = owner[be - 1] + 1 if be > bs else ts
    start_ok = bs >= nb or bs == 0 or owner[bs - 1] != owner[bs]
    end_ok = be >= nb or be == 0 or owner[be] != owner[be - 1]
    return ts, te, bool(start_ok and end_ok)


def _answer(data: bytes) -> tuple[bool, int, int]:
    m = ANSWER_RE.search(data)
    if m is None:
        return False, 0, 0
    a, b = m.start(1), m.end(1)
    g = data[a:b]
    a += len(g) - len(g.lstrip())
    b -= len(g) - len(g.rstrip())
    return True, a, max(a, b)


def _desc_span(info) -> tuple[int, int]:
    kind, a, b, _ = info
    return (a + 1, b - 1) if kind == "str" else (a, b)


def parse_vos_one(data: bytes, a0: int, a1: int, n_frames: int, J: int, K: int, F: int) -> dict:
    """VOS answer statistics for one completion (byte offsets are into the whole completion)."""
    out = {
        "n_objects": 0, "n_wellformed": 0, "n_consistent": 0, "n_indices": 0, "n_unique": 0,
        "obj_wellformed": np.zeros(J, bool), "obj_consistent": np.zeros(J, bool),
        "obj_frames": np.zeros((J, 2), np.int32), "frame_cover": np.zeros(F, np.int32),
        "cover_by_len": np.zeros((F, F), np.int32), "key_frames": np.zeros(K, np.int32),
        "key_valid": np.zeros(K, bool), "key_desc_bytes": np.zeros((K, 2), np.int32),
    }
    segs = []  # (start_idx, end_idx, desc_span)
    for j, m in enumerate(JSON_RE.finditer(data, a0, a1)):
        out["n_objects"] += 1
        obj = parse_flat_object(m.group(1))
        if obj is None:
            continue
        st, en, de = obj.get(b"start_time"), obj.get(b"end_time"), obj.get(b"description")
        if st is None or en is None or de is None or de[0] == "null" or st[0] != "str" or en[0] != "str":
            continue
        ts = parse_time_hundredths(data[m.start() + st[1] + 1 : m.start() + st[2] - 1])
        te = parse_time_hundredths(data[m.start() + en[1] + 1 : m.start() + en[2] - 1])
        if ts is None or te is None:
            continue
        out["n_wellformed"] += 1
        if j < J:
            out["obj_wellformed"][j] = True
        if ts > te or te > 50 * n_frames:  # start <= end <= n/2 seconds, in hundredths
            continue
        out["n_consistent"] += 1
        si, ei = min(ts // 50, n_frames - 1), min(te // 50, n_frames - 1)
        ds = _desc_span(de)
        segs.append((si, ei, (m.start() + ds[0], m.start() + ds[1])))
        if j < J:
            out["obj_consistent"][j] = True
            out["obj_frames"][j] = (si, ei)
    for si, ei, _ in segs:
        out["n_indices"] += ei - si + 1
        out["frame_cover"][si : ei + 1] += 1
        out["cover_by_len"][ei - si, si : ei + 1] += 1
    unique = sorted({f for si, ei, _ in segs for f in range(si, ei + 1)})
    out["n_unique"] = len(unique)
    for k, f in enumerate(unique[:K]):
        out["key_frames"][k] = f
        out["key_valid"][k] = True
        out["key_desc_bytes"][k] = next(d for si, ei, d in segs if si <= f <= ei)
    return out


def parse_completions_ref(
    ids: np.ndarray, lengths: np.ndarray, table: np.ndarray, tok_lens: np.ndarray, n_frames: np.ndarray,
    J: int = 8, K: int = 4, F: int = 32, max_stream_bytes: int | None = None,
) -> dict[str, np.ndarray]:
    """Reference of `parse.parse_completions` (same keys, shapes, dtypes and fill values)."""
    rows = []
    for b in range(ids.shape[0]):
        data, owner = _stream(list(ids[b]), int(lengths[b]), table, tok_lens, max_stream_bytes)
        n_tok = int(lengths[b])
        found, a0, a1 = _answer(data)
        r = parse_vos_one(data if found else b"", a0, a1, int(n_frames[b]), J, K, F)
        r["format_ok"] = FORMAT_RE.fullmatch(data) is not None
        r["answer_found"] = found
        r["answer_bytes"] = np.array([a0, a1], np.int32)
        ts, te, ex = _tok_span(a0, a1, owner, n_tok) if found else (0, 0, False)
        r["answer_tokens"] = np.array([ts, te], np.int32)
        r["answer_tok_exact"] = ex
        kt, kx = np.zeros((K, 2), np.int32), np.zeros(K, bool)
        for k in range(K):
            if r["key_valid"][k]:
                s0, s1, x = _tok_span(int(r["key_desc_bytes"][k, 0]), int(r["key_desc_bytes"][k, 1]), owner, n_tok)
                kt[k], kx[k] = (s0, s1), x
        r["key_desc_tokens"], r["key_desc_tok_exact"] = kt, kx
        rows.append(r)
    return {k: np.stack([np.asarray(r[k]) for r in rows]).astype(_DTYPES[k]) for k in rows[0]}


def parse_boxes_ref(
    ids: np.ndarray, lengths: np.ndarray, table: np.ndarray, tok_lens: np.ndarray, ratios: np.ndarray, O: int = 3,
    max_stream_bytes: int | None = None,
) -> dict[str, np.ndarray]:
    """Reference of `parse.parse_boxes`: first O `{...}` matches of the whole output; ratios [B, 2] = (w, h)."""
    B = ids.shape[0]
    boxes, valid, n_json = np.zeros((B, O, 4), np.float32), np.zeros((B, O), bool), np.zeros(B, np.int32)
    for b in range(B):
        data, _ = _stream(list(ids[b]), int(lengths[b]), table, tok_lens, max_stream_bytes)
        scale = np.array([ratios[b, 0], ratios[b, 1]] * 2, np.float32)
        for j, m in enumerate(JSON_RE.finditer(data)):
            n_json[b] += 1
            if j >= O:
                continue
            obj = parse_flat_object(m.group(1))
            box = None if obj is None else obj.get(b"bbox_2d")
            if box is None or box[0] != "arr" or len(box[3]) != 4 or any(e[0] != "num" for e in box[3]):
                continue
            s = m.group(1)
            vals = np.array([parse_number_f32(s[e[1] : e[2]]) for e in box[3]], np.float32)
            boxes[b, j] = vals / scale
            valid[b, j] = True
    return {"boxes": boxes, "box_valid": valid, "n_json": n_json}


_DTYPES = {
    "n_objects": np.int32, "n_wellformed": np.int32, "n_consistent": np.int32, "n_indices": np.int32,
    "n_unique": np.int32, "obj_wellformed": bool, "obj_consistent": bool, "obj_frames": np.int32,
    "frame_cover": np.int32, "cover_by_len": np.int32, "key_frames": np.int32, "key_valid": bool,
    "key_desc_bytes": np.int32, "format_ok": bool, "answer_found": bool, "answer_bytes": np.int32,
    "answer_tokens": np.int32, "answer_tok_exact": bool, "key_desc_tokens": np.int32, "key_desc_tok_exact": bool,
}
