"""Prompt encoder: random-Fourier point/box embeddings (sparse) and the mask embedding (dense)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from omnir1_jax.models.sam2.common import conv, gelu, layer_norm, pinit
from omnir1_jax.models.sam2.config import Sam2Config


class Table(nn.Module):
    """A learned embedding table [num, dim] (HF ``nn.Embedding`` / ``weight``)."""

    num: int
    dim: int

    @nn.compact
    def __call__(self) -> jax.Array:
        return self.param("embedding", pinit(nn.initializers.normal(1.0), ("unsharded", "sam_embed")),
                          (self.num, self.dim))


class PositionalEmbedding(nn.Module):
    """Random Fourier features of 2-D coordinates in [0, 1]: [..., 2] -> [..., C]."""

    dim: int

    @nn.compact
    def __call__(self, coords: jax.Array) -> jax.Array:
        g = self.param("positional_embedding", pinit(nn.initializers.normal(1.0), ("unsharded", "sam_embed")),
                       (2, self.dim // 2))
        c = (2 * coords - 1) @ g
        c = 2 * np.pi * c
        return jnp.concatenate([jnp.sin(c), jnp.cos(c)], axis=-1)


def image_wide_positional_embeddings(pe: PositionalEmbedding, size: int) -> jax.Array:
    """Dense positional encoding of the embedding grid: [size, size, C]."""
    y = (jnp.arange(size, dtype=jnp.float32) + 0.5) / size
    grid = jnp.stack(jnp.broadcast_arrays(y[None, :], y[:, None]), axis=-1)  # [h, w, (x, y)]
    return pe(grid)


class MaskEmbedding(nn.Module):
    """Downscales a [.., 4h, 4w] mask prompt to the [.., h, w, C] dense embedding."""

    cfg: Sam2Config

    @nn.compact
    def __call__(self, masks: jax.Array) -> jax.Array:  # [N, 4h, 4w] -> [N, h, w, C]
        cfg = self.cfg
        c4 = cfg.mask_input_channels // 4
        x = masks[..., None]
        x = gelu(layer_norm(cfg.prompt_layer_norm_eps, name="layer_norm1")(conv(c4, 2, 2, name="conv1")(x)))
        x = conv(cfg.mask_input_channels, 2, 2, name="conv2")(x)
        x = gelu(layer_norm(cfg.prompt_layer_norm_eps, name="layer_norm2")(x))
        return conv(cfg.hidden_size, 1, name="conv3")(x)


class PromptEncoder(nn.Module):
    """Embeds points (+labels), boxes and masks into sparse [B, O, N, C] and dense [B, O|1, h, w, C] prompts."""

    cfg: Sam2Config

    def setup(self) -> None:
        c = self.cfg.hidden_size
        self.shared_embedding = PositionalEmbedding(c)
        self.mask_embed = MaskEmbedding(self.cfg)
        self.no_mask_embed = Table(1, c)
        self.point_embed = Table(self.cfg.num_point_embeddings, c)
        self.not_a_point_embed = Table(1, c)

    def embed_points(self, points: jax.Array, labels: jax.Array, pad: bool) -> jax.Array:
        """points [B, O, N, 2] in input-pixel coords, labels [B, O, N] (1 fg, 0 bg, -1 not-a-point, -10 pad)."""
        points = points + 0.5
        if pad:
            points = jnp.pad(points, ((0, 0), (0, 0), (0, 1), (0, 0)))
            labels = jnp.pad(labels, ((0, 0), (0, 0), (0, 1)), constant_values=-1)
        emb = self.shared_embedding(points / self.cfg.image_size)
        lab = labels[..., None]
        emb = jnp.where(lab == -1, self.not_a_point_embed()[0], emb)
        emb = jnp.where(lab != -10, emb, 0.0)
        table = self.point_embed()
        return emb + table[jnp.clip(labels, 0, table.shape[0] - 1)] * (lab >= 0)

    def embed_boxes(self, boxes: jax.Array) -> jax.Array:
        """boxes [B, O, 4] (x1, y1, x2, y2 in input-pixel coords) -> [B, O, 3, C] (two corners + not-a-point)."""
        coords = (boxes + 0.5).reshape(*boxes.shape[:-1], 2, 2)
        corners = self.shared_embedding(coords / self.cfg.image_size)
        table = self.point_embed()
        corners = corners + table[2:4]
        pad = jnp.broadcast_to(self.not_a_point_embed()[0], corners[..., :1, :].shape)
        return jnp.concatenate([corners, pad], axis=-2)

    def __call__(self, points: jax.Array | None, labels: jax.Array | None, boxes: jax.Array | None,
                 masks: jax.Array | None, batch: int) -> tuple[jax.Array, jax.Array]:
        """Returns (sparse [B, O, N, C], dense [B, O or 1, h, w, C])."""
        sparse = None
        if points is not None:
            sparse = self.embed_points(points, labels, pad=boxes is None)
        if boxes is not None:
            b = self.embed_boxes(boxes)
            sparse = b if sparse is None else jnp.concatenate([sparse, b], axis=2)
        if masks is not None:  # [B, O, 4h, 4w]
            dense = self.mask_embed(masks)
        else:
            s = self.cfg.embed_size
            dense = jnp.broadcast_to(self.no_mask_embed()[0], (batch, 1, s, s, self.cfg.hidden_size))
        return sparse, dense
