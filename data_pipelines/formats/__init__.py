"""Readers of the real on-disk dataset formats (RefAVS, ReVOS, MeViS), lazily loading media per item.

Every reader is `Reader(root, split, *, skip_bad_examples=False)` with `__len__`, `.entries` (metadata
only), `__getitem__(i)` and `load(i, frame_indices=None)`, returning a record
`{"task", "uid", "video", "expression", "type_id", "frame_names", "frames" uint8 [T,H,W,3],
"masks" uint8 [O,T,H,W] {0,1}, "audio" float32 [n] 16 kHz mono, "audio_sample_rate", "source_files"}`
or None for a bad example that was logged and counted in `reader.skipped` (skip_bad_examples=True).
"""

from __future__ import annotations


def get_reader_cls(fmt: str):
    """Reader class for a format name: "refavs", "revos" or "mevis"."""
    if fmt == "refavs":
        from data_pipelines.formats.refavs import RefAVSReader

        return RefAVSReader
    if fmt == "revos":
        from data_pipelines.formats.revos import ReVOSReader

        return ReVOSReader
    if fmt == "mevis":
        from data_pipelines.formats.mevis import MeViSReader

        return MeViSReader
    raise ValueError(f"unknown dataset format {fmt!r}; expected refavs, revos or mevis")


SPLITS = {"refavs": ("train", "val", "test_s", "test_u", "test_n"), "revos": ("train", "valid"),
          "mevis": ("train", "valid_u", "valid")}
