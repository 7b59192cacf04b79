"""Two-way-transformer mask decoder: multimask logits, IoU head, object-score head, high-res skip features."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from omnir1_jax.models.sam2.common import ConvTranspose2x2, FeedForward, conv, dense, gelu, layer_norm
from omnir1_jax.models.sam2.config import Sam2Config
from omnir1_jax.models.sam2.prompt import Table


class Attention(nn.Module):
    """Multi-head attention with an optionally down-projected inner width (SAM's ``Sam2Attention``)."""

    hidden: int
    heads: int
    downsample: int = 1

    @nn.compact
    def __call__(self, q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:  # [..., N, C]
        inner = self.hidden // self.downsample
        hd = inner // self.heads
        split = lambda x: x.reshape(*x.shape[:-1], self.heads, hd)  # noqa: E731
        q = split(dense(inner, ("sam_embed", "sam_heads"), name="q_proj")(q))
        k = split(dense(inner, ("sam_embed", "sam_heads"), name="k_proj")(k))
        v = split(dense(inner, ("sam_embed", "sam_heads"), name="v_proj")(v))
        logits = jnp.einsum("...qhd,...khd->...hqk", q, k) * hd**-0.5
        out = jnp.einsum("...hqk,...khd->...qhd", jax.nn.softmax(logits, axis=-1), v)
        return dense(self.hidden, ("sam_heads", "sam_embed"), name="o_proj")(out.reshape(*out.shape[:-2], inner))


class TwoWayBlock(nn.Module):
    """Token self-attn, token->image attn, MLP, image->token attn (post-norm)."""

    cfg: Sam2Config
    skip_first_layer_pe: bool

    @nn.compact
    def __call__(self, queries, keys, query_pe, key_pe):
        cfg = self.cfg
        c, nh, ds = cfg.hidden_size, cfg.decoder_num_heads, cfg.attention_downsample_rate
        if self.skip_first_layer_pe:
            queries = Attention(c, nh, 1, name="self_attn")(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + Attention(c, nh, 1, name="self_attn")(q, q, queries)
        queries = layer_norm(name="layer_norm1")(queries)
        q, k = queries + query_pe, keys + key_pe
        queries = queries + Attention(c, nh, ds, name="cross_attn_token_to_image")(q, k, keys)
        queries = layer_norm(name="layer_norm2")(queries)
        queries = queries + FeedForward(cfg.decoder_mlp_dim, c, cfg.decoder_num_layers, name="mlp")(queries)
        queries = layer_norm(name="layer_norm3")(queries)
        q, k = queries + query_pe, keys + key_pe
        keys = keys + Attention(c, nh, ds, name="cross_attn_image_to_token")(k, q, queries)
        keys = layer_norm(name="layer_norm4")(keys)
        return queries, keys


class TwoWayTransformer(nn.Module):
    """Stack of :class:`TwoWayBlock` plus a final token->image attention."""

    cfg: Sam2Config

    @nn.compact
    def __call__(self, point_emb, image_emb, image_pe):  # [B,O,N,C], [B,O,HW,C], [1|B,1|O,HW,C]
        cfg = self.cfg
        queries, keys = point_emb, image_emb
        for i in range(cfg.decoder_num_layers):
            queries, keys = TwoWayBlock(cfg, i == 0, name=f"layers_{i}")(queries, keys, point_emb, image_pe)
        q, k = queries + point_emb, keys + image_pe
        attn = Attention(cfg.hidden_size, cfg.decoder_num_heads, cfg.attention_downsample_rate,
                         name="final_attn_token_to_image")(q, k, keys)
        return layer_norm(name="layer_norm_final_attn")(queries + attn), keys


class MaskDecoder(nn.Module):
    """SAM2 mask decoder; ``conv_s0``/``conv_s1`` project the high-res FPN maps (applied by the image encoder)."""

    cfg: Sam2Config

    def setup(self) -> None:
        cfg = self.cfg
        c, n_tok = cfg.hidden_size, cfg.num_multimask_outputs + 1
        self.iou_token = Table(1, c)
        self.mask_tokens = Table(n_tok, c)
        self.obj_score_token = Table(1, c)
        self.transformer = TwoWayTransformer(cfg)
        self.upscale_conv1 = ConvTranspose2x2(c // 4)
        self.upscale_conv2 = ConvTranspose2x2(c // 8)
        self.upscale_layer_norm = layer_norm(1e-6)
        self.output_hypernetworks_mlps = [FeedForward(c, c // 8, 3) for _ in range(n_tok)]
        self.iou_prediction_head = FeedForward(cfg.iou_head_hidden_dim, n_tok, cfg.iou_head_depth,
                                               sigmoid_output=True)
        self.conv_s0 = conv(c // 8, 1)
        self.conv_s1 = conv(c // 4, 1)
        self.pred_obj_score_head = FeedForward(c, 1, 3)

    def project_high_res(self, feat_s0: jax.Array, feat_s1: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Projects the two high-res FPN maps once per image (reused by every prompt)."""
        return self.conv_s0(feat_s0), self.conv_s1(feat_s1)

    def __call__(self, image_emb, image_pe, sparse, dense_emb, high_res, multimask_output: bool):
        """image_emb [B,h,w,C], image_pe [h,w,C], sparse [B,O,N,C], dense [B,1|O,h,w,C], high_res (s0, s1).

        Returns masks [B,O,M,4h,4w], iou [B,O,M], sam tokens [B,O,M',C], object-score logits [B,O,1].
        """
        cfg = self.cfg
        b, h, w, c = image_emb.shape
        o = sparse.shape[1]
        n_tok = cfg.num_multimask_outputs + 1
        out_tokens = jnp.concatenate([self.obj_score_token(), self.iou_token(), self.mask_tokens()], axis=0)
        tokens = jnp.concatenate([jnp.broadcast_to(out_tokens, (b, o, *out_tokens.shape)), sparse], axis=2)
        src = (image_emb[:, None] + dense_emb).reshape(b, -1, h * w, c)
        src = jnp.broadcast_to(src, (b, o, h * w, c))
        src = nn.with_logical_constraint(src, ("act_batch", None, "act_length", "act_embed"))
        pe = image_pe.reshape(1, 1, h * w, c)
        hs, src = self.transformer(tokens, src, pe)
        iou_out, mask_out = hs[:, :, 1], hs[:, :, 2: 2 + n_tok]
        feat_s0, feat_s1 = high_res  # [B, 4h, 4w, C/8], [B, 2h, 2w, C/4]
        up = self.upscale_conv1(src.reshape(b, o, h, w, c)) + feat_s1[:, None]
        up = gelu(self.upscale_layer_norm(up))
        up = gelu(self.upscale_conv2(up) + feat_s0[:, None])  # [B, O, 4h, 4w, C/8]
        hyper = jnp.stack([m(mask_out[:, :, i]) for i, m in enumerate(self.output_hypernetworks_mlps)], axis=2)
        masks = jnp.einsum("bomc,bohwc->bomhw", hyper, up)
        iou = self.iou_prediction_head(iou_out)
        obj = self.pred_obj_score_head(hs[:, :, 0])
        if multimask_output:
            return masks[:, :, 1:], iou[:, :, 1:], mask_out[:, :, 1:], obj
        if cfg.dynamic_multimask_via_stability:
            masks, iou = self._dynamic_multimask(masks, iou)
        else:
            masks, iou = masks[:, :, :1], iou[:, :, :1]
        return masks, iou, mask_out[:, :, :1], obj

    def _dynamic_multimask(self, masks: jax.Array, iou: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Single-mask output that falls back to the best multimask output when token 0 is unstable."""
        cfg = self.cfg
        best = jnp.argmax(iou[:, :, 1:], axis=-1)  # [B, O]
        best_mask = jnp.take_along_axis(masks[:, :, 1:], best[:, :, None, None, None], axis=2)
        best_iou = jnp.take_along_axis(iou[:, :, 1:], best[:, :, None], axis=2)
        single = masks[:, :, :1]
        flat = single.reshape(*single.shape[:3], -1)
        area_i = jnp.sum(flat > cfg.dynamic_multimask_stability_delta, axis=-1).astype(jnp.float32)
        area_u = jnp.sum(flat > -cfg.dynamic_multimask_stability_delta, axis=-1).astype(jnp.float32)
        stability = jnp.where(area_u > 0, area_i / jnp.where(area_u > 0, area_u, 1.0), 1.0)
        stable = stability >= cfg.dynamic_multimask_stability_thresh  # [B, O, 1]
        return (jnp.where(stable[..., None, None], single, best_mask),
                jnp.where(stable, iou[:, :, :1], best_iou))
