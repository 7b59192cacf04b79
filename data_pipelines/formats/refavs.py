"""Reader of the RefAVS (Ref-AVS Bench) on-disk layout: metadata.csv, media/<id>/{frames,audio.wav}, gt_mask/."""

from __future__ import annotations

import collections
import csv
import logging
import os

import numpy as np

from data_pipelines.formats import common
from data_pipelines.formats.errors import BadExampleError

SPLITS = ("train", "val", "test_s", "test_u", "test_n")
COLUMNS = ("vid", "uid", "split", "fid", "exp")
NUM_FRAMES = 10
log = logging.getLogger("data_pipelines.formats.refavs")


def media_id_from_uid(uid: str) -> str:
    """Media folder id = uid without its last two `_`-separated fields (category, k), split from the right."""
    parts = uid.rsplit("_", 2)
    if len(parts) != 3 or not parts[0]:
        raise ValueError(f"uid {uid!r} does not have the form <vid>_<category>_<k>")
    return parts[0]


def read_metadata(csv_path: str) -> list[dict]:
    """Reads metadata.csv as a list of row dicts (all strings, CSV order, `row` = 1-based data row, header excluded)."""
    if not os.path.isfile(csv_path):
        raise BadExampleError(csv_path, "metadata.csv does not exist", "missing_file")
    try:
        with open(csv_path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = tuple(reader.fieldnames or ())
            missing = [c for c in COLUMNS if c not in header]
            if missing:
                raise BadExampleError(csv_path, f"CSV header {header} lacks columns {missing}", "missing_key")
            rows = [{**{k: (v if v is not None else "") for k, v in r.items()}, "row": n}
                    for n, r in enumerate(reader, 1)]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise BadExampleError(csv_path, f"cannot parse CSV ({exc})", "corrupt_csv") from None
    return rows


class RefAVSReader(common.SkipBookkeeping):
    """Lazy RefAVS reader: rows of one split at construction, frames/masks/audio per item.

    TODO rows are dropped; exact duplicate rows are kept once and counted in `num_duplicates`; rows keep
    CSV order (the official batching depends on it). Records follow the schema in `data_pipelines.formats`.
    """

    task = "refavs"

    def __init__(self, root: str, split: str, *, skip_bad_examples: bool = False, num_frames: int = NUM_FRAMES):
        if split not in SPLITS:
            raise ValueError(f"unknown RefAVS split {split!r}; expected one of {SPLITS}")
        self._init_skips(skip_bad_examples)
        self.root, self.split, self.num_frames = str(root), split, num_frames
        self.csv_path = os.path.join(self.root, "metadata.csv")
        rows = read_metadata(self.csv_path)
        self.split_counts = collections.Counter(r["split"] for r in rows)
        self.num_todo = self.split_counts.get("TODO", 0)
        seen: set = set()
        self.num_duplicates = 0
        self.entries: list[dict] = []
        self._entry_errors: dict[int, BadExampleError] = {}
        for r in rows:
            if r["split"] != split:
                continue
            key = tuple(r[c] for c in COLUMNS)
            if key in seen:
                self.num_duplicates += 1
                continue
            seen.add(key)
            self._add_entry(r)
        uids = collections.Counter(e["uid"] for e in self.entries)
        self.reused_uids = sorted(u for u, c in uids.items() if c > 1)
        self.synthesised_null_masks = 0
        log.info(
            "RefAVS %s: %d rows (%d duplicates dropped, %d TODO rows in file, %d reused uids, %d bad metadata rows)",
            split, len(self.entries), self.num_duplicates, self.num_todo, len(self.reused_uids),
            len(self._entry_errors),
        )
        if self.num_duplicates:
            log.warning("RefAVS %s: %d exactly duplicated rows in %s were dropped", split, self.num_duplicates,
                        self.csv_path)

    def _add_entry(self, r: dict) -> None:
        idx = len(self.entries)
        where = f"{self.csv_path}:row {r['row']}"
        entry = {"uid": r["uid"], "vid": r["vid"], "split": r["split"], "fid": r["fid"], "exp": r["exp"],
                 "expression": r["exp"], "row": r["row"], "media_id": "", "video": "", "type_id": 0}
        self.entries.append(entry)
        try:
            try:
                entry["media_id"] = entry["video"] = media_id_from_uid(r["uid"])
            except ValueError as exc:
                raise BadExampleError(where, str(exc), "bad_value") from None
            if not r["fid"].isdigit():
                raise BadExampleError(where, f"fid {r['fid']!r} is not a non-negative integer", "bad_value")
            if not r["exp"].strip():
                raise BadExampleError(where, f"empty expression for uid {r['uid']!r}", "empty_expression")
        except BadExampleError as err:
            self._entry_errors[idx] = err
            self._report(err, item_key=idx)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> dict | None:
        return self.load(i)

    def paths(self, i: int) -> dict:
        """The media files of entry i (frames, masks, audio)."""
        e = self.entries[i]
        media = os.path.join(self.root, "media", e["media_id"])
        mask_dir = os.path.join(self.root, "gt_mask", e["media_id"], f"fid_{e['fid']}")
        return {
            "frames": [os.path.join(media, "frames", f"{k}.jpg") for k in range(self.num_frames)],
            "masks": [os.path.join(mask_dir, f"{k:05d}.png") for k in range(self.num_frames)],
            "mask_dir": mask_dir,
            "audio": os.path.join(media, "audio.wav"),
        }

    def load(self, i: int, frame_indices=None) -> dict | None:
        """Record i (optionally only the frames at `frame_indices`), or None for a counted skip."""
        if i < 0:
            i += len(self.entries)
        if i in self._entry_errors:
            return None
        return self._guarded(i, lambda: self._load(i, frame_indices))

    def _load(self, i: int, frame_indices) -> dict:
        e, p = self.entries[i], self.paths(i)
        ks = list(range(self.num_frames)) if frame_indices is None else [int(k) for k in frame_indices]
        frames_arr = common.read_frames([p["frames"][k] for k in ks])  # [T, H, W, 3]
        if e["uid"].startswith("null_") and not os.path.isdir(p["mask_dir"]):
            masks = np.zeros((1,) + frames_arr.shape[:3], np.uint8)  # Null clips: the GT is empty by definition
            self.synthesised_null_masks += 1
            log.info("RefAVS: %s missing for Null row %s; using all-zero masks", p["mask_dir"], e["uid"])
        else:
            ms = []
            for k in ks:
                m = common.read_binary_png(p["masks"][k])
                common.check_same_size(m, frames_arr.shape[1:3], p["masks"][k])
                ms.append(m)
            masks = np.stack(ms)[None]  # [1, T, H, W]
        audio = common.read_wav_16k_mono(p["audio"])
        return {
            "task": self.task,
            "uid": e["uid"],
            "video": e["media_id"],
            "expression": e["exp"],
            "type_id": 0,
            "frame_names": [str(k) for k in ks],
            "frames": frames_arr,
            "masks": masks,
            "audio": audio,
            "audio_sample_rate": common.AUDIO_SAMPLE_RATE,
            "source_files": {"metadata": self.csv_path, "row": e["row"], "frames": [p["frames"][k] for k in ks],
                             "masks": [p["masks"][k] for k in ks], "audio": p["audio"]},
        }
