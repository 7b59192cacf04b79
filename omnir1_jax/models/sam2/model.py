"""SAM2 Linen models: the image model (``Sam2Model``) and the per-frame pieces of the video model."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from omnir1_jax.models.sam2.common import (FeedForward, bilinear_matrix, conv, dense, pinit, resize_2d, sine_1d,
                                          sine_position_encoding)
from omnir1_jax.models.sam2.config import Sam2Config
from omnir1_jax.models.sam2.mask_decoder import MaskDecoder
from omnir1_jax.models.sam2.memory import MemoryAttention, MemoryEncoder
from omnir1_jax.models.sam2.neck import VisionEncoder
from omnir1_jax.models.sam2.prompt import PositionalEmbedding, PromptEncoder, image_wide_positional_embeddings

NO_OBJ_SCORE = -1024.0
Features = dict[str, jax.Array]


class Sam2Model(nn.Module):
    """SAM2 image model: ``apply({'params': p}, pixel_values, input_boxes=...)`` like transformers' ``Sam2Model``."""

    cfg: Sam2Config

    def setup(self) -> None:
        cfg = self.cfg
        self.shared_image_embedding = PositionalEmbedding(cfg.hidden_size)
        self.vision_encoder = VisionEncoder(cfg)
        self.prompt_encoder = PromptEncoder(cfg)
        self.mask_decoder = MaskDecoder(cfg)
        self.no_memory_embedding = self.param(
            "no_memory_embedding", pinit(nn.initializers.zeros, ("unsharded", "unsharded_2", "sam_embed")),
            (1, 1, cfg.hidden_size))

    def image_features(self, pixel_values: jax.Array) -> Features:
        """Runs the vision encoder once per image (share the result across prompts/rollouts/objects).

        Returns ``s0`` [B,4h,4w,C/8], ``s1`` [B,2h,2w,C/4] (projected skips), ``feat`` [B,h,w,C] (raw top level)
        and ``pos`` [h,w,C] (its sine encoding).
        """
        feats, poses = self.vision_encoder(pixel_values)
        s0, s1 = self.mask_decoder.project_high_res(feats[0], feats[1])
        return {"s0": s0, "s1": s1, "feat": feats[-1], "pos": poses[-1]}

    def decode(self, features: Features, input_points: jax.Array | None = None,
               input_labels: jax.Array | None = None, input_boxes: jax.Array | None = None,
               input_masks: jax.Array | None = None, multimask_output: bool = True,
               image_embed: jax.Array | None = None) -> dict[str, jax.Array]:
        """Decodes prompts against precomputed :meth:`image_features`.

        points [B,O,N,2] + labels [B,O,N] and/or boxes [B,O,4] in input-pixel coords (``cfg.image_size`` frame),
        masks [B,1|O,4h,4w] (already at the mask-input size, unlike HF which resizes). ``image_embed``
        overrides the top-level map (memory-conditioned in video).
        Returns ``pred_masks`` [B,O,M,4h,4w], ``iou_scores`` [B,O,M], ``object_score_logits`` [B,O,1],
        ``sam_tokens`` [B,O,M,C].
        """
        if image_embed is None:
            image_embed = features["feat"] + self.no_memory_embedding[0]
        b = image_embed.shape[0]
        if input_points is not None and input_labels is None:
            input_labels = jnp.ones(input_points.shape[:-1], jnp.int32)
        if input_points is None and input_boxes is None:
            input_points = jnp.zeros((b, 1, 1, 2), image_embed.dtype)
            input_labels = -jnp.ones((b, 1, 1), jnp.int32)
        sparse, dense_emb = self.prompt_encoder(input_points, input_labels, input_boxes, input_masks, b)
        pe = image_wide_positional_embeddings(self.shared_image_embedding, self.cfg.embed_size)
        masks, iou, tokens, obj = self.mask_decoder(image_embed, pe, sparse, dense_emb,
                                                    (features["s0"], features["s1"]), multimask_output)
        return {"pred_masks": masks, "iou_scores": iou, "object_score_logits": obj, "sam_tokens": tokens}

    def __call__(self, pixel_values: jax.Array, input_points: jax.Array | None = None,
                 input_labels: jax.Array | None = None, input_boxes: jax.Array | None = None,
                 input_masks: jax.Array | None = None, multimask_output: bool = True) -> dict[str, jax.Array]:
        """pixel_values [B,3,H,W] -> dict(pred_masks [B,O,M,4h,4w], iou_scores [B,O,M], object_score_logits)."""
        pixel_values = nn.with_logical_constraint(pixel_values, ("act_batch", None, "act_spatial", None))
        out = self.decode(self.image_features(pixel_values), input_points, input_labels, input_boxes,
                          input_masks, multimask_output)
        out.pop("sam_tokens")
        return out

    def init_all(self, pixel_values: jax.Array) -> Any:
        """Touches every image-model parameter (used only by ``init``), mask prompts included."""
        f = self.image_features(pixel_values)
        b, m = pixel_values.shape[0], self.cfg.mask_size
        out = self.decode(f, input_boxes=jnp.zeros((b, 1, 4)), input_masks=jnp.zeros((b, 1, m, m)))
        return out["pred_masks"].sum() + self.decode(f, input_boxes=jnp.zeros((b, 1, 4)))["pred_masks"].sum()


