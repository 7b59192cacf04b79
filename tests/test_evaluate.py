"""omnir1-eval: prediction layouts, metric plumbing with oracle predictions, resumability, CLI, tiny two-system run."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data_pipelines.synthetic import writer
from omnir1_jax import evaluate, predictions
from omnir1_jax.config import load_config

pytestmark = pytest.mark.filterwarnings("ignore:.*__array__ implementation doesn't accept a copy keyword")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "experiments", "synthetic_tiny.py")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synthetic"))
    writer.write_refavs(os.path.join(root, "refavs"), num_train=1, num_val=1, num_test=2, height=256, width=256)
    writer.write_vos(os.path.join(root, "revos"), num_train=1, num_valid=3, frames_range=(5, 7), height=32, width=48)
    writer.write_vos(os.path.join(root, "mevis"), layout="mevis", num_train=1, num_valid=2, frames_range=(5, 6),
                     height=32, width=48)
    return root


def _config(data_root, **overrides):
    base = {"data.synthetic_root": data_root, "eval.max_frames": 4, "rl.max_new_tokens": 8,
            "rl.grounding_max_new_tokens": 6, "eval.batch_size": 2}
    return load_config(TINY, overrides={**base, **overrides})


def _oracle(records):
    """Perfect predictions: the union of the GT objects on every frame."""
    return [{"masks": r["masks"].max(axis=0) if len(r["masks"]) else np.zeros(r["frames"].shape[:3], np.uint8),
             "info": {"oracle": True}} for r in records]


class Counting:
    def __init__(self, fn=_oracle):
        self.fn, self.calls, self.n = fn, 0, 0

    def __call__(self, records):
        self.calls += 1
        self.n += len(records)
        return self.fn(records)


def _no_bundle():
    raise AssertionError("the weights must not be loaded when a predictor is given or everything is done")


# ----------------------------------------------------------------------------- layouts
def test_layouts_round_trip(tmp_path):
    out = str(tmp_path)
    rng = np.random.default_rng(0)
    masks = (rng.random((3, 7, 9)) > 0.5).astype(np.uint8)
    names = ["00000", "00005", "00010"]
    predictions.write_expression(out, "vidA", "2", names, masks * 7, {"keyframes": [1], "boxes": [[np.float32(1.5)]]})
    predictions.write_expression(out, "vidB", "0", names[:1], 1 - masks[:1])
    png = os.path.join(out, "Annotations", "vidA", "2", "00005.png")
    from PIL import Image

    assert set(np.unique(np.asarray(Image.open(png)))) <= {0, 255}  # VISA 0/255
    assert np.array_equal(predictions.read_png_masks(out, "vidA", "2", names), masks)
    predictions.write_results_json(out)
    res = predictions.read_results_json(os.path.join(out, "results.json"))
    assert sorted(res) == ["vidA", "vidB"] and np.array_equal(res["vidA"]["2"], masks)
    assert np.array_equal(res["vidB"]["0"], 1 - masks[:1])
    rec = predictions.read_record(out, "vidA", "2")
    assert rec["keyframes"] == [1] and rec["boxes"] == [[1.5]] and rec["frame_names"] == names
    assert predictions.is_done(out, "vidA", "2", names)
    os.remove(png)
    assert not predictions.is_done(out, "vidA", "2", names)
    with open(predictions.record_path(out, "vidB", "0"), "w") as fh:
        fh.write("{truncated")
    assert not predictions.is_done(out, "vidB", "0", names[:1])
    with pytest.raises(ValueError):
        predictions.png_dir(out, "..", "x")


# ----------------------------------------------------------------------------- metric plumbing (oracles)
def test_oracle_revos_mevis_perfect_and_layouts_agree(data_root, tmp_path):
    cfg = _config(data_root)
    out = str(tmp_path / "revos")
    s = evaluate.evaluate_split(cfg, _no_bundle, "revos_test", out, predictor=_oracle, progress=False)
    rows = [r for r in s["expressions"] if r["type_id"] in (0, 1)]
    assert rows and all(r["J"] == 100.0 and r["F"] == 100.0 and r["R"] == 100.0 for r in rows)
    assert s["JF"] == 100.0 and "VISA" in s["protocol"] and "pred_scale=255" in s["protocol"]
    with open(os.path.join(out, "metrics.json")) as fh:
        saved = json.load(fh)
    assert saved["JF"] == 100.0 and saved["protocol"] == s["protocol"] and saved["processed"] == s["num_expressions"]
    # both layouts decode to the same masks, over all frames of each video
    res = predictions.read_results_json(os.path.join(out, "results.json"))
    reader = evaluate.open_reader(evaluate.resolve_split(cfg, "revos_test"))
    for (v, e, names) in evaluate.expression_keys(reader, "revos"):
        png = predictions.read_png_masks(out, v, e, names)
        assert png.shape[0] == len(names) and np.array_equal(res[v][e], png)
    m = evaluate.evaluate_split(cfg, _no_bundle, "mevis:valid_u", str(tmp_path / "mevis"), predictor=_oracle,
                                progress=False)
    assert m["JF"] == 100.0 and m["count"] == m["num_expressions"] and "MeViS" in m["protocol"]


def test_oracle_refavs_official_and_null(data_root, tmp_path):
    cfg = _config(data_root)
    s = evaluate.evaluate_split(cfg, _no_bundle, "refavs_test", str(tmp_path / "s"), predictor=_oracle,
                                progress=False)
    assert s["protocol"] == "official@256/batch4" and s["J"] > 97.0 and s["F"] > 97.0
    assert s["num_expressions"] >= 2 and s["processed"] == s["num_expressions"] == s["num_scored"]
    names = sorted(os.listdir(os.path.join(str(tmp_path / "s"), "Annotations")))
    assert names and all(not n.startswith("null_") for n in names)
    empty = lambda recs: [{"masks": np.zeros(r["frames"].shape[:3], np.uint8)} for r in recs]  # noqa: E731
    n = evaluate.evaluate_split(cfg, _no_bundle, "refavs:test_n", str(tmp_path / "n"), predictor=empty, progress=False)
    assert n["S"] == 0.0 and n["protocol"].endswith("/null")
    full = lambda recs: [{"masks": np.ones(r["frames"].shape[:3], np.uint8)} for r in recs]  # noqa: E731
    n1 = evaluate.evaluate_split(cfg, _no_bundle, "refavs_test_n", str(tmp_path / "n1"), predictor=full,
                                 progress=False)
    assert n1["S"] == pytest.approx(1.0)
    dav = evaluate.evaluate_split(_config(data_root, **{"eval.refavs_protocol": "davis"}), _no_bundle, "refavs_test",
                                  str(tmp_path / "d"), predictor=_oracle, progress=False)
    assert dav["protocol"] == "davis@native" and dav["JF"] == pytest.approx(100.0)


def test_resume_limit_and_redo(data_root, tmp_path):
    cfg = _config(data_root)
    out = str(tmp_path)
    p = Counting()
    a = evaluate.evaluate_split(cfg, _no_bundle, "revos_test", out, limit=2, predictor=p, progress=False)
    total = evaluate.evaluate_split(cfg, _no_bundle, "revos_test", str(tmp_path / "ref"), predictor=_oracle,
                                    progress=False)["num_expressions"]
    assert total > 2 and a["num_expressions"] == 2 and a["processed"] == 2 and p.n == 2 and p.calls == 1
    assert sum(len(v) for v in json.load(open(os.path.join(out, "results.json"))).values()) == 2
    b = evaluate.evaluate_split(cfg, _no_bundle, "revos_test", out, predictor=p, progress=False)
    assert b["skipped_existing"] == 2 and b["processed"] == total - 2 and p.n == total
    # everything written: the (lazy) weights are never loaded and nothing is predicted
    c = evaluate.evaluate_split(cfg, _no_bundle, "revos_test", out, progress=False)
    assert c["processed"] == 0 and c["skipped_existing"] == total and c["JF"] == 100.0
    reader = evaluate.open_reader(evaluate.resolve_split(cfg, "revos_test"))
    v, e, names = evaluate.expression_keys(reader, "revos")[1]
    os.remove(os.path.join(out, "Annotations", v, e, names[-1] + ".png"))  # a half-written expression is redone
    d = evaluate.evaluate_split(cfg, _no_bundle, "revos_test", out, predictor=p, progress=False)
    assert d["processed"] == 1 and d["skipped_existing"] == total - 1 and p.n == total + 1


# ----------------------------------------------------------------------------- CLI errors and tables
def _cli(data_root, out, *extra):
    return ["omnir1-eval", f"--config={TINY}", f"--config.data.synthetic_root={data_root}", f"--out={out}",
            "--noprogress", *extra]


def test_cli_errors(data_root, tmp_path, capsys):
    rc = evaluate.run(_cli(data_root, tmp_path, "--checkpoint=/no/such/ckpt", "--split=revos_test"))
    assert rc == 2 and "/no/such/ckpt does not exist" in capsys.readouterr().err
    os.makedirs(tmp_path / "notackpt")
    rc = evaluate.run(_cli(data_root, tmp_path, f"--checkpoint={tmp_path / 'notackpt'}", "--split=revos_test"))
    assert rc == 2 and "neither a thinker checkpoint" in capsys.readouterr().err
    rc = evaluate.run(_cli(data_root, tmp_path, "--checkpoint=init", "--split=refavs_train"))
    assert rc == 2 and "split" in capsys.readouterr().err
    rc = evaluate.run(_cli(str(tmp_path / "nodata"), tmp_path, "--checkpoint=init", "--split=revos_test"))
    assert rc == 2 and "is missing" in capsys.readouterr().err
    rc = evaluate.run(_cli(data_root, tmp_path, "--checkpoint=init", "--split=test_s", "--config.data.dataset=revos",
                           f"--config.data.revos_root={data_root}/revos"))
    assert rc == 2 and "mismatch" in capsys.readouterr().err
    rc = evaluate.run(_cli(data_root, tmp_path, "--checkpoint=init"))
    assert rc == 2 and "--split is required" in capsys.readouterr().err
    assert evaluate.run(["omnir1-eval", "tables", "--table", "mevis"]) == 0
    assert "MeViS" in capsys.readouterr().out


def test_split_resolution(data_root):
    cfg = _config(data_root)
    assert evaluate.resolve_split(cfg, "refavs_test").split == "test_s"
    spec = evaluate.resolve_split(cfg, "refavs_test_u")
    assert (spec.format, spec.root, spec.split) == ("refavs", os.path.join(data_root, "refavs"), "test_u")
    assert evaluate.resolve_split(cfg, "valid").format == "revos"
    with pytest.raises(evaluate.EvalError, match="ambiguous or unknown"):
        evaluate.resolve_split(cfg, "bogus")


# ----------------------------------------------------------------------------- the two systems (tiny models)
def _filled(tree, seed):
    """Random finite values for an abstract param tree (no init compile: cheap in tests)."""
    leaves, treedef = jax.tree.flatten(tree)
    rng = np.random.default_rng(seed)
    return jax.tree.unflatten(treedef, [jnp.asarray(rng.normal(0, 0.05, x.shape).astype(x.dtype)) for x in leaves])


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, data_root):
    from omnir1_jax.eval_pipeline import _unbox
    from omnir1_jax.models import qwen_omni, sam2
    from omnir1_jax.models.sam2.convert import init_template
    from omnir1_jax.rl.task import build_thinker, build_tokenizer

    cfg = _config(data_root)
    tok = build_tokenizer(cfg)
    model, init_fn, _ = build_thinker(cfg, tok)
    params = _filled(jax.eval_shape(lambda: _unbox(init_fn(jax.random.PRNGKey(0)))), 0)
    d = tmp_path_factory.mktemp("ckpt")
    qwen_omni.save_checkpoint(params, model.config, str(d / "thinker"))
    scfg = sam2.Sam2Config.tiny()
    sam2.save_checkpoint(str(d / "sam2"), scfg, _filled(init_template(scfg, True), 1))
    return str(d / "thinker"), str(d / "sam2")


def test_segment_video_full_length(checkpoints):
    from omnir1_jax.eval_pipeline import segment_video
    from omnir1_jax.models import sam2

    model, params = sam2.load_checkpoint(checkpoints[1])
    frames = np.random.default_rng(0).integers(0, 255, (5, 24, 40, 3), dtype=np.uint8)
    m = segment_video(model, params, frames, np.asarray([[4.0, 2.0, 30.0, 20.0]]), np.asarray([2]))
    assert m.shape == (5, 24, 40) and m.dtype == np.uint8 and set(np.unique(m)) <= {0, 1}
    assert segment_video(model, params, frames, np.zeros((0, 4)), np.zeros((0,), int)).sum() == 0


def test_parse_system1_refavs_and_vos():
    from omnir1_jax.eval_pipeline import parse_system1
    from omnir1_jax.text import SyntheticTokenizer

    tok = SyntheticTokenizer()
    texts = ["<think>the sound</think><answer>the red circle</answer>",
             '<think>x</think><answer>{"start_time": "00:01.00", "end_time": "00:01.50", "description": "red"}</answer>']
    ids = [tok.encode(t) for t in texts]
    T = max(map(len, ids))
    arr = np.full((2, T), tok.pad_id, np.int32)
    for i, t in enumerate(ids):
        arr[i, : len(t)] = t
    lens = np.asarray([len(t) for t in ids], np.int32)
    p = parse_system1(tok, arr, lens, np.asarray([8, 8], np.int32), "refavs", 1, 8)
    a, b = p["key_desc_bytes"][0, 0]
    assert p["key_valid"][0, 0] and tok.decode(arr[0, : lens[0]]).encode()[a:b] == b"the red circle"
    q = parse_system1(tok, arr, lens, np.asarray([8, 8], np.int32), "vos", 4, 8)
    assert q["key_valid"][1].tolist() == [True, True, False, False] and q["key_frames"][1, :2].tolist() == [2, 3]


def test_cli_two_system_tiny(data_root, checkpoints, tmp_path):
    thinker, sam = checkpoints
    out = str(tmp_path)
    args = _cli(data_root, out, f"--checkpoint={thinker}", "--split=revos_test", "--limit=1",
                f"--config.segmenter.checkpoint={sam}", "--config.eval.max_frames=4", "--config.rl.max_new_tokens=8",
                "--config.rl.grounding_max_new_tokens=6")
    assert evaluate.run(args) == 0
    with open(os.path.join(out, "metrics.json")) as fh:
        m = json.load(fh)
    assert m["processed"] == 1 and m["num_expressions"] == 1 and "VISA" in m["protocol"]
    recs = list(predictions.iter_records(out))
    assert len(recs) == 1 and {"completion", "keyframes", "descriptions", "boxes"} <= set(recs[0])
    v, e, names = recs[0]["video"], recs[0]["exp_id"], recs[0]["frame_names"]
    assert len(names) >= 5  # SAM2 masks cover the full video, not the 4 resampled frames
    assert len(recs[0]["sampled_frames"]) == 4
    res = predictions.read_results_json(os.path.join(out, "results.json"))
    assert np.array_equal(res[v][e], predictions.read_png_masks(out, v, e, names))
    assert evaluate.run(args) == 0  # resumed: nothing left to do
    with open(os.path.join(out, "metrics.json")) as fh:
        m2 = json.load(fh)
    assert m2["processed"] == 0 and m2["skipped_existing"] == 1 and m2["JF"] == m["JF"]


def test_segment_video_streamed(checkpoints):
    from omnir1_jax.eval_pipeline import segment_video
    from omnir1_jax.models import sam2

    model, params = sam2.load_checkpoint(checkpoints[1])
    frames = np.random.default_rng(1).integers(0, 255, (7, 24, 40, 3), dtype=np.uint8)
    box = np.asarray([[4.0, 2.0, 30.0, 20.0], [1.0, 1.0, 9.0, 9.0]])
    m = segment_video(model, params, frames, box, np.asarray([3, 5]), stream_above=4, chunk_size=4)
    assert m.shape == (7, 24, 40) and set(np.unique(m)) <= {0, 1}


def _scripted(monkeypatch, completion: str, box: list[float]):
    """Replaces the three jitted stages by scripted outputs; records what reached SAM2."""
    from types import SimpleNamespace

    from omnir1_jax import eval_pipeline
    from omnir1_jax.rollout import grounding, sampler
    from omnir1_jax.text import SyntheticTokenizer

    tok = SyntheticTokenizer()
    ids = np.asarray(tok.encode(completion), np.int32)
    seen = {}

    def gen(model, params, inputs, rng, cfg):
        b = inputs["input_ids"].shape[0]
        seen["inputs"] = inputs
        return SimpleNamespace(tokens=np.tile(ids, (b, 1)), lengths=np.full((b,), len(ids), np.int32))

    def ground(model, gparams, spec, tokens, parsed, patches, ratios, cfg):
        b, k = np.asarray(parsed["key_valid"]).shape
        seen["patches"], seen["ratios"] = np.asarray(patches), np.asarray(ratios)
        boxes = np.zeros((b, k, cfg.num_objects, 4), np.float32)
        valid = np.zeros((b, k, cfg.num_objects), bool)
        boxes[:, 0, 0], valid[:, 0, 0] = box, np.asarray(parsed["key_valid"])[:, 0]
        return SimpleNamespace(boxes=boxes, box_valid=valid, tokens=np.zeros((b, k, 2), np.int32),
                               lengths=np.zeros((b, k), np.int32))

    def seg(model, params, frames, boxes, frame_ids, direction="bidirectional", **kw):
        seen.setdefault("sam", []).append((np.asarray(boxes), np.asarray(frame_ids), direction))
        return np.ones(frames.shape[:3], np.uint8)

    monkeypatch.setattr(sampler, "generate_jit", gen)
    monkeypatch.setattr(grounding, "ground_jit", ground)
    monkeypatch.setattr(eval_pipeline, "segment_video", seg)
    return tok, seen


@pytest.mark.parametrize("task", ["revos", "refavs"])
def test_two_system_glue_scripted(data_root, monkeypatch, task):
    """Host glue between the stages: keyframe -> full-video frame, descriptions, boxes, SAM2 over all frames."""
    from omnir1_jax.eval_pipeline import ParamsBundle, two_system_predict
    from omnir1_jax.rl.task import build_thinker

    desc = "the red circle"
    if task == "revos":
        completion = ('<think>x</think><answer>{"start_time": "00:01.00", "end_time": "00:01.00", '
                      f'"description": "{desc}"}}</answer>')
    else:
        completion = f"<think>x</think><answer>{desc}</answer>"
    tok, seen = _scripted(monkeypatch, completion, [10.0, 5.0, 20.0, 15.0])
    cfg = _config(data_root, **{"eval.batch_size": 3})
    model, _, _ = build_thinker(cfg, tok)
    t = 6 if task == "revos" else 10
    rng = np.random.default_rng(0)
    rec = {"task": task, "uid": "vid_x_1", "video": "vid", "expression": "the red one", "type_id": 0,
           "frame_names": [f"{i:05d}" for i in range(t)], "frames": rng.integers(0, 255, (t, 32, 48, 3), np.uint8),
           "masks": np.zeros((1, t, 32, 48), np.uint8), "audio": np.zeros(16000, np.float32)}
    out = two_system_predict(ParamsBundle(model, None, tok, None, None), cfg, [rec, dict(rec, uid="vid_x_2")], task)
    assert len(out) == 2 and out[0]["masks"].shape == (t, 32, 48)
    info = out[0]["info"]
    # VOS: 6 frames -> 4 sampled [0, 1, 3, 5]; 00:01.00 at 2 fps = sampled frame 2 = video frame 3. RefAVS: frame 0.
    want = 3 if task == "revos" else 0
    assert info["keyframes"] == [want] and info["descriptions"] == [desc] and info["format_ok"]
    assert info["boxes"] == [[[10.0, 5.0, 20.0, 15.0]]] and info["completion"] == completion
    boxes, frame_ids, direction = seen["sam"][0]
    assert frame_ids.tolist() == [want] and boxes.tolist() == [[10.0, 5.0, 20.0, 15.0]] and direction == "bidirectional"
    assert seen["patches"].shape[:2] == (3, cfg.rl.max_keyframes if task == "revos" else 1)  # padded to batch
    assert len(seen["sam"]) == 2  # no SAM2 for the padding row
    assert ("pixel_values_videos" in seen["inputs"]) == (task == "revos")
    assert ("input_features" in seen["inputs"]) == (task == "refavs")


def test_cli_checkpoint_mismatch(data_root, checkpoints, tmp_path, capsys):
    import shutil

    bad = str(tmp_path / "other_thinker")
    shutil.copytree(checkpoints[0], bad)
    with open(os.path.join(bad, "thinker_config.json")) as fh:
        c = json.load(fh)
    c["vocab_size"] += 1  # a thinker for another tokenizer
    with open(os.path.join(bad, "thinker_config.json"), "w") as fh:
        json.dump(c, fh)
    rc = evaluate.run(_cli(data_root, tmp_path / "out", f"--checkpoint={bad}", "--split=revos_test", "--limit=1",
                           f"--config.segmenter.checkpoint={checkpoints[1]}"))
    assert rc == 2 and "mismatch" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "out" / "Annotations")  # nothing was predicted


def test_evaluate_split_refavs_tiny(data_root, checkpoints, tmp_path):
    """The Python entry point the trainer calls, on the RefAVS format (audio + frame 0 for System 1)."""
    from omnir1_jax.eval_pipeline import load_params_bundle

    cfg = _config(data_root, **{"segmenter.checkpoint": checkpoints[1], "eval.batch_size": 1})
    bundle = load_params_bundle(cfg, checkpoints[0])
    s = evaluate.evaluate_split(cfg, bundle, "refavs_test", str(tmp_path), limit=1, progress=False)
    assert s["processed"] == 1 and s["protocol"] == "official@256/batch4" and 0.0 <= s["J"] <= 100.0
    (rec,) = list(predictions.iter_records(str(tmp_path)))
    assert rec["frame_names"] == [f"{k:05d}" for k in range(10)] and len(rec["prediction_masks"]) == 10
    assert set(rec["keyframes"]) <= {0} and rec["split"] == "refavs_test"


def test_grounder_of_another_architecture(data_root, checkpoints, tmp_path):
    """System 2 may be a thinker of another architecture (here: another rotary base and width) sharing the
    policy's tokenizer and vision patching: it is loaded as its own module and grounds through the two-system
    pipeline; a grounder for another tokenizer or patch size is refused naming the field."""
    import dataclasses
    import shutil

    from omnir1_jax.eval_pipeline import _unbox, grounder_module, load_grounder, load_params_bundle
    from omnir1_jax.models import qwen_omni
    from omnir1_jax.rl.task import build_thinker, build_tokenizer

    cfg = _config(data_root, **{"segmenter.checkpoint": checkpoints[1], "eval.batch_size": 1})
    tok = build_tokenizer(cfg)
    model, init_fn, _ = build_thinker(cfg, tok)
    assert grounder_module(model, checkpoints[0]) is model  # the policy's own architecture: the same module
    other_cfg = dataclasses.replace(model.config, rope_theta=10.0, num_hidden_layers=3)
    other = qwen_omni.Thinker(other_cfg)
    params = _filled(jax.eval_shape(lambda: _unbox(qwen_omni.init_params(other, jax.random.PRNGKey(0)))), 3)
    qwen_omni.save_checkpoint(params, other_cfg, str(tmp_path / "grounder"))
    gmodel, gparams = load_grounder(cfg, model, init_fn, str(tmp_path / "grounder"))
    assert gmodel is not model and gmodel.config == other_cfg
    assert jax.tree.structure(gparams) == jax.tree.structure(params)

    bundle = load_params_bundle(cfg, checkpoints[0], str(tmp_path / "grounder"))
    assert bundle.grounder.config == other_cfg
    s = evaluate.evaluate_split(cfg, bundle, "revos_test", str(tmp_path / "out"), limit=1, progress=False)
    assert s["processed"] == 1

    for field, value in (("vocab_size", model.config.vocab_size + 64),
                         ("vision", dataclasses.replace(model.config.vision, patch_size=16))):
        bad = str(tmp_path / f"bad_{field}")
        qwen_omni.save_checkpoint(params, dataclasses.replace(other_cfg, **{field: value}), bad)
        with pytest.raises(ValueError, match=field.replace("vision", "vision.patch_size")):
            grounder_module(model, bad)
