"""FPN neck and the full vision encoder (Hiera + FPN): multi-scale features with sine position encodings."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from omnir1_jax.models.sam2.common import conv, sine_position_encoding
from omnir1_jax.models.sam2.config import Sam2Config
from omnir1_jax.models.sam2.hiera import HieraBackbone


class VisionNeck(nn.Module):
    """Top-down FPN: 1x1 lateral convs, nearest 2x upsampling on the configured top-down levels."""

    cfg: Sam2Config

    @nn.compact
    def __call__(self, stages: list[jax.Array]) -> tuple[list[jax.Array], list[jax.Array]]:
        cfg = self.cfg
        n = len(stages) - 1
        feats, poses, prev = [], [], None
        for i in range(n, -1, -1):
            lateral = conv(cfg.fpn_hidden_size, 1, name=f"convs_{n - i}")(stages[i])
            if i not in cfg.fpn_top_down_levels or i == n:
                prev = lateral
            else:
                prev = lateral + jnp.repeat(jnp.repeat(prev, 2, axis=1), 2, axis=2)
            feats.append(prev)
            h, w = prev.shape[1:3]
            poses.append(jnp.asarray(sine_position_encoding(h, w, cfg.fpn_hidden_size // 2)))
        return feats, poses


class VisionEncoder(nn.Module):
    """Hiera + FPN; returns ``num_feature_levels`` maps from high to low resolution ([B, h, w, C] each)."""

    cfg: Sam2Config

    @nn.compact
    def __call__(self, pixel_values: jax.Array) -> tuple[list[jax.Array], list[jax.Array]]:
        stages = HieraBackbone(self.cfg, name="backbone")(pixel_values)
        feats, poses = VisionNeck(self.cfg, name="neck")(stages)
        k = self.cfg.num_feature_levels
        return feats[-k:][::-1], poses[-k:][::-1]
