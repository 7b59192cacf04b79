"""SAM2 inputs and mask resizing (NumPy + PIL), matching transformers' `Sam2ImageProcessor` semantics.

SAM2 squashes every frame to a square `size` (1024 for the real model; configurable for tiny ones) with
bilinear antialiased resizing, rescales by 1/255 and normalises with the ImageNet mean/std.  transformers
resizes uint8 tensors with torchvision (antialias=True), which follows PIL's antialiased filter; we use PIL
itself, so values agree to about one uint8 step (see tests/test_preprocess.py for the measured tolerance).
GT masks go to mask resolution with torch-style 'nearest'; predicted logits go back to the original size
with bilinear (align_corners=False), as `Sam2ImageProcessor.post_process_masks` does.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def sam2_preprocess(
    image: np.ndarray,
    size: int = 1024,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> np.ndarray:
    """uint8 [H, W, 3] (or [T, H, W, 3]) -> float32 [3, size, size] (or [T, 3, size, size]) SAM2 pixels."""
    from data_pipelines.preprocess import rescale_normalize, resize_uint8

    image = np.asarray(image)
    if image.ndim == 4:
        return np.stack([sam2_preprocess(f, size, mean, std) for f in image])
    resized = resize_uint8(image, (size, size), "bilinear")
    return rescale_normalize(resized, mean, std)


def resize_mask_nearest(mask: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Nearest resize of [..., H, W] masks to out_hw, torch 'nearest' convention (src = floor(dst * in/out))."""
    mask = np.asarray(mask)
    h, w = mask.shape[-2:]
    oh, ow = out_hw
    rows = np.minimum(np.floor(np.arange(oh, dtype=np.float32) * np.float32(h / oh)).astype(np.int64), h - 1)
    cols = np.minimum(np.floor(np.arange(ow, dtype=np.float32) * np.float32(w / ow)).astype(np.int64), w - 1)
    return mask[..., rows[:, None], cols[None, :]]


def _bilinear_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Half-pixel (align_corners=False) source indices and weights along one axis."""
    scale = np.float32(n_in / n_out)
    src = np.maximum((np.arange(n_out, dtype=np.float32) + 0.5) * scale - 0.5, 0.0).astype(np.float32)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(np.float32)


def resize_mask_bilinear(logits: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of float [..., h, w] mask logits to out_hw (align_corners=False, no antialias)."""
    x = np.asarray(logits, np.float32)
    r0, r1, rw = _bilinear_weights(x.shape[-2], out_hw[0])
    c0, c1, cw = _bilinear_weights(x.shape[-1], out_hw[1])
    x = x[..., r0, :] * (1 - rw)[:, None] + x[..., r1, :] * rw[:, None]  # [..., oh, w]
    return x[..., c0] * (1 - cw) + x[..., c1] * cw  # [..., oh, ow]


def postprocess_masks(logits: np.ndarray, original_hw: tuple[int, int], threshold: float = 0.0) -> np.ndarray:
    """Low-res SAM2 mask logits [..., h, w] -> bool masks [..., H, W] at the original frame size."""
    return resize_mask_bilinear(logits, original_hw) > threshold


def mask_to_box(mask: np.ndarray) -> np.ndarray:
    """Binary [..., H, W] -> float32 [..., 4] tight (x1, y1, x2, y2) pixel boxes; [-1]*4 where empty."""
    mask = np.asarray(mask).astype(bool)
    rows, cols = mask.any(-1), mask.any(-2)  # [..., H], [..., W]
    h, w = mask.shape[-2:]
    y1 = np.argmax(rows, -1)
    y2 = h - 1 - np.argmax(rows[..., ::-1], -1)
    x1 = np.argmax(cols, -1)
    x2 = w - 1 - np.argmax(cols[..., ::-1], -1)
    box = np.stack([x1, y1, x2, y2], -1).astype(np.float32)
    return np.where(rows.any(-1)[..., None], box, np.float32(-1.0))
