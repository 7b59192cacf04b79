"""Omni-R1-7B on RefAVS + ReVOS + MeViS, one epoch, task-homogeneous batches (omni_r1.md §7, §8).

Argument: reward-weight setting, ``released`` (default) or ``internal``.
"""

from omnir1_jax.config import default_config, set_reward_variant


def get_config(arg: str | None = None):
    c = default_config()
    c.name = "joint_omni_r1_7b"
    c.data.dataset = "joint"
    # GroupSampler: RefAVS is one group, everything else the other; ratios follow the dataset sizes
    # (1,600 RefAVS samples vs ~2,600 ReVOS+MeViS videos).
    c.data.mixture = "refavs:1600,revos:1300,mevis:1300"
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, -1, 1
    return set_reward_variant(c, arg or "released")
