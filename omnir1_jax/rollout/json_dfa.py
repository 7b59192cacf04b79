"""Byte-level DFA for the regex-delimited flat JSON objects of the parsers (table built once on the host).

Outside an object the DFA waits for `{` (state OUT); inside, the first `}` always returns to OUT (that is the
non-greedy `({[\\s\\S]*?})` match), and whether the object text is valid flat JSON is read off the state just
before that `}` (`CLOSE_OK`). Class 256 = "byte outside the searched span" and forces OUT.
"""

from __future__ import annotations

import numpy as np

WS = b" \t\n\r"
DIGITS = b"0123456789"
HEX = b"0123456789abcdefABCDEF"
_LITS = {"t": "rue", "f": "alse", "n": "ull", "N": "aN", "I": "nfinity"}

_names: list[str] = []


def _s(name: str) -> int:
    _names.append(name)
    return len(_names) - 1


OUT, ERR = _s("OUT"), _s("ERR")
O_OPEN, O_KEYNEXT, O_COLON, O_VAL, O_AFTER = (_s(n) for n in ("O_OPEN", "O_KEYNEXT", "O_COLON", "O_VAL", "O_AFTER"))
KEY, KEY_ESC = _s("KEY"), _s("KEY_ESC")
KEY_U = [_s(f"KEY_U{i}") for i in range(4)]
A_OPEN, A_VAL, A_AFTER = _s("A_OPEN"), _s("A_VAL"), _s("A_AFTER")


def _value_states(ctx: str) -> dict[str, int]:
    d = {n: _s(f"{ctx}_{n}") for n in ("STR", "STR_ESC", "MINUS", "ZERO", "INT", "DOT", "FRAC", "E", "ESIGN", "EXP")}
    d.update({f"U{i}": _s(f"{ctx}_U{i}") for i in range(4)})
    for first, rest in _LITS.items():
        for k in range(len(rest)):
            d[f"L{first}{k}"] = _s(f"{ctx}_L{first}{k}")
    return d


VO, VA = _value_states("O"), _value_states("A")
N_STATES = len(_names)
CLOSE = N_STATES  # pseudo-state while building: '}' completing a valid object
O_VALUE_STATES = tuple(VO.values()) + (A_OPEN, A_VAL, A_AFTER) + tuple(VA.values())
ARR_ELEM_STATES = (A_OPEN, A_VAL)


def _build() -> tuple[np.ndarray, np.ndarray]:
    t = np.full((N_STATES, 257), ERR, np.int32)
    t[OUT, :] = OUT
    t[OUT, ord("{")] = O_OPEN

    def ws(s: int) -> None:
        for c in WS:
            t[s, c] = s

    for s in (O_OPEN, O_KEYNEXT):
        ws(s)
        t[s, ord('"')] = KEY
    t[O_OPEN, ord("}")] = CLOSE
    # key string
    t[KEY, 0x20:256] = KEY
    t[KEY, ord('"')] = O_COLON
    t[KEY, ord("\\")] = KEY_ESC
    for c in b'"\\/bfnrt':
        t[KEY_ESC, c] = KEY
    t[KEY_ESC, ord("u")] = KEY_U[0]
    for i in range(4):
        for c in HEX:
            t[KEY_U[i], c] = KEY_U[i + 1] if i < 3 else KEY
    ws(O_COLON)
    t[O_COLON, ord(":")] = O_VAL
    ws(O_AFTER)
    t[O_AFTER, ord(",")] = O_KEYNEXT
    t[O_AFTER, ord("}")] = CLOSE
    ws(A_AFTER)
    t[A_AFTER, ord(",")] = A_VAL
    t[A_AFTER, ord("]")] = O_AFTER
    ws(A_OPEN)
    t[A_OPEN, ord("]")] = O_AFTER
    ws(A_VAL)

    def value(start: int, v: dict[str, int], after: int, allow_array: bool) -> None:
        """Transitions of one value context (object member or array element)."""
        ws(start)
        t[start, ord('"')] = v["STR"]
        t[start, ord("-")] = v["MINUS"]
        t[start, ord("0")] = v["ZERO"]
        for c in b"123456789":
            t[start, c] = v["INT"]
        if allow_array:
            t[start, ord("[")] = A_OPEN
        for first, rest in _LITS.items():
            t[start, ord(first)] = v[f"L{first}0"]
            for k in range(len(rest)):
                t[v[f"L{first}{k}"], ord(rest[k])] = v[f"L{first}{k + 1}"] if k + 1 < len(rest) else after
        t[v["MINUS"], ord("I")] = v["LI0"]
        # string
        t[v["STR"], 0x20:256] = v["STR"]
        t[v["STR"], ord('"')] = after
        t[v["STR"], ord("\\")] = v["STR_ESC"]
        for c in b'"\\/bfnrt':
            t[v["STR_ESC"], c] = v["STR"]
        t[v["STR_ESC"], ord("u")] = v["U0"]
        for i in range(4):
            for c in HEX:
                t[v[f"U{i}"], c] = v[f"U{i + 1}"] if i < 3 else v["STR"]
        # number: -?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?; complete states hand the next byte to `after`
        t[v["MINUS"], ord("0")] = v["ZERO"]
        for c in b"123456789":
            t[v["MINUS"], c] = v["INT"]
        for c in DIGITS:
            t[v["INT"], c] = v["INT"]
            t[v["DOT"], c] = v["FRAC"]
            t[v["FRAC"], c] = v["FRAC"]
            t[v["E"], c] = v["EXP"]
            t[v["ESIGN"], c] = v["EXP"]
            t[v["EXP"], c] = v["EXP"]
        for c in b"+-":
            t[v["E"], c] = v["ESIGN"]
        for s in (v["ZERO"], v["INT"]):
            t[s, ord(".")] = v["DOT"]
        for s in (v["ZERO"], v["INT"], v["FRAC"]):
            t[s, ord("e")] = v["E"]
            t[s, ord("E")] = v["E"]
        for s in (v["ZERO"], v["INT"], v["FRAC"], v["EXP"]):
            own = t[s].copy()
            for c in range(256):
                if own[c] == ERR:
                    t[s, c] = t[after, c]

    value(O_VAL, VO, O_AFTER, allow_array=True)
    value(A_OPEN, VA, A_AFTER, allow_array=False)
    value(A_VAL, VA, A_AFTER, allow_array=False)
    t[A_OPEN, ord("]")] = O_AFTER  # re-assert after `value` (']' is not a value start)

    close_ok = t[:, ord("}")] == CLOSE
    for s in range(N_STATES):
        if s != OUT:
            t[s, ord("}")] = OUT  # the first '}' always ends the regex match
    t[:, 256] = OUT
    assert t.max() < N_STATES
    return t, close_ok


TABLE, CLOSE_OK = _build()
