"""Readers of the ReVOS layout (and the shared VOS machinery MeViS reuses): meta JSON + RLE mask_dict + JPEGs."""

from __future__ import annotations

import logging
import os

import numpy as np

from data_pipelines.formats import common, rle
from data_pipelines.formats.errors import BadExampleError

log = logging.getLogger("data_pipelines.formats.revos")


class VOSReader(common.SkipBookkeeping):
    """Lazy reader for `{"videos": {video: {"frames", "expressions"}}}` metadata with a COCO-RLE `mask_dict`.

    One item per expression (JSON order). Metadata problems (missing keys, empty expression, unsorted
    frame list) are found at construction; media problems (missing/corrupt JPEG, bad RLE, size mismatch)
    at load time. `mask_dict` is read on first use and cached (not pickled).
    """

    task = "vos"
    has_type_id = True

    def __init__(self, root: str, split: str, *, meta_path: str, image_dir: str, mask_dict_path: str | None,
                 skip_bad_examples: bool = False):
        self._init_skips(skip_bad_examples)
        self.root, self.split = str(root), split
        self.meta_path, self.image_dir, self.mask_dict_path = meta_path, image_dir, mask_dict_path
        self._mask_dict = None
        meta = common.load_json(meta_path)
        videos = common.require_key(meta, "videos", meta_path, dict)
        self.entries: list[dict] = []
        self._entry_errors: dict[int, BadExampleError] = {}
        for video, vmeta in videos.items():
            self._add_video(str(video), vmeta)
        self.num_videos = len(videos)
        log.info("%s %s: %d videos, %d expressions, %d bad metadata entries (images under %s)",
                 self.task, split, self.num_videos, len(self.entries), len(self._entry_errors), image_dir)

    def _add_video(self, video: str, vmeta) -> None:
        where = f"{self.meta_path}:videos/{video}"
        try:
            exps = common.require_key(vmeta, "expressions", where, dict)
        except BadExampleError as err:  # no expressions: nothing to enumerate, count the video once
            self._report(err, item_key=("video", video))
            return
        video_err = None
        frames: list = []
        try:
            frames = common.require_key(vmeta, "frames", where, list)
            if not all(isinstance(f, str) for f in frames):
                raise BadExampleError(where, "frame names must be strings", "bad_value")
            if not frames:
                raise BadExampleError(where, "empty frame list", "bad_value")
            if frames != sorted(frames):
                raise BadExampleError(where, "frame list is not sorted (mask_dict indexes by position)",
                                      "unsorted_frames")
        except BadExampleError as err:
            video_err = err
        for exp_id, emeta in exps.items():
            idx = len(self.entries)
            ewhere = f"{where}/expressions/{exp_id}"
            entry = {"uid": f"{video}/{exp_id}", "video": video, "exp_id": str(exp_id), "expression": "",
                     "type_id": 0, "anno_id": [], "obj_id": [], "frame_names": list(frames),
                     "height": vmeta.get("height") if isinstance(vmeta, dict) else None,
                     "width": vmeta.get("width") if isinstance(vmeta, dict) else None}
            self.entries.append(entry)
            try:
                if video_err is not None:
                    raise video_err
                exp = common.require_key(emeta, "exp", ewhere, str)
                entry["expression"] = exp
                if not exp.strip():
                    raise BadExampleError(ewhere, "empty expression", "empty_expression")
                anno = common.require_key(emeta, "anno_id", ewhere, list)
                if not all(isinstance(a, (int, str)) and not isinstance(a, bool) for a in anno):
                    raise BadExampleError(ewhere, f"anno_id must be a list of ints, got {anno!r}", "bad_value")
                entry["anno_id"] = [str(a) for a in anno]
                entry["obj_id"] = list(emeta.get("obj_id", []))
                if self.has_type_id:
                    tid = common.require_key(emeta, "type_id", ewhere, int)
                    if tid not in (0, 1, 2):
                        raise BadExampleError(ewhere, f"type_id {tid} not in (0, 1, 2)", "bad_value")
                    entry["type_id"] = int(tid)
            except BadExampleError as err:
                self._entry_errors[idx] = err
                self._report(err, item_key=idx)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> dict | None:
        return self.load(i)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_mask_dict"] = None  # large; reloaded lazily in each worker
        if "_foreground" in state:
            state["_foreground"] = None
        return state

    @property
    def mask_dict(self) -> dict | None:
        """The parsed mask_dict.json (None where the split has no masks, e.g. MeViS valid)."""
        if self._mask_dict is None and self.mask_dict_path is not None:
            md = common.load_json(self.mask_dict_path)
            if not isinstance(md, dict):
                raise BadExampleError(self.mask_dict_path, "mask_dict must be a JSON object", "bad_value")
            self._mask_dict = md
        return self._mask_dict

    def load(self, i: int, frame_indices=None) -> dict | None:
        """Record i (optionally only the frames at `frame_indices`), or None for a counted skip."""
        if i < 0:
            i += len(self.entries)
        if i in self._entry_errors:
            return None
        return self._guarded(i, lambda: self._load(i, frame_indices))

    def frame_paths(self, i: int) -> list[str]:
        """JPEG paths of every frame of entry i, in meta-file order."""
        e = self.entries[i]
        return [os.path.join(self.image_dir, e["video"], f"{name}.jpg") for name in e["frame_names"]]

    def _load(self, i: int, frame_indices) -> dict:
        e = self.entries[i]
        n = len(e["frame_names"])
        ts = list(range(n)) if frame_indices is None else [int(t) for t in frame_indices]
        paths = self.frame_paths(i)
        frames_arr = common.read_frames([paths[t] for t in ts])  # [T, H, W, 3]
        hw = frames_arr.shape[1:3]
        md = self.mask_dict
        objs = []
        if md is not None:
            for a in e["anno_id"]:
                if a not in md:
                    raise BadExampleError(self.mask_dict_path, f"anno_id {a} of {e['uid']} missing (missing JSON key)",
                                          "missing_key")
                per_frame = md[a]
                if not isinstance(per_frame, list) or len(per_frame) != n:
                    got = len(per_frame) if isinstance(per_frame, list) else type(per_frame).__name__
                    raise BadExampleError(self.mask_dict_path,
                                          f"anno_id {a}: expected a list of {n} per-frame RLEs, got {got}", "bad_value")
                where = f"{self.mask_dict_path}:{a}"
                objs.append(np.stack([self._decode_frame(per_frame[t], f"{where}[{t}]", hw) for t in ts]))  # [T, H, W]
        masks = np.stack(objs) if objs else np.zeros((0, len(ts)) + hw, np.uint8)  # [O, T, H, W]
        return {
            "task": self.task,
            "uid": e["uid"],
            "video": e["video"],
            "expression": e["expression"],
            "type_id": e["type_id"],
            "frame_names": [e["frame_names"][t] for t in ts],
            "frames": frames_arr,
            "masks": masks.astype(np.uint8),
            "audio": np.zeros((0,), np.float32),
            "audio_sample_rate": common.AUDIO_SAMPLE_RATE,
            "source_files": {"meta": self.meta_path, "mask_dict": self.mask_dict_path, "frames": [paths[t] for t in ts],
                             "anno_id": list(e["anno_id"])},
        }

    @staticmethod
    def _decode_frame(r, where: str, hw: tuple) -> np.ndarray:
        if not r:  # null / empty = object absent in this frame
            return np.zeros(hw, np.uint8)
        m = rle.decode(r, where)
        common.check_same_size(m, hw, where)
        return m


