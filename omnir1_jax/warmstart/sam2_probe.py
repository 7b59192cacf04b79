"""Probes what the tiny SAM2's presence gate and tracker rely on (the assets README's seventeenth round).

    python -m omnir1_jax.warmstart.sam2_probe omnir1_jax/assets/synthetic_tiny/sam2 --clips 40

Two questions, each on held-out synthetic clips prompted with the GT box on one frame per object:

* ``score_by_objects``: on the frames where the prompted object is gone, how often is the object-score logit
  above 0 (a mask is kept), split by how many *other* objects are on screen? A gate that checks identity keeps
  few masks in every column; an objectness detector keeps none with 0 others and nearly all with >= 1.
* ``order_sensitivity``: does the track depend on the order of the frames? The clip's frames are put in a
  random order (the prompt moves with its frame) and the mask logits compared frame by frame. A tracker that
  carries the object from frame to frame changes; one that re-detects it from the prompted frame's memory does
  not.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from omnir1_jax.warmstart import sam2 as W

Params = Any


def _prompt(masks: np.ndarray, j: int, t: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One GT-box prompt for object ``j`` on frame ``t``: boxes [1, T, 4] in SAM2 pixels and valid [1, T]."""
    boxes = np.zeros((1, masks.shape[1], 4), np.float32)
    valid = np.zeros((1, masks.shape[1]), bool)
    boxes[0, t] = W._box(masks[j, t]) * np.array([size / W.WIDTH, size / W.HEIGHT] * 2, np.float32)
    valid[0, t] = True
    return boxes, valid


def score_by_objects(model: Any, params: Params, clips: list[tuple], max_others: int = 3) -> dict:
    """Share of frames with object score > 0 (forward tracking, as ``train_forward``): the frames with the
    prompted object (``visible``) and the target-free ones by the number of other objects on screen
    (``others_0`` ... ``others_<max_others>``, the last one meaning that many or more), with frame counts."""
    from data_pipelines.preprocess_sam2 import sam2_preprocess

    size = model.cfg.image_size
    fwd = jax.jit(lambda p, px, b, v: W.train_forward(model, p, px, b, v, False)[3]["obj"])
    kept: dict[str, list[bool]] = {"visible": [], **{f"others_{k}": [] for k in range(max_others + 1)}}
    for frames, masks, prompt in clips:
        pixels = jnp.asarray(sam2_preprocess(frames, size))
        present = masks.reshape(*masks.shape[:2], -1).any(-1)  # [O, T]
        for j, t in enumerate(prompt):
            if t < 0:
                continue
            boxes, valid = _prompt(masks, j, t, size)
            score = np.asarray(fwd(params, pixels, jnp.asarray(boxes), jnp.asarray(valid)))[0]  # [T]
            others = np.delete(present, j, 0).sum(0)
            for f in range(len(frames)):
                if f != t:
                    key = "visible" if present[j, f] else f"others_{min(int(others[f]), max_others)}"
                    kept[key].append(bool(score[f] > 0))
    return {k: {"frames": len(v), "score_above_0": float(np.mean(v)) if v else None} for k, v in kept.items()}


def _orders(clips: list[tuple], seed: int) -> list[np.ndarray]:
    """One random frame order per clip, from ``seed`` (``shuffled`` and ``order_sensitivity`` share them)."""
    rng = np.random.default_rng(seed)
    return [rng.permutation(len(frames)) for frames, _, _ in clips]


def shuffled(clips: list[tuple], seed: int = 0) -> list[tuple]:
    """The same clips with their frames in a random order; each prompt moves with its frame."""
    out = []
    for (frames, masks, prompt), order in zip(clips, _orders(clips, seed)):
        where = np.argsort(order)  # where[t]: the new index of old frame t
        out.append((frames[order], masks[:, order], [int(where[t]) if t >= 0 else -1 for t in prompt]))
    return out


def order_sensitivity(model: Any, params: Params, clips: list[tuple], seed: int = 0) -> dict[str, float]:
    """How much each prompted track changes when its clip's frames are put in a random order
    (``eval_pipeline._propagate``, bidirectional, as evaluation runs it), frame by frame on the low-res mask
    grid: ``max_logit_change`` (largest |logit| change), ``mask_iou`` (mean IoU of the two masks over the frames
    where either is non-empty; 1.0 = the order does not matter) and ``frames``."""
    from data_pipelines.preprocess_sam2 import sam2_preprocess
    from omnir1_jax.eval_pipeline import _propagate

    size = model.cfg.image_size

    def track(pixels, masks, j, t):
        boxes, valid = _prompt(masks, j, t, size)
        logits = _propagate(model, params, pixels, jnp.asarray(boxes), jnp.asarray(valid), "bidirectional", False)
        return np.asarray(logits)[0]  # [T, h, w]

    worst, ious = 0.0, []
    for (frames, masks, prompt), order, perm in zip(clips, _orders(clips, seed), shuffled(clips, seed)):
        where = np.argsort(order)
        pixels = jnp.asarray(sam2_preprocess(frames, size))  # once per clip; the shuffled clip is a reindex
        spixels = pixels[jnp.asarray(order)]
        for j, t in enumerate(prompt):
            if t >= 0:
                a, b = track(pixels, masks, j, t), track(spixels, perm[1], j, perm[2][j])[where]
                worst = max(worst, float(np.abs(a - b).max()))
                for fa, fb in zip(a > 0, b > 0):
                    if (fa | fb).any():
                        ious.append((fa & fb).sum() / (fa | fb).sum())
    return {"max_logit_change": worst, "mask_iou": float(np.mean(ious)) if ious else 1.0, "frames": len(ious)}


def main(argv: Sequence[str] | None = None) -> None:
    from omnir1_jax.models.sam2.convert import load_checkpoint

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", help="a SAM2 checkpoint directory (warmstart.sam2 --out)")
    ap.add_argument("--clips", type=int, default=40, help="held-out clips for the object-score split")
    ap.add_argument("--order_clips", type=int, default=24, help="held-out 8-frame clips for the order check")
    ap.add_argument("--seed", type=int, default=0, help="held-out clip stream (and the frame order)")
    a = ap.parse_args(argv)
    model, params = load_checkpoint(a.checkpoint)
    params = W.tie_positional_embeddings(params)
    ordered = W.heldout_clips(a.order_clips, a.seed, frames=(8,))
    out = {"score_by_objects": score_by_objects(model, params, W.heldout_clips(a.clips, a.seed, (8, 12, 16))),
           "order_sensitivity": order_sensitivity(model, params, ordered, a.seed),
           "views_ordered": W.evaluate_views(model, params, ordered),
           "views_shuffled": W.evaluate_views(model, params, shuffled(ordered, a.seed))}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
