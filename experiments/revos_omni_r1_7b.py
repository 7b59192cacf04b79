"""Omni-R1-7B on ReVOS + MeViS (the paper's VOS training run, omni_r1.md §7-8).

    omnir1-train --config experiments/revos_omni_r1_7b.py --workdir DIR \
        --config.model.hf_dir=/ckpts/Qwen2.5-Omni-7B --config.segmenter.hf_dir=/ckpts/sam2.1-hiera-large \
        --config.data.revos_root=/data/ReVOS --config.data.mevis_root=/data/mevis

Argument: the reward-weight setting, ``released`` (default; alpha_g = 0, no SAM2 in the loop) or
``internal`` (alpha_k_ratio = 0, alpha_g = 2), e.g. ``--config experiments/revos_omni_r1_7b.py:internal``.
"""

from omnir1_jax.config import default_config, set_reward_variant


def get_config(arg: str | None = None):
    c = default_config()
    c.name = "revos_omni_r1_7b"
    c.data.dataset = "joint"
    c.data.mixture = "revos:1,mevis:1"  # "2,600 videos" of ReVOS + MeViS from the Sa2VA training data
    c.data.prompt_template = "vos_force"  # run_training.sh: use_prompt_forcing true
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, -1, 1
    return set_reward_variant(c, arg or "released")
