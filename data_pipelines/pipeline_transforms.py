"""Record -> fixed-shape training example (host side): Omni-R1 frame sampling, Qwen patches, audio, GT at SAM2 res.

Every example of a task has the same array shapes (frames padded to `max_frames_padded`, patches padded to
`max_*_patches`, objects padded to `max_objects`), validity carried by masks, so grain can stack them into
static-shape batches.  Strings (`task`, `uid`, `video`, `expression`, `source`) stay host-only.

Example keys (F = max_frames_padded, O = max_objects, m = mask_size, D = 3*2*14*14 = 1176):
  all: type_id, frame_indices [F] (into the clip), frame_mask [F], num_frames, clip_length, orig_hw [2],
       gt_masks uint8 [F, O, m, m], gt_boxes f32 [F, O, 4] (x1 y1 x2 y2, original pixels, -1 = absent),
       object_mask [O], num_objects; optional sam2_pixels f32 [F, 3, S, S], hires_frames uint8 [F, h, w, 3]
  VOS: pixel_values_videos f32 [Nv, D], video_patch_mask [Nv], video_grid_thw [3], video_second_per_grid
  RefAVS: pixel_values f32 [Ni, D] (frame 0), image_patch_mask [Ni], image_grid_thw [3],
       input_features f32 [128, 100*audio_seconds], feature_attention_mask [100*audio_seconds], num_audio_tokens
"""

from __future__ import annotations

import dataclasses

import numpy as np

from data_pipelines import preprocess as pp

