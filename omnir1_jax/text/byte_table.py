"""Host-side `[vocab, max_bytes]` byte table used by the in-graph parsers (built once per tokenizer)."""

from __future__ import annotations

import numpy as np

from omnir1_jax.text.tokenizer import Tokenizer


def byte_table(
    tokenizer: Tokenizer, max_bytes: int | None = None, vocab_size: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Return (table uint8 [V, max_bytes], lengths int32 [V]); V may exceed the tokenizer (padded rows are empty).

    `max_bytes=None` picks the longest token. A token longer than an explicit `max_bytes` is an error.
    """
    n = tokenizer.vocab_size
    vocab = n if vocab_size is None else int(vocab_size)
    if vocab < n:
        raise ValueError(f"vocab_size {vocab} < tokenizer vocab {n}")
    pieces = [tokenizer.token_bytes(i) for i in range(n)]
    longest = max((len(p) for p in pieces), default=1)
    if max_bytes is None:
        max_bytes = max(1, longest)
    elif longest > max_bytes:
        bad = max(range(n), key=lambda i: len(pieces[i]))
        raise ValueError(f"token {bad} ({pieces[bad]!r}) has {len(pieces[bad])} bytes > max_bytes={max_bytes}")
    table = np.zeros((vocab, max_bytes), np.uint8)
    lengths = np.zeros((vocab,), np.int32)
    for i, p in enumerate(pieces):
        table[i, : len(p)] = np.frombuffer(p, np.uint8)
        lengths[i] = len(p)
    return table, lengths
