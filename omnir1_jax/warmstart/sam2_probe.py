"""Probes what the tiny SAM2's presence gate and tracker rely on (the assets README's 17th and 18th rounds).

    python -m omnir1_jax.warmstart.sam2_probe omnir1_jax/assets/synthetic_tiny/sam2 --clips 40

Four questions, each on held-out synthetic clips (the last three prompted with the GT box on one frame per object):

* ``feature_colour``: how much colour each image-feature level keeps (a linear probe on the object's area). The
  memory encoder and memory attention work on the stride-16 level only, so a memory can tell objects apart by
  colour only as far as that level keeps it (eighteenth round: 0.42 on the shipped tracker, 0.90 at stride 4).
* ``score_by_objects``: on the frames where the prompted object is gone, how often is the object-score logit
  above 0 (a mask is kept), split by how many *other* objects are on screen? A gate that checks identity keeps
  few masks in every column; an objectness detector keeps none with 0 others and nearly all with >= 1.
* ``gate_readout``: on tracked frames with another object on screen, can a linear probe read the target's
  presence from the memory-conditioned map the decoder sees, better than from the frame's own features? If not,
  memory attention does not carry the object's identity, and no gate on top of it can check identity.
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


def feature_colour(model: Any, params: Params, clips: int = 120, seed: int = 123, ridge: float = 1.0) -> dict:
    """How much colour each image-feature level keeps: a ridge-regression linear probe names the object's colour
    from the level's features averaged over the object's area (one sample per visible object and frame of
    ``clips`` 8-frame clips; two thirds fit the probe, the rest score it). Returns the held-out accuracy per
    level (``s0`` stride 4, ``s1`` stride 8, ``feat`` stride 16: what the memory encoder and memory attention
    see; chance 1/8) and the sample count."""
    from data_pipelines.preprocess_sam2 import sam2_preprocess
    from data_pipelines.synthetic import words
    from data_pipelines.synthetic.render import render_clip
    from data_pipelines.synthetic.world import make_clip
    from omnir1_jax.models.sam2.model import Sam2VideoModel

    feats_of = jax.jit(lambda p, x: model.apply({"params": p}, x, method=Sam2VideoModel.image_features))
    rng = np.random.default_rng([seed, 4_242])
    levels = ("s0", "s1", "feat")
    xs: dict[str, list] = {k: [] for k in levels}
    ys = []
    for i in range(clips):
        clip = make_clip(rng, f"probe{i}", num_frames=8, height=W.HEIGHT, width=W.WIDTH)
        frames, masks = render_clip(clip)
        pixels = jnp.asarray(sam2_preprocess(frames, model.cfg.image_size))
        out = {k: np.asarray(v) for k, v in feats_of(params, pixels).items()}
        for j, obj in enumerate(clip.objects):
            for t in range(len(frames)):
                if masks[j, t].sum() < 4:
                    continue
                for k in levels:
                    g = out[k].shape[1]
                    area = W.pool_masks(masks[j, t], g)  # [g, g] share of each cell the object covers
                    xs[k].append((out[k][t] * area[..., None]).sum((0, 1)) / area.sum())
                ys.append(words.COLOURS.index(obj.colour))
    y = np.array(ys)
    order = np.random.default_rng(0).permutation(len(y))
    fit, score = order[: 2 * len(y) // 3], order[2 * len(y) // 3:]
    onehot = np.eye(len(words.COLOURS))[y]
    acc = {k: float(np.mean(np.argmax(_ridge_scores(np.asarray(xs[k]), onehot, fit, score, ridge), 1) == y[score]))
           for k in levels}
    return {"colour_accuracy": acc, "samples": int(len(y))}


def _ridge_scores(x: np.ndarray, targets: np.ndarray, fit: np.ndarray, scored: np.ndarray, ridge: float
                  ) -> np.ndarray:
    """A ridge-regression linear map (features standardised on the ``fit`` rows, plus a bias) fitted from
    ``x[fit]`` to ``targets[fit]``; returns its outputs on the ``scored`` rows."""
    x = np.asarray(x, np.float64)
    a = (x - x[fit].mean(0)) / (x[fit].std(0) + 1e-6)
    a = np.concatenate([a, np.ones((len(a), 1))], 1)
    w = np.linalg.solve(a[fit].T @ a[fit] + ridge * np.eye(a.shape[1]), a[fit].T @ targets[fit])
    return a[scored] @ w


def _ridge_accuracy(x: np.ndarray, y: np.ndarray, groups: np.ndarray, ridge: float = 10.0) -> float:
    """Held-out accuracy of a ridge-regression linear classifier (labels 0/1 -> targets -1/+1): the groups
    (clips) are split two thirds to fit, one third to score, so no clip is on both sides."""
    ids = np.unique(groups)
    scored = np.isin(groups, np.random.default_rng(0).permutation(ids)[: len(ids) // 3])
    return float(np.mean((_ridge_scores(x, 2.0 * y - 1, ~scored, scored, ridge) > 0) == (y[scored] > 0)))


def gate_readout(model: Any, params: Params, clips: list[tuple]) -> dict:
    """Is "is the prompted object on this frame?" readable from what the decoder sees, beyond what the frame alone
    says (how many objects it shows, say)? On every tracked frame (forward, as ``train_forward``) with at least one
    other object on screen, a linear probe (:func:`_ridge_accuracy`, split by clip) predicts the target's presence
    from the memory-conditioned image map (``conditioned``) and, as the control that holds no memory, from the
    frame's own features (``frame_only``), each mean- and max-pooled over the grid (``train_forward``'s
    ``conditioned`` output). ``gate`` is the object score's own accuracy (> 0 means present) and ``majority`` that
    of always answering the commoner label. A probe well above ``frame_only`` means the memory carries the object's
    identity to the decoder."""
    from data_pipelines.preprocess_sam2 import sam2_preprocess

    size = model.cfg.image_size

    def forward(p, pixels, boxes, valid):
        _, cond, _, traw = W.train_forward(model, p, pixels, boxes, valid, False)
        frame = cond["frame_feat"]  # [T, g, g, C]
        return traw["conditioned"][0], traw["obj"][0], jnp.concatenate([frame.mean((1, 2)), frame.max((1, 2))], -1)

    fwd = jax.jit(forward)
    xs_c, xs_f, ys, gate, groups = [], [], [], [], []
    for c, (frames, masks, prompt) in enumerate(clips):
        pixels = jnp.asarray(sam2_preprocess(frames, size))
        present = masks.reshape(*masks.shape[:2], -1).any(-1)
        for j, t in enumerate(prompt):
            if t < 0:
                continue
            boxes, valid = _prompt(masks, j, t, size)
            pooled_c, score, pooled_f = (np.asarray(v) for v in fwd(params, pixels, jnp.asarray(boxes),
                                                                     jnp.asarray(valid)))
            others = np.delete(present, j, 0).sum(0)
            for f in range(len(frames)):
                if f != t and others[f] > 0:
                    xs_c.append(pooled_c[f])
                    xs_f.append(pooled_f[f])
                    ys.append(float(present[j, f]))
                    gate.append(bool(score[f] > 0) == bool(present[j, f]))
                    groups.append(c)
    y, g = np.array(ys), np.array(groups)
    return {"frames": int(len(y)), "present_share": float(y.mean()),
            "majority": float(max(y.mean(), 1 - y.mean())), "gate": float(np.mean(gate)),
            "conditioned": _ridge_accuracy(np.array(xs_c), y, g), "frame_only": _ridge_accuracy(np.array(xs_f), y, g)}


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
    mixed = W.heldout_clips(a.clips, a.seed, (8, 12, 16))
    out = {"feature_colour": feature_colour(model, params, seed=a.seed),
           "score_by_objects": score_by_objects(model, params, mixed),
           "gate_readout": gate_readout(model, params, mixed),
           "order_sensitivity": order_sensitivity(model, params, ordered, a.seed),
           "views_ordered": W.evaluate_views(model, params, ordered),
           "views_shuffled": W.evaluate_views(model, params, shuffled(ordered, a.seed))}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
