"""COCO compressed RLE <-> binary mask, on top of pycocotools, with JSON-ready counts and validation."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from data_pipelines.formats.errors import BadExampleError

# pycocotools 2.0.11's Cython decode trips a NumPy-2 copy-keyword DeprecationWarning on every call.
warnings.filterwarnings("ignore", message=".*__array__ implementation doesn't accept a copy keyword.*",
                        category=DeprecationWarning, module="pycocotools")


def encode(mask: np.ndarray) -> dict:
    """Encodes a 2-D mask (any dtype, any memory layout; nonzero = foreground) as `{"size", "counts": str}`."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"rle.encode expects a 2-D mask, got shape {mask.shape}")
    binary = np.asfortranarray(mask != 0, dtype=np.uint8)  # pycocotools needs Fortran uint8
    rle = mask_utils.encode(binary)
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def _check_structure(rle: Any, where: str) -> tuple[int, int, Any]:
    if not isinstance(rle, dict):
        raise BadExampleError(where, f"RLE must be a dict with 'size' and 'counts', got {type(rle).__name__}",
                              "bad_rle")
    for key in ("size", "counts"):
        if key not in rle:
            raise BadExampleError(where, f"RLE is missing key {key!r}", "bad_rle")
    size = rle["size"]
    if (
        not isinstance(size, (list, tuple))
        or len(size) != 2
        or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 0 for s in size)
    ):
        raise BadExampleError(where, f"RLE 'size' must be [H, W] non-negative ints, got {size!r}", "bad_rle")
    return int(size[0]), int(size[1]), rle["counts"]


def decode(rle: Any, where: str = "<rle>") -> np.ndarray:
    """Decodes a COCO RLE (compressed str/bytes counts or uncompressed list counts) to uint8 [H, W] in {0, 1}.

    pycocotools reads past a truncated counts string into uninitialised memory, so a compressed RLE is
    accepted only if it decodes to {0, 1} and re-encodes to exactly the same string; `where` names the
    source (file and key) in the `BadExampleError` raised otherwise.
    """
    h, w, counts = _check_structure(rle, where)
    if isinstance(counts, (list, tuple)):  # uncompressed RLE
        if not all(isinstance(c, (int, np.integer)) and c >= 0 for c in counts):
            raise BadExampleError(where, "uncompressed RLE counts must be non-negative ints", "bad_rle")
        if sum(int(c) for c in counts) != h * w:
            raise BadExampleError(where, f"uncompressed RLE counts sum to {sum(counts)}, expected {h}*{w}", "bad_rle")
        compressed = mask_utils.frPyObjects({"size": [h, w], "counts": [int(c) for c in counts]}, h, w)
        return np.ascontiguousarray(mask_utils.decode(compressed), dtype=np.uint8)
    if isinstance(counts, str):
        try:
            counts_b = counts.encode("ascii")
        except UnicodeEncodeError:
            raise BadExampleError(where, "RLE counts contain non-ASCII characters", "bad_rle") from None
    elif isinstance(counts, bytes):
        counts_b = counts
    else:
        raise BadExampleError(where, f"RLE counts must be str, bytes or list, got {type(counts).__name__}", "bad_rle")
    if h * w == 0:
        return np.zeros((h, w), np.uint8)
    try:
        mask = mask_utils.decode({"size": [h, w], "counts": counts_b})
    except (ValueError, TypeError) as exc:
        raise BadExampleError(where, f"invalid RLE counts string ({exc})", "bad_rle") from None
    if mask.max(initial=0) > 1 or mask_utils.encode(np.asfortranarray(mask))["counts"] != counts_b:
        raise BadExampleError(where, f"RLE counts do not describe exactly {h}x{w} pixels (truncated or corrupt)",
                              "bad_rle")
    return np.ascontiguousarray(mask, dtype=np.uint8)


def area(rle: dict) -> int:
    """Foreground pixel count of a compressed RLE (no decode)."""
    counts = rle["counts"].encode("ascii") if isinstance(rle["counts"], str) else rle["counts"]
    return int(mask_utils.area({"size": list(rle["size"]), "counts": counts}))
