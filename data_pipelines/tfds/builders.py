"""TFDS builders (array_record, no TensorFlow needed) for RefAVS, ReVOS and MeViS read from a local manual_dir.

TFDS 4.9's `GeneratorBasedBuilder` runs without TensorFlow when every feature is NumPy-encodable: we use
frames as the original image-file bytes (JPEG as on disk; PNG-encoded when no file is known), decoded with
the same PIL call the readers use, so a decoded record equals the reader's record bit for bit; masks and
audio as `Tensor(..., encoding="zlib")`; `Text` for strings and a JSON `Text` for `source_files`.  Records
are written with `file_format="array_record"`, so `tfds.data_source` / `builder_from_directory(...)
.as_data_source()` give a random-access source that grain reads directly.  Bad examples are skipped
(readers with `skip_bad_examples=True`) and counted in the log.  Storage note: a record is one expression,
so a video's frame bytes are repeated once per expression (ReVOS has several expressions per video).
"""

from __future__ import annotations

import io
import json
import logging
import os

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from data_pipelines.formats import SPLITS, get_reader_cls

log = logging.getLogger("data_pipelines.tfds")

_TEXT_FIELDS = ("task", "uid", "video", "expression")


def record_features() -> tfds.features.FeaturesDict:
    """The TFDS schema of one reader record (shared by all three datasets)."""
    return tfds.features.FeaturesDict({
        "task": tfds.features.Text(),
        "uid": tfds.features.Text(),
        "video": tfds.features.Text(),
        "expression": tfds.features.Text(),
        "type_id": np.int64,
        "frame_names": tfds.features.Sequence(tfds.features.Text()),
        "frames_encoded": tfds.features.Sequence(tfds.features.Tensor(shape=(), dtype=np.object_)),
        "masks": tfds.features.Tensor(shape=(None, None, None, None), dtype=np.uint8, encoding="zlib"),
        "audio": tfds.features.Tensor(shape=(None,), dtype=np.float32, encoding="zlib"),
        "audio_sample_rate": np.int64,
        "source_files_json": tfds.features.Text(),
    })


def decode_image(data: bytes) -> np.ndarray:
    """Encoded image bytes -> RGB uint8 [H, W, 3], exactly as `formats.common.read_rgb` decodes a file."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.uint8)


def _png_bytes(frame: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG")
    return buf.getvalue()


def encode_frames(rec: dict) -> list[bytes]:
    """Original file bytes of each frame when they decode to the record's frames, else lossless PNG."""
    frames = np.asarray(rec["frames"], np.uint8)
    paths = (rec.get("source_files") or {}).get("frames") or []
    if len(paths) == len(frames) and all(os.path.isfile(p) for p in paths):
        blobs = []
        for p in paths:
            with open(p, "rb") as fh:
                blobs.append(fh.read())
        if len(blobs) and np.array_equal(decode_image(blobs[0]), frames[0]):
            return blobs
    return [_png_bytes(f) for f in frames]


def encode_record(rec: dict) -> dict:
    """Reader record -> TFDS example dict."""
    out = {k: rec[k] for k in _TEXT_FIELDS}
    out.update(type_id=int(rec["type_id"]), frame_names=list(rec["frame_names"]),
               frames_encoded=encode_frames(rec), masks=np.asarray(rec["masks"], np.uint8),
               audio=np.asarray(rec["audio"], np.float32), audio_sample_rate=int(rec["audio_sample_rate"]),
               source_files_json=json.dumps(rec.get("source_files", {}), sort_keys=True))
    return out


