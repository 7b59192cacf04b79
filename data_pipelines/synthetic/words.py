"""Every word the synthetic world can emit (queries, answers, Null templates): the synthetic tokenizer's word list."""

from __future__ import annotations

COLOURS = ("red", "green", "blue", "yellow", "white", "orange", "purple", "cyan")
SEEN_SHAPES = ("circle", "square", "triangle", "diamond")
UNSEEN_SHAPES = ("star", "hexagon")  # held out of train: RefAVS-format test_u targets use them
SHAPES = SEEN_SHAPES + UNSEEN_SHAPES
SIZES = ("small", "big")
FUNCTION_WORDS = (
    "the", "a", "of", "that", "object", "shape", "making", "sound", "sounds", "sounding", "highest", "lowest",
    "first", "last", "appears", "leaves", "left", "right", "above", "below", "none",
)

# Deterministic order, no duplicates: function words, then sizes, colours, shapes.
WORDS: tuple[str, ...] = tuple(dict.fromkeys(FUNCTION_WORDS + SIZES + COLOURS + SHAPES))
