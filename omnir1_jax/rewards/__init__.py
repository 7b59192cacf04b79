"""Hierarchical rewards of Omni-R1 (R_K, R_A, R_G, shaping), jittable with static shapes.

Registries: :data:`WEIGHT_PRESETS` (α weights by name) and :data:`TASK_REWARDS` (task → reward fn).
"""

from omnir1_jax.rewards.boxes import box_iou_plus1, hungarian_max, matched_iou, pairwise_iou_plus1
from omnir1_jax.rewards.combine import WEIGHT_PRESETS, RewardWeights, combine_vos_terms, get_weights
from omnir1_jax.rewards.masks import clip_mean_iou, mask_iou, union_over_objects
from omnir1_jax.rewards.refavs import refavs_reward
from omnir1_jax.rewards.segzero import SegZeroInputs, segzero_terms, top2_inscribed_circle_centers
from omnir1_jax.rewards.shaping import LengthBonusConfig, format_reward, length_bonus, total_reward
from omnir1_jax.rewards.vos import (
    VOSCompletion,
    VOSRewardConfig,
    VOSTarget,
    completion_from_parse,
    completion_from_segments,
    grounding_frames,
    make_target,
    sam_prompt_boxes,
    segment_cover,
    vos_reward,
    vos_reward_batch,
    vos_terms,
)

TASK_REWARDS = {"vos": vos_reward, "refavs": refavs_reward, "segzero": segzero_terms}

__all__ = [
    "LengthBonusConfig",
    "RewardWeights",
    "SegZeroInputs",
    "TASK_REWARDS",
    "VOSCompletion",
    "VOSRewardConfig",
    "VOSTarget",
    "WEIGHT_PRESETS",
    "box_iou_plus1",
    "clip_mean_iou",
    "combine_vos_terms",
    "completion_from_parse",
    "completion_from_segments",
    "format_reward",
    "get_weights",
    "grounding_frames",
    "hungarian_max",
    "length_bonus",
    "make_target",
    "mask_iou",
    "matched_iou",
    "pairwise_iou_plus1",
    "refavs_reward",
    "sam_prompt_boxes",
    "segment_cover",
    "segzero_terms",
    "top2_inscribed_circle_centers",
    "total_reward",
    "union_over_objects",
    "vos_reward",
    "vos_reward_batch",
    "vos_terms",
]
