"""Text layer: tokenizer adapters (HF byte-level BPE, synthetic word-level), byte table, prompt templates."""

from omnir1_jax.text.byte_table import byte_table
from omnir1_jax.text.synthetic_tokenizer import SyntheticTokenizer
from omnir1_jax.text.templates import (
    make_messages,
    render_grounding_prompt,
    render_refavs_prompt,
    render_vos_prompt,
)
from omnir1_jax.text.tokenizer import MM_TOKENS, HFTokenizer, Tokenizer

__all__ = [
    "MM_TOKENS",
    "HFTokenizer",
    "SyntheticTokenizer",
    "Tokenizer",
    "byte_table",
    "make_messages",
    "render_grounding_prompt",
    "render_refavs_prompt",
    "render_vos_prompt",
]
