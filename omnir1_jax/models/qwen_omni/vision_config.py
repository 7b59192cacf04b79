"""Vision-tower config (mirrors ``Qwen2_5OmniVisionEncoderConfig``) and per-tensor HF <-> Flax weight mapping.

Keys are relative to the tower prefix (``visual.`` / ``thinker.visual.`` stripped by the caller).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    """Architecture of the Qwen2.5-Omni vision tower."""

    depth: int = 32
    hidden_size: int = 1280
    hidden_act: str = "silu"
    intermediate_size: int = 3420
    num_heads: int = 16
    in_channels: int = 3
    patch_size: int = 14
    spatial_merge_size: int = 2
    temporal_patch_size: int = 2
    window_size: int = 112
    out_hidden_size: int = 3584
    fullatt_block_indexes: tuple[int, ...] = (7, 15, 23, 31)
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6  # hard-coded in the HF blocks and merger

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def patch_dim(self) -> int:
        """Length of one flattened input patch, ``C * T * P * P``."""
        return self.in_channels * self.temporal_patch_size * self.patch_size**2

    @classmethod
    def from_hf(cls, hf_cfg: Any) -> "VisionConfig":
        """Builds from a ``Qwen2_5OmniVisionEncoderConfig`` (or its ``to_dict()``)."""
        d = hf_cfg if isinstance(hf_cfg, dict) else hf_cfg.to_dict()
        rope = d.get("rope_parameters") or {}
        return cls(
            depth=int(d["depth"]),
            hidden_size=int(d["hidden_size"]),
            hidden_act=str(d["hidden_act"]),
            intermediate_size=int(d["intermediate_size"]),
            num_heads=int(d["num_heads"]),
            in_channels=int(d["in_channels"]),
            patch_size=int(d["patch_size"]),
            spatial_merge_size=int(d["spatial_merge_size"]),
            temporal_patch_size=int(d["temporal_patch_size"]),
            window_size=int(d["window_size"]),
            out_hidden_size=int(d["out_hidden_size"]),
            fullatt_block_indexes=tuple(int(i) for i in d["fullatt_block_indexes"]),
            rope_theta=float(rope.get("rope_theta", d.get("rope_theta", 10000.0))),
        )

    def to_hf_dict(self) -> dict[str, Any]:
        """Keyword arguments that rebuild an equivalent ``Qwen2_5OmniVisionEncoderConfig``."""
        d = dataclasses.asdict(self)
        d.pop("rms_norm_eps")
        d["fullatt_block_indexes"] = list(self.fullatt_block_indexes)
        d["rope_parameters"] = {"rope_type": "axial", "rope_theta": d.pop("rope_theta")}
        return d

    @classmethod
    def qwen25_omni_7b(cls) -> "VisionConfig":
        """Qwen2.5-Omni-7B: 32-layer 1280-wide ViT (675M) projecting to the 3584-wide LLM."""
        return cls()

    @classmethod
    def qwen25_omni_3b(cls) -> "VisionConfig":
        """Qwen2.5-Omni-3B: the same ViT projecting to the 2048-wide LLM."""
        return cls(out_hidden_size=2048)

    @classmethod
    def tiny(cls) -> "VisionConfig":
        """Tests / synthetic runs: 4 layers (window, full, window, full), 2 heads, 8-px patches, 32-px windows."""
        return cls(
            depth=4,
            hidden_size=32,
            intermediate_size=48,
            num_heads=2,
            patch_size=8,
            window_size=32,
            out_hidden_size=24,
            fullatt_block_indexes=(1, 3),
        )


# ---- weight mapping -----------------------------------------------------------------------------------------

_LINEAR = r"(?:attn\.(?:q|k|v|proj)|mlp\.(?:gate_proj|up_proj|down_proj))"
_VISION_KEYS = (
    re.compile(r"patch_embed\.proj\.weight"),
    re.compile(r"blocks\.\d+\.norm[12]\.weight"),
    re.compile(rf"blocks\.\d+\.{_LINEAR}\.(?:weight|bias)"),
    re.compile(r"merger\.ln_q\.weight"),
    re.compile(r"merger\.mlp\.[02]\.(?:weight|bias)"),
)


def _split(key: str) -> list[str]:
    """``blocks.3.attn.q.weight`` -> ``['blocks_3', 'attn', 'q', 'weight']`` (indices join their parent)."""
    out: list[str] = []
    for part in key.split("."):
        if part.isdigit() and out:
            out[-1] = f"{out[-1]}_{part}"
        else:
            out.append(part)
    return out


def _join(path: tuple[str, ...]) -> str:
    """Inverse of :func:`_split` for the module names used by the towers."""
    return ".".join(re.sub(r"^(blocks|layers|mlp)_(\d+)$", r"\1.\2", p) for p in path)


def vision_hf_to_flax(key: str, value: np.ndarray) -> tuple[tuple[str, ...], np.ndarray]:
    """Maps one HF vision-tower tensor to its Flax param path and layout."""
    if not any(p.fullmatch(key) for p in _VISION_KEYS):
        raise KeyError(f"unknown Qwen2.5-Omni vision weight key {key!r}")
    value = np.asarray(value)
    if key == "patch_embed.proj.weight":  # [D, C, T, P, P] -> [C, T, P, P, D]
        return ("patch_embed", "kernel"), np.ascontiguousarray(np.moveaxis(value, 0, -1))
    parts = _split(key)
    leaf = parts.pop()
    if leaf == "bias":
        return tuple(parts) + ("bias",), value
    if value.ndim == 1:  # RMSNorm weight
        return tuple(parts) + ("scale",), value
    return tuple(parts) + ("kernel",), np.ascontiguousarray(value.T)


def vision_flax_to_hf(path: tuple[str, ...], value: np.ndarray) -> tuple[str, np.ndarray]:
    """Maps one Flax vision-tower param (path without the ``params`` root) back to its HF key and layout."""
    path = tuple(path)
    value = np.asarray(value)
    if path == ("patch_embed", "kernel"):
        key, value = "patch_embed.proj.weight", np.ascontiguousarray(np.moveaxis(value, -1, 0))
    elif path[-1] == "kernel":
        key, value = _join(path[:-1]) + ".weight", np.ascontiguousarray(value.T)
    elif path[-1] == "scale":
        key = _join(path[:-1]) + ".weight"
    elif path[-1] == "bias":
        key = _join(path[:-1]) + ".bias"
    else:
        raise KeyError(f"unknown Qwen2.5-Omni vision param path {path!r}")
    if not any(p.fullmatch(key) for p in _VISION_KEYS):
        raise KeyError(f"unknown Qwen2.5-Omni vision param path {path!r}")
    return key, value
