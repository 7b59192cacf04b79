"""omnir1_jax.stages: the stage-by-stage report against the synthetic world's facts, on hand-made records."""

import json
import os

import numpy as np
import pytest

from data_pipelines.synthetic import writer
from omnir1_jax import predictions, stages

pytestmark = pytest.mark.filterwarnings("ignore:.*__array__ implementation:DeprecationWarning")


def test_box_iou():
    assert stages.box_iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert stages.box_iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(50 / 150)
    assert stages.box_iou([0, 0, 10, 10], [20, 20, 30, 30]) == 0.0
    assert stages.box_iou([5, 5, 5, 9], [5, 5, 5, 9]) == 0.0  # degenerate


def _write_row(wd, row, root, world, make_info):
    """One table row on the VOS world's valid split: a record per expression with ``make_info(query, clip)``."""
    out_dir = os.path.join(wd, "table", row, "revos_test")
    os.makedirs(out_dir)
    with open(os.path.join(out_dir, "metrics.json"), "w") as fh:
        json.dump({"dataset": "revos", "root": root, "split": "valid"}, fh)
    for clip in world["splits"]["valid"]:
        names = [f"{t:05d}" for t in range(clip["num_frames"])]
        for q in clip["queries"]:
            masks = np.zeros((clip["num_frames"], clip["height"], clip["width"]), np.uint8)
            predictions.write_expression(out_dir, clip["video"], q["exp_id"], names, masks, make_info(q, clip))


def test_stage_report_on_a_written_vos_split(tmp_path):
    root = str(tmp_path / "revos")
    writer.write_vos(root, seed=5, num_train=1, num_valid=3, frames_range=(6, 8), no_target_prob=1.0)
    world = json.load(open(os.path.join(root, "world.json")))
    queries = [q for c in world["splits"]["valid"] for q in c["queries"]]
    assert any(q["target"] is None for q in queries) and any(q["target"] is not None for q in queries)

    def oracle(q, clip):  # the right description, a keyframe showing the target, its exact box
        if q["target"] is None:
            return {"format_ok": True, "descriptions": [], "keyframes": [], "boxes": []}
        obj = clip["objects"][q["target"]]
        t = obj["visible_frames"][0]
        return {"format_ok": True, "descriptions": [q["answer"]], "keyframes": [t],
                "boxes": [[obj["boxes_xyxy"][str(t)]]]}

    def wrong(q, clip):  # a wrong description, a frame without the target where there is one, no box
        absent = [t for t in range(clip["num_frames"]) if q["target"] is not None
                  and t not in clip["objects"][q["target"]]["visible_frames"]]
        return {"format_ok": True, "descriptions": ["the nothing"], "keyframes": absent[:1] or [0], "boxes": [[]]}

    wd = str(tmp_path / "wd")
    _write_row(wd, "grpo", root, world, oracle)
    _write_row(wd, "sft", root, world, wrong)
    _write_row(wd, "base", root, world, lambda q, c: {"format_ok": False})
    rep = stages.table_report(wd, splits=("revos_test",))["revos_test"]
    g, s, b = rep["grpo"], rep["sft"], rep["base"]
    assert g["expressions"] == s["expressions"] == b["expressions"] == len(queries)
    assert g["format"] == g["rewrite"] == g["kf_on_target"] == g["box_iou"] == g["box@0.5"] == 1.0
    assert g["box_iou_right_desc"] == 1.0 and g["right_desc_slots"] == sum(q["target"] is not None for q in queries)
    assert s["rewrite"] == 0.0 and s["rewrite_by_kind"]["no_target"] == 0.0  # "the nothing" is not "none"
    assert s["box_iou_right_desc"] is None and s["right_desc_slots"] == 0
    assert b["format"] == 0.0 and b["rewrite"] == 0.0 and b["kf_slots"] == 0 and b["box_iou"] is None
    out = stages.main([wd, "--splits", "revos_test", "--by_kind", "--json", str(tmp_path / "r.json")])
    assert json.load(open(tmp_path / "r.json"))[wd]["revos_test"]["grpo"]["rewrite"] == 1.0 and wd in out
    with pytest.raises(FileNotFoundError, match="no table row"):
        stages.table_report(str(tmp_path / "empty"))
    os.remove(os.path.join(root, "world.json"))
    with pytest.raises(FileNotFoundError, match="world.json"):
        stages.table_report(wd, splits=("revos_test",))
