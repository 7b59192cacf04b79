"""Host-side plan of the in-graph System-2 grounding prompts (built ONCE per tokenizer / variant / grid).

The grounding prompt is the chat-rendered `templates.render_grounding_prompt(description, variant)` with one
image: `prefix` (system/user header, `<|vision_bos|>` + N_img x `<|IMAGE|>` + `<|vision_eos|>`, the text up
to the opening quote) + description + `suffix` (closing quote, rest of the instruction, `<|im_end|>`, the
assistant header). `host_prompt_ids` is the reference host path (render text, expand the image placeholder,
tokenize); `grounding.assemble` rebuilds the same ids in-graph from the completion tokens.

Tokenizer modes:
  "words"  (SyntheticTokenizer) the description is re-tokenized in-graph from its bytes (ASCII lower-case,
           strip, letter runs looked up in a hashed word table, everything else byte tokens): exact.
  "tokens" (byte-level BPE, HFTokenizer) the completion's description tokens are copied through a per-token
           lower-case table; see `grounding.py` for what is exact and what is approximated.
"""

from __future__ import annotations

from typing import Any

import flax
import jax.numpy as jnp
import numpy as np

from omnir1_jax.text.byte_table import byte_table
from omnir1_jax.text.templates import make_messages, render_grounding_prompt

SENTINEL = "\x00"
DUMMY_DESCRIPTION = "Hello!"  # description of the padding prompts of invalid slots (as the paper's "Hello!")
# Python `str.strip()` whitespace among ASCII bytes (note \x1c-\x1f).
PY_WS = b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"
HASH_MULTS = (16777619, 2654435761, 40503, 97, 1000003)


@flax.struct.dataclass
class GroundingSpec:
    """Constant token pieces and lookup tables of the grounding prompt (a pytree; ints are static)."""

    prefix_ids: jnp.ndarray  # [P] int32, through the opening quote (image run included)
    suffix_ids: jnp.ndarray  # [S] int32, from the closing quote through `<|im_start|>assistant\n`
    dummy_ids: jnp.ndarray  # [Lo] int32, description tokens of invalid slots (padded)
    byte_table: jnp.ndarray  # [V, MB] uint8 (text.byte_table)
    tok_lens: jnp.ndarray  # [V] int32
    byte_ids: jnp.ndarray  # [256] int32, "words": token of each single byte
    word_hash: jnp.ndarray  # [Nw] uint32 sorted, "words": hash of each word
    word_ids: jnp.ndarray  # [Nw] int32
    word_bytes: jnp.ndarray  # [Nw, W] int32 (0-padded)
    word_lens: jnp.ndarray  # [Nw] int32
    lower_ids: jnp.ndarray  # [V, LW] int32, "tokens": tokenization of the ASCII-lower-cased token
    lower_lens: jnp.ndarray  # [V] int32 (-1: not representable -> approximated)
    strip1_ids: jnp.ndarray  # [V, LW] int32, "tokens": same for the token minus its first byte (` the` -> `the`)
    strip1_lens: jnp.ndarray  # [V] int32 (-1: not representable)
    mode: str = flax.struct.field(pytree_node=False, default="words")
    variant: str = flax.struct.field(pytree_node=False, default="default")
    strip_chars: bytes = flax.struct.field(pytree_node=False, default=PY_WS)
    grid_thw: tuple = flax.struct.field(pytree_node=False, default=(1, 2, 2))
    n_image_tokens: int = flax.struct.field(pytree_node=False, default=1)
    max_desc_tokens: int = flax.struct.field(pytree_node=False, default=16)  # Ld: completion tokens read
    max_prompt_desc_tokens: int = flax.struct.field(pytree_node=False, default=32)  # Lo: in the prompt
    dummy_len: int = flax.struct.field(pytree_node=False, default=1)
    hash_mult: int = flax.struct.field(pytree_node=False, default=HASH_MULTS[0])
    image_token_id: int = flax.struct.field(pytree_node=False, default=0)
    stop_ids: tuple = flax.struct.field(pytree_node=False, default=())
    pad_id: int = flax.struct.field(pytree_node=False, default=0)

    @property
    def prompt_length(self) -> int:
        """Lg: static length of every (left-padded) grounding prompt."""
        return int(self.prefix_ids.shape[0] + self.max_prompt_desc_tokens + self.suffix_ids.shape[0])


