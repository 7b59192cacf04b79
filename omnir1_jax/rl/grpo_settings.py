"""Static (hashable) settings of the GRPO step, built once from the config.

Everything here is a Python value that fixes shapes or control flow inside the jitted step; arrays and
params never live here.  ``BatchShapes`` carries the per-batch static pieces (vision grids, audio mask) so
the step is compiled once per distinct input geometry.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from omnir1_jax.rewards.combine import RewardWeights
from omnir1_jax.rewards.shaping import LengthBonusConfig
from omnir1_jax.rewards.vos import VOSRewardConfig
from omnir1_jax.rl.losses import PolicyLossConfig


@dataclasses.dataclass(frozen=True)
class GRPOSettings:
    """What the step needs to know statically (defaults = Omni-R1, omni_r1.md §7)."""

    task: str = "vos"  # vos | refavs (batches are task-homogeneous)
    num_generations: int = 8
    max_new_tokens: int = 800
    temperature: float = 1.0
    top_p: float = 0.95
    top_k: int = 0
    stop_ids: tuple[int, ...] = ()
    pad_id: int = 0
    max_keyframes: int = 4  # K
    max_objects: int = 3  # O
    max_json: int = 8  # J parser slots (statistics cover all objects anyway)
    grounding_max_new_tokens: int = 128
    ground_encode_chunk: int = 8  # high-res candidate frames per grounder vision-encoder call; 0 = all at once
    beta: float = 0.04
    kl_estimator: str = "k3"
    adv_estimator: str = "grpo"
    adv_std_ddof: int = 1
    adv_eps: float = 1e-4
    policy_loss: str = "grpo"
    loss_cfg: PolicyLossConfig = PolicyLossConfig()
    loss_agg: str = "seq-mean-token-mean"
    num_iterations: int = 1  # mu
    dynamic_sampling: bool = False
    micro_batch_completions: int = 8
    logprob_chunk_size: int = 4096
    share_prompt_prefix: bool = True  # teacher-forced pass: each prompt once, its G completions on its KV cache
    weights: RewardWeights = RewardWeights()
    vos_cfg: VOSRewardConfig = VOSRewardConfig()
    length_cfg: LengthBonusConfig = LengthBonusConfig()
    sam_direction: str = "forward"
    # SAM2 track slots per clip (C): 0 = all G*O (g, o) tracks at static shapes, unprompted ones masked;
    # C > 0 = the prompted tracks gathered into C slots (grpo_rollout.segment), the rest dropped and counted.
    sam_tracks_per_clip: int = 0
    use_reference_grounder: bool = True  # False: the policy grounds its own descriptions (beta == 0)
    cache_dtype: Any = np.float32

    @property
    def use_sam(self) -> bool:
        return self.task == "vos" and self.weights.alpha_g > 0

    @classmethod
    def from_config(cls, config, *, task: str, stop_ids: tuple[int, ...], pad_id: int) -> "GRPOSettings":
        rl, r = config.rl, config.reward
        return cls(
            task=task,
            num_generations=rl.num_generations,
            max_new_tokens=rl.max_new_tokens,
            temperature=rl.refavs_temperature if task == "refavs" and rl.refavs_temperature > 0 else rl.temperature,
            top_p=rl.top_p,
            top_k=rl.top_k,
            stop_ids=tuple(stop_ids),
            pad_id=pad_id,
            max_keyframes=rl.max_keyframes if task == "vos" else 1,
            max_objects=config.data.max_objects,
            grounding_max_new_tokens=rl.grounding_max_new_tokens,
            ground_encode_chunk=rl.ground_encode_chunk,
            beta=rl.beta,
            kl_estimator=rl.kl_estimator,
            adv_estimator=rl.adv_estimator,
            adv_std_ddof=rl.adv_std_ddof,
            adv_eps=rl.adv_eps,
            loss_cfg=PolicyLossConfig(eps_low=rl.eps_low, eps_high=rl.eps_high,
                                      dual_clip_c=rl.dual_clip_c if rl.dual_clip_c > 0 else None),
            loss_agg=rl.loss_agg,
            num_iterations=rl.num_iterations,
            dynamic_sampling=rl.dynamic_sampling,
            micro_batch_completions=rl.micro_batch_completions,
            logprob_chunk_size=rl.logprob_chunk_size,
            share_prompt_prefix=rl.share_prompt_prefix,
            weights=RewardWeights(alpha_k=r.alpha_k, alpha_k_ratio=r.alpha_k_ratio, alpha_a=r.alpha_a,
                                  alpha_g=r.alpha_g, clip_reward=r.clip_reward,
                                  released_code_gating=r.released_code_gating),
            length_cfg=LengthBonusConfig(enabled=r.len_bonus, min_len=r.len_min, max_len=r.len_max,
                                         acc_threshold=r.len_acc_threshold),
            sam_direction=config.segmenter.train_propagation,
            sam_tracks_per_clip=rl.sam_tracks_per_clip,
            use_reference_grounder=rl.grounder == "reference",
        )


def _freeze(x: Any) -> Any:
    if x is None:
        return None
    arr = np.asarray(x)
    return tuple(map(tuple, arr.reshape(-1, arr.shape[-1]).tolist())) if arr.ndim >= 1 else arr.item()


@dataclasses.dataclass(frozen=True)
class BatchShapes:
    """Static geometry of one batch: vision grids per item, the audio mask, high-res keyframe grid."""

    video_grid_thw: tuple | None = None  # ((t, h, w),) * B
    image_grid_thw: tuple | None = None
    feature_attention_mask: tuple | None = None  # ((0/1, ...),) * B
    hires_grid_thw: tuple[int, int, int] | None = None  # (1, gh, gw) of every candidate keyframe
    video_second_per_grid: tuple | None = None

    @classmethod
    def from_host(cls, video_grid_thw=None, image_grid_thw=None, feature_attention_mask=None,
                  hires_grid_thw=None, video_second_per_grid=None) -> "BatchShapes":
        vsg = None if video_second_per_grid is None else tuple(float(s) for s in np.ravel(video_second_per_grid))
        return cls(_freeze(video_grid_thw), _freeze(image_grid_thw), _freeze(feature_attention_mask),
                   None if hires_grid_thw is None else tuple(int(v) for v in hires_grid_thw), vsg)

    def embed_kwargs(self) -> dict:
        """Keyword arguments of ``Thinker.embed`` that must be concrete."""
        kw: dict[str, Any] = {}
        if self.video_grid_thw is not None:
            kw["video_grid_thw"] = np.asarray(self.video_grid_thw, np.int64)
            if self.video_second_per_grid is not None:
                kw["video_second_per_grid"] = self.video_second_per_grid
        if self.image_grid_thw is not None:
            kw["image_grid_thw"] = np.asarray(self.image_grid_thw, np.int64)
        if self.feature_attention_mask is not None:
            kw["feature_attention_mask"] = np.asarray(self.feature_attention_mask, np.int32)
        return kw
