"""Qwen2.5-Omni thinker (the Global Reasoning System): config, TMRoPE, decoder, towers, HF conversion.

``load_hf(source) -> (model, params)``; ``model.apply({"params": params}, **inputs)`` takes transformers'
input names and returns logits ``[B, L, vocab]``.  ``export_hf(params, config, out_dir)`` writes an HF thinker.
"""

from omnir1_jax.models.qwen_omni.config import ThinkerConfig, qwen2_5_omni_3b, qwen2_5_omni_7b, tiny
from omnir1_jax.models.qwen_omni.convert import (
    convert_hf_dir,
    export_hf,
    flax_to_hf,
    hf_to_flax,
    load_checkpoint,
    load_hf,
    save_checkpoint,
)
from omnir1_jax.models.qwen_omni.rope import decode_position_ids, get_rope_index
from omnir1_jax.models.qwen_omni.thinker import (
    CACHE_LOGICAL_AXES,
    Thinker,
    init_cache,
    init_params,
    token_logprobs,
)

__all__ = [
    "CACHE_LOGICAL_AXES",
    "Thinker",
    "ThinkerConfig",
    "convert_hf_dir",
    "decode_position_ids",
    "export_hf",
    "flax_to_hf",
    "get_rope_index",
    "hf_to_flax",
    "init_cache",
    "init_params",
    "load_checkpoint",
    "load_hf",
    "qwen2_5_omni_3b",
    "qwen2_5_omni_7b",
    "save_checkpoint",
    "tiny",
    "token_logprobs",
]
