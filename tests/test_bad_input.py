"""Bad input: every case raises BadExampleError naming the file and the problem, or is logged + counted + None."""

import json
import logging
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from data_pipelines.formats import rle
from data_pipelines.formats.errors import BadExampleError
from data_pipelines.formats.refavs import RefAVSReader
from data_pipelines.formats.revos import ReVOSReader
from data_pipelines.synthetic import writer

pytestmark = pytest.mark.filterwarnings("ignore:.*__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    base = tmp_path_factory.mktemp("pristine")
    writer.write_refavs(str(base / "refavs"), seed=4, num_train=2, num_val=0, num_test=0)
    writer.write_vos(str(base / "revos"), seed=4, num_train=2, num_valid=0, frames_range=(5, 6), no_target_prob=0.0)
    return base


@pytest.fixture
def refavs(pristine, tmp_path):
    root = str(tmp_path / "refavs")
    shutil.copytree(pristine / "refavs", root)
    return root


@pytest.fixture
def revos(pristine, tmp_path):
    root = str(tmp_path / "revos")
    shutil.copytree(pristine / "revos", root)
    return root


def _expect(make_reader, index, file_part, problem, reason, caplog):
    """Strict mode raises naming file + problem; skip mode logs, counts by reason, returns None (each counted)."""
    with pytest.raises(BadExampleError) as exc:
        r = make_reader(False)
        r[index]
    msg = str(exc.value)
    assert file_part in msg and problem in msg and exc.value.reason == reason, msg
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        r = make_reader(True)
        assert r[index] is None
        assert r[index] is None  # asking again does not double count
    assert r.skipped == {reason: 1}, r.skipped
    assert len(r.problems) == 1 and file_part in r.problems[0]
    assert file_part in caplog.text and "skipping bad example" in caplog.text
    loaded = [r[i] for i in range(len(r))]  # items sharing the broken file are skipped too, and counted
    n_none = sum(x is None for x in loaded)
    assert 1 <= n_none < len(r) and sum(r.skipped.values()) == n_none == len(r.problems)


def _refavs(root):
    return lambda skip: RefAVSReader(root, "train", skip_bad_examples=skip)


def _revos(root):
    return lambda skip: ReVOSReader(root, "train", skip_bad_examples=skip)


def _truncate(path, keep=0.4):
    data = open(path, "rb").read()
    open(path, "wb").write(data[: int(len(data) * keep)])


def test_missing_jpg(refavs, caplog):
    p = RefAVSReader(refavs, "train").paths(0)["frames"][3]
    os.remove(p)
    _expect(_refavs(refavs), 0, p, "does not exist", "missing_file", caplog)


def test_corrupt_jpg(refavs, caplog):
    p = RefAVSReader(refavs, "train").paths(0)["frames"][2]
    _truncate(p)
    _expect(_refavs(refavs), 0, p, "cannot decode image", "corrupt_image", caplog)


def test_missing_png(refavs, caplog):
    p = RefAVSReader(refavs, "train").paths(0)["masks"][5]
    os.remove(p)
    _expect(_refavs(refavs), 0, p, "does not exist", "missing_file", caplog)


def test_corrupt_png(refavs, caplog):
    p = RefAVSReader(refavs, "train").paths(0)["masks"][0]
    open(p, "wb").write(b"\x89PNG\r\n\x1a\nnot really a png")
    _expect(_refavs(refavs), 0, p, "cannot decode mask", "corrupt_mask", caplog)


def test_missing_wav(refavs, caplog):
    p = RefAVSReader(refavs, "train").paths(0)["audio"]
    os.remove(p)
    _expect(_refavs(refavs), 0, p, "does not exist", "missing_file", caplog)


def test_corrupt_wav(refavs, caplog):
    p = RefAVSReader(refavs, "train").paths(0)["audio"]
    open(p, "wb").write(b"RIFF\x00\x00\x00\x00WAVEjunkjunk")
    _expect(_refavs(refavs), 0, p, "cannot decode WAV", "corrupt_audio", caplog)


def test_png_mask_size_differs_from_frame(refavs, caplog):
    p = RefAVSReader(refavs, "train").paths(0)["masks"][1]
    Image.fromarray(np.zeros((50, 60), np.uint8), mode="L").save(p)
    _expect(_refavs(refavs), 0, p, "differs from frame size", "size_mismatch", caplog)


def test_empty_expression_refavs(refavs, caplog):
    csv = os.path.join(refavs, "metadata.csv")
    lines = open(csv).read().splitlines()
    lines[1] = lines[1].rsplit(",", 1)[0] + ",   "
    open(csv, "w").write("\n".join(lines) + "\n")
    _expect(_refavs(refavs), 0, "metadata.csv:row 1", "empty expression", "empty_expression", caplog)


def test_csv_missing_column(refavs):
    csv = os.path.join(refavs, "metadata.csv")
    lines = open(csv).read().splitlines()
    lines[0] = "vid,uid,split,fid,expression"
    open(csv, "w").write("\n".join(lines) + "\n")
    for skip in (False, True):  # a file-level problem: nothing can be read, so it always raises
        with pytest.raises(BadExampleError, match=r"metadata\.csv.*lacks columns \['exp'\]"):
            RefAVSReader(refavs, "train", skip_bad_examples=skip)


def _edit_json(path, fn):
    d = json.load(open(path))
    fn(d)
    json.dump(d, open(path, "w"))


def _meta(root):
    return os.path.join(root, "meta_expressions_train_.json")


def _first_video(root):
    return next(iter(json.load(open(_meta(root)))["videos"]))


def test_bad_rle_string(revos, caplog):
    r = ReVOSReader(revos, "train")
    anno = r.entries[0]["anno_id"][0]
    md = os.path.join(revos, "mask_dict.json")
    t = next(i for i, x in enumerate(json.load(open(md))[anno]) if x)
    _edit_json(md, lambda d: d[anno][t].update(counts="!!not-rle!!"))
    _expect(_revos(revos), 0, f"mask_dict.json:{anno}[{t}]", "invalid RLE", "bad_rle", caplog)


def test_missing_json_key_in_expression(revos, caplog):
    v = _first_video(revos)
    _edit_json(_meta(revos), lambda d: d["videos"][v]["expressions"]["0"].pop("exp"))
    _expect(_revos(revos), 0, f"meta_expressions_train_.json:videos/{v}/expressions/0", "missing JSON key 'exp'",
            "missing_key", caplog)


def test_missing_anno_id_in_mask_dict(revos, caplog):
    anno = ReVOSReader(revos, "train").entries[0]["anno_id"][0]
    _edit_json(os.path.join(revos, "mask_dict.json"), lambda d: d.pop(anno))
    _expect(_revos(revos), 0, "mask_dict.json", f"anno_id {anno}", "missing_key", caplog)


def test_missing_top_level_key_is_fatal(revos):
    _edit_json(_meta(revos), lambda d: d.update(vids=d.pop("videos")))
    for skip in (False, True):
        with pytest.raises(BadExampleError, match="meta_expressions_train_.json: missing JSON key 'videos'"):
            ReVOSReader(revos, "train", skip_bad_examples=skip)


def test_empty_expression_revos(revos, caplog):
    v = _first_video(revos)
    _edit_json(_meta(revos), lambda d: d["videos"][v]["expressions"]["0"].update(exp=" "))
    _expect(_revos(revos), 0, f"videos/{v}/expressions/0", "empty expression", "empty_expression", caplog)


def test_unsorted_frame_list(revos, caplog):
    v = _first_video(revos)

    def swap(d):
        f = d["videos"][v]["frames"]
        f[0], f[1] = f[1], f[0]

    _edit_json(_meta(revos), swap)
    n_exp = len(json.load(open(_meta(revos)))["videos"][v]["expressions"])
    with pytest.raises(BadExampleError, match=f"videos/{v}: frame list is not sorted"):
        ReVOSReader(revos, "train")
    r = ReVOSReader(revos, "train", skip_bad_examples=True)
    assert r.skipped == {"unsorted_frames": n_exp}  # every expression of that video is counted
    assert [r[i] is None for i in range(len(r))] == [e["video"] == v for e in r.entries]


def test_rle_size_differs_from_frame(revos, caplog):
    r = ReVOSReader(revos, "train")
    anno = r.entries[0]["anno_id"][0]
    md = os.path.join(revos, "mask_dict.json")
    t = next(i for i, x in enumerate(json.load(open(md))[anno]) if x)
    _edit_json(md, lambda d: d[anno].__setitem__(t, rle.encode(np.ones((10, 12), np.uint8))))
    _expect(_revos(revos), 0, f"mask_dict.json:{anno}[{t}]", "differs from frame size", "size_mismatch", caplog)


def test_missing_and_corrupt_jpg_revos(revos, caplog):
    p = ReVOSReader(revos, "train").frame_paths(0)[1]
    _truncate(p, 0.3)
    _expect(_revos(revos), 0, p, "cannot decode image", "corrupt_image", caplog)