class Sam2VideoModel(Sam2Model):
    """SAM2 with the memory modules; per-frame methods used by :mod:`omnir1_jax.models.sam2.video`."""

    def setup(self) -> None:
        super().setup()
        cfg = self.cfg
        c, mem = cfg.hidden_size, cfg.memory_encoder_output_channels
        u = ("unsharded", "unsharded_2", "sam_embed")
        self.memory_attention = MemoryAttention(cfg)
        self.memory_encoder = MemoryEncoder(cfg)
        self.no_memory_positional_encoding = self.param("no_memory_positional_encoding",
                                                        pinit(nn.initializers.zeros, u), (1, 1, c))
        self.memory_temporal_positional_encoding = self.param(
            "memory_temporal_positional_encoding",
            pinit(nn.initializers.normal(0.02), ("unsharded", "unsharded_2", "unsharded_3", "sam_embed")),
            (cfg.num_maskmem, 1, 1, mem))
        self.no_object_pointer = self.param("no_object_pointer", pinit(nn.initializers.zeros, ("unsharded",
                                                                                             "sam_embed")), (1, c))
        self.mask_downsample = conv(1, 4, 4)
        self.object_pointer_proj = FeedForward(c, c, 3)
        if cfg.enable_temporal_pos_encoding_for_object_pointers:
            self.temporal_positional_encoding_projection_layer = dense(mem)
        if cfg.enable_occlusion_spatial_embedding:
            self.occlusion_spatial_embedding_parameter = self.param(
                "occlusion_spatial_embedding_parameter", pinit(nn.initializers.zeros, ("unsharded", "sam_embed")),
                (1, mem))

    def frame_step(self, features: Features, image_embed: jax.Array, input_points: jax.Array | None,
                   input_labels: jax.Array | None, multimask_output: bool) -> dict[str, jax.Array]:
        """SAM heads on one frame for O objects (batch = objects): HF ``_single_frame_forward``.

        features: one frame's (s0, s1) broadcast to [O, ...]; image_embed [O,h,w,C]; points [O,1,N,2].
        Returns low-res ``pred_masks`` [O,4h,4w], ``high_res_masks`` [O,H,W], ``object_pointer`` [O,C],
        ``object_score_logits`` [O,1].
        """
        out = self.decode(features, input_points, input_labels, None, None, multimask_output, image_embed)
        masks, iou, tokens, obj = (out["pred_masks"][:, 0], out["iou_scores"][:, 0], out["sam_tokens"][:, 0],
                                   out["object_score_logits"][:, 0])  # [O,M,h,w], [O,M], [O,M,C], [O,1]
        appearing = obj > self.cfg.object_score_threshold
        masks = jnp.where(appearing[:, :, None, None], masks, NO_OBJ_SCORE)
        if multimask_output:
            best = jnp.argmax(iou, axis=-1)
            low = jnp.take_along_axis(masks, best[:, None, None, None], axis=1)[:, 0]
            token = jnp.take_along_axis(tokens, best[:, None, None], axis=1)[:, 0]
        else:
            low, token = masks[:, 0], tokens[:, 0]
        s = self.cfg.image_size
        high = resize_2d(low, bilinear_matrix(low.shape[-2], s), bilinear_matrix(low.shape[-1], s))
        ptr = self.object_pointer_proj(token)
        lam = appearing.astype(ptr.dtype)
        ptr = lam * ptr + (1 - lam) * self.no_object_pointer
        return {"pred_masks": low, "high_res_masks": high, "object_pointer": ptr, "object_score_logits": obj}

    def encode_memory(self, feat: jax.Array, high_res_masks: jax.Array, object_score_logits: jax.Array,
                      binarize: bool) -> jax.Array:
        """Memory features [O,h,w,mem] (rounded through bf16 like HF) from feat [O,h,w,C] and masks [O,H,W]."""
        cfg = self.cfg
        if high_res_masks.shape[-1] != cfg.mask_size * 4:
            raise NotImplementedError("memory masks must be at 4x the low-res mask size")
        m = (high_res_masks > 0).astype(feat.dtype) if binarize else jax.nn.sigmoid(high_res_masks)
        m = m * cfg.sigmoid_scale_for_mem_enc + cfg.sigmoid_bias_for_mem_enc
        x, _ = self.memory_encoder(feat, m)
        if cfg.enable_occlusion_spatial_embedding:
            absent = 1.0 - (object_score_logits > cfg.object_score_threshold).astype(x.dtype)  # [O, 1]
            x = x + absent[:, :, None, None] * self.occlusion_spatial_embedding_parameter[0]
        return x.astype(jnp.bfloat16).astype(feat.dtype) if cfg.round_memory_to_bf16 else x

    def memory_pos(self) -> jax.Array:
        """Spatial sine encoding of memory features: [h*w, mem]."""
        s = self.cfg.embed_size
        return jnp.asarray(sine_position_encoding(s, s, self.cfg.memory_encoder_output_channels // 2)).reshape(
            s * s, -1)

    def temporal_codes(self) -> jax.Array:
        """The learned temporal encodings [num_maskmem, mem] (index offset-1; cond frames use the last)."""
        return self.memory_temporal_positional_encoding[:, 0, 0]

    def pointer_pos(self, diffs: jax.Array, max_ptr: int) -> jax.Array:
        """Projected temporal encoding of object pointers: diffs [...] (frames) -> [..., mem]."""
        cfg = self.cfg
        if not cfg.enable_temporal_pos_encoding_for_object_pointers:
            return jnp.zeros((*diffs.shape, cfg.memory_encoder_output_channels), jnp.float32)
        pe = sine_1d(diffs.astype(jnp.float32) / float(max(max_ptr - 1, 1)), cfg.hidden_size)
        return self.temporal_positional_encoding_projection_layer(pe)

    def condition(self, feat: jax.Array, pos: jax.Array, mem: jax.Array, mem_pos: jax.Array, num_ptr: int,
                  key_mask: jax.Array) -> jax.Array:
        """Memory attention: feat [O,h,w,C], pos [h,w,C], mem/mem_pos [O,Nm,mem], key_mask [O,Nm] -> [O,h,w,C]."""
        o, h, w, c = feat.shape
        out = self.memory_attention(feat.reshape(o, h * w, c), pos.reshape(1, h * w, c), mem, mem_pos, num_ptr,
                                    key_mask)
        return out.reshape(o, h, w, c)

    def init_all(self, pixel_values: jax.Array) -> Any:
        """Touches every parameter (used only by ``init``)."""
        Sam2Model.init_all(self, pixel_values)
        f = self.image_features(pixel_values)
        o = pixel_values.shape[0]
        out = self.frame_step(f, f["feat"], None, None, True)
        mem = self.encode_memory(f["feat"], out["high_res_masks"], out["object_score_logits"], False)
        hw = mem.shape[1] * mem.shape[2]
        mem = mem.reshape(o, hw, -1)
        ptr = self.pointer_pos(jnp.ones((o, 1)), 4) + out["object_pointer"][:, None, :mem.shape[-1]]
        self.mask_downsample(jnp.zeros((1, 8, 8, 1)))
        mem = jnp.concatenate([mem, ptr], axis=1)
        cond = self.condition(f["feat"], f["pos"], mem, mem, 1, jnp.ones(mem.shape[:2], bool))
        return cond.sum() + self.no_memory_positional_encoding.sum() + self.temporal_codes().sum()
