"""Host-side preprocessing: Omni-R1 frame sampling and Qwen2.5-Omni image/video processing (NumPy + PIL).

The vision path reproduces what Omni-R1 feeds the thinker: qwen-omni-utils resizes every frame with PIL
bicubic to a `smart_resize` grid, then the HF processor (called with `do_resize=False`) rescales by 1/255,
normalises with the CLIP mean/std and patchifies with temporal_patch_size=2.  For single images this equals
transformers' `Qwen2VLImageProcessorPil` with `do_resize=True` (which also resizes with PIL bicubic).
Audio (Whisper log-mel) lives in `preprocess_audio.py`, SAM2 inputs/masks in `preprocess_sam2.py`, the
in-graph JAX resize+patchify in `preprocess_jax.py`; all are re-exported here.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from PIL import Image

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Omni-R1 resolutions (reference/omni_r1.md §2.2, §5.3), in pixels.
VIDEO_MIN_PIXELS = 16 * 28 * 28
VIDEO_MAX_PIXELS = 128 * 28 * 28
GROUNDING_MIN_PIXELS = 64 * 28 * 28
GROUNDING_MAX_PIXELS = 900 * 28 * 28
SAMPLE_FPS = 2.0  # a list of frames is treated as a 2 fps video


def sample_frame_indices(
    num_frames: int,
    rng: np.random.Generator,
    min_frames: int = 16,
    max_frames: int = 24,
    train: bool = True,
) -> np.ndarray:
    """Omni-R1 frame indices into a clip of `num_frames` frames, padded to an even count.

    Train: all frames if L <= min_frames, else f ~ UniformInt[min_frames, max_frames] (inclusive) and
    `linspace(0, L-1, f)` truncated to int (like `np.linspace(..., dtype=int)`; f > L repeats frames, as the
    reference code does).  Inference: all frames if
    L <= max_frames, else `linspace(0, L-1, max_frames)`.  An odd count repeats the last index (qwen-omni-utils
    pads a list-of-images video to a multiple of temporal_patch_size=2 that way).
    """
    if num_frames <= 0:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    if train:
        if num_frames <= min_frames:
            idx = np.arange(num_frames, dtype=np.int64)
        else:
            f = int(rng.integers(min_frames, max_frames + 1))
            idx = np.linspace(0, num_frames - 1, f).astype(np.int64)
    else:
        if num_frames <= max_frames:
            idx = np.arange(num_frames, dtype=np.int64)
        else:
            idx = np.linspace(0, num_frames - 1, max_frames).astype(np.int64)
    if len(idx) % 2:
        idx = np.concatenate([idx, idx[-1:]])
    return idx


def smart_resize(
    height: int,
    width: int,
    factor: int = 28,
    min_pixels: int = 56 * 56,
    max_pixels: int = 28 * 28 * 1280,
) -> tuple[int, int]:
    """Target (h, w): multiples of `factor`, area within [min_pixels, max_pixels], aspect ratio ~kept (Qwen2-VL)."""
    if max(height, width) / min(height, width) > 200:
        ratio = max(height, width) / min(height, width)
        raise ValueError(f"absolute aspect ratio must be smaller than 200, got {ratio}")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


_PIL_FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
                "nearest": Image.Resampling.NEAREST}


def resize_uint8(image: np.ndarray, size: tuple[int, int], resample: str = "bicubic") -> np.ndarray:
    """Resize a uint8 [H, W, C] image to (h, w) with PIL (antialiased when downscaling), uint8 out."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"expected uint8 image, got {image.dtype}")
    h, w = size
    if image.shape[:2] == (h, w):
        return image.copy()
    out = Image.fromarray(image).resize((w, h), resample=_PIL_FILTERS[resample])
    return np.asarray(out)


def rescale_normalize(
    images: np.ndarray,
    mean: Sequence[float] = OPENAI_CLIP_MEAN,
    std: Sequence[float] = OPENAI_CLIP_STD,
) -> np.ndarray:
    """uint8 [..., H, W, C] -> float32 [..., C, H, W]: x/255 (in float64, then float32), then (x - mean)/std."""
    x = (np.asarray(images).astype(np.float64) * (1.0 / 255.0)).astype(np.float32)
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.moveaxis(x, -1, -3)  # channel-first, as the processors emit