def probe_image_dir(root: str) -> tuple[str, str]:
    """ReVOS frames live in `<root>/JPEGImages/<video>/` (official) or `<root>/<video>/` (Sa2VA copy)."""
    jpeg = os.path.join(root, "JPEGImages")
    return (jpeg, "JPEGImages") if os.path.isdir(jpeg) else (root, "flat")


class ReVOSReader(VOSReader):
    """ReVOS: `meta_expressions_{split}_.json`, `mask_dict.json`, `mask_dict_foreground.json`, either image layout."""

    task = "revos"
    has_type_id = True
    SPLITS = ("train", "valid", "train_sub")

    def __init__(self, root: str, split: str, *, skip_bad_examples: bool = False):
        root = str(root)
        image_dir, self.layout = probe_image_dir(root)
        self.foreground_path = os.path.join(root, "mask_dict_foreground.json")
        self._foreground = None
        super().__init__(root, split, meta_path=os.path.join(root, f"meta_expressions_{split}_.json"),
                         image_dir=image_dir, mask_dict_path=os.path.join(root, "mask_dict.json"),
                         skip_bad_examples=skip_bad_examples)

    def foreground(self, video: str, frame_indices=None) -> np.ndarray:
        """Union-of-objects mask of `video` from mask_dict_foreground.json, uint8 [T, H, W] (for the R metric)."""
        if self._foreground is None:
            self._foreground = common.load_json(self.foreground_path)
        where = f"{self.foreground_path}:{video}"
        per_video = common.require_key(self._foreground, video, self.foreground_path, dict)
        rles = common.require_key(per_video, "masks_rle", where, list)
        ts = range(len(rles)) if frame_indices is None else frame_indices
        out = []
        for t in ts:
            r = rles[t]
            if not r:
                raise BadExampleError(where, f"frame {t} has no foreground RLE", "bad_value")
            out.append(rle.decode(r, f"{where}/masks_rle[{t}]"))
        return np.stack(out)
