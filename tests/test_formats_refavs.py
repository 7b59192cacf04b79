"""RefAVS reader on synthetic data written in the real layout; id rule, TODO and duplicate rows; WAV handling."""

import json
import logging
import os
import shutil

import numpy as np
import pytest
from scipy.io import wavfile

from data_pipelines.formats import common
from data_pipelines.formats.refavs import RefAVSReader, media_id_from_uid
from data_pipelines.synthetic import render, writer
from data_pipelines.synthetic.world import Clip


@pytest.fixture(scope="module")
def refavs_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("refavs"))
    writer.write_refavs(root, seed=3, num_train=2, num_val=1, num_test=1)
    return root


def test_records_roundtrip_written_media(refavs_root):
    world = json.load(open(os.path.join(refavs_root, "world.json")))
    for split in ("train", "val", "test_s", "test_u", "test_n"):
        reader = RefAVSReader(refavs_root, split)
        clips = {c["media_id"]: c for c in world["splits"][split]}
        expected_rows = sum(len(c["queries"]) for c in clips.values())
        assert len(reader) == expected_rows > 0
        for i in range(len(reader)):
            rec = reader[i]
            assert rec["task"] == "refavs" and rec["type_id"] == 0 and rec["audio_sample_rate"] == 16000
            c = clips[rec["video"]]
            frames, masks = render.render_clip(Clip.from_json(c))
            q = next(q for q in c["queries"] if q["uid"] == rec["uid"])
            assert rec["expression"] == q["text"]
            assert rec["frame_names"] == [str(k) for k in range(10)]
            assert rec["frames"].shape == (10, 96, 128, 3) and rec["frames"].dtype == np.uint8
            assert np.abs(rec["frames"].astype(int) - frames).mean() < 3.0  # JPEG q95
            want = np.zeros_like(masks[0]) if split == "test_n" else masks[q["fid"]]
            assert rec["masks"].dtype == np.uint8 and rec["masks"].shape == (1, 10, 96, 128)
            np.testing.assert_array_equal(rec["masks"][0], want)
            assert rec["audio"].dtype == np.float32 and rec["audio"].shape == (160000,)
            assert (np.abs(rec["audio"]).max() == 0) == (split == "test_n")  # Null media are muted
            assert all(os.path.isfile(p) for p in rec["source_files"]["frames"] + [rec["source_files"]["audio"]])


def test_load_subset_of_frames(refavs_root):
    reader = RefAVSReader(refavs_root, "train")
    full, part = reader[0], reader.load(0, frame_indices=[0, 4, 9])
    assert part["frame_names"] == ["0", "4", "9"]
    np.testing.assert_array_equal(part["masks"], full["masks"][:, [0, 4, 9]])
    np.testing.assert_array_equal(part["frames"], full["frames"][[0, 4, 9]])


def test_media_id_rule_splits_from_the_right():
    assert media_id_from_uid("a_b-c_12000_22000_hair-dryer_3") == "a_b-c_12000_22000"
    assert media_id_from_uid("null_c-x_Y_1000_11000_null_2") == "null_c-x_Y_1000_11000"
    with pytest.raises(ValueError):
        media_id_from_uid("nounderscore")


def test_crafted_csv_todo_duplicates_order_strings(tmp_path, caplog):
    rows = [
        "vid,uid,split,fid,exp",
        "v_1_0_10000,v_1_0_10000_dog_1,train,0,the dog",
        "w-2_0_10000,w-2_0_10000_cat_1,train,01,the cat",
        "v_1_0_10000,v_1_0_10000_dog_1,train,0,the dog",  # exact duplicate: dropped, counted
        "x_0_10000,x_0_10000_dog_1,TODO,0,todo row",
        "v_1_0_10000,v_1_0_10000_dog_1,train,1,another dog",  # same uid, different row: kept, flagged
        "z_0_10000,z_0_10000_car_1,val,0,the car",
        "w-2_0_10000,w-2_0_10000_cat_1,train,01,the cat",  # second duplicate
    ]
    (tmp_path / "metadata.csv").write_text("\n".join(rows) + "\n")
    with caplog.at_level(logging.WARNING):
        r = RefAVSReader(str(tmp_path), "train")
    assert [e["uid"] for e in r.entries] == ["v_1_0_10000_dog_1", "w-2_0_10000_cat_1", "v_1_0_10000_dog_1"]
    assert [e["exp"] for e in r.entries] == ["the dog", "the cat", "another dog"]
    assert r.entries[1]["fid"] == "01" and r.entries[1]["media_id"] == "w-2_0_10000"  # strings kept
    assert r.num_duplicates == 2 and r.num_todo == 1 and r.reused_uids == ["v_1_0_10000_dog_1"]
    assert "duplicated rows" in caplog.text
    assert len(RefAVSReader(str(tmp_path), "val")) == 1
    with pytest.raises(ValueError):
        RefAVSReader(str(tmp_path), "TODO")


def test_null_row_without_mask_folder_gets_zero_masks(refavs_root, tmp_path):
    root = str(tmp_path / "r")
    shutil.copytree(refavs_root, root)
    r = RefAVSReader(root, "test_n")
    shutil.rmtree(os.path.join(root, "gt_mask", r.entries[0]["media_id"]))
    rec = r[0]
    assert rec["masks"].shape == (1, 10, 96, 128) and rec["masks"].sum() == 0
    assert r.synthesised_null_masks == 1


@pytest.mark.parametrize(
    "rate,channels,dtype",
    [(48000, 2, np.int16), (44100, 1, np.float32), (8000, 1, np.uint8), (16000, 2, np.int32), (22050, 3, np.int16)],
)
def test_wav_downmix_and_resample(tmp_path, rate, channels, dtype):
    dur, f0 = 0.5, 440.0
    t = np.arange(int(dur * rate)) / rate
    x = 0.5 * np.sin(2 * np.pi * f0 * t)
    data = np.stack([x] * channels, axis=1) if channels > 1 else x
    if dtype == np.uint8:
        pcm = np.round(data * 127 + 128).astype(np.uint8)
    elif dtype == np.float32:
        pcm = data.astype(np.float32)
    else:
        pcm = np.round(data * (np.iinfo(dtype).max)).astype(dtype)
    path = str(tmp_path / "a.wav")
    wavfile.write(path, rate, pcm)
    y = common.read_wav_16k_mono(path)
    assert y.dtype == np.float32 and y.ndim == 1 and abs(len(y) - int(dur * 16000)) <= 1
    tt = np.arange(len(y)) / 16000
    ref = 0.5 * np.sin(2 * np.pi * f0 * tt)
    mid = slice(400, len(y) - 400)  # away from resampling edge effects
    tol = 2e-2 if dtype == np.uint8 else 2e-3
    np.testing.assert_allclose(y[mid], ref[mid], atol=tol)