def patchify(
    frames: np.ndarray,
    patch_size: int = 14,
    merge_size: int = 2,
    temporal_patch_size: int = 2,
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Channel-first frames [T, C, H, W] -> (pixel_values [gt*gh*gw, C*tp*P*P], (gt, gh, gw)) in HF order.

    The frame count is padded to a multiple of `temporal_patch_size` by repeating the last frame; patches
    are ordered (t, h/merge, w/merge, merge_h, merge_w) so each 2x2 merge group is contiguous.
    """
    t, c, h, w = frames.shape
    if pad := -t % temporal_patch_size:
        frames = np.concatenate([frames, np.repeat(frames[-1:], pad, axis=0)], axis=0)
        t += pad
    gt, gh, gw = t // temporal_patch_size, h // patch_size, w // patch_size
    if gh % merge_size or gw % merge_size or h % patch_size or w % patch_size:
        raise ValueError(f"frame size {(h, w)} is not a multiple of patch_size*merge_size")
    x = frames.reshape(gt, temporal_patch_size, c, gh // merge_size, merge_size, patch_size,
                       gw // merge_size, merge_size, patch_size)
    # -> [gt, gh/m, gw/m, m_h, m_w, C, tp, P, P]
    x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    pv = x.reshape(gt * gh * gw, c * temporal_patch_size * patch_size * patch_size)
    return np.ascontiguousarray(pv), (gt, gh, gw)


def preprocess_video(
    frames: np.ndarray,
    min_pixels: int = VIDEO_MIN_PIXELS,
    max_pixels: int = VIDEO_MAX_PIXELS,
    patch_size: int = 14,
    merge_size: int = 2,
    temporal_patch_size: int = 2,
    resized_hw: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 frames [T, H, W, 3] -> (pixel_values [N, 3*tp*P*P] float32, grid_thw int64 [3]).

    Each frame is PIL-bicubic resized to `smart_resize` (or `resized_hw`), as qwen-omni-utils does for a
    list-of-images video, then processed like `Qwen2VLVideoProcessor(do_resize=False)`.
    """
    frames = np.asarray(frames)
    factor = patch_size * merge_size
    if resized_hw is None:
        resized_hw = smart_resize(frames.shape[1], frames.shape[2], factor, min_pixels, max_pixels)
    resized = np.stack([resize_uint8(f, resized_hw, "bicubic") for f in frames])
    pv, grid = patchify(rescale_normalize(resized), patch_size, merge_size, temporal_patch_size)
    return pv, np.asarray(grid, np.int64)


def preprocess_images(
    images: Sequence[np.ndarray],
    min_pixels: int = 56 * 56,
    max_pixels: int = 28 * 28 * 1280,
    patch_size: int = 14,
    merge_size: int = 2,
    temporal_patch_size: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [H, W, 3] each -> (pixel_values [sum N_i, 3*tp*P*P], image_grid_thw int64 [n, 3]).

    Equals `Qwen2VLImageProcessorPil(min_pixels=..., max_pixels=...)`: PIL bicubic to `smart_resize`, rescale,
    CLIP normalise, one image repeated over the temporal patch.
    """
    pvs, grids = [], []
    for img in images:
        pv, grid = preprocess_video(np.asarray(img)[None], min_pixels, max_pixels, patch_size, merge_size,
                                    temporal_patch_size)
        pvs.append(pv)
        grids.append(grid)
    return np.concatenate(pvs, axis=0), np.stack(grids).astype(np.int64)


def num_vision_tokens(grid_thw: np.ndarray, merge_size: int = 2) -> np.ndarray:
    """LLM placeholder tokens per image/video: t*h*w / merge_size**2."""
    return np.prod(np.asarray(grid_thw), axis=-1) // (merge_size**2)


from data_pipelines.preprocess_audio import (  # noqa: E402  (re-exports)
    WHISPER_HOP,
    WHISPER_N_FFT,
    WHISPER_SAMPLE_RATE,
    audio_output_lengths,
    mel_filter_bank,
    whisper_features,
    whisper_log_mel,
)
from data_pipelines.preprocess_sam2 import (  # noqa: E402
    IMAGENET_MEAN,
    IMAGENET_STD,
    mask_to_box,
    postprocess_masks,
    resize_mask_bilinear,
    resize_mask_nearest,
    sam2_preprocess,
)

__all__ = [
    "OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD", "VIDEO_MIN_PIXELS", "VIDEO_MAX_PIXELS", "GROUNDING_MIN_PIXELS",
    "GROUNDING_MAX_PIXELS", "SAMPLE_FPS", "sample_frame_indices", "smart_resize", "resize_uint8",
    "rescale_normalize", "patchify", "preprocess_video", "preprocess_images", "num_vision_tokens",
    "WHISPER_HOP", "WHISPER_N_FFT", "WHISPER_SAMPLE_RATE", "audio_output_lengths", "mel_filter_bank",
    "whisper_features", "whisper_log_mel", "IMAGENET_MEAN", "IMAGENET_STD", "mask_to_box", "postprocess_masks",
    "resize_mask_bilinear", "resize_mask_nearest", "sam2_preprocess",
]
