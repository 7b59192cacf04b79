"""TFDS array_record builders: build from synthetic data without TensorFlow, read back equal to the readers."""

import json
import os

import grain
import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_pipelines.formats import get_reader_cls
from data_pipelines.synthetic import writer
from data_pipelines.tfds import builders as B


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfds")
    manual = {"refavs": root / "raw_refavs", "revos": root / "raw_revos", "mevis": root / "raw_mevis"}
    writer.write_refavs(str(manual["refavs"]), seed=1, num_train=2, num_val=1, num_test=1)
    writer.write_vos(str(manual["revos"]), layout="revos", seed=1, num_train=2, num_valid=1)
    writer.write_vos(str(manual["mevis"]), layout="mevis", seed=1, num_train=2, num_valid=1)
    data_dir = str(root / "tfds")
    builders = {fmt: B.build(fmt, str(m), data_dir) for fmt, m in manual.items()}
    return manual, data_dir, builders


def _assert_same(a: dict, b: dict):
    assert set(a) == set(b)
    for k in a:
        if isinstance(a[k], np.ndarray):
            assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        else:
            assert a[k] == b[k], k


def test_no_tensorflow_needed(built):
    """The builds above ran in an environment without TensorFlow (the supported setup)."""
    import importlib.util
    import sys

    if importlib.util.find_spec("tensorflow") is not None:
        pytest.skip("TensorFlow is installed here; the TF-free build path is not exercised")
    assert "tensorflow" not in sys.modules and all(b.info.splits for b in built[2].values())


@pytest.mark.parametrize("fmt,split", [("refavs", "train"), ("refavs", "test_n"), ("revos", "train"),
                                       ("revos", "valid"), ("mevis", "valid_u")])
def test_records_equal_reader(built, fmt, split):
    manual, data_dir, builders = built
    reader = get_reader_cls(fmt)(str(manual[fmt]), split, skip_bad_examples=True)
    expected = {r["uid"]: r for r in (reader[i] for i in range(len(reader))) if r is not None}
    assert builders[fmt].info.splits[split].num_examples == len(expected) > 0
    src = B.TfdsRecordSource(data_dir, fmt, split)
    got = {r["uid"]: r for r in (src[i] for i in range(len(src)))}
    assert set(got) == set(expected)
    for uid in expected:
        _assert_same(got[uid], expected[uid])
    files = os.listdir(os.path.join(data_dir, B.BUILDERS[fmt].name, "1.0.0"))
    assert any(".array_record-" in f for f in files) and "dataset_info.json" in files
    info = json.load(open(os.path.join(data_dir, B.BUILDERS[fmt].name, "1.0.0", "dataset_info.json")))
    assert info["fileFormat"] == "array_record"


def test_tfds_data_source_and_grain(built):
    _, data_dir, _ = built
    ds = tfds.data_source("revos", split="train", data_dir=data_dir)  # by registered name
    assert len(ds) == len(B.TfdsRecordSource(data_dir, "revos", "train"))
    assert all(b[:2] == b"\xff\xd8" for b in ds[0]["frames_encoded"])  # original JPEG bytes stored
    uids = list(grain.MapDataset.source(B.TfdsRecordSource(data_dir, "revos", "train")).map(lambda r: r["uid"]))
    assert sorted(uids) == sorted(B.decode_record(ds[i])["uid"] for i in range(len(ds)))


def test_png_fallback_and_subset_decode():
    rng = np.random.default_rng(0)
    rec = {"task": "revos", "uid": "u", "video": "v", "expression": "e", "type_id": 1, "frame_names": ["0", "1", "2"],
           "frames": rng.integers(0, 256, (3, 5, 7, 3), dtype=np.uint8), "masks": np.ones((2, 3, 5, 7), np.uint8),
           "audio": np.zeros(0, np.float32), "audio_sample_rate": 16000, "source_files": {}}
    ex = B.encode_record(rec)
    assert all(b[:4] == b"\x89PNG" for b in ex["frames_encoded"])  # no files known: lossless PNG
    _assert_same(B.decode_record(ex), rec)
    sub = B.decode_record(ex, [2, 0])
    np.testing.assert_array_equal(sub["frames"], rec["frames"][[2, 0]])
    assert sub["masks"].shape == (2, 2, 5, 7) and sub["frame_names"] == ["2", "0"]
