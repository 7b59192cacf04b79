"""Warm-starts the tiny SAM2 on the synthetic world: a GT box on 1-2 frames -> that object's mask on every frame.

    python -m omnir1_jax.warmstart.sam2 --out omnir1_jax/assets/synthetic_tiny/sam2 --steps 1000 --seed 0

Training runs the video model as :func:`omnir1_jax.models.sam2.video.propagate` (forward) does — box
conditioning frames, then memory-attention tracking over every frame with the same ring buffers (gradients are
truncated at the ring buffers) — inside one jitted step, and also reads the decoder's raw outputs so every head
gets a loss: sigmoid BCE + dice on every mask output (so the run-time choice among single/multimask outputs is
harmless; empty targets where the object is absent), object-score BCE (a hard gate at run time, so it cannot
learn through the masks) and IoU-prediction MSE. :class:`LossRules` changes these weights (for example SAM2's
own rule: mask loss on visible frames only, the best multimask output only). Clips are time-reversed half of
the time, standing in for the reverse half of bidirectional propagation. Evaluation is DAVIS J at the original
resolution through :func:`omnir1_jax.eval_pipeline.segment_video` (bidirectional); the params with the best J
(``--select_by``: over every frame, or over the frames with the object) on separate validation clips are kept.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from omnir1_jax.models.sam2 import video as V
from omnir1_jax.models.sam2.config import Sam2Config
from omnir1_jax.models.sam2.model import Sam2VideoModel
from omnir1_jax.warmstart import lr_schedule

Params = Any
HEIGHT, WIDTH = 96, 128  # the synthetic world's frame size
TRAIN_FRAMES, TRAIN_OBJECTS, COND_SLOTS = 8, 2, 2
OBJ_POS_WEIGHT = 4.0


# ----------------------------------------------------------------------------- data
def _box(mask: np.ndarray) -> np.ndarray:
    """Tight (x0, y0, x1+1, y1+1) box of a non-empty [H, W] mask, like ``mask_facts``."""
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def pool_masks(masks: np.ndarray, size: int) -> np.ndarray:
    """Area-average [..., H, W] binary masks onto the [size, size] low-res logit grid (soft targets)."""
    h, w = masks.shape[-2:]
    m = masks.astype(np.float32).reshape(*masks.shape[:-2], size, h // size, size, w // size)
    return m.mean(axis=(-3, -1))


def sample_example(rng: np.random.Generator, cfg: Sam2Config, t_len: int = TRAIN_FRAMES,
                   num_objects: int = TRAIN_OBJECTS, jitter: float = 3.0, shuffle_frames: float = 0.0
                   ) -> dict[str, np.ndarray]:
    """One training clip: pixels [T,3,S,S], boxes [O,T,4] (SAM2 pixels), box_valid [O,T], target [O,T,h,w],
    identity [O,2] (each tracked object's colour and shape index in ``words.COLOURS`` / ``words.SHAPES``, for
    ``LossRules.identity_weight``), on_screen [T] (how many of the clip's objects are visible in each frame, for
    ``LossRules.count_prior``).

    ``shuffle_frames``: the share of clips whose frames are put in a random order (frames and masks alike).
    Objects then jump between frames, so where the object was last seen says nothing about where it is now and
    the tracker must find it again by its looks (the seventeenth round of the assets README: the shipped
    tracker already does, so this changed nothing there).
    """
    from data_pipelines.preprocess_sam2 import sam2_preprocess
    from data_pipelines.synthetic import words
    from data_pipelines.synthetic.render import render_clip
    from data_pipelines.synthetic.world import make_clip

    while True:
        n = int(rng.integers(max(t_len, 4), max(2 * t_len, 4) + 1))  # the world needs >= 4 frames per clip
        clip = make_clip(rng, "warm", num_frames=n, height=HEIGHT, width=WIDTH)
        frames, masks = render_clip(clip)
        s = int(rng.integers(0, n - t_len + 1))
        frames, masks = frames[s:s + t_len], masks[:, s:s + t_len]
        if rng.random() < 0.5:  # time reversal: the reverse pass of bidirectional propagation
            frames, masks = frames[::-1], masks[:, ::-1]
        if shuffle_frames and rng.random() < shuffle_frames:
            order = rng.permutation(t_len)
            frames, masks = frames[order], masks[:, order]
        vis = masks.reshape(*masks.shape[:2], -1).any(-1)  # [O_all, T]
        cands = np.nonzero(vis.any(-1))[0]
        if len(cands):
            break
    pick = rng.choice(cands, size=min(num_objects, len(cands)), replace=False)
    pick = np.resize(pick, num_objects)  # repeat an object when the clip has too few (no empty tracks)
    size = cfg.image_size
    scale = np.array([size / WIDTH, size / HEIGHT] * 2, np.float32)
    boxes = np.zeros((num_objects, t_len, 4), np.float32)
    valid = np.zeros((num_objects, t_len), bool)
    for i, j in enumerate(pick):
        vf = np.nonzero(vis[j])[0]
        for t in rng.choice(vf, size=min(len(vf), 1 + int(rng.random() < 0.3)), replace=False):
            b = _box(masks[j, t]) + rng.uniform(-jitter, jitter, 4).astype(np.float32)
            b = np.clip(b, 0, [WIDTH, HEIGHT, WIDTH, HEIGHT])
            boxes[i, t], valid[i, t] = b * scale, True
    identity = np.array([[words.COLOURS.index(clip.objects[j].colour), words.SHAPES.index(clip.objects[j].shape)]
                         for j in pick], np.int32)
    return {"pixels": sam2_preprocess(np.ascontiguousarray(frames), size), "boxes": boxes, "box_valid": valid,
            "target": pool_masks(masks[pick], cfg.mask_size), "identity": identity,
            "on_screen": vis.sum(0).astype(np.int32)}


def sample_batch(rng: np.random.Generator, cfg: Sam2Config, batch: int, frames: int = TRAIN_FRAMES,
                 shuffle_frames: float = 0.0) -> dict[str, np.ndarray]:
    """``batch`` stacked :func:`sample_example` clips of ``frames`` frames."""
    exs = [sample_example(rng, cfg, frames, shuffle_frames=shuffle_frames) for _ in range(batch)]
    return {k: np.stack([e[k] for e in exs]) for k in exs[0]}


# ----------------------------------------------------------------------------- training forward
def _apply(model: Sam2VideoModel, params: Params, method: Any, *args: Any) -> Any:
    return model.apply({"params": params}, *args, method=method)


def _heads(model: Sam2VideoModel, params: Params, feats: dict, embed: jax.Array, pts: Any, labels: Any,
           multimask: bool) -> tuple[dict, dict]:
    """``frame_step`` (what inference sees) plus the raw decoder outputs the losses need (all masks, IoU, score)."""
    hard = _apply(model, params, Sam2VideoModel.frame_step, feats, embed, pts, labels, multimask)
    raw = _apply(model, params, Sam2VideoModel.decode, feats, pts, labels, None, None, multimask, embed)
    return hard, {"masks": raw["pred_masks"][:, 0], "iou": raw["iou_scores"][:, 0],
                  "obj": raw["object_score_logits"][:, 0, 0]}  # [O,M,h,w], [O,M], [O]


def _cond_raw(model: Sam2VideoModel, params: Params, feats: dict, cond: dict, boxes: jax.Array) -> dict:
    """Raw decoder outputs (single + multimask masks) of the conditioning frames of ``conditioning_outputs``."""
    o, k = cond["idx"].shape
    f = {n: v[cond["idx"].reshape(-1)] for n, v in feats.items()}
    b = jnp.take_along_axis(boxes, cond["idx"][..., None], axis=1).reshape(o * k, 1, 2, 2)
    labels = jnp.broadcast_to(jnp.array([2, 3], jnp.int32), (o * k, 1, 2))
    embed = f["feat"] + params["no_memory_embedding"][0]
    _, raw = _heads(model, params, f, embed, b, labels, V._multimask(model.cfg, 2, True))
    multi = _apply(model, params, Sam2VideoModel.decode, f, b, labels, None, None, True, embed)
    # the single-mask output falls back to a multimask output when unstable: train all four
    raw = {"masks": jnp.concatenate([raw["masks"], multi["pred_masks"][:, 0]], axis=1),
           "iou": jnp.concatenate([raw["iou"], multi["iou_scores"][:, 0]], axis=1), "obj": raw["obj"]}
    return jax.tree.map(lambda x: x.reshape(o, k, *x.shape[1:]), raw)


def _track(model: Sam2VideoModel, params: Params, cond: dict, carry: dict, frame: dict, t: jax.Array,
           num_frames: int) -> tuple[dict, jax.Array, dict]:
    """:func:`video.track_step` (forward) that also returns the raw decoder outputs of the tracked frame, plus
    ``conditioned`` [O, 2C]: the memory-conditioned map the decoder reads, mean- and max-pooled over the grid."""
    def heads(fo, pix, multimask):
        out, raw = _heads(model, params, fo, pix, None, None, multimask)
        return out, {**raw, "conditioned": jnp.concatenate([pix.mean((1, 2)), pix.max((1, 2))], -1)}

    return V.track_step(model, params, cond, carry, frame, t, num_frames, heads=heads)


def train_forward(model: Sam2VideoModel, params: Params, pixels: jax.Array, boxes: jax.Array,
                  box_valid: jax.Array, bptt: bool = True) -> tuple[jax.Array, dict, dict, dict]:
    """Forward pass over one clip: (logits [O,T,h,w] as ``propagate``, cond, cond raw [O,K,..], track raw [O,T,..])."""
    t_len, o = pixels.shape[0], boxes.shape[0]
    feats = _apply(model, params, Sam2VideoModel.image_features, pixels)  # batched over frames (not lax.map)
    feats = {n: v for n, v in feats.items() if n != "pos"}
    get = lambda idx: {n: v[idx] for n, v in feats.items()}  # noqa: E731
    cond = V.conditioning_outputs(model, params, get, boxes, box_valid, min(COND_SLOTS, t_len))
    craw = _cond_raw(model, params, feats, cond, boxes)

    def step(carry, t):
        new, m, raw = _track(model, params, cond, carry, get(t), t, t_len)
        return (new if bptt else jax.lax.stop_gradient(new)), (m, raw)  # bptt=False: ~3x cheaper step

    _, (m, traw) = jax.lax.scan(step, V.init_carry(model, o, t_len), jnp.arange(t_len))
    cond = {**cond, "frame_feat": feats["feat"]}  # [T, h16, w16, C]: what the memory encoder and attention see
    return jnp.moveaxis(m, 0, 1), cond, craw, jax.tree.map(lambda x: jnp.moveaxis(x, 0, 1), traw)


def tie_positional_embeddings(params: Params) -> Params:
    """One Fourier basis for the image grid and the prompts, as SAM2 has (HF ties
    ``prompt_encoder.shared_embedding`` to ``shared_image_embedding``): the port keeps both entries (so HF
    checkpoints convert per tensor), so training from scratch must tie them or the box corners and the image
    positions live in unrelated random bases and box prompts cannot localise (seen: the conditioning-frame
    mask loss never fell).  Gradients reach the shared copy through both uses."""
    p = dict(params)
    p["prompt_encoder"] = {**p["prompt_encoder"], "shared_embedding": p["shared_image_embedding"]}
    return p


# ----------------------------------------------------------------------------- loss
def _mask_loss(logits: jax.Array, target: jax.Array) -> jax.Array:
    """Sigmoid BCE + dice (smoothed; an empty target asks for an empty mask) per mask: [..., h, w] -> [...]."""
    bce = jnp.mean(jnp.maximum(logits, 0) - logits * target + jnp.log1p(jnp.exp(-jnp.abs(logits))), axis=(-2, -1))
    p = jax.nn.sigmoid(logits)
    dice = 1 - (2 * jnp.sum(p * target, (-2, -1)) + 1) / (jnp.sum(p, (-2, -1)) + jnp.sum(target, (-2, -1)) + 1)
    return bce + dice


@dataclasses.dataclass(frozen=True)
class LossRules:
    """How the warm-start's losses weigh frames and heads (defaults: the recipe of stages 1 and 2; the shipped
    stage 3 continued stage 2 with ``absent_weight=0``, see the assets README).

    ``obj_pos_weight``: weight of visible frames in the object-score BCE. 1 is plain BCE (a score > 0 means
    p(visible) > 1/2); 4 moves that to 1/5, so an unsure score stays > 0 (the score is a hard gate at run time,
    and a wrong "absent" erases a good mask).
    ``absent_weight``: weight, in the mask and IoU losses, of the frames where the object is absent (their
    target is an empty mask). 1: every frame alike. 0: only visible frames count and absence is left to the
    object-score gate, as SAM2's own training loss does (``sam2/training/loss_fns.py``).
    ``best_of``: tracked frames train only the best of their M mask outputs (SAM's rule, so the multimask
    outputs may differ and the IoU head picks among them). False: the mean over all M. Conditioning frames
    always train all outputs, because their box prompt uses the single-mask output at run time.
    ``obj_weight``: weight of the object-score term in the total loss (mask and IoU terms have weight 1).
    ``identity_weight``: weight of an auxiliary loss (not SAM2's; the eighteenth round of the assets README) that
    asks two linear heads, trained alongside and not saved, to name each tracked object's colour and shape:
    one from the top-level image features (``feat``, the stride-16 map the memory encoder and memory attention
    work on) averaged over the object's area on every frame where it is visible, one from the conditioning
    frames' memories averaged the same way. The shipped tracker's ``feat`` keeps little colour (a linear probe,
    ``sam2_probe.feature_colour``, names it for 0.42 of the objects, the stride-4 features for 0.90), so its
    memories cannot say *which* object they hold and the presence gate falls back to objectness.
    ``count_prior``: p(tracked object visible | N objects on screen) for N = 0, 1, ... (:func:`count_prior`).
    When given, the tracked frames' object-score BCE weighs visible frames by 1 / (2 p_N) and the others by
    1 / (2 (1 - p_N)) (``obj_pos_weight`` is then unused there), so within every N both answers weigh the same:
    a score that only counts the objects on screen earns nothing over a constant, and only telling the object
    from the others lowers the loss (the seventeenth round found plain BCE settling on the count).
    ``match_weight``: weight of an auxiliary loss (not SAM2's) on the tracked frames in which a linear head
    (trained alongside, not saved) reads "the object is on this frame" straight from the memory-conditioned map
    (``conditioned``, pooled), with the object-score weights above. It asks memory attention itself to carry
    the match, which the eighteenth round found it does not (``sam2_probe.gate_readout``).
    """

    obj_pos_weight: float = OBJ_POS_WEIGHT
    absent_weight: float = 1.0
    best_of: bool = False
    obj_weight: float = 1.0
    identity_weight: float = 0.0
    count_prior: tuple[float, ...] = ()
    match_weight: float = 0.0


def _presence_bce(x: jax.Array, vis: jax.Array, rules: LossRules, on_screen: jax.Array | None) -> jax.Array:
    """Per-frame BCE of presence logits ``x`` against ``vis`` (0/1) with the object-score weights of ``rules``
    (``obj_pos_weight``, or the count-balanced ones of ``count_prior`` where ``on_screen`` is given)."""
    pos_w, neg_w = rules.obj_pos_weight, 1.0
    if rules.count_prior and on_screen is not None:
        prior = jnp.clip(jnp.asarray(rules.count_prior, jnp.float32), 0.02, 0.98)
        p = prior[jnp.clip(on_screen, 0, len(rules.count_prior) - 1)]
        pos_w, neg_w = 0.5 / p, 0.5 / (1 - p)
    return pos_w * vis * jax.nn.softplus(-x) + neg_w * (1 - vis) * jax.nn.softplus(x)


def _heads_loss(raw: dict, target: jax.Array, weight: jax.Array, rules: LossRules = LossRules(),
                on_screen: jax.Array | None = None) -> dict[str, jax.Array]:
    """Mask, IoU-prediction and object-score losses of one kind of frame under ``rules``.

    raw: masks [..., M, h, w], iou [..., M], obj [...]; target [..., h, w]; weight [...] (which frames count);
    on_screen [...] (objects on screen; with ``rules.count_prior`` it sets the object-score weights).
    """
    tgt = target[..., None, :, :]
    per_out = _mask_loss(raw["masks"], tgt)  # [..., M]
    mask = jnp.where(rules.best_of, jnp.min(per_out, -1), jnp.mean(per_out, -1))  # best_of may be traced
    hard_p, hard_t = raw["masks"] > 0, tgt > 0.5
    inter = jnp.sum(hard_p & hard_t, (-2, -1))
    union = jnp.sum(hard_p | hard_t, (-2, -1))
    iou = jax.lax.stop_gradient(jnp.where(union > 0, inter / jnp.maximum(union, 1), 1.0))
    iou_l = jnp.mean(jnp.square(raw["iou"] - iou), -1)
    vis = (jnp.sum(target, (-2, -1)) > 0).astype(jnp.float32)
    x = raw["obj"]
    obj = _presence_bce(x, vis, rules, on_screen)
    mean = lambda v, w: jnp.sum(w * v) / jnp.maximum(jnp.sum(w), 1.0)  # noqa: E731
    mask_w = weight * (vis + rules.absent_weight * (1 - vis))
    return {"mask": mean(mask, mask_w), "iou": mean(iou_l, mask_w), "obj": mean(obj, weight)}


def count_prior(samples: int = 400, seed: int = 0, frames: int = TRAIN_FRAMES, max_count: int = 4
                ) -> tuple[float, ...]:
    """p(tracked object visible | N objects on screen), N = 0 .. ``max_count``, over ``samples`` training clips
    of :func:`sample_example` (its own RNG stream); a count never seen gets 0.5."""
    rng = np.random.default_rng([seed, 5_151])
    cfg = Sam2Config.tiny()
    hits, tot = np.zeros(max_count + 1), np.zeros(max_count + 1)
    for _ in range(samples):
        ex = sample_example(rng, cfg, frames)
        vis = ex["target"].sum((-2, -1)) > 0  # [O, T]
        n = np.minimum(ex["on_screen"], max_count)
        for o in range(len(vis)):
            np.add.at(tot, n, 1)
            np.add.at(hits, n, vis[o])
    return tuple(float(h / t) if t else 0.5 for h, t in zip(hits, tot))


def _identity_classes() -> tuple[int, int]:
    from data_pipelines.synthetic import words

    return len(words.COLOURS), len(words.SHAPES)


NUM_IDENTITY_CLASSES = _identity_classes()  # (colours, shapes) the identity head names
_HEAD_GAIN = 10.0  # logits = gain * (x @ w + b): the head learns 10x faster under the shared Adam step size


def init_identity_head(cfg: Sam2Config, seed: int) -> Params:
    """The auxiliary heads: the two linear colour + shape heads of ``LossRules.identity_weight`` (``feat`` reads
    the stride-16 image features, ``mem`` the conditioning frames' memories; zero bias, small random weights) and
    the presence head of ``LossRules.match_weight`` (``match``, zeros)."""
    n = sum(NUM_IDENTITY_CLASSES)
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed + 31))
    return {"feat": {"w": jax.random.normal(k1, (cfg.fpn_hidden_size, n)) * 1e-3, "b": jnp.zeros((n,))},
            "mem": {"w": jax.random.normal(k2, (cfg.memory_encoder_output_channels, n)) * 1e-3,
                    "b": jnp.zeros((n,))},
            "match": {"w": jnp.zeros((2 * cfg.hidden_size,)), "b": jnp.zeros(())}}


def identity_loss(head: Params, feats: jax.Array, area: jax.Array, identity: jax.Array
                  ) -> tuple[jax.Array, jax.Array]:
    """Cross-entropy of objects' colour and shape named by a linear ``head`` from features pooled over their area.

    feats [..., cells, C]; area [..., cells] (the share of each cell the object covers); identity [..., 2]
    (colour, shape). The pooled feature is divided by its RMS, so the head reads directions, not the map's
    scale. Entries whose object covers under a twentieth of a cell in all do not count.
    Returns (mean loss over the counted entries, colour accuracy there).
    """
    tot = area.sum(-1)
    pooled = jnp.einsum("...y,...yc->...c", area, feats) / jnp.maximum(tot, 1e-6)[..., None]
    pooled = pooled * jax.lax.rsqrt(jnp.mean(jnp.square(pooled), -1, keepdims=True) + 1e-6)
    logits = (pooled @ head["w"] + head["b"]) * _HEAD_GAIN
    nc = NUM_IDENTITY_CLASSES[0]
    lc, ls = jax.nn.log_softmax(logits[..., :nc]), jax.nn.log_softmax(logits[..., nc:])
    pick = lambda lp, k: jnp.take_along_axis(lp, identity[..., k:k + 1], -1)[..., 0]  # noqa: E731
    nll = -(pick(lc, 0) + pick(ls, 1))
    vis = (tot > 0.05).astype(jnp.float32)
    n = jnp.maximum(vis.sum(), 1.0)
    return jnp.sum(vis * nll) / n, jnp.sum(vis * (jnp.argmax(lc, -1) == identity[..., 0])) / n


def _cell_area(target: jax.Array, g: int) -> jax.Array:
    """[..., h, w] soft masks -> [..., g*g]: the share of each cell of a g x g grid the object covers."""
    *lead, h, w = target.shape
    return target.reshape(*lead, g, h // g, g, w // g).mean((-3, -1)).reshape(*lead, g * g)


def _identity_terms(head: Params, cond: dict, target: jax.Array, ctarget: jax.Array, identity: jax.Array
                    ) -> dict[str, jax.Array]:
    """The identity losses of one clip: every visible (object, frame) from ``feat``, and every valid
    conditioning frame's memory (the memory that later frames are matched against)."""
    feat = cond["frame_feat"]  # [T, g, g, C]
    t, g = feat.shape[0], feat.shape[1]
    o = target.shape[0]
    per_object = jnp.broadcast_to(feat.reshape(1, t, g * g, -1), (o, t, g * g, feat.shape[-1]))
    lf, acc = identity_loss(head["feat"], per_object, _cell_area(target, g),
                            jnp.broadcast_to(identity[:, None], (o, t, 2)))
    k = ctarget.shape[1]
    area = _cell_area(ctarget, g) * cond["valid"][..., None]
    lm, acc_m = identity_loss(head["mem"], cond["mem"], area, jnp.broadcast_to(identity[:, None], (o, k, 2)))
    return {"identity": lf + lm, "identity_acc": acc, "identity_mem_acc": acc_m}


def clip_loss(model: Sam2VideoModel, params: Params, ex: dict, bptt: bool = True, rules: LossRules = LossRules(),
              head: Params | None = None) -> tuple[jax.Array, dict]:
    """Loss of one clip (conditioning and tracked frames, equal weight) and its parts, under ``rules``
    (``head``: :func:`init_identity_head`'s auxiliary heads, needed when ``rules.identity_weight`` or
    ``rules.match_weight`` > 0)."""
    target = ex["target"]  # [O, T, h, w]
    _, cond, craw, traw = train_forward(model, params, ex["pixels"], ex["boxes"], ex["box_valid"], bptt)
    ctarget = jnp.take_along_axis(target, cond["idx"][..., None, None], axis=1)  # [O, K, h, w]
    is_cond = jnp.any((cond["idx"][:, :, None] == jnp.arange(target.shape[1])) & cond["valid"][..., None], 1)
    lc = _heads_loss(craw, ctarget, cond["valid"].astype(jnp.float32), dataclasses.replace(rules, best_of=False))
    on_screen = jnp.broadcast_to(ex["on_screen"], target.shape[:2]) if rules.count_prior else None
    lt = _heads_loss(traw, target, jnp.logical_not(is_cond).astype(jnp.float32), rules, on_screen)
    parts = {k: 0.5 * (lc[k] + lt[k]) for k in lc}
    total = parts["mask"] + parts["iou"] + rules.obj_weight * parts["obj"]
    extra = {}
    if (rules.identity_weight or rules.match_weight) and head is None:
        raise ValueError("clip_loss: LossRules.identity_weight / match_weight > 0 need the auxiliary heads "
                         "(init_identity_head)")
    if rules.identity_weight:
        extra = _identity_terms(head, cond, target, ctarget, ex["identity"])
        total = total + rules.identity_weight * extra["identity"]
    if rules.match_weight:
        c = traw["conditioned"]  # [O, T, 2C]
        c = c * jax.lax.rsqrt(jnp.mean(jnp.square(c), -1, keepdims=True) + 1e-6)
        logit = (c @ head["match"]["w"] + head["match"]["b"]) * _HEAD_GAIN
        vis = (jnp.sum(target, (-2, -1)) > 0).astype(jnp.float32)
        w = jnp.logical_not(is_cond).astype(jnp.float32)
        extra["match"] = jnp.sum(w * _presence_bce(logit, vis, rules, on_screen)) / jnp.maximum(jnp.sum(w), 1.0)
        extra["match_acc"] = jnp.sum(w * ((logit > 0) == (vis > 0))) / jnp.maximum(jnp.sum(w), 1.0)
        total = total + rules.match_weight * extra["match"]
    return total, {**parts, "mask_cond": lc["mask"], "mask_track": lt["mask"], **extra}


def make_train_step(model: Sam2VideoModel, tx: Any, bptt: bool = True, rules: LossRules = LossRules()):
    """Jitted ``(params, opt_state, batch) -> (params, opt_state, metrics)`` over a batch of clips (vmap).

    With ``rules.identity_weight`` or ``rules.match_weight`` > 0, ``params`` is the pair (SAM2 params,
    :func:`init_identity_head`)."""
    import optax

    def loss_fn(tree, batch):
        params, head = tree if rules.identity_weight or rules.match_weight else (tree, None)
        params = tie_positional_embeddings(params)
        loss, parts = jax.vmap(lambda ex: clip_loss(model, params, ex, bptt, rules, head))(batch)
        return jnp.mean(loss), jax.tree.map(jnp.mean, parts)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(params, opt_state, batch):
        (loss, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, {"loss": loss, **parts}

    return step


# ----------------------------------------------------------------------------- evaluation
def heldout_clips(n: int, seed: int, frames: Sequence[int] = (8, 12)) -> list[tuple]:
    """``n`` held-out (frames [T,H,W,3], masks [O,T,H,W], prompt frame per object) from a separate RNG stream."""
    from data_pipelines.synthetic.render import render_clip
    from data_pipelines.synthetic.world import make_clip

    rng = np.random.default_rng([seed, 7_777])
    out = []
    for i in range(n):
        t = int(frames[i % len(frames)])
        frames_, masks = render_clip(make_clip(rng, f"held{i}", num_frames=t, height=HEIGHT, width=WIDTH))
        area = masks.reshape(*masks.shape[:2], -1).sum(-1)
        prompt = [int(rng.choice(np.nonzero(a)[0])) if a.any() else -1 for a in area]
        out.append((frames_, masks, prompt))
    return out


def evaluate_views(model: Sam2VideoModel, params: Params, clips: list[tuple]) -> dict[str, float]:
    """Mean DAVIS J (original resolution, bidirectional ``segment_video``) of GT-box-prompted object tracks, three ways.

    ``j``: every frame (what ReVOS-style J sees: an empty prediction scores 1 where the object is absent);
    ``j_visible``: only the frames where the object is visible (tracking quality, empty scores 0);
    ``j_prompted``: only the frame that got the GT box (the box -> mask skill alone);
    ``absent_masked``: share of the frames without the object that got a non-empty mask (each such frame
    scores 0 in ``j``; the object-score gate should leave them empty), and the same share split by whether
    another object is on screen (``absent_masked_with_others``: the gate must tell the object from the others;
    ``absent_masked_alone``: an empty frame, which any objectness detector leaves empty; ``None`` where no
    such frame exists);
    ``j_dist1`` / ``j_dist2`` / ``j_dist3plus``: J of the visible frames 1, 2 and >= 3 frames away from the
    prompted one (how fast tracking decays; ``None`` where no such frame exists).
    """
    from omnir1_jax.eval_pipeline import segment_video
    from omnir1_jax.metrics.davis import jaccard

    views: dict[str, list[float]] = {"j": [], "j_visible": [], "j_prompted": []}
    by_dist: dict[str, list[float]] = {"j_dist1": [], "j_dist2": [], "j_dist3plus": []}
    absent_masked: list[bool] = []
    masked_by_others: dict[bool, list[bool]] = {True: [], False: []}
    for frames, masks, prompt in clips:
        for j, t in enumerate(prompt):
            if t < 0:
                continue
            others = np.delete(masks, j, 0).reshape(len(masks) - 1, len(frames), -1).any((0, 2))  # [T]
            pred = segment_video(model, params, frames, _box(masks[j, t])[None], np.array([t]))
            per_frame = jaccard(pred, masks[j])
            views["j"].append(float(np.mean(per_frame)))
            visible = masks[j].reshape(len(per_frame), -1).any(-1)
            views["j_visible"].append(float(np.mean(per_frame[visible])))
            views["j_prompted"].append(float(per_frame[t]))
            for f in np.nonzero(visible)[0]:
                d = abs(int(f) - t)
                if d:
                    key = "j_dist1" if d == 1 else "j_dist2" if d == 2 else "j_dist3plus"
                    by_dist[key].append(float(per_frame[f]))
            masked = np.asarray(pred).reshape(len(per_frame), -1).any(-1)
            absent_masked.extend(masked[~visible].tolist())
            for f in np.nonzero(~visible)[0]:
                masked_by_others[bool(others[f])].append(bool(masked[f]))
    out = {k: float(np.mean(v)) for k, v in views.items()}
    out |= {k: float(np.mean(v)) if v else None for k, v in by_dist.items()}
    share = lambda v: float(np.mean(v)) if v else None  # noqa: E731
    return {**out, "absent_masked": share(absent_masked), "absent_masked_with_others": share(masked_by_others[True]),
            "absent_masked_alone": share(masked_by_others[False])}


def evaluate_j(model: Sam2VideoModel, params: Params, clips: list[tuple], visible_only: bool = False) -> float:
    """Mean J of GT-box-prompted tracks over every frame, or (``visible_only``) over the visible frames."""
    return evaluate_views(model, params, clips)["j_visible" if visible_only else "j"]


def ceiling_j(clips: list[tuple], size: int) -> float:
    """J of the GT masks pooled to the [size, size] logit grid and upsampled back (the 16x16 resolution ceiling)."""
    from data_pipelines.preprocess_sam2 import postprocess_masks
    from omnir1_jax.metrics.davis import jaccard

    js = []
    for _, masks, prompt in clips:
        for j, t in enumerate(prompt):
            if t >= 0:
                logit = pool_masks(masks[j], size) - 0.5
                js.append(float(np.mean(jaccard(postprocess_masks(logit, masks.shape[-2:]), masks[j]))))
    return float(np.mean(js))


# ----------------------------------------------------------------------------- driver
def init_params(cfg: Sam2Config, seed: int) -> Params:
    """Random tiny-SAM2 params exactly as :func:`omnir1_jax.rl.task.build_segmenter` makes them."""
    from omnir1_jax.parallel import unbox

    model = Sam2VideoModel(cfg)
    s = cfg.image_size
    init = jax.jit(lambda k: unbox(model.init(k, jnp.zeros((1, 3, s, s)), method=Sam2VideoModel.init_all)))
    return tie_positional_embeddings(init(jax.random.PRNGKey(seed))["params"])


def train_sam2(out_dir: str | None, steps: int, seed: int = 0, batch: int = 4, log_every: int = 50,
               learning_rate: float = 3e-4, eval_clips: int = 20, progress: bool = True,
               params: Params | None = None, fixed_batch: bool = False, val_every: int = 200,
               bptt: bool = False, frames: int = TRAIN_FRAMES, warmup: int | None = None,
               image_size: int = 64, rules: LossRules = LossRules(), select_by: str = "j",
               shuffle_frames: float = 0.0) -> dict:
    """Trains the tiny SAM2 for ``steps`` steps; returns metrics (J before/after, loss curve) and ``params``.

    Every ``val_every`` steps the :func:`evaluate_views` figures are measured on 8 validation clips (their own
    RNG stream, not the reported held-out clips) and the params best by ``select_by`` (``j``: every frame;
    ``j_visible``: the frames with the object, which does not reward blank tracks) are kept, which guards
    against late loss spikes. ``rules``: the loss weights (:class:`LossRules`).
    ``fixed_batch`` repeats the first batch every step (an overfitting check for tests). ``bptt`` backpropagates
    through the tracked-frame memories (about 3x slower per step; the shipped checkpoint was made without it).
    ``frames`` = 2 trains mostly the box -> mask skill (one or both frames are conditioning frames; several
    times cheaper per step than 8), a first phase before tracking clips (continue with ``params``).
    ``image_size`` is the tiny SAM2's input side (:meth:`Sam2Config.tiny`); the parameter shapes do not depend
    on it, so ``params`` trained at one size initialise another.
    """
    import optax
    from tqdm import tqdm

    from omnir1_jax.models.sam2.convert import save_checkpoint

    if select_by not in ("j", "j_visible"):
        raise ValueError(f"train_sam2: select_by={select_by!r}; expected 'j' or 'j_visible'")
    t0 = time.time()
    cfg = Sam2Config.tiny(image_size)
    model = Sam2VideoModel(cfg)
    params = tie_positional_embeddings(init_params(cfg, seed) if params is None else params)
    clips = heldout_clips(eval_clips, seed) if eval_clips else []
    j_before = evaluate_j(model, params, clips) if clips else None
    if progress:
        print(f"held-out J before training: {j_before}", flush=True)
    warmup = max(1, steps // 10) if warmup is None else max(1, warmup)
    sched = lr_schedule(learning_rate, warmup, steps)
    tx = optax.chain(optax.clip_by_global_norm(0.5), optax.adamw(sched, b2=0.99, eps=1e-6, weight_decay=0.0))
    aux = bool(rules.identity_weight or rules.match_weight)
    if aux:  # the auxiliary heads train alongside and are dropped at the end
        params = (params, init_identity_head(cfg, seed))
    opt_state = tx.init(params)
    params = jax.tree.map(jnp.array, params)  # the step donates its inputs
    sam2_of = (lambda tree: tree[0]) if aux else (lambda tree: tree)  # noqa: E731
    step = make_train_step(model, tx, bptt, rules)
    rng = np.random.default_rng(seed)
    curve, run, first = [], [], sample_batch(rng, cfg, batch, frames, shuffle_frames)
    bar = tqdm(range(steps), desc="warm-start sam2", disable=not progress, dynamic_ncols=True)
    val = heldout_clips(8, seed + 1_000, frames=(8,)) if val_every and eval_clips else []
    best = (-1.0, 0, None)
    for i in bar:
        data = first if fixed_batch or i == 0 else sample_batch(rng, cfg, batch, frames, shuffle_frames)
        params, opt_state, m = step(params, opt_state, data)
        run.append(m)
        if (i + 1) % log_every == 0 or i + 1 == steps:
            row = {"step": i + 1, **{k: round(float(np.mean([float(r[k]) for r in run])), 5) for k in run[0]}}
            curve.append(row)
            run = []
            bar.set_postfix(loss=f"{row['loss']:.4f}")
            if val and ((i + 1) % val_every == 0 or i + 1 == steps):
                host = tie_positional_embeddings(jax.device_get(sam2_of(params)))
                vv = evaluate_views(model, host, val)
                logged = ("j", "j_visible", "j_dist1", "absent_masked_with_others")
                row |= {f"val_{k}": round(vv[k], 4) for k in logged if vv[k] is not None}
                if vv[select_by] > best[0]:
                    best = (vv[select_by], i + 1, host)
            if progress:
                bar.write(json.dumps(row))
    params = tie_positional_embeddings(jax.device_get(sam2_of(params)) if best[2] is None else best[2])
    views = evaluate_views(model, params, clips) if clips else {}
    j_after = views.get("j")
    result = {"steps": steps, "seed": seed, "batch": batch, "learning_rate": learning_rate,
              "train_frames": frames, "shuffle_frames": shuffle_frames, "warmup": warmup, "bptt": bptt,
              **dataclasses.asdict(rules), "select_by": select_by,
              "eval_clips": eval_clips, "kept_step": best[1] or steps,
              "j_before": j_before, "j_after": j_after, "j_visible_after": views.get("j_visible"),
              "j_prompted_after": views.get("j_prompted"),
              "absent_masked_after": views.get("absent_masked"),
              **{f"{k}_after": views.get(k) for k in ("absent_masked_with_others", "absent_masked_alone")},
              **{f"{k}_after": views.get(k) for k in ("j_dist1", "j_dist2", "j_dist3plus")},
              "image_size": cfg.image_size,
              # the mask-grid ceiling (16x16 at 64 px, 32x32 at 128 px; the key keeps its first name)
              "j_ceiling_16x16": ceiling_j(clips, cfg.mask_size) if clips else None, "curve": curve,
              "wall_s": round(time.time() - t0, 1)}
    if out_dir:
        save_checkpoint(out_dir, cfg, params)
        with open(os.path.join(out_dir, "warmstart.json"), "w") as fh:
            json.dump({**result, "command": "python -m omnir1_jax.warmstart.sam2 " + " ".join(sys.argv[1:])}, fh,
                      indent=1)
    return {**result, "params": params}


def main(argv: Sequence[str] | None = None) -> None:
    """CLI: trains, writes the checkpoint and ``warmstart.json``, prints one JSON line of final metrics."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--log_every", type=int, default=50)
    ap.add_argument("--eval_clips", type=int, default=20)
    ap.add_argument("--val_every", type=int, default=200)
    ap.add_argument("--bptt", action="store_true", help="backpropagate through tracked-frame memories")
    ap.add_argument("--frames", type=int, default=TRAIN_FRAMES, help="frames per training clip (>= 2; 2: mostly box -> mask)")
    ap.add_argument("--warmup", type=int, default=None, help="warmup steps (default steps / 10)")
    ap.add_argument("--obj_pos_weight", type=float, default=LossRules.obj_pos_weight,
                    help="weight of visible frames in the object-score BCE (1 = plain BCE)")
    ap.add_argument("--absent_weight", type=float, default=LossRules.absent_weight,
                    help="weight of absent-object frames (empty targets) in the mask loss; 0: visible frames "
                         "only, absence left to the object-score gate (SAM2's rule)")
    ap.add_argument("--obj_weight", type=float, default=LossRules.obj_weight,
                    help="weight of the object-score loss (the presence gate) against the mask and IoU losses")
    ap.add_argument("--best_of", action="store_true",
                    help="tracked frames: mask loss of the best multimask output only (SAM's rule)")
    ap.add_argument("--identity_weight", type=float, default=LossRules.identity_weight,
                    help="weight of the auxiliary colour + shape loss on the stride-16 features (0: off)")
    ap.add_argument("--match_weight", type=float, default=LossRules.match_weight,
                    help="weight of the auxiliary presence loss read from the memory-conditioned map (0: off)")
    ap.add_argument("--count_balance", action="store_true",
                    help="weigh the object-score BCE so that counting the objects on screen earns nothing")
    ap.add_argument("--select_by", default="j", choices=("j", "j_visible"),
                    help="validation figure that picks the kept params")
    ap.add_argument("--shuffle_frames", type=float, default=0.0,
                    help="share of training clips with their frames in a random order (tracking by looks)")
    ap.add_argument("--init", default="", help="continue from this SAM2 checkpoint (e.g. a --frames 1 run)")
    ap.add_argument("--image_size", type=int, default=64,
                    help="input side of the tiny SAM2 (a multiple of 64; memory attention runs at image_size/16)")
    a = ap.parse_args(argv)
    init = None
    if a.init:
        from omnir1_jax.models.sam2.convert import load_checkpoint

        init = load_checkpoint(a.init)[1]
    prior = count_prior(seed=a.seed) if a.count_balance else ()
    if prior:
        print(json.dumps({"count_prior": [round(p, 4) for p in prior]}), flush=True)
    r = train_sam2(a.out, a.steps, a.seed, a.batch, a.log_every, a.lr, a.eval_clips, val_every=a.val_every,
                   bptt=a.bptt, params=init, frames=a.frames, warmup=a.warmup,
                   image_size=a.image_size, select_by=a.select_by, shuffle_frames=a.shuffle_frames,
                   rules=LossRules(a.obj_pos_weight, a.absent_weight, a.best_of, a.obj_weight,
                                   a.identity_weight, prior, a.match_weight))
    keys = ("steps", "seed", "kept_step", "j_before", "j_after", "j_visible_after", "j_prompted_after",
            "absent_masked_after", "absent_masked_with_others_after", "absent_masked_alone_after", "j_dist1_after",
            "j_ceiling_16x16", "wall_s")
    print(json.dumps({k: r[k] for k in keys}
                     | {"final_loss": r["curve"][-1]["loss"] if r["curve"] else None}))


if __name__ == "__main__":
    main()
