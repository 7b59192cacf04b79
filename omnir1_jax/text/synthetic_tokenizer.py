"""Word-level tokenizer of the synthetic world: whole words where known, else single characters/bytes.

Vocabulary order (deterministic): special tokens, the 95 printable ASCII characters plus tab/newline/CR,
byte-fallback tokens for every other byte value (so any UTF-8 text round-trips), then whole words (letters
only, sorted). Digits are therefore always single tokens. Stored as JSON (`save`/`load`).
"""

from __future__ import annotations

import json
import os
import re
from typing import Iterable, Sequence

from omnir1_jax.text.tokenizer import MM_TOKENS, render_qwen_chat

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<|endoftext|>", "<|im_start|>", "<|im_end|>") + MM_TOKENS
_CHAR_BYTES: tuple[int, ...] = (9, 10, 13) + tuple(range(0x20, 0x7F))
_WORD_RE = re.compile(r"[A-Za-z]+")


def default_words() -> list[str]:
    """Template words plus `data_pipelines.synthetic.words.WORDS` when that module exists."""
    from omnir1_jax.text import templates

    words = set(templates.template_words())
    try:  # written by another engineer; optional
        from data_pipelines.synthetic.words import WORDS  # type: ignore

        for w in WORDS:
            words.update(_WORD_RE.findall(str(w)))
    except ImportError:
        pass
    return sorted(w for w in words if len(w) > 1)


class SyntheticTokenizer:
    """Lossless word/char/byte tokenizer with Qwen-style chat rendering."""

    def __init__(self, words: Iterable[str] | None = None):
        words = default_words() if words is None else sorted({w for w in words if _WORD_RE.fullmatch(w) and len(w) > 1})
        self.tokens: list[str] = list(SPECIAL_TOKENS)
        self._bytes: list[bytes] = [b""] * len(SPECIAL_TOKENS)
        for b in _CHAR_BYTES:
            self.tokens.append(chr(b))
            self._bytes.append(bytes([b]))
        self._byte_id = {b: len(SPECIAL_TOKENS) + i for i, b in enumerate(_CHAR_BYTES)}
        for b in range(256):
            if b not in self._byte_id:
                self._byte_id[b] = len(self.tokens)
                self.tokens.append(f"<0x{b:02X}>")
                self._bytes.append(bytes([b]))
        self.words = list(words)
        for w in self.words:
            self.tokens.append(w)
            self._bytes.append(w.encode("ascii"))
        self.vocab = {t: i for i, t in enumerate(self.tokens)}
        self._word_id = {w: self.vocab[w] for w in self.words}
        self.vocab_size = len(self.tokens)
        self.pad_id = self.vocab["<pad>"]
        self.eos_ids = (self.vocab["<|im_end|>"], self.vocab["<|endoftext|>"])
        self.mm_ids = {name: self.vocab[name] for name in MM_TOKENS}
        self.special_ids = frozenset(range(len(SPECIAL_TOKENS)))
        self._special_re = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS))

    # ---------------------------------------------------------------- encode / decode
    def _encode_plain(self, text: str, out: list[int]) -> None:
        pos = 0
        for m in _WORD_RE.finditer(text):
            self._encode_chars(text[pos : m.start()], out)
            wid = self._word_id.get(m.group(0))
            if wid is not None:
                out.append(wid)
            else:
                self._encode_chars(m.group(0), out)
            pos = m.end()
        self._encode_chars(text[pos:], out)

    def _encode_chars(self, text: str, out: list[int]) -> None:
        out.extend(self._byte_id[b] for b in text.encode("utf-8"))

    def encode(self, text: str) -> list[int]:
        """Special-token literals become special ids; words in the vocab become one id; the rest bytes."""
        out: list[int] = []
        pos = 0
        for m in self._special_re.finditer(text):
            self._encode_plain(text[pos : m.start()], out)
            out.append(self.vocab[m.group(0)])
            pos = m.end()
        self._encode_plain(text[pos:], out)
        return out

    def token_bytes(self, token_id: int) -> bytes:
        """Bytes a token contributes to `decode` (special tokens: none)."""
        return self._bytes[int(token_id)]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        parts = []
        for i in ids:
            i = int(i)
            if i in self.special_ids:
                if not skip_special_tokens:
                    parts.append(self.tokens[i].encode("utf-8"))
            else:
                parts.append(self._bytes[i])
        return b"".join(parts).decode("utf-8", errors="replace")

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        return render_qwen_chat(messages, add_generation_prompt)

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike) -> None:
        """Save as JSON (the word list fully determines the vocabulary)."""
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"kind": "omnir1_synthetic_word_tokenizer", "version": 1, "words": self.words}, f, indent=0)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SyntheticTokenizer":
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if data.get("kind") != "omnir1_synthetic_word_tokenizer":
            raise ValueError(f"{path} is not a synthetic tokenizer file")
        return cls(words=data["words"])
