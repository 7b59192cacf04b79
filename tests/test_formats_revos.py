"""ReVOS (both layouts) and MeViS readers on synthetic data written in the real layouts."""

import json
import os
import pickle
import shutil

import numpy as np
import pytest

from data_pipelines.formats import rle
from data_pipelines.formats.mevis import MeViSReader
from data_pipelines.formats.revos import ReVOSReader
from data_pipelines.synthetic import render, writer
from data_pipelines.synthetic.world import Clip

pytestmark = pytest.mark.filterwarnings("ignore:.*__array__ implementation:DeprecationWarning")

KW = dict(seed=5, num_train=2, num_valid=1, frames_range=(6, 9), no_target_prob=1.0)


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("vos")
    out = {k: str(base / k) for k in ("revos", "flat", "mevis")}
    writer.write_vos(out["revos"], **KW)
    writer.write_vos(out["flat"], flat=True, **KW)
    writer.write_vos(out["mevis"], layout="mevis", **KW)
    return out


def _check_against_world(reader, root, split, task):
    world = json.load(open(os.path.join(root, "world.json")))
    clips = {c["video"]: c for c in world["splits"][split]}
    assert len(reader) == sum(len(c["queries"]) for c in clips.values()) > 0
    seen_no_target = False
    for i in range(len(reader)):
        rec = reader[i]
        c = clips[rec["video"]]
        q = next(q for q in c["queries"] if q["exp_id"] == rec["uid"].split("/")[1])
        frames, masks = render.render_clip(Clip.from_json(c))
        t_n = c["num_frames"]
        assert rec["task"] == task and rec["expression"] == q["text"]
        assert rec["type_id"] == (q["type_id"] if task == "revos" else 0)
        assert rec["frame_names"] == [f"{t:05d}" for t in range(t_n)]
        assert rec["frames"].shape == (t_n, 96, 128, 3) and np.abs(rec["frames"].astype(int) - frames).mean() < 3.0
        assert rec["masks"].shape == (1, t_n, 96, 128) and rec["masks"].dtype == np.uint8
        want = np.zeros_like(masks[0]) if q["target"] is None else masks[q["target"]]
        np.testing.assert_array_equal(rec["masks"][0], want)
        assert rec["audio"].shape == (0,)
        seen_no_target |= q["target"] is None
    return seen_no_target


@pytest.mark.parametrize("layout", ["revos", "flat"])
def test_revos_both_layouts_roundtrip(roots, layout):
    root = roots[layout]
    for split in ("train", "valid"):
        r = ReVOSReader(root, split)
        assert r.layout == ("flat" if layout == "flat" else "JPEGImages")
        assert _check_against_world(r, root, split, "revos")  # no_target_prob=1: an all-null anno is exercised


def test_revos_foreground_is_union_of_used_objects(roots):
    r = ReVOSReader(roots["revos"], "train")
    video = r.entries[0]["video"]
    union = None
    for i, e in enumerate(r.entries):
        if e["video"] == video:
            m = r[i]["masks"].max(axis=0)
            union = m if union is None else union | m
    np.testing.assert_array_equal(r.foreground(video), union)
    np.testing.assert_array_equal(r.foreground(video, [1, 2]), union[[1, 2]])


def test_revos_multi_object_expression_and_subset(roots, tmp_path):
    root = str(tmp_path / "r")
    shutil.copytree(roots["revos"], root)
    meta_p = os.path.join(root, "meta_expressions_train_.json")
    meta = json.load(open(meta_p))
    md = json.load(open(os.path.join(root, "mask_dict.json")))
    video = next(iter(meta["videos"]))
    v = meta["videos"][video]
    annos = [a for a in md if any(md[a])][:2]  # two annotated objects
    v["expressions"]["0"]["anno_id"] = [int(a) for a in annos]
    json.dump(meta, open(meta_p, "w"))
    r = ReVOSReader(root, "train")
    rec = r.load(0, frame_indices=[0, 2])
    assert rec["masks"].shape[:2] == (2, 2) and rec["frame_names"] == ["00000", "00002"]
    for o, a in enumerate(annos):
        for k, t in enumerate([0, 2]):
            want = rle.decode(md[a][t]) if md[a][t] else np.zeros((96, 128), np.uint8)
            np.testing.assert_array_equal(rec["masks"][o, k], want)


def test_reader_pickles_without_mask_cache(roots):
    r = ReVOSReader(roots["revos"], "train")
    a = r[0]
    assert r._mask_dict is not None
    r2 = pickle.loads(pickle.dumps(r))
    assert r2._mask_dict is None
    np.testing.assert_array_equal(r2[0]["masks"], a["masks"])


def test_mevis_splits(roots):
    root = roots["mevis"]
    for split in ("train", "valid_u"):
        assert _check_against_world(MeViSReader(root, split), root, split, "mevis")
    r = MeViSReader(root, "valid")
    assert not os.path.exists(os.path.join(root, "valid", "mask_dict.json"))
    rec = r[0]
    assert rec["masks"].shape == (0,) + rec["frames"].shape[:3] and rec["type_id"] == 0
