"""Tokenizer interface shared by the HF (Qwen2 byte-level BPE) and synthetic tokenizers.

`token_bytes(id)` is the exact byte string a token contributes to `decode(ids)` (special tokens contribute
nothing, as with `skip_special_tokens=True`), so `b"".join(token_bytes(i) for i in ids)` is the UTF-8 of the
decoded completion; the in-graph parsers rely on that through `byte_table`.
"""

from __future__ import annotations

import os
from typing import Any, Protocol, Sequence, runtime_checkable

# Names of the multimodal placeholder tokens (Qwen2.5-Omni spelling).
MM_TOKENS: tuple[str, ...] = (
    "<|IMAGE|>",
    "<|VIDEO|>",
    "<|AUDIO|>",
    "<|vision_bos|>",
    "<|vision_eos|>",
    "<|audio_bos|>",
    "<|audio_eos|>",
)


@runtime_checkable
class Tokenizer(Protocol):
    """What the rest of the code needs from a tokenizer."""

    vocab_size: int
    pad_id: int
    eos_ids: tuple[int, ...]
    mm_ids: dict[str, int]  # placeholder name -> id (empty if none)

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str: ...

    def token_bytes(self, token_id: int) -> bytes: ...

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str: ...


def content_to_text(content: Any) -> str:
    """Flatten a qwen-omni-utils style content list into text with the multimodal placeholders inserted."""
    if isinstance(content, str):
        return content
    parts = []
    for item in content:
        kind = item.get("type")
        if kind == "text":
            parts.append(item["text"])
        elif kind == "audio":
            parts.append("<|audio_bos|><|AUDIO|><|audio_eos|>")
        elif kind == "image":
            parts.append("<|vision_bos|><|IMAGE|><|vision_eos|>")
        elif kind == "video":
            parts.append("<|vision_bos|><|VIDEO|><|vision_eos|>")
        else:
            raise ValueError(f"unknown content type {kind!r}")
    return "".join(parts)


def render_qwen_chat(messages: list[dict], add_generation_prompt: bool = True) -> str:
    """Qwen-style chat rendering: `<|im_start|>role\\n...<|im_end|>\\n` per turn, then the assistant header."""
    out = []
    for m in messages:
        out.append(f"<|im_start|>{m['role']}\n{content_to_text(m['content'])}<|im_end|>\n")
    if add_generation_prompt:
        out.append("<|im_start|>assistant\n")
    return "".join(out)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 byte-level alphabet: every byte maps to one printable unicode character (the standard table)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    mapping, extra = {}, 0
    for b in range(256):
        if b in keep:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


BYTE_DECODER: dict[str, int] = {c: b for b, c in _bytes_to_unicode().items()}


class HFTokenizer:
    """Adapter over a transformers byte-level BPE tokenizer (Qwen2 family) loaded from a local directory."""

    def __init__(self, hf_tokenizer: Any):
        self.hf = hf_tokenizer
        self.vocab_size = len(hf_tokenizer)
        self._special = set(int(i) for i in hf_tokenizer.all_special_ids)
        for tok in getattr(hf_tokenizer, "added_tokens_decoder", {}).values():
            if tok.special:
                self._special.add(int(hf_tokenizer.convert_tokens_to_ids(tok.content)))
        vocab = hf_tokenizer.get_vocab()
        self.mm_ids = {name: int(vocab[name]) for name in MM_TOKENS if name in vocab}
        eos = []
        for name in ("<|im_end|>", "<|endoftext|>"):
            if name in vocab:
                eos.append(int(vocab[name]))
        if hf_tokenizer.eos_token_id is not None and int(hf_tokenizer.eos_token_id) not in eos:
            eos.insert(0, int(hf_tokenizer.eos_token_id))
        self.eos_ids = tuple(eos)
        pad = hf_tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else (eos[-1] if eos else 0))
        self._id_to_tok = {int(i): t for t, i in vocab.items()}

    @classmethod
    def from_dir(cls, path: str | os.PathLike) -> "HFTokenizer":
        """Load from a LOCAL directory (never downloads)."""
        from transformers import AutoTokenizer

        return cls(AutoTokenizer.from_pretrained(str(path), local_files_only=True))

    def encode(self, text: str) -> list[int]:
        return list(self.hf.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=skip_special_tokens, clean_up_tokenization_spaces=False)

    def token_bytes(self, token_id: int) -> bytes:
        """Bytes of one token; special tokens contribute nothing (decoding skips them)."""
        token_id = int(token_id)
        if token_id in self._special:
            return b""
        tok = self._id_to_tok.get(token_id)
        if tok is None:
            return b""
        if all(c in BYTE_DECODER for c in tok):
            return bytes(BYTE_DECODER[c] for c in tok)
        return tok.encode("utf-8")  # a non-special added token: literal text

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """Render through the tokenizer's own chat template (identical to transformers)."""
        return self.hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

