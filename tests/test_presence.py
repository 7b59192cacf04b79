"""omnir1_jax.presence: per-frame J split by target presence, on hand-made masks and on a written ReVOS table."""

import json
import os

import numpy as np
import pytest

from data_pipelines.formats.revos import ReVOSReader
from data_pipelines.synthetic import writer
from omnir1_jax import predictions, presence

pytestmark = pytest.mark.filterwarnings("ignore:.*__array__ implementation:DeprecationWarning")


def test_presence_split_by_hand():
    gt = np.zeros((3, 4, 4), bool)
    gt[0, :2, :2] = gt[1, :2, :2] = True  # target in frames 0 and 1, gone in frame 2
    pred = np.zeros_like(gt)
    pred[0, :2, :2] = True  # J 1
    pred[1, :2, :1] = True  # J 0.5
    pred[2, 3, 3] = True  # a mask where the target is absent: J 0
    out = presence.presence_split([(pred, gt), (np.zeros_like(gt), gt)])  # second: predict nothing
    assert out["frames_present"] == 4 and out["frames_absent"] == 2
    assert out["J_present"] == pytest.approx(100 * (1 + 0.5 + 0 + 0) / 4)
    assert out["J_absent"] == pytest.approx(50.0)  # 0 (spilled mask) and 1 (empty vs empty)
    assert out["absent_frames_with_mask"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="shape"):
        presence.presence_split([(pred[:2], gt)])


def test_table_report_on_a_written_revos_split(tmp_path):
    root = str(tmp_path / "revos")
    writer.write_vos(root, seed=3, num_train=1, num_valid=2, frames_range=(6, 8), no_target_prob=0.0)
    reader = ReVOSReader(root, "valid")
    wd = str(tmp_path / "wd")
    gts = []
    for row, make in (("sft", lambda g: g), ("base", np.zeros_like)):  # perfect masks / predict nothing
        out_dir = os.path.join(wd, "table", row, "revos_test")
        os.makedirs(out_dir)
        with open(os.path.join(out_dir, "metrics.json"), "w") as fh:
            json.dump({"dataset": "revos", "root": root, "split": "valid"}, fh)
        for i, e in enumerate(reader.entries):
            gt = reader.load(i)["masks"].astype(bool).any(axis=0)
            gts.append(gt)
            predictions.write_expression(out_dir, e["video"], e["exp_id"], e["frame_names"], make(gt).astype(np.uint8))
    rep = presence.table_report(wd)
    assert set(rep) == {"sft", "base"}
    n_on = sum(int(g.any(axis=(1, 2)).sum()) for g in gts) // 2
    n_off = sum(int((~g.any(axis=(1, 2))).sum()) for g in gts) // 2
    assert n_on > 0 and n_off > 0  # the synthetic world has frames without the target
    for r in rep.values():
        assert (r["frames_present"], r["frames_absent"]) == (n_on, n_off)
    assert rep["sft"]["J_present"] == rep["sft"]["J_absent"] == 100.0
    assert rep["sft"]["absent_frames_with_mask"] == 0.0
    assert rep["base"]["J_present"] == 0.0 and rep["base"]["J_absent"] == 100.0
    printed = presence.main([wd, "--json", str(tmp_path / "rep.json")])
    assert json.load(open(tmp_path / "rep.json"))[wd]["base"]["J_absent"] == 100.0 and wd in printed
    with pytest.raises(FileNotFoundError, match="no table row"):
        presence.table_report(str(tmp_path / "empty"))
    # --by_kind: predicting nothing is its own baseline; perfect masks win exactly their distance to it
    by = presence.main([wd, "--by_kind"])[wd]
    nothing, perfect = by["base"]["by_kind"], by["sft"]["by_kind"]
    assert set(nothing) == set(perfect) and set(nothing) <= {"referring", "temporal", "relational"}
    assert sum(k["expressions"] for k in perfect.values()) == len(reader.entries)
    for kind, k in nothing.items():
        assert k["J"] == pytest.approx(k["J_nothing"]) and k["vs_nothing"] == pytest.approx(0.0)
        assert k["J_present"] == 0.0 and 0.0 < k["J_nothing"] < 100.0
        assert perfect[kind]["J"] == 100.0 and perfect[kind]["absent_frames_with_mask"] == 0.0
    n = len(reader.entries)
    gap = sum(100 - 100 * float((~g.any(axis=(1, 2))).mean()) for g in gts[:n]) / n
    assert sum(k["vs_nothing"] for k in perfect.values()) == pytest.approx(gap)
