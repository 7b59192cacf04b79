"""The embedded default: tiny thinker + tiny SAM2 on the synthetic audio-visual world, CPU-sized.

    omnir1-train --config experiments/synthetic_tiny.py --workdir /tmp/omnir1_tiny

Same code path as the 7B configs (same step, parsers and readers of the real formats); only sizes
differ.  Argument: reward-weight setting, ``internal`` (default here: SAM2 in the loop, alpha_g = 2) or
``released``.
"""

from omnir1_jax.config import default_config, set_reward_variant


def get_config(arg: str | None = None):
    c = default_config()
    c.name = "synthetic_tiny"
    c.model.preset = "tiny"
    c.model.dtype = "float32"
    c.model.remat = False
    c.segmenter.preset = "tiny"
    c.segmenter.dtype = "float32"
    c.segmenter.mask_size = 16  # tiny SAM2: 64-px input -> 16-px low-res masks
    c.data.dataset = "synthetic"
    c.data.min_frames = 8
    c.data.max_frames = 12
    c.data.eval_max_frames = 12
    c.data.video_min_pixels = 4 * 28 * 28
    c.data.video_max_pixels = 8 * 28 * 28
    c.data.ground_min_pixels = 8 * 28 * 28
    c.data.ground_max_pixels = 16 * 28 * 28
    c.data.ground_hw = (96, 128)  # the synthetic clips' frame size
    c.data.num_workers = 0
    c.rl.prompts_per_step = 2
    c.rl.num_generations = 4
    c.rl.micro_batch_completions = 8
    c.rl.max_prompt_length = 1024
    c.rl.max_new_tokens = 48
    c.rl.grounding_max_new_tokens = 24
    c.rl.logprob_chunk_size = 256
    c.reward.len_min, c.reward.len_max = 8, 40  # length bonus scaled to the tiny completions
    c.optim.learning_rate = 3e-5
    c.train.num_steps = 40
    c.train.eval_every = 20
    c.checkpoint.every_steps = 20
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = -1, 1, 1
    c.eval.max_frames = 12
    c.eval.splits = ("revos_test",)  # the held-out synthetic ReVOS-format split
    c.eval.limit = 2
    c.eval.batch_size = 4
    return set_reward_variant(c, arg or "internal")
