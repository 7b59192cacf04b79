"""SAM2 configuration: one frozen, hashable dataclass for the image and video model (usable as a static arg)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class Sam2Config:
    """All SAM2 hyper-parameters, flattened (Hiera backbone, FPN neck, prompt encoder, mask decoder, memory)."""

    # ---- Hiera backbone ----
    hiera_hidden_size: int = 96
    num_channels: int = 3
    patch_kernel_size: tuple[int, int] = (7, 7)
    patch_stride: tuple[int, int] = (4, 4)
    patch_padding: tuple[int, int] = (3, 3)
    query_stride: tuple[int, int] = (2, 2)
    window_pos_embed_bkg_size: tuple[int, int] = (7, 7)
    num_query_pool_stages: int = 3
    blocks_per_stage: tuple[int, ...] = (1, 2, 7, 2)
    embed_dim_per_stage: tuple[int, ...] = (96, 192, 384, 768)
    num_heads_per_stage: tuple[int, ...] = (1, 2, 4, 8)
    window_size_per_stage: tuple[int, ...] = (8, 4, 14, 7)
    global_attention_blocks: tuple[int, ...] = (5, 7, 9)
    mlp_ratio: float = 4.0
    backbone_layer_norm_eps: float = 1e-6
    # ---- FPN neck ----
    backbone_channel_list: tuple[int, ...] = (768, 384, 192, 96)
    backbone_feature_sizes: tuple[tuple[int, int], ...] = ((256, 256), (128, 128), (64, 64))
    fpn_hidden_size: int = 256
    fpn_top_down_levels: tuple[int, ...] = (2, 3)
    num_feature_levels: int = 3
    # ---- prompt encoder ----
    image_size: int = 1024
    patch_size: int = 16
    mask_input_channels: int = 16
    num_point_embeddings: int = 4
    prompt_layer_norm_eps: float = 1e-6
    # ---- mask decoder ----
    decoder_mlp_dim: int = 2048
    decoder_num_layers: int = 2
    decoder_num_heads: int = 8
    attention_downsample_rate: int = 2
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    dynamic_multimask_via_stability: bool = True
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98
    # ---- video: memory ----
    num_maskmem: int = 7
    sigmoid_scale_for_mem_enc: float = 20.0
    sigmoid_bias_for_mem_enc: float = -10.0
    enable_occlusion_spatial_embedding: bool = True
    multimask_output_in_sam: bool = True
    multimask_min_pt_num: int = 0
    multimask_max_pt_num: int = 1
    multimask_output_for_tracking: bool = True
    max_object_pointers_in_encoder: int = 16
    enable_temporal_pos_encoding_for_object_pointers: bool = True
    memory_attention_hidden_size: int = 256
    memory_attention_num_layers: int = 4
    memory_attention_num_heads: int = 1
    memory_attention_downsample_rate: int = 1
    memory_attention_ff_size: int = 2048
    memory_attention_ff_act: str = "relu"
    memory_attention_rope_feat_sizes: tuple[int, int] = (64, 64)
    memory_attention_rope_theta: float = 10000.0
    memory_encoder_hidden_size: int = 256
    memory_encoder_output_channels: int = 64
    mask_downsampler_embed_dim: int = 256
    mask_downsampler_kernel_size: int = 3
    mask_downsampler_stride: int = 2
    mask_downsampler_padding: int = 1
    mask_downsampler_total_stride: int = 16
    memory_fuser_num_layers: int = 2
    memory_fuser_embed_dim: int = 256
    memory_fuser_intermediate_dim: int = 1024
    memory_fuser_kernel_size: int = 7
    memory_fuser_padding: int = 3
    round_memory_to_bf16: bool = True  # HF/original store spatial memories in bfloat16; False keeps fp32
    # The object-score gate: a frame's object counts as present when its score logit exceeds this. 0 is SAM2's
    # (and transformers') rule; a checkpoint whose score head was trained with a weighted BCE puts the
    # p(present) = 1/2 point at log(pos_weight) instead (not part of transformers' config: to_hf drops it).
    object_score_threshold: float = 0.0

    # ------------------------------------------------------------------ derived
    @property
    def hidden_size(self) -> int:
        """Channel width shared by the neck, prompt encoder and mask decoder."""
        return self.fpn_hidden_size

    @property
    def embed_size(self) -> int:
        """Side of the lowest-resolution feature map (image_size / patch_size)."""
        return self.image_size // self.patch_size

    @property
    def mask_size(self) -> int:
        """Side of the low-resolution mask logits (4x the embedding side)."""
        return 4 * self.embed_size

    def block_specs(self) -> list[dict[str, Any]]:
        """Per-block static shapes of Hiera: dim, dim_out, heads, window size, query stride."""
        specs, total = [], 0
        for stage, n in enumerate(self.blocks_per_stage):
            for b in range(n):
                first = stage > 0 and b == 0
                dim = self.embed_dim_per_stage[stage - 1] if first else self.embed_dim_per_stage[stage]
                window = self.window_size_per_stage[stage - 1] if first else self.window_size_per_stage[stage]
                window = 0 if total in self.global_attention_blocks else window
                qs = self.query_stride if (0 < stage <= self.num_query_pool_stages and b == 0) else None
                specs.append(dict(dim=dim, dim_out=self.embed_dim_per_stage[stage], window=window,
                                  heads=self.num_heads_per_stage[stage], query_stride=qs))
                total += 1
        return specs

    def stage_ends(self) -> list[int]:
        """Indices of the last block of each stage (their outputs feed the FPN)."""
        return (np.cumsum(self.blocks_per_stage) - 1).tolist()

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (tuples become lists)."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Sam2Config":
        """Inverse of :meth:`to_dict` (lists become tuples so the config stays hashable)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown Sam2Config fields: {sorted(unknown)}")
        return cls(**{k: _tupled(v) for k, v in d.items()})

    @classmethod
    def from_json(cls, text: str) -> "Sam2Config":
        """Parses :meth:`to_json` output."""
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_hf(cls, hf: Any) -> "Sam2Config":
        """Builds from a transformers ``Sam2Config`` or ``Sam2VideoConfig`` (image configs keep video defaults)."""
        vc, bb = hf.vision_config, hf.vision_config.backbone_config
        pe, md = hf.prompt_encoder_config, hf.mask_decoder_config
        kw: dict[str, Any] = dict(
            hiera_hidden_size=bb.hidden_size, num_channels=bb.num_channels,
            patch_kernel_size=bb.patch_kernel_size, patch_stride=bb.patch_stride, patch_padding=bb.patch_padding,
            query_stride=bb.query_stride, window_pos_embed_bkg_size=bb.window_positional_embedding_background_size,
            num_query_pool_stages=bb.num_query_pool_stages, blocks_per_stage=bb.blocks_per_stage,
            embed_dim_per_stage=bb.embed_dim_per_stage, num_heads_per_stage=bb.num_attention_heads_per_stage,
            window_size_per_stage=bb.window_size_per_stage, global_attention_blocks=bb.global_attention_blocks,
            mlp_ratio=bb.mlp_ratio, backbone_layer_norm_eps=bb.layer_norm_eps,
            backbone_channel_list=vc.backbone_channel_list, backbone_feature_sizes=vc.backbone_feature_sizes,
            fpn_hidden_size=vc.fpn_hidden_size, fpn_top_down_levels=vc.fpn_top_down_levels,
            num_feature_levels=vc.num_feature_levels,
            image_size=pe.image_size, patch_size=pe.patch_size, mask_input_channels=pe.mask_input_channels,
            num_point_embeddings=pe.num_point_embeddings, prompt_layer_norm_eps=pe.layer_norm_eps,
            decoder_mlp_dim=md.mlp_dim, decoder_num_layers=md.num_hidden_layers,
            decoder_num_heads=md.num_attention_heads, attention_downsample_rate=md.attention_downsample_rate,
            num_multimask_outputs=md.num_multimask_outputs, iou_head_depth=md.iou_head_depth,
            iou_head_hidden_dim=md.iou_head_hidden_dim,
            dynamic_multimask_via_stability=md.dynamic_multimask_via_stability,
            dynamic_multimask_stability_delta=md.dynamic_multimask_stability_delta,
            dynamic_multimask_stability_thresh=md.dynamic_multimask_stability_thresh,
        )
        if getattr(hf, "model_type", "") == "sam2_video":
            rope = getattr(hf, "rope_parameters", None) or {}
            kw.update(
                num_maskmem=hf.num_maskmem, sigmoid_scale_for_mem_enc=hf.sigmoid_scale_for_mem_enc,
                sigmoid_bias_for_mem_enc=hf.sigmoid_bias_for_mem_enc,
                enable_occlusion_spatial_embedding=hf.enable_occlusion_spatial_embedding,
                multimask_output_in_sam=hf.multimask_output_in_sam, multimask_min_pt_num=hf.multimask_min_pt_num,
                multimask_max_pt_num=hf.multimask_max_pt_num,
                multimask_output_for_tracking=hf.multimask_output_for_tracking,
                max_object_pointers_in_encoder=hf.max_object_pointers_in_encoder,
                enable_temporal_pos_encoding_for_object_pointers=hf.enable_temporal_pos_encoding_for_object_pointers,
                memory_attention_hidden_size=hf.memory_attention_hidden_size,
                memory_attention_num_layers=hf.memory_attention_num_layers,
                memory_attention_num_heads=hf.memory_attention_num_attention_heads,
                memory_attention_downsample_rate=hf.memory_attention_downsample_rate,
                memory_attention_ff_size=hf.memory_attention_feed_forward_hidden_size,
                memory_attention_ff_act=hf.memory_attention_feed_forward_hidden_act,
                memory_attention_rope_feat_sizes=hf.memory_attention_rope_feat_sizes,
                memory_attention_rope_theta=float(rope.get("rope_theta", 10000.0)),
                memory_encoder_hidden_size=hf.memory_encoder_hidden_size,
                memory_encoder_output_channels=hf.memory_encoder_output_channels,
                mask_downsampler_embed_dim=hf.mask_downsampler_embed_dim,
                mask_downsampler_kernel_size=hf.mask_downsampler_kernel_size,
                mask_downsampler_stride=hf.mask_downsampler_stride,
                mask_downsampler_padding=hf.mask_downsampler_padding,
                mask_downsampler_total_stride=hf.mask_downsampler_total_stride,
                memory_fuser_num_layers=hf.memory_fuser_num_layers, memory_fuser_embed_dim=hf.memory_fuser_embed_dim,
                memory_fuser_intermediate_dim=hf.memory_fuser_intermediate_dim,
                memory_fuser_kernel_size=hf.memory_fuser_kernel_size, memory_fuser_padding=hf.memory_fuser_padding,
            )
            if hf.max_cond_frame_num != -1:
                raise NotImplementedError("only max_cond_frame_num=-1 (all conditioning frames) is supported")
        return cls.from_dict(kw)

    def to_hf(self, video: bool = True) -> Any:
        """The equivalent transformers ``Sam2VideoConfig`` (or ``Sam2Config`` if not ``video``)."""
        from transformers import Sam2Config as HfSam2Config
        from transformers import Sam2VideoConfig

        backbone = dict(
            model_type="sam2_hiera_det_model", hidden_size=self.hiera_hidden_size, num_channels=self.num_channels,
            image_size=[self.image_size, self.image_size], patch_kernel_size=list(self.patch_kernel_size),
            patch_stride=list(self.patch_stride), patch_padding=list(self.patch_padding),
            query_stride=list(self.query_stride),
            window_positional_embedding_background_size=list(self.window_pos_embed_bkg_size),
            num_query_pool_stages=self.num_query_pool_stages, blocks_per_stage=list(self.blocks_per_stage),
            embed_dim_per_stage=list(self.embed_dim_per_stage),
            num_attention_heads_per_stage=list(self.num_heads_per_stage),
            window_size_per_stage=list(self.window_size_per_stage),
            global_attention_blocks=list(self.global_attention_blocks), mlp_ratio=self.mlp_ratio,
            layer_norm_eps=self.backbone_layer_norm_eps)
        vision = dict(backbone_config=backbone, backbone_channel_list=list(self.backbone_channel_list),
                      backbone_feature_sizes=[list(s) for s in self.backbone_feature_sizes],
                      fpn_hidden_size=self.fpn_hidden_size, fpn_top_down_levels=list(self.fpn_top_down_levels),
                      num_feature_levels=self.num_feature_levels)
        prompt = dict(hidden_size=self.hidden_size, image_size=self.image_size, patch_size=self.patch_size,
                      mask_input_channels=self.mask_input_channels, num_point_embeddings=self.num_point_embeddings,
                      layer_norm_eps=self.prompt_layer_norm_eps)
        decoder = dict(hidden_size=self.hidden_size, mlp_dim=self.decoder_mlp_dim,
                       num_hidden_layers=self.decoder_num_layers, num_attention_heads=self.decoder_num_heads,
                       attention_downsample_rate=self.attention_downsample_rate,
                       num_multimask_outputs=self.num_multimask_outputs, iou_head_depth=self.iou_head_depth,
                       iou_head_hidden_dim=self.iou_head_hidden_dim,
                       dynamic_multimask_via_stability=self.dynamic_multimask_via_stability,
                       dynamic_multimask_stability_delta=self.dynamic_multimask_stability_delta,
                       dynamic_multimask_stability_thresh=self.dynamic_multimask_stability_thresh)
        if not video:
            return HfSam2Config(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)
        return Sam2VideoConfig(
            vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder,
            image_size=self.image_size, num_maskmem=self.num_maskmem,
            sigmoid_scale_for_mem_enc=self.sigmoid_scale_for_mem_enc,
            sigmoid_bias_for_mem_enc=self.sigmoid_bias_for_mem_enc,
            enable_occlusion_spatial_embedding=self.enable_occlusion_spatial_embedding,
            multimask_output_in_sam=self.multimask_output_in_sam, multimask_min_pt_num=self.multimask_min_pt_num,
            multimask_max_pt_num=self.multimask_max_pt_num,
            multimask_output_for_tracking=self.multimask_output_for_tracking,
            max_object_pointers_in_encoder=self.max_object_pointers_in_encoder,
            enable_temporal_pos_encoding_for_object_pointers=self.enable_temporal_pos_encoding_for_object_pointers,
            memory_attention_hidden_size=self.memory_attention_hidden_size,
            memory_attention_num_layers=self.memory_attention_num_layers,
            memory_attention_num_attention_heads=self.memory_attention_num_heads,
            memory_attention_downsample_rate=self.memory_attention_downsample_rate,
            memory_attention_feed_forward_hidden_size=self.memory_attention_ff_size,
            memory_attention_feed_forward_hidden_act=self.memory_attention_ff_act,
            memory_attention_rope_feat_sizes=list(self.memory_attention_rope_feat_sizes),
            rope_parameters={"rope_type": "axial", "rope_theta": self.memory_attention_rope_theta},
            memory_encoder_hidden_size=self.memory_encoder_hidden_size,
            memory_encoder_output_channels=self.memory_encoder_output_channels,
            mask_downsampler_embed_dim=self.mask_downsampler_embed_dim,
            mask_downsampler_kernel_size=self.mask_downsampler_kernel_size,
            mask_downsampler_stride=self.mask_downsampler_stride,
            mask_downsampler_padding=self.mask_downsampler_padding,
            mask_downsampler_total_stride=self.mask_downsampler_total_stride,
            memory_fuser_num_layers=self.memory_fuser_num_layers, memory_fuser_embed_dim=self.memory_fuser_embed_dim,
            memory_fuser_intermediate_dim=self.memory_fuser_intermediate_dim,
            memory_fuser_kernel_size=self.memory_fuser_kernel_size, memory_fuser_padding=self.memory_fuser_padding)

    # ------------------------------------------------------------------ presets
    @classmethod
    def tiny(cls, image_size: int = 64) -> "Sam2Config":
        """A few-hundred-kB SAM2 with the real architecture for tests and the synthetic world.

        ``image_size`` (a multiple of 64; default 64) scales only the input side and the feature-map sizes derived
        from it (strides 4 / 8 / 16, memory attention at stride 16), so the parameter shapes do not change and a
        checkpoint of one size initialises another.
        """
        if image_size <= 0 or image_size % 64:
            raise ValueError(f"Sam2Config.tiny: image_size={image_size} must be a positive multiple of 64 "
                             "(Hiera's last stage is image_size/32 wide and windows 2)")
        s = image_size
        return cls(
            hiera_hidden_size=16, blocks_per_stage=(1, 2, 1, 1), embed_dim_per_stage=(16, 32, 64, 128),
            num_heads_per_stage=(1, 2, 2, 4), window_size_per_stage=(4, 4, 2, 2), global_attention_blocks=(2,),
            window_pos_embed_bkg_size=(4, 4), backbone_channel_list=(128, 64, 32, 16),
            backbone_feature_sizes=((s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16)), fpn_hidden_size=128,
            image_size=s, patch_size=16,
            decoder_mlp_dim=64, decoder_num_heads=2, iou_head_hidden_dim=32, num_maskmem=3,
            max_object_pointers_in_encoder=4, memory_attention_hidden_size=128, memory_attention_num_layers=2,
            memory_attention_ff_size=64, memory_attention_rope_feat_sizes=(s // 16, s // 16),
            memory_encoder_hidden_size=128,
            memory_encoder_output_channels=64, mask_downsampler_embed_dim=128, memory_fuser_embed_dim=128,
            memory_fuser_intermediate_dim=64,
        )

    @classmethod
    def hiera_tiny(cls) -> "Sam2Config":
        """sam2.1_hiera_tiny (transformers' defaults are this model)."""
        return cls()

    @classmethod
    def hiera_small(cls) -> "Sam2Config":
        """sam2.1_hiera_small."""
        return cls(blocks_per_stage=(1, 2, 11, 2), global_attention_blocks=(7, 10, 13))

    @classmethod
    def hiera_base_plus(cls) -> "Sam2Config":
        """sam2.1_hiera_base_plus."""
        return cls(hiera_hidden_size=112, blocks_per_stage=(2, 3, 16, 3), embed_dim_per_stage=(112, 224, 448, 896),
                   num_heads_per_stage=(2, 4, 8, 16), global_attention_blocks=(12, 16, 20),
                   window_pos_embed_bkg_size=(14, 14), backbone_channel_list=(896, 448, 224, 112))

    @classmethod
    def hiera_large(cls) -> "Sam2Config":
        """sam2.1_hiera_large (the model Omni-R1 uses)."""
        return cls(hiera_hidden_size=144, blocks_per_stage=(2, 6, 36, 4), embed_dim_per_stage=(144, 288, 576, 1152),
                   num_heads_per_stage=(2, 4, 8, 16), global_attention_blocks=(23, 33, 43),
                   window_size_per_stage=(8, 4, 16, 8), backbone_channel_list=(1152, 576, 288, 144))

    @classmethod
    def preset(cls, name: str) -> "Sam2Config":
        """By name: ``tiny``, ``hiera_tiny|small|base_plus|large`` (``sam2.1_`` prefix and dashes accepted)."""
        key = name.replace("sam2.1_", "").replace("sam2.1-", "").replace("-", "_")
        table = {"tiny": cls.tiny, "hiera_tiny": cls.hiera_tiny, "hiera_small": cls.hiera_small,
                 "hiera_base_plus": cls.hiera_base_plus, "hiera_large": cls.hiera_large}
        if key not in table:
            raise ValueError(f"unknown SAM2 preset {name!r}; expected one of {sorted(table)}")
        return table[key]()


def _tupled(v: Any) -> Any:
    """Recursively turns lists into tuples (hashability)."""
    if isinstance(v, (list, tuple)):
        return tuple(_tupled(x) for x in v)
    return v