# ---------------------------------------------------------------------------------------- host reference
def normalize_description(description: str, variant: str) -> str:
    """What `render_grounding_prompt` does to the description (lower + strip, per variant)."""
    full = render_grounding_prompt(SENTINEL, variant)
    a, z = full.split(SENTINEL)
    text = render_grounding_prompt(description, variant)
    return text[len(a) : len(text) - len(z)]


def host_prompt_text(tokenizer: Any, description: str, variant: str, n_image_tokens: int) -> str:
    """Reference host path: chat-rendered grounding prompt with the image placeholder expanded."""
    msgs = make_messages(render_grounding_prompt(description, variant), ("image",))
    text = tokenizer.apply_chat_template(msgs, add_generation_prompt=True)
    return text.replace("<|IMAGE|>", "<|IMAGE|>" * n_image_tokens)


def host_prompt_ids(tokenizer: Any, description: str, variant: str, n_image_tokens: int) -> list[int]:
    """Token ids of `host_prompt_text` (what a host pipeline would feed the grounder)."""
    return list(tokenizer.encode(host_prompt_text(tokenizer, description, variant, n_image_tokens)))


def _split_template(tokenizer: Any, variant: str, n_image_tokens: int) -> tuple[str, str]:
    text = host_prompt_text(tokenizer, SENTINEL, variant, n_image_tokens)
    if text.count(SENTINEL) != 1:
        raise ValueError("grounding template must contain the description exactly once")
    a, z = text.split(SENTINEL)
    if not a or not z or a[-1].isalnum() or z[0].isalnum():
        raise ValueError("the description must sit between non-alphanumeric template characters")
    return a, z


def _hash_words(words: list[bytes]) -> tuple[int, np.ndarray]:
    """Polynomial uint32 hash (sum b_i * m^i) with a multiplier that is collision-free on `words`."""
    for m in HASH_MULTS:
        h = np.array([_hash(w, m) for w in words], np.uint32)
        if len(np.unique(h)) == len(h):
            return m, h
    raise ValueError("no collision-free word hash multiplier")


def _hash(word: bytes, m: int) -> int:
    h, p = 0, 1
    for c in word:
        h = (h + c * p) & 0xFFFFFFFF
        p = (p * m) & 0xFFFFFFFF
    return h


