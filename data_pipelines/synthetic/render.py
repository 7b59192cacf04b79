"""Rasterises a clip: RGB frames and per-object visible (occlusion-aware) masks, plus facts derived from masks."""

from __future__ import annotations

import cv2
import numpy as np

from data_pipelines.synthetic.world import COLOUR_RGB, Clip, SynthObject


def _polygon(shape: str, cx: float, cy: float, r: float) -> np.ndarray:
    if shape == "square":
        a = np.pi / 4 + np.arange(4) * np.pi / 2
        rr = np.full(4, r)
    elif shape == "diamond":
        a = np.arange(4) * np.pi / 2
        rr = np.full(4, r)
    elif shape == "triangle":
        a = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        rr = np.full(3, r)
    elif shape == "hexagon":
        a = np.arange(6) * np.pi / 3
        rr = np.full(6, r)
    elif shape == "star":
        a = -np.pi / 2 + np.arange(10) * np.pi / 5
        rr = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    pts = np.stack([cx + rr * np.cos(a), cy + rr * np.sin(a)], axis=-1)
    return np.round(pts).astype(np.int32)


def draw_object(obj: SynthObject, t: int, height: int, width: int) -> np.ndarray:
    """Full (unoccluded) silhouette of `obj` at frame t, uint8 [H, W] in {0, 1}; empty when not visible."""
    m = np.zeros((height, width), np.uint8)
    if not obj.first_frame <= t <= obj.last_frame:
        return m
    cx, cy = obj.center(t, width, height)
    if obj.shape == "circle":
        cv2.circle(m, (int(round(cx)), int(round(cy))), int(round(obj.radius)), 1, thickness=-1, lineType=cv2.LINE_8)
    else:
        cv2.fillPoly(m, [_polygon(obj.shape, cx, cy, obj.radius)], 1, lineType=cv2.LINE_8)
    return m


RAMP = 110  # background colour ramp: +RAMP red from left to right, +RAMP blue from top to bottom
SHADE = 0.5  # objects are lit by the scene: this fraction of the background colour shows through them


def background_image(clip: Clip) -> np.ndarray:
    """The clip's background uint8 [H, W, 3]: its base colour plus a horizontal red and a vertical blue ramp.

    The ramp is a layout cue, like the floor and walls of a real scene: a patch's colour says where it is (the
    objects are shaded by it too, ``SHADE``).  Tiny
    thinkers need it because their few rotary frequencies barely resolve image columns (``head_dim`` 16,
    ``rope_theta`` 1e6), so without it they cannot learn ``bbox_2d`` coordinates from a few minutes of CPU.
    """
    h, w = clip.height, clip.width
    bg = np.empty((h, w, 3), np.float32)
    bg[:] = np.asarray(clip.background, np.float32)
    bg[..., 0] += RAMP * np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :]
    bg[..., 2] += RAMP * np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    return np.clip(np.round(bg), 0, 255).astype(np.uint8)


def render_clip(clip: Clip) -> tuple[np.ndarray, np.ndarray]:
    """Frames uint8 [T, H, W, 3] and visible masks uint8 [O, T, H, W]; later objects occlude earlier ones."""
    t_n, h, w, o_n = clip.num_frames, clip.height, clip.width, len(clip.objects)
    frames = np.empty((t_n, h, w, 3), np.uint8)
    bg = background_image(clip)
    frames[:] = bg
    shaded = [np.round((1 - SHADE) * np.asarray(COLOUR_RGB[o.colour], np.float32) + SHADE * bg).astype(np.uint8)
              for o in clip.objects]  # [H, W, 3] per object: its colour, shaded by where it is
    masks = np.zeros((o_n, t_n, h, w), np.uint8)
    for t in range(t_n):
        covered = np.zeros((h, w), bool)
        for j in reversed(range(o_n)):  # topmost first
            full = draw_object(clip.objects[j], t, h, w).astype(bool)
            vis = full & ~covered
            covered |= full
            masks[j, t] = vis
            frames[t][vis] = shaded[j][vis]
    return frames, masks


def mask_facts(masks: np.ndarray) -> list[dict]:
    """Per object, from its masks [O, T, H, W]: visible frames, first/last visible frame, centroids, boxes."""
    facts = []
    for m in masks:
        area = m.reshape(m.shape[0], -1).sum(-1)
        vis = np.nonzero(area > 0)[0].tolist()
        centroids, boxes = {}, {}
        for t in vis:
            ys, xs = np.nonzero(m[t])
            centroids[t] = (float(xs.mean()), float(ys.mean()))
            boxes[t] = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]  # x0, y0, x1, y1
        facts.append({"visible_frames": vis, "first_visible": vis[0] if vis else None,
                      "last_visible": vis[-1] if vis else None, "centroids": centroids, "boxes": boxes})
    return facts
