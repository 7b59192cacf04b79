"""ThinkerConfig: the Qwen2.5-Omni thinker (text decoder + vision/audio towers + special token ids).

A frozen, hashable dataclass so it can be a static ``jit`` argument; built from / converted to a
transformers ``Qwen2_5OmniThinkerConfig``.  The towers' configs belong to ``vision.py`` / ``audio.py``.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def _vision_module():
    from omnir1_jax.models.qwen_omni import vision  # lazy: owned by the encoder engineer

    return vision


def _audio_module():
    from omnir1_jax.models.qwen_omni import audio  # lazy: owned by the encoder engineer

    return audio


@dataclasses.dataclass(frozen=True)
class ThinkerConfig:
    """Hyper-parameters of the thinker; field names follow transformers where they exist."""

    vocab_size: int = 152064
    hidden_size: int = 3584
    intermediate_size: int = 18944
    num_hidden_layers: int = 28
    num_attention_heads: int = 28
    num_key_value_heads: int = 4
    head_dim: int = 128
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    mrope_section: tuple[int, ...] = (16, 24, 24)
    max_position_embeddings: int = 32768
    initializer_range: float = 0.02
    tie_word_embeddings: bool = False  # thinker-level (the 7B/3B thinkers keep a separate lm_head)
    # special tokens / TMRoPE constants
    image_token_id: int = 151655
    video_token_id: int = 151656
    audio_token_id: int = 151646
    vision_start_token_id: int = 151652
    vision_end_token_id: int = 151653
    audio_start_token_id: int = 151647
    audio_end_token_id: int = 151648
    user_token_id: int = 872
    bos_token_id: int | None = 151644
    eos_token_id: int | None = 151645
    pad_token_id: int | None = 151643
    position_id_per_seconds: int = 25
    seconds_per_chunk: int = 2
    spatial_merge_size: int = 2
    # towers (None = text-only thinker)
    vision: Any = None  # vision.VisionConfig
    audio: Any = None  # audio.AudioConfig

    # ---------------------------------------------------------------- transformers interop
    @classmethod
    def from_hf(cls, hf: Any) -> "ThinkerConfig":
        """From a ``Qwen2_5OmniThinkerConfig`` (or a full ``Qwen2_5OmniConfig``, whose thinker is used)."""
        if hasattr(hf, "thinker_config"):
            hf = hf.thinker_config
        t = hf.text_config
        rope = dict(getattr(t, "rope_parameters", None) or {})
        head_dim = getattr(t, "head_dim", None) or t.hidden_size // t.num_attention_heads
        vision = audio = None
        if getattr(hf, "vision_config", None) is not None:
            vision = _vision_module().VisionConfig.from_hf(hf.vision_config)
        if getattr(hf, "audio_config", None) is not None:
            audio = _audio_module().AudioConfig.from_hf(hf.audio_config)

        def opt_int(name: str, default: int | None) -> int | None:
            v = getattr(hf, name, None)
            if v is None:
                v = getattr(t, name, None)
            if isinstance(v, (list, tuple)):
                v = v[0] if v else None
            return default if v is None else int(v)

        return cls(
            vocab_size=t.vocab_size,
            hidden_size=t.hidden_size,
            intermediate_size=t.intermediate_size,
            num_hidden_layers=t.num_hidden_layers,
            num_attention_heads=t.num_attention_heads,
            num_key_value_heads=t.num_key_value_heads or t.num_attention_heads,
            head_dim=head_dim,
            rms_norm_eps=float(t.rms_norm_eps),
            rope_theta=float(rope.get("rope_theta", 1_000_000.0)),
            mrope_section=tuple(int(x) for x in rope.get("mrope_section", (16, 24, 24))),
            max_position_embeddings=t.max_position_embeddings,
            initializer_range=float(getattr(t, "initializer_range", 0.02)),
            tie_word_embeddings=bool(getattr(hf, "tie_word_embeddings", False)),
            image_token_id=int(hf.image_token_id),
            video_token_id=int(hf.video_token_id),
            audio_token_id=int(hf.audio_token_id),
            vision_start_token_id=opt_int("vision_start_token_id", 151652),
            vision_end_token_id=opt_int("vision_end_token_id", 151653),
            audio_start_token_id=int(hf.audio_start_token_id),
            audio_end_token_id=int(hf.audio_end_token_id),
            user_token_id=int(getattr(hf, "user_token_id", 872)),
            bos_token_id=opt_int("bos_token_id", None),
            eos_token_id=opt_int("eos_token_id", None),
            pad_token_id=opt_int("pad_token_id", None),
            position_id_per_seconds=int(hf.position_id_per_seconds),
            seconds_per_chunk=int(hf.seconds_per_chunk),
            spatial_merge_size=int(getattr(hf.vision_config, "spatial_merge_size", 2)),
            vision=vision,
            audio=audio,
        )

    def to_hf(self) -> Any:
        """A transformers ``Qwen2_5OmniThinkerConfig`` describing the same model."""
        from transformers import Qwen2_5OmniThinkerConfig

        text = dict(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads,
            rms_norm_eps=self.rms_norm_eps,
            max_position_embeddings=self.max_position_embeddings,
            initializer_range=self.initializer_range,
            rope_parameters={"rope_type": "default", "rope_theta": self.rope_theta,
                             "mrope_section": list(self.mrope_section)},
            hidden_act="silu",
            bos_token_id=self.bos_token_id,
            eos_token_id=self.eos_token_id,
            pad_token_id=self.pad_token_id,
        )
        if self.head_dim != self.hidden_size // self.num_attention_heads:
            text["head_dim"] = self.head_dim
        kwargs: dict[str, Any] = {}
        if self.vision is not None:
            kwargs["vision_config"] = _to_hf_dict(self.vision)
        if self.audio is not None:
            kwargs["audio_config"] = _to_hf_dict(self.audio)
        cfg = Qwen2_5OmniThinkerConfig(
            text_config=text,
            audio_token_index=self.audio_token_id,
            image_token_index=self.image_token_id,
            video_token_index=self.video_token_id,
            position_id_per_seconds=self.position_id_per_seconds,
            seconds_per_chunk=self.seconds_per_chunk,
            audio_start_token_id=self.audio_start_token_id,
            audio_end_token_id=self.audio_end_token_id,
            user_token_id=self.user_token_id,
            initializer_range=self.initializer_range,
            tie_word_embeddings=self.tie_word_embeddings,
            **kwargs,
        )
        # Not declared fields of the transformers class, but read by get_rope_index (as in the real config.json).
        cfg.vision_start_token_id = self.vision_start_token_id
        cfg.vision_end_token_id = self.vision_end_token_id
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            setattr(cfg, name, getattr(self, name))
        return cfg


def _to_hf_dict(sub: Any) -> Any:
    """A tower config as something ``Qwen2_5OmniThinkerConfig`` accepts (HF config object or dict)."""
    return sub.to_hf_dict()


def _towers(size: str) -> tuple[Any, Any]:
    """The released vision and audio towers of the 7B / 3B thinker."""
    name = f"qwen25_omni_{size}"
    return getattr(_vision_module().VisionConfig, name)(), getattr(_audio_module().AudioConfig, name)()


def qwen2_5_omni_7b(with_towers: bool = True) -> ThinkerConfig:
    """Qwen2.5-Omni-7B thinker (Qwen2.5-7B decoder, 32-layer ViT, 32-layer Whisper-style audio tower)."""
    vision, audio = _towers("7b") if with_towers else (None, None)
    return ThinkerConfig(vision=vision, audio=audio)


def qwen2_5_omni_3b(with_towers: bool = True) -> ThinkerConfig:
    """Qwen2.5-Omni-3B thinker (Qwen2.5-3B decoder)."""
    vision, audio = _towers("3b") if with_towers else (None, None)
    return ThinkerConfig(
        vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
        num_attention_heads=16, num_key_value_heads=2, head_dim=128, vision=vision, audio=audio,
    )


def tiny(vocab_size: int = 512, vision: Any = None, audio: Any = None, **overrides: Any) -> ThinkerConfig:
    """A tiny thinker for tests and the synthetic world; special ids are placed at the top of the vocab."""
    v = vocab_size
    base = dict(
        vocab_size=v, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, mrope_section=(2, 3, 3), max_position_embeddings=4096,
        image_token_id=v - 1, video_token_id=v - 2, audio_token_id=v - 3, vision_start_token_id=v - 4,
        vision_end_token_id=v - 5, audio_start_token_id=v - 6, audio_end_token_id=v - 7, user_token_id=v - 8,
        bos_token_id=v - 9, eos_token_id=v - 10, pad_token_id=v - 11, vision=vision, audio=audio,
    )
    base.update(overrides)
    return ThinkerConfig(**base)
