"""Warm-starting the tiny models of the embedded default on generic synthetic tasks (never the keyframe task).

``thinker``: the Base thinker (captioning, ``bbox_2d`` grounding, formatted ``<think>/<answer>`` QA);
``sam2``: the tiny SAM2 (box prompt -> masks propagated over a clip).  The commands that made the shipped
checkpoints under ``omnir1_jax/assets/synthetic_tiny/`` are recorded in that directory's README.
"""
