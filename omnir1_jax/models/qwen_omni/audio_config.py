"""Audio-tower config (mirrors ``Qwen2_5OmniAudioEncoderConfig``) and per-tensor HF <-> Flax weight mapping.

Keys are relative to the tower prefix (``audio_tower.`` / ``thinker.audio_tower.`` stripped by the caller).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import numpy as np

_FIELDS = (
    "num_mel_bins",
    "encoder_layers",
    "encoder_attention_heads",
    "encoder_ffn_dim",
    "d_model",
    "activation_function",
    "max_source_positions",
    "n_window",
    "output_dim",
)


@dataclasses.dataclass(frozen=True)
class AudioConfig:
    """Architecture of the Qwen2.5-Omni audio tower (Whisper-large-v3-style encoder, chunked attention)."""

    num_mel_bins: int = 128
    encoder_layers: int = 32
    encoder_attention_heads: int = 20
    encoder_ffn_dim: int = 5120
    d_model: int = 1280
    activation_function: str = "gelu"
    max_source_positions: int = 1500
    n_window: int = 100  # attention chunk = 2 * n_window mel frames = n_window tokens after conv2
    output_dim: int = 3584
    layer_norm_eps: float = 1e-5  # torch.nn.LayerNorm default, used throughout the HF tower

    @property
    def head_dim(self) -> int:
        return self.d_model // self.encoder_attention_heads

    @classmethod
    def from_hf(cls, hf_cfg: Any) -> "AudioConfig":
        """Builds from a ``Qwen2_5OmniAudioEncoderConfig`` (or its ``to_dict()``)."""
        d = hf_cfg if isinstance(hf_cfg, dict) else hf_cfg.to_dict()
        if d.get("scale_embedding", False):
            raise ValueError("scale_embedding=True is not used by Qwen2.5-Omni and is not supported")
        return cls(**{f: type(getattr(cls, f))(d[f]) for f in _FIELDS})

    def to_hf_dict(self) -> dict[str, Any]:
        """Keyword arguments that rebuild an equivalent ``Qwen2_5OmniAudioEncoderConfig``."""
        return {f: getattr(self, f) for f in _FIELDS}

    @classmethod
    def qwen25_omni_7b(cls) -> "AudioConfig":
        """Qwen2.5-Omni-7B: 32-layer Whisper-large-v3 encoder (d_model 1280) projecting to 3584."""
        return cls()

    @classmethod
    def qwen25_omni_3b(cls) -> "AudioConfig":
        """Qwen2.5-Omni-3B: the same encoder projecting to the 2048-wide LLM."""
        return cls(output_dim=2048)

    @classmethod
    def tiny(cls) -> "AudioConfig":
        """Tests / synthetic runs: 2 layers, width 32, 16 mel bins, chunks of 16 frames (8 tokens)."""
        return cls(
            num_mel_bins=16,
            encoder_layers=2,
            encoder_attention_heads=2,
            encoder_ffn_dim=48,
            d_model=32,
            max_source_positions=64,
            n_window=8,
            output_dim=24,
        )


# ---- weight mapping -----------------------------------------------------------------------------------------

_AUDIO_KEYS = (
    re.compile(r"conv[12]\.(?:weight|bias)"),
    re.compile(r"audio_bos_eos_token\.weight"),
    re.compile(r"layers\.\d+\.self_attn\.k_proj\.weight"),
    re.compile(r"layers\.\d+\.self_attn\.(?:q_proj|v_proj|out_proj)\.(?:weight|bias)"),
    re.compile(r"layers\.\d+\.(?:fc1|fc2|self_attn_layer_norm|final_layer_norm)\.(?:weight|bias)"),
    re.compile(r"(?:ln_post|proj)\.(?:weight|bias)"),
)
_NORMS = ("self_attn_layer_norm", "final_layer_norm", "ln_post")


def _check(key: str, what: str) -> None:
    if not any(p.fullmatch(key) for p in _AUDIO_KEYS):
        raise KeyError(f"unknown Qwen2.5-Omni audio {what} {key!r}")


def audio_hf_to_flax(key: str, value: np.ndarray) -> tuple[tuple[str, ...], np.ndarray]:
    """Maps one HF audio-tower tensor to its Flax param path and layout."""
    _check(key, "weight key")
    value = np.asarray(value)
    parts = key.split(".")
    if parts[0] == "layers":
        parts = [f"layers_{parts[1]}"] + parts[2:]
    module, leaf = tuple(parts[:-1]), parts[-1]
    if leaf == "bias":
        return module + ("bias",), value
    if module == ("audio_bos_eos_token",):
        return module + ("embedding",), value
    if module[-1] in _NORMS:
        return module + ("scale",), value
    if module[-1] in ("conv1", "conv2"):  # [out, in, k] -> [k, in, out]
        return module + ("kernel",), np.ascontiguousarray(value.transpose(2, 1, 0))
    return module + ("kernel",), np.ascontiguousarray(value.T)


def audio_flax_to_hf(path: tuple[str, ...], value: np.ndarray) -> tuple[str, np.ndarray]:
    """Maps one Flax audio-tower param (path without the ``params`` root) back to its HF key and layout."""
    path = tuple(path)
    value = np.asarray(value)
    module, leaf = list(path[:-1]), path[-1]
    if module and module[0].startswith("layers_"):
        module = ["layers", module[0][len("layers_") :]] + module[1:]
    prefix = ".".join(module)
    if leaf == "bias":
        key = prefix + ".bias"
    elif leaf in ("embedding", "scale"):
        key = prefix + ".weight"
    elif leaf == "kernel" and module and module[-1] in ("conv1", "conv2"):
        key, value = prefix + ".weight", np.ascontiguousarray(value.transpose(2, 1, 0))
    elif leaf == "kernel":
        key, value = prefix + ".weight", np.ascontiguousarray(value.T)
    else:
        key = prefix + "." + leaf
    _check(key, f"param path {path!r} ->")
    return key, value
