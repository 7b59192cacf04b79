"""`omnir1-data` CLI: synth writes readable datasets, inspect logs counts, validate reports every problem."""

import importlib.metadata
import json
import logging
import os
import shutil

import pytest

from data_pipelines import cli
from data_pipelines.formats.refavs import RefAVSReader
from data_pipelines.formats.revos import ReVOSReader

pytestmark = pytest.mark.filterwarnings("ignore:.*__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("synth"))
    rc = cli.run(["synth", "--out", out, "--num_train", "2", "--num_val", "1", "--num_test", "1",
                  "--min_frames", "6", "--max_frames", "8", "--mevis"])
    assert rc == 0
    return out


def test_console_script_points_at_run():
    eps = [e for e in importlib.metadata.entry_points(group="console_scripts") if e.name == "omnir1-data"]
    assert eps and eps[0].value == "data_pipelines.cli:run"


def test_synth_writes_all_layouts(synth_dir):
    for rel in ("refavs/metadata.csv", "refavs/world.json", "revos/mask_dict.json", "revos/mask_dict_foreground.json",
                "revos/meta_expressions_train_.json", "revos/meta_expressions_valid_.json", "revos/JPEGImages",
                "mevis/train/mask_dict.json", "mevis/valid_u/meta_expressions.json"):
        assert os.path.exists(os.path.join(synth_dir, rel)), rel
    assert json.load(open(os.path.join(synth_dir, "revos", "world.json")))["format"] == "revos"


def test_inspect_reports_counts(synth_dir, capsys, caplog):
    with caplog.at_level(logging.INFO):
        assert cli.run(["inspect", os.path.join(synth_dir, "refavs"), "--format", "refavs"]) == 0
    out = capsys.readouterr().out
    for split in ("train", "val", "test_s", "test_u", "test_n"):
        n = len(RefAVSReader(os.path.join(synth_dir, "refavs"), split))
        assert f"{split}\t{n} expressions" in out
        assert f"refavs {split}: {n} expressions" in caplog.text
    assert "TODO rows 1" in out
    assert cli.run(["inspect", os.path.join(synth_dir, "revos"), "--format", "revos"]) == 0
    assert "type_id counts" in capsys.readouterr().out


def test_validate_clean_datasets(synth_dir, capsys):
    for fmt in ("refavs", "revos", "mevis"):
        assert cli.run(["validate", os.path.join(synth_dir, fmt), "--format", fmt]) == 0
        assert "OK: 0 problem(s)" in capsys.readouterr().out


def test_validate_reports_all_problems(synth_dir, tmp_path, capsys):
    root = str(tmp_path / "revos")
    shutil.copytree(os.path.join(synth_dir, "revos"), root)
    r = ReVOSReader(root, "train")
    os.remove(r.frame_paths(0)[0])  # every expression of that video is affected
    video0 = r.entries[0]["video"]
    meta = os.path.join(root, "meta_expressions_valid_.json")
    d = json.load(open(meta))
    v = next(iter(d["videos"]))
    d["videos"][v]["expressions"]["0"]["exp"] = ""
    json.dump(d, open(meta, "w"))
    assert cli.run(["validate", root, "--format", "revos"]) == 1
    out = capsys.readouterr().out
    n_video0 = sum(e["video"] == video0 for e in r.entries)
    assert out.count("does not exist") == n_video0 and "empty expression" in out
    assert f"FAILED: {n_video0 + 1} problem(s)" in out


def test_validate_missing_dataset(tmp_path, capsys):
    assert cli.run(["validate", str(tmp_path), "--format", "mevis"]) == 1
    assert "no mevis split found" in capsys.readouterr().out