def _to_str(x) -> str:
    return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def decode_record(ex: dict, frame_indices=None) -> dict:
    """TFDS example (as returned by a data source: bytes for text) -> the reader's record dict.

    With `frame_indices`, only those frames are decoded (and masks/frame_names subset), like `Reader.load`.
    """
    names = [_to_str(f) for f in ex["frame_names"]]
    ts = range(len(names)) if frame_indices is None else [int(t) for t in frame_indices]
    masks = np.asarray(ex["masks"])
    rec = {k: _to_str(ex[k]) for k in _TEXT_FIELDS}
    rec.update(type_id=int(ex["type_id"]), frame_names=[names[t] for t in ts],
               frames=np.stack([decode_image(ex["frames_encoded"][t]) for t in ts]),
               masks=masks if frame_indices is None else masks[:, list(ts)], audio=np.asarray(ex["audio"]),
               audio_sample_rate=int(ex["audio_sample_rate"]),
               source_files=json.loads(_to_str(ex["source_files_json"])))
    return rec


class _ReaderBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared builder: one split per reader split present under manual_dir."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Reader records (frames, masks, audio) as array_record."}
    FORMAT = ""  # "refavs" | "revos" | "mevis"
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Place the dataset in its original layout under manual_dir."

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, description=f"{self.FORMAT} reader records",
                                     features=record_features(), supervised_keys=None)

    def _available_splits(self, root: str) -> list[str]:
        out = []
        for split in SPLITS[self.FORMAT]:
            try:
                get_reader_cls(self.FORMAT)(root, split, skip_bad_examples=True)
                out.append(split)
            except (OSError, ValueError) as err:  # a split absent from this copy of the dataset
                log.info("%s: split %s not built (%s)", self.FORMAT, split, err)
        return out

    def _split_generators(self, dl_manager):
        root = os.fspath(dl_manager.manual_dir)
        return {split: self._generate_examples(root, split) for split in self._available_splits(root)}

    def _generate_examples(self, root: str, split: str):
        reader = get_reader_cls(self.FORMAT)(root, split, skip_bad_examples=True)
        for i in range(len(reader)):
            rec = reader[i]
            if rec is None:
                continue
            yield rec["uid"], encode_record(rec)
        log.info("%s %s: skipped %s bad examples", self.FORMAT, split, getattr(reader, "skipped", "?"))


class RefAvs(_ReaderBuilder):
    """RefAVS (RefAVSBench layout: metadata.csv, media/, gt_mask/)."""

    FORMAT = "refavs"


class Revos(_ReaderBuilder):
    """ReVOS (meta_expressions_*.json, mask_dict.json, JPEGImages/)."""

    FORMAT = "revos"


class Mevis(_ReaderBuilder):
    """MeViS ({train,valid_u,valid}/{JPEGImages, meta_expressions.json, mask_dict.json})."""

    FORMAT = "mevis"


BUILDERS = {"refavs": RefAvs, "revos": Revos, "mevis": Mevis}


def build(fmt: str, manual_dir: str, data_dir: str) -> tfds.core.DatasetBuilder:
    """Prepare the array_record files of dataset `fmt` from `manual_dir` into `data_dir`; returns the builder."""
    builder = BUILDERS[fmt](data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    return builder


class TfdsRecordSource:
    """Random-access source over a prepared split that yields reader-format records (grain-compatible)."""

    def __init__(self, data_dir: str, fmt: str, split: str):
        self.data_dir, self.fmt, self.split = data_dir, fmt, split
        self._source = None

    def _src(self):
        if self._source is None:
            path = os.path.join(self.data_dir, BUILDERS[self.fmt].name, str(BUILDERS[self.fmt].VERSION))
            self._source = tfds.builder_from_directory(path).as_data_source(split=self.split)
        return self._source

    def __len__(self) -> int:
        return len(self._src())

    def __getitem__(self, i: int) -> dict:
        return decode_record(self._src()[int(i)])

    def load_sampled(self, i: int, pick) -> tuple[dict, np.ndarray, int]:
        """Record i with only the frames `pick(num_frames)` decoded; returns (record, indices, num_frames)."""
        ex = self._src()[int(i)]
        n = len(ex["frame_names"])
        idx = pick(n)
        return decode_record(ex, idx), idx, n

    def __getstate__(self):  # grain workers re-open the files themselves
        return {"data_dir": self.data_dir, "fmt": self.fmt, "split": self.split, "_source": None}