def _lower_table(
    tokenizer: Any, table: np.ndarray, lens: np.ndarray, width: int, drop_first: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """[V, width] tokenization of each token's ASCII-lower-cased bytes (identity when nothing changes).

    `drop_first`: of the token minus its first byte, only for tokens that start with a strip-whitespace byte
    followed by a non-whitespace byte (a leading space the description's `strip()` removes); -1 elsewhere.
    """
    V = table.shape[0]
    ids = np.zeros((V, width), np.int32)
    out_len = np.full((V,), -1 if drop_first else 1, np.int32)
    ids[:, 0] = np.arange(V)
    for t in range(min(V, tokenizer.vocab_size)):
        raw = table[t, : lens[t]].tobytes()
        if drop_first:
            if len(raw) < 2 or raw[0] not in PY_WS or raw[1] in PY_WS:
                continue
            raw = raw[1:]
        low = raw.lower()
        if low == raw and not drop_first:
            continue
        try:
            enc = tokenizer.encode(low.decode("utf-8"))
        except UnicodeDecodeError:
            out_len[t] = -1
            continue
        if len(enc) > width:
            out_len[t] = -1
            continue
        ids[t, : len(enc)] = enc
        out_len[t] = len(enc)
    return ids, out_len


def build_spec(
    tokenizer: Any,
    grid_thw: tuple[int, int, int],
    max_desc_tokens: int = 16,
    variant: str = "default",
    merge_size: int = 2,
    max_prompt_desc_tokens: int | None = None,
    vocab_size: int | None = None,
    lower_width: int = 4,
) -> GroundingSpec:
    """Build the grounding-prompt plan once on the host (all keyframes share one grounding `grid_thw`)."""
    grid = tuple(int(v) for v in grid_thw)
    n_img = grid[0] * grid[1] * grid[2] // (merge_size * merge_size)
    a, z = _split_template(tokenizer, variant, n_img)
    prefix = np.asarray(tokenizer.encode(a), np.int32)
    suffix = np.asarray(tokenizer.encode(z), np.int32)
    mode = "words" if hasattr(tokenizer, "words") else "tokens"  # SyntheticTokenizer: word list + char/byte tokens
    lo = int(max_prompt_desc_tokens or 2 * max_desc_tokens)
    dummy = np.asarray(tokenizer.encode(normalize_description(DUMMY_DESCRIPTION, variant)), np.int32)
    if len(dummy) > lo:
        raise ValueError("max_prompt_desc_tokens is shorter than the dummy description")
    dummy_ids = np.zeros((lo,), np.int32)
    dummy_ids[: len(dummy)] = dummy
    table, lens = byte_table(tokenizer, vocab_size=vocab_size)
    strip = b"." if variant in ("visionreasoner", "segzero") else PY_WS

    byte_ids = np.zeros((256,), np.int32)
    word_hash, word_ids = np.zeros((1,), np.uint32), np.zeros((1,), np.int32)
    word_bytes, word_lens = np.zeros((1, 1), np.int32), np.zeros((1,), np.int32)
    mult = HASH_MULTS[0]
    lower_ids, lower_lens = np.zeros((1, 1), np.int32), np.zeros((1,), np.int32)
    strip1_ids, strip1_lens = lower_ids, lower_lens
    if mode == "words":
        voc = tokenizer.vocab
        byte_ids = np.asarray([voc[chr(b)] if chr(b) in voc else voc[f"<0x{b:02X}>"] for b in range(256)], np.int32)
        words = sorted(tokenizer.words)
        wb = [w.encode("ascii") for w in words]
        W = max(len(w) for w in wb)
        mult, h = _hash_words(wb)
        order = np.argsort(h)
        word_hash = h[order]
        word_ids = np.asarray([voc[words[i]] for i in order], np.int32)
        word_bytes = np.zeros((len(words), W), np.int32)
        for r, i in enumerate(order):
            word_bytes[r, : len(wb[i])] = np.frombuffer(wb[i], np.uint8)
        word_lens = np.asarray([len(wb[i]) for i in order], np.int32)
    else:
        lower_ids, lower_lens = _lower_table(tokenizer, table, lens, lower_width)
        if strip == PY_WS:
            strip1_ids, strip1_lens = _lower_table(tokenizer, table, lens, lower_width, drop_first=True)

    return GroundingSpec(
        prefix_ids=jnp.asarray(prefix), suffix_ids=jnp.asarray(suffix), dummy_ids=jnp.asarray(dummy_ids),
        byte_table=jnp.asarray(table), tok_lens=jnp.asarray(lens), byte_ids=jnp.asarray(byte_ids),
        word_hash=jnp.asarray(word_hash), word_ids=jnp.asarray(word_ids), word_bytes=jnp.asarray(word_bytes),
        word_lens=jnp.asarray(word_lens), lower_ids=jnp.asarray(lower_ids), lower_lens=jnp.asarray(lower_lens),
        strip1_ids=jnp.asarray(strip1_ids), strip1_lens=jnp.asarray(strip1_lens),
        mode=mode, variant=variant, strip_chars=strip, grid_thw=grid, n_image_tokens=n_img,
        max_desc_tokens=int(max_desc_tokens), max_prompt_desc_tokens=lo, dummy_len=int(len(dummy)),
        hash_mult=int(mult), image_token_id=int(tokenizer.mm_ids["<|IMAGE|>"]),
        stop_ids=tuple(int(i) for i in tokenizer.eos_ids), pad_id=int(tokenizer.pad_id),
    )