STRING_FIELDS = ("task", "uid", "video", "expression", "source")


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """Static preprocessing settings (defaults = Omni-R1 training; tiny configs shrink pixels and sizes)."""

    train: bool = True
    min_frames: int = 16
    max_frames: int = 24
    video_min_pixels: int = pp.VIDEO_MIN_PIXELS
    video_max_pixels: int = pp.VIDEO_MAX_PIXELS
    image_min_pixels: int = pp.VIDEO_MIN_PIXELS  # RefAVS frame-0 image seen by the policy
    image_max_pixels: int = pp.VIDEO_MAX_PIXELS
    patch_size: int = 14
    merge_size: int = 2
    temporal_patch_size: int = 2
    max_objects: int = 3  # Omni-R1 select_number
    mask_size: int = 256  # square GT mask resolution (SAM2 low-res mask grid is 256 for 1024 inputs)
    sam2_size: int | None = None  # emit SAM2-normalised frames [F, 3, S, S] when set
    hires_hw: tuple[int, int] | None = None  # emit uint8 sampled frames [F, h, w, 3] for in-graph grounding
    audio_seconds: int = 10  # static audio length (RefAVS clips are 10 s); valid frames equal the 300-s HF padding
    n_mels: int = 128

    @property
    def max_frames_padded(self) -> int:
        """Static frame axis F: the largest even sampled count."""
        top = self.max_frames if self.train else max(self.max_frames, self.min_frames)
        return top + top % 2

    @property
    def max_video_patches(self) -> int:
        return (self.max_frames_padded // self.temporal_patch_size) * (self.video_max_pixels // self.patch_size**2)

    @property
    def max_image_patches(self) -> int:
        return self.image_max_pixels // self.patch_size**2


def _pad_rows(x: np.ndarray, n: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Zero-pad axis 0 of x to n rows; returns (padded, valid-row mask)."""
    if x.shape[0] > n:
        raise ValueError(f"{what}: {x.shape[0]} rows exceed the static maximum {n}; raise the limit")
    out = np.zeros((n,) + x.shape[1:], x.dtype)
    out[: x.shape[0]] = x
    mask = np.zeros(n, bool)
    mask[: x.shape[0]] = True
    return out, mask


def load_sampled(source, index: int, rng: np.random.Generator, cfg: PreprocessConfig) -> dict | None:
    """Read record `index` at Omni-R1-sampled frames (adds `frame_indices`, `clip_length`); None = skipped.

    Sources that can decode a subset do so: `TfdsRecordSource.load_sampled`, or readers' `load(i, idx)` with
    the clip length from `.entries`; any other random-access source is read whole and subset here.
    """
    def pick(n: int) -> np.ndarray:
        return pp.sample_frame_indices(n, rng, cfg.min_frames, cfg.max_frames, cfg.train)

    if hasattr(source, "load_sampled"):
        rec, idx, n = source.load_sampled(index, pick)
    elif hasattr(source, "load") and getattr(source, "entries", None) is not None:
        e = source.entries[index]
        n = len(e["frame_names"]) if "frame_names" in e else int(source.num_frames)
        idx = pick(n)
        rec = source.load(index, frame_indices=idx)
    else:
        rec = source[index]
        if rec is None:
            return None
        n = rec["frames"].shape[0]
        idx = pick(n)
        rec = {**rec, "frames": rec["frames"][idx], "masks": rec["masks"][:, idx]}
    if rec is None:
        return None
    if rec["frames"].shape[0] != len(idx):
        raise ValueError(f"source returned {rec['frames'].shape[0]} frames for {len(idx)} requested indices")
    return {**rec, "frame_indices": idx, "clip_length": n}


def _objects(masks: np.ndarray, rng: np.random.Generator, max_objects: int) -> np.ndarray:
    """Pick at most max_objects objects at random (Omni-R1 draws select_number anno ids), keep their order."""
    o = masks.shape[0]
    if o <= max_objects:
        return masks
    keep = np.sort(rng.choice(o, size=max_objects, replace=False))
    return masks[keep]


def to_example(rec: dict, rng: np.random.Generator, cfg: PreprocessConfig, source_name: str = "") -> dict:
    """Sampled record (frames [F', H, W, 3], masks [O, F', H, W]) -> fixed-shape example dict."""
    frames, masks = rec["frames"], _objects(rec["masks"], rng, cfg.max_objects)
    f_pad = cfg.max_frames_padded
    n_f = frames.shape[0]
    h, w = frames.shape[1:3]
    ex: dict = {k: str(rec.get(k, "")) for k in ("task", "uid", "video", "expression")}
    ex["source"] = source_name
    ex["type_id"] = np.int32(rec.get("type_id", 0))
    ex["frame_indices"], ex["frame_mask"] = _pad_rows(np.asarray(rec["frame_indices"], np.int32), f_pad, "frames")
    ex["num_frames"] = np.int32(n_f)
    ex["clip_length"] = np.int32(rec["clip_length"])
    ex["orig_hw"] = np.asarray([h, w], np.int32)
    tp = cfg.temporal_patch_size
    if rec["task"] == "refavs":  # audio + frame 0 as a single image (Omni-R1 "RefAID")
        pv, grid = pp.preprocess_video(frames[:1], cfg.image_min_pixels, cfg.image_max_pixels, cfg.patch_size,
                                       cfg.merge_size, tp)
        ex["pixel_values"], ex["image_patch_mask"] = _pad_rows(pv, cfg.max_image_patches, "image patches")
        ex["image_grid_thw"] = grid.astype(np.int32)
        audio = pp.whisper_features(rec["audio"], cfg.n_mels, cfg.audio_seconds)
        ex["input_features"] = audio["input_features"]
        ex["feature_attention_mask"] = audio["feature_attention_mask"]
        ex["num_audio_tokens"] = audio["num_audio_tokens"]
    else:  # VOS: the sampled frames as one 2 fps video
        pv, grid = pp.preprocess_video(frames, cfg.video_min_pixels, cfg.video_max_pixels, cfg.patch_size,
                                       cfg.merge_size, tp)
        ex["pixel_values_videos"], ex["video_patch_mask"] = _pad_rows(pv, cfg.max_video_patches, "video patches")
        ex["video_grid_thw"] = grid.astype(np.int32)
        ex["video_second_per_grid"] = np.float32(tp / pp.SAMPLE_FPS)
    # Ground truth: per sampled frame and object, padded to [F, O, ...].
    o = masks.shape[0]
    m = masks.transpose(1, 0, 2, 3)  # [F', O, H, W]
    small = pp.resize_mask_nearest(m, (cfg.mask_size, cfg.mask_size)).astype(np.uint8)
    gt = np.zeros((f_pad, cfg.max_objects, cfg.mask_size, cfg.mask_size), np.uint8)
    gt[:n_f, :o] = small
    boxes = np.full((f_pad, cfg.max_objects, 4), -1.0, np.float32)
    boxes[:n_f, :o] = pp.mask_to_box(m)
    ex["gt_masks"], ex["gt_boxes"] = gt, boxes
    ex["object_mask"] = np.arange(cfg.max_objects) < o
    ex["num_objects"] = np.int32(o)
    if cfg.sam2_size is not None:
        ex["sam2_pixels"], _ = _pad_rows(pp.sam2_preprocess(frames, cfg.sam2_size), f_pad, "sam2 frames")
    if cfg.hires_hw is not None:
        hi = np.stack([pp.resize_uint8(f, cfg.hires_hw, "bicubic") for f in frames])
        ex["hires_frames"], _ = _pad_rows(hi, f_pad, "hires frames")
    return ex


def collate(examples: list[dict]) -> dict:
    """Stack same-task examples into a batch: NumPy arrays, plus host-only string fields as lists."""
    tasks = {e["task"] for e in examples}
    if len(tasks) != 1:
        raise ValueError(f"batches must be task-homogeneous, got {sorted(tasks)}")
    out = {}
    for k in examples[0]:
        if k in STRING_FIELDS:
            out[k] = [e[k] for e in examples]
        else:
            out[k] = np.stack([np.asarray(e[k]) for e in examples])
    return out
