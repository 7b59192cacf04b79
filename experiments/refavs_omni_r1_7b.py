"""Omni-R1-7B on RefAVS: audio + frame 0, box-IoU reward (omni_r1.md §2.2, §6.4, §8.1).

    omnir1-train --config experiments/refavs_omni_r1_7b.py --workdir DIR \
        --config.model.hf_dir=/ckpts/Qwen2.5-Omni-7B --config.data.refavs_root=/data/REFAVS

Argument: reward-weight setting (``released`` default, or ``internal``); RefAVS itself uses only the
detection reward plus format and length shaping.
"""

from omnir1_jax.config import default_config, set_reward_variant


def get_config(arg: str | None = None):
    c = default_config()
    c.name = "refavs_omni_r1_7b"
    c.data.dataset = "refavs"
    c.data.refavs_num_samples = 1600  # 1,600 random train rows
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, -1, 1
    return set_reward_variant(c, arg or "released")
