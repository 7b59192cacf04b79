"""Shared reader machinery: media decoding with named errors, skip bookkeeping, JSON loading."""

from __future__ import annotations

import collections
import json
import logging
import math
import os
from typing import Any, Callable

import numpy as np
from PIL import Image
from scipy import signal
from scipy.io import wavfile

from data_pipelines.formats.errors import BadExampleError

AUDIO_SAMPLE_RATE = 16000
log = logging.getLogger("data_pipelines.formats")


def _open_image(path: str, what: str) -> Image.Image:
    if not os.path.isfile(path):
        raise BadExampleError(path, f"{what} file does not exist", "missing_file")
    try:
        img = Image.open(path)
        img.load()  # force full decode so truncation is detected here
    except Exception as exc:  # PIL raises several types for corrupt files
        raise BadExampleError(path, f"cannot decode {what} ({type(exc).__name__}: {exc})", f"corrupt_{what}") from None
    return img


def read_rgb(path: str) -> np.ndarray:
    """Reads an image file as RGB uint8 [H, W, 3] (PIL decoder, as the Qwen and SAM2 processors use)."""
    img = _open_image(path, "image")
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def read_binary_png(path: str) -> np.ndarray:
    """Reads a 0/255 mask PNG (grayscale, palette or colour) as uint8 [H, W] in {0, 1} (nonzero = 1)."""
    img = _open_image(path, "mask")
    if img.mode not in ("L", "1", "P", "I", "I;16"):
        img = img.convert("L")
    arr = np.asarray(img)
    if arr.ndim == 3:
        arr = arr.max(axis=-1)
    return (arr > 0).astype(np.uint8)


def read_wav_16k_mono(path: str) -> np.ndarray:
    """Reads a WAV (any rate, channels, PCM/float dtype) as float32 mono 16 kHz in [-1, 1].

    Downmix = mean over channels; resampling = `scipy.signal.resample_poly` with the reduced ratio.
    """
    if not os.path.isfile(path):
        raise BadExampleError(path, "audio file does not exist", "missing_file")
    try:
        rate, data = wavfile.read(path)
    except Exception as exc:
        raise BadExampleError(path, f"cannot decode WAV ({type(exc).__name__}: {exc})", "corrupt_audio") from None
    if rate <= 0:
        raise BadExampleError(path, f"WAV has invalid sample rate {rate}", "corrupt_audio")
    if data.dtype == np.uint8:
        x = (data.astype(np.float32) - 128.0) / 128.0
    elif np.issubdtype(data.dtype, np.integer):
        x = data.astype(np.float32) / float(-np.iinfo(data.dtype).min)
    else:
        x = data.astype(np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1)  # [n, C] -> [n]
    g = math.gcd(int(rate), AUDIO_SAMPLE_RATE)
    up, down = AUDIO_SAMPLE_RATE // g, int(rate) // g
    if up != 1 or down != 1:
        x = signal.resample_poly(x, up, down)
    return np.asarray(x, dtype=np.float32)


def load_json(path: str) -> Any:
    """Loads a JSON file; a missing or unparsable file raises `BadExampleError` naming it."""
    if not os.path.isfile(path):
        raise BadExampleError(path, "JSON file does not exist", "missing_file")
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadExampleError(path, f"invalid JSON ({exc})", "corrupt_json") from None


def require_key(obj: Any, key: str, where: str, kind: type | tuple = object) -> Any:
    """Returns obj[key], raising `BadExampleError(where, ...)` if obj is not a dict, lacks it, or has a wrong type."""
    if not isinstance(obj, dict) or key not in obj:
        raise BadExampleError(where, f"missing JSON key {key!r}", "missing_key")
    value = obj[key]
    if not isinstance(value, kind):
        raise BadExampleError(where, f"JSON key {key!r} has type {type(value).__name__}", "bad_value")
    return value


class SkipBookkeeping:
    """Mixin: raise bad examples, or (skip_bad_examples=True) log + count them once per item, by reason."""

    def _init_skips(self, skip_bad_examples: bool) -> None:
        self.skip_bad_examples = skip_bad_examples
        self.skipped: collections.Counter = collections.Counter()
        self.problems: list[str] = []  # every logged problem message, in detection order
        self._bad_items: set = set()

    def _report(self, err: BadExampleError, item_key: Any = None) -> None:
        """Raises `err`, or logs and counts it (once per `item_key`) when skipping."""
        if not self.skip_bad_examples:
            raise err
        if item_key is not None and item_key in self._bad_items:
            return
        if item_key is not None:
            self._bad_items.add(item_key)
        self.skipped[err.reason] += 1
        self.problems.append(str(err))
        log.warning("skipping bad example: %s", err)

    def _guarded(self, index: int, fn: Callable[[], dict]) -> dict | None:
        try:
            return fn()
        except BadExampleError as err:
            self._report(err, item_key=index)
            return None


def read_frames(paths: list[str]) -> np.ndarray:
    """Reads RGB frames into uint8 [T, H, W, 3]; a frame whose size differs from the first one is an error."""
    frames = [read_rgb(p) for p in paths]
    for p, f in zip(paths, frames):
        if f.shape != frames[0].shape:
            raise BadExampleError(p, f"frame size {f.shape[:2]} differs from {paths[0]} {frames[0].shape[:2]}",
                                  "size_mismatch")
    return np.stack(frames)


def check_same_size(mask: np.ndarray, frame_shape: tuple, path: str) -> None:
    """Raises if a [H, W] mask does not match the [H, W] of its frame."""
    if tuple(mask.shape[:2]) != tuple(frame_shape[:2]):
        raise BadExampleError(
            path, f"mask size {tuple(mask.shape[:2])} differs from frame size {tuple(frame_shape[:2])}", "size_mismatch"
        )
