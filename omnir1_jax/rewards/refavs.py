"""RefAVS reward (`omni_r1.md` §6.4): IoU of System 2's frame-0 box with the GT box of frame 0."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from omnir1_jax.rewards.boxes import box_iou_plus1


def refavs_reward(
    answer_nonempty: jax.Array,
    s2_box: jax.Array,
    s2_box_valid: jax.Array,
    gt_box: jax.Array,
    resize_ratio: jax.Array,
) -> jax.Array:
    """RefAVS accuracy of one completion (scalar); vectorise with ``jax.vmap``.

    From the parsers: ``answer_nonempty = answer_found & (answer_bytes[1] > answer_bytes[0])``;
    ``s2_box``/``s2_box_valid`` = slot 0 of ``parse_boxes`` (ratios = 1) on the frame-0 grounding output.

    ``s2_box [4]`` is System 2's box on frame 0 in resized-image pixels (the first JSON object of its
    output, as the released code reads it); ``gt_box [4]`` is in original pixels and is scaled by
    ``resize_ratio = (w_ratio, h_ratio)``.  IoU uses the +1-pixel convention without the ``x1 <= 0``
    quirk (as ``refavs.iou``).  0 when the answer is empty, System 2 gave no box, or frame 0 has no GT
    object (the released code does not special-case the last one; we score it 0).
    """
    scale = jnp.concatenate([resize_ratio, resize_ratio]).astype(jnp.float32)
    gt = jnp.asarray(gt_box, jnp.float32)
    gt_exists = jnp.all(gt != -1.0)
    iou = box_iou_plus1(jnp.asarray(s2_box, jnp.float32), gt * scale)
    return jnp.where(answer_nonempty & s2_box_valid & gt_exists, iou, 0.0)
