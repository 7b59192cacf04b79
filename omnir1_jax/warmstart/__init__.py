"""Warm-starting the tiny models of the embedded default on generic synthetic tasks (never the keyframe task).

``thinker``: the Base thinker (captioning, ``bbox_2d`` grounding, formatted ``<think>/<answer>`` QA);
``sam2``: the tiny SAM2 (box prompt -> masks propagated over a clip); ``probe``: where the grounder's answer
position attends in the image (does it look at the described colour?).  The commands that made the shipped
checkpoints under ``omnir1_jax/assets/synthetic_tiny/`` are recorded in that directory's README.
"""


def lr_schedule(peak: float, warmup: int, steps: int, final_fraction: float = 0.05):
    """Linear warmup from 0 to ``peak`` over ``warmup`` steps, then cosine decay to ``final_fraction * peak``.

    (optax's ``end_value`` is an absolute rate, not a fraction of the peak: passing 0.05 there made the rate
    climb 100x over a 1e-3 run, which is what kept the earlier warm-starts from learning to localise.)
    """
    import optax

    warmup = max(1, int(warmup))
    return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, max(int(steps), warmup + 1), final_fraction * peak)
