"""Evaluation modes (policy / passthrough / random_keyframes) and mesh-batched two-system evaluation."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data_pipelines.synthetic import writer
from omnir1_jax import evaluate, predictions
from omnir1_jax.config import load_config
from omnir1_jax.rollout import grounding, sampler

REAL_GENERATE, REAL_GROUND = sampler.generate_jit, grounding.ground_jit  # before any test patches them

pytestmark = pytest.mark.filterwarnings("ignore:.*__array__ implementation doesn't accept a copy keyword")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "experiments", "synthetic_tiny.py")
T_COMPLETION = 96  # forced completions are padded to one width: one compile per grounder shape

# One answer per row (keyframes into the 4 sampled frames [0, 1, 3, 5] of a 6-frame video, 2 fps).
ANSWERS = [('{"start_time": "00:00.50", "end_time": "00:01.00", "description": "the red circle"}', [1, 3]),
           ('{"start_time": "00:01.00", "end_time": "00:01.50", "description": "the blue square"}', [3, 5]),
           ('{"start_time": "00:00.00", "end_time": "00:00.00", "description": "a green one"}', [0])]


def _config(root, **overrides):
    base = {"data.synthetic_root": root, "eval.max_frames": 4, "rl.max_new_tokens": 8,
            "rl.grounding_max_new_tokens": 6, "eval.batch_size": 2}
    return load_config(TINY, overrides={**base, **overrides})


def _filled(tree, seed, std=0.05):
    """Random finite values for an abstract param tree (no init compile)."""
    leaves, treedef = jax.tree.flatten(tree)
    rng = np.random.default_rng(seed)
    return jax.tree.unflatten(treedef, [jnp.asarray(rng.normal(0, std, x.shape).astype(x.dtype)) for x in leaves])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Synthetic ReVOS split, tiny random thinker + SAM2, and three records of one layout."""
    from omnir1_jax.eval_pipeline import ParamsBundle, _unbox
    from omnir1_jax.models.sam2 import Sam2Config, Sam2VideoModel
    from omnir1_jax.models.sam2.convert import init_template
    from omnir1_jax.rl.task import build_thinker, build_tokenizer

    root = str(tmp_path_factory.mktemp("modes"))
    writer.write_vos(os.path.join(root, "revos"), num_train=1, num_valid=2, frames_range=(5, 7), height=32, width=48)
    cfg = _config(root)
    tok = build_tokenizer(cfg)
    model, init_fn, _ = build_thinker(cfg, tok)
    params = _filled(jax.eval_shape(lambda: _unbox(init_fn(jax.random.PRNGKey(0)))), 0, 0.3)
    scfg = Sam2Config.tiny()
    bundle = ParamsBundle(model, params, tok, Sam2VideoModel(scfg), _filled(init_template(scfg, True), 1))
    reader = evaluate.open_reader(evaluate.resolve_split(cfg, "revos_test"))
    recs = [reader.load(i) for i in range(3)]
    recs[2] = dict(recs[2], expression="  The Small GREEN circle\n")  # upper case + whitespace: normalised
    return SimpleNamespace(root=root, cfg=cfg, tok=tok, bundle=bundle, recs=recs)


def _force_system1(monkeypatch, tok, seen, call_real):
    """System 1 answers ANSWERS[b % 3] for row b; with ``call_real`` the real (jitted) sampler runs first and its
    tokens and inputs are recorded, so the sharded System-1 program is exercised."""
    real = REAL_GENERATE
    rows = []
    for ans, _ in ANSWERS:
        ids = tok.encode(f"<think>x</think><answer>{ans}</answer>") + [tok.eos_ids[0]]
        rows.append(np.pad(ids, (0, T_COMPLETION - len(ids)), constant_values=tok.pad_id))

    def gen(model, params, inputs, rng, cfg):
        b = inputs["input_ids"].shape[0]
        if call_real:
            out = real(model, params, inputs, rng, cfg)
            seen.setdefault("s1", []).append((np.asarray(out.tokens), np.asarray(out.lengths), inputs))
        tokens = np.stack([rows[i % 3] for i in range(b)]).astype(np.int32)
        return SimpleNamespace(tokens=tokens, lengths=(tokens != tok.pad_id).sum(1).astype(np.int32))

    monkeypatch.setattr(sampler, "generate_jit", gen)


def _spy_ground(monkeypatch, seen):
    """The real grounder, recording its arguments and outputs."""
    real = REAL_GROUND

    def ground(model, gparams, spec, tokens, parsed, patches, ratios, cfg):
        g = real(model, gparams, spec, tokens, parsed, patches, ratios, cfg)
        seen.setdefault("ground", []).append(({"spec": spec, "tokens": tokens, "parsed": parsed}, g))
        return g

    monkeypatch.setattr(grounding, "ground_jit", ground)


def _unpadded(row, pad):
    row = np.asarray(row)
    return row[int(np.argmax(row != pad)):].tolist()


# ----------------------------------------------------------------------------- passthrough (real grounder)
def test_passthrough_grounder_sees_the_expression(world, monkeypatch):
    from omnir1_jax.eval_pipeline import two_system_predict
    from omnir1_jax.rollout.grounding_spec import host_prompt_ids, normalize_description

    seen: dict = {}
    _force_system1(monkeypatch, world.tok, seen, call_real=False)
    _spy_ground(monkeypatch, seen)
    pol = two_system_predict(world.bundle, world.cfg, world.recs, "revos")
    pas = two_system_predict(world.bundle, world.cfg, world.recs, "revos", mode="passthrough")
    (gp_args, gp), (ga_args, ga) = seen["ground"]
    spec = ga_args["spec"]
    for b, rec in enumerate(world.recs):
        desc = ANSWERS[b][0].split('"description": "')[1][:-2]
        p, a = pol[b]["info"], pas[b]["info"]
        assert p["mode"] == "policy" and a["mode"] == "passthrough"
        # the policy's keyframes and descriptions are kept; only what the grounder reads changes
        n = len(ANSWERS[b][1])
        assert a["keyframes"] == p["keyframes"] == ANSWERS[b][1]
        assert a["descriptions"] == p["descriptions"] == [desc] * n
        want = normalize_description(rec["expression"], "default")
        assert a["grounder_descriptions"] == [want] * n and p["grounder_descriptions"] == [desc] * n
        assert want == rec["expression"].lower().strip()
        for k in range(n):  # exactly the host path's prompt ids, template and image run included
            host = host_prompt_ids(world.tok, rec["expression"], "default", spec.n_image_tokens)
            assert _unpadded(np.asarray(ga.input_ids)[b, k], world.tok.pad_id) == host
            host_pol = host_prompt_ids(world.tok, desc, "default", spec.n_image_tokens)
            assert _unpadded(np.asarray(gp.input_ids)[b, k], world.tok.pad_id) == host_pol
        assert not np.asarray(ga.approx)[b].any()
    # slots the policy left empty stay empty: same validity in both modes
    np.testing.assert_array_equal(np.asarray(ga.slot_valid), np.asarray(gp.slot_valid))
    assert np.asarray(ga.slot_valid).sum() == 5


# ----------------------------------------------------------------------------- scripted stages (no compile)
def _scripted(monkeypatch, tok, completion):
    """All three stages scripted; records what the grounder and SAM2 receive."""
    from omnir1_jax import eval_pipeline

    ids = np.asarray(tok.encode(completion), np.int32)
    seen: dict = {}

    def gen(model, params, inputs, rng, cfg):
        b = inputs["input_ids"].shape[0]
        return SimpleNamespace(tokens=np.tile(ids, (b, 1)), lengths=np.full((b,), len(ids), np.int32))

    def ground(model, gparams, spec, tokens, parsed, patches, ratios, cfg):
        seen.setdefault("ground", []).append({"tokens": np.asarray(tokens), "spans": np.asarray(
            parsed["key_desc_tokens"]), "valid": np.asarray(parsed["key_valid"]), "spec": spec})
        b, k = np.asarray(parsed["key_valid"]).shape
        boxes = np.zeros((b, k, cfg.num_objects, 4), np.float32)
        valid = np.zeros((b, k, cfg.num_objects), bool)
        boxes[:, 0, 0], valid[:, 0, 0] = [2.0, 2.0, 9.0, 9.0], np.asarray(parsed["key_valid"])[:, 0]
        return SimpleNamespace(boxes=boxes, box_valid=valid, tokens=np.zeros((b, k, 2), np.int32),
                               lengths=np.zeros((b, k), np.int32))

    def seg(model, params, frames, boxes, frame_ids, direction="bidirectional", **kw):
        seen.setdefault("sam", []).append(np.asarray(frame_ids).tolist())
        return np.ones(frames.shape[:3], np.uint8)

    monkeypatch.setattr(sampler, "generate_jit", gen)
    monkeypatch.setattr(grounding, "ground_jit", ground)
    monkeypatch.setattr(eval_pipeline, "segment_video", seg)
    return seen


def _records(task, n, t):
    rng = np.random.default_rng(0)
    rec = {"task": task, "video": "vid", "expression": "The Loud DOG ", "type_id": 0,
           "frame_names": [f"{i:05d}" for i in range(t)], "frames": rng.integers(0, 255, (t, 32, 48, 3), np.uint8),
           "masks": np.zeros((1, t, 32, 48), np.uint8), "audio": np.zeros(16000, np.float32)}
    return [dict(rec, uid=f"vid_x_{i}") for i in range(n)]


def test_random_keyframes_reproducible_within_sampled_frames(world, monkeypatch):
    from omnir1_jax.eval_pipeline import ParamsBundle, two_system_predict

    completion = ('<think>x</think><answer>{"start_time": "00:01.00", "end_time": "00:01.50", '
                  '"description": "the red circle"}</answer>')
    seen = _scripted(monkeypatch, world.tok, completion)
    bundle = ParamsBundle(world.bundle.thinker, None, world.tok, None, None)
    recs = _records("revos", 4, 6)
    cfg = _config(world.root, **{"eval.batch_size": 4})
    pol = two_system_predict(bundle, cfg, recs, "revos")
    a = two_system_predict(bundle, cfg, recs, "revos", mode="random_keyframes")
    b = two_system_predict(bundle, cfg, recs, "revos", mode="random_keyframes")
    other = two_system_predict(bundle, _config(world.root, **{"eval.batch_size": 4, "seed": 7}), recs, "revos",
                               mode="random_keyframes")
    kfs = [r["info"]["keyframes"] for r in a]
    assert [r["info"]["keyframes"] for r in pol] == [[3, 5]] * 4  # the policy's keyframes
    assert kfs == [r["info"]["keyframes"] for r in b]  # reproducible
    assert kfs != [r["info"]["keyframes"] for r in other]  # seeded by config.seed (and the uid)
    assert any(k != [3, 5] for k in kfs) and len({tuple(k) for k in kfs}) > 1  # differ from the policy, per uid
    for r in a:
        info = r["info"]
        assert info["mode"] == "random_keyframes" and info["sampled_frames"] == [0, 1, 3, 5]
        assert len(info["keyframes"]) == 2 and set(info["keyframes"]) <= set(info["sampled_frames"])
        assert info["descriptions"] == ["the red circle"] * 2  # the policy's descriptions
    # SAM2 is prompted on the random keyframe of slot 0 (the scripted grounder boxes slot 0 only)
    assert seen["sam"][4:8] == [[k[0]] for k in kfs]


def test_passthrough_refavs_tokens_and_spans(world, monkeypatch):
    """RefAVS: keyframe 0, the grounder's description window holds the normalised expression."""
    from omnir1_jax.eval_pipeline import ParamsBundle, two_system_predict
    from omnir1_jax.rollout.grounding_spec import normalize_description

    seen = _scripted(monkeypatch, world.tok, "<think>x</think><answer>the red circle</answer>")
    bundle = ParamsBundle(world.bundle.thinker, None, world.tok, None, None)
    recs = _records("refavs", 2, 10)
    out = two_system_predict(bundle, world.cfg, recs, "refavs", mode="passthrough")
    g = seen["ground"][0]
    want = world.tok.encode(normalize_description("The Loud DOG ", "refavs"))
    assert g["spec"].variant == "refavs" and g["valid"].tolist() == [[True], [True]]
    for b in range(2):
        s, e = g["spans"][b, 0]
        assert g["tokens"][b, s:e].tolist() == want and world.tok.decode(want) == "the loud dog"
        assert out[b]["info"]["keyframes"] == [0] and out[b]["info"]["descriptions"] == ["the red circle"]
        assert out[b]["info"]["mode"] == "passthrough"


# ----------------------------------------------------------------------------- mesh
def test_mesh_predictions_equal_single_device(world, monkeypatch):
    from jax.sharding import PartitionSpec as P

    from omnir1_jax.eval_pipeline import TwoSystemPredictor
    from omnir1_jax.parallel import make_mesh

    mesh = make_mesh([("data", 4), ("fsdp", 2), ("tensor", 1)])
    one: dict = {}
    _force_system1(monkeypatch, world.tok, one, call_real=True)
    _spy_ground(monkeypatch, one)
    ref = TwoSystemPredictor(world.cfg, world.bundle, "revos")(world.recs)
    many: dict = {}
    _force_system1(monkeypatch, world.tok, many, call_real=True)
    _spy_ground(monkeypatch, many)
    got = TwoSystemPredictor(world.cfg, world.bundle, "revos", mesh=mesh)(world.recs)
    (t1, l1, in1), (t8, l8, in8) = one["s1"][0], many["s1"][0]
    assert in1["input_ids"].shape[0] == 3 and in8["input_ids"].shape[0] == 8  # 3 expressions padded to 8
    assert in8["input_ids"].sharding.spec == P(("data", "fsdp"), None)
    assert many["ground"][0][0]["tokens"].sharding.spec == P(("data", "fsdp"), None)
    np.testing.assert_array_equal(t8[:3], t1)  # the real System-1 tokens
    np.testing.assert_array_equal(l8[:3], l1)
    g1, g8 = one["ground"][0][1], many["ground"][0][1]
    for name in ("tokens", "lengths", "input_ids", "box_valid", "slot_valid", "boxes"):
        np.testing.assert_array_equal(np.asarray(getattr(g8, name))[:3], np.asarray(getattr(g1, name)), name)
    assert len(got) == 3
    for r1, r8 in zip(ref, got):
        assert r1["info"] == r8["info"]
        np.testing.assert_array_equal(r1["masks"], r8["masks"])
    assert sum(len(r["info"]["grounder_outputs"]) for r in got) == 5  # every valid slot was grounded


# ----------------------------------------------------------------------------- errors and the out_dir
def _oracle(records):
    return [{"masks": r["masks"].max(axis=0), "info": {}} for r in records]


def test_unknown_mode_and_mode_mismatch(world, tmp_path):
    from omnir1_jax.eval_pipeline import TwoSystemPredictor, two_system_predict

    for call in (lambda: two_system_predict(world.bundle, world.cfg, world.recs, "revos", mode="oracle"),
                 lambda: TwoSystemPredictor(world.cfg, world.bundle, "revos", mode="oracle"),
                 lambda: evaluate.evaluate_split(world.cfg, None, "revos_test", str(tmp_path / "x"), mode="oracle")):
        with pytest.raises(ValueError, match="unknown evaluation mode 'oracle'.*policy, passthrough, random_keyframes"):
            call()
    assert not os.path.exists(tmp_path / "x")
    out = str(tmp_path / "policy")
    s = evaluate.evaluate_split(world.cfg, None, "revos_test", out, limit=2, predictor=_oracle, progress=False)
    assert s["mode"] == "policy" and json.load(open(os.path.join(out, "metrics.json")))["mode"] == "policy"
    assert {r["mode"] for r in predictions.iter_records(out)} == {"policy"}
    with pytest.raises(evaluate.EvalError, match="predictions written in mode 'policy'.*'passthrough'"):
        evaluate.evaluate_split(world.cfg, None, "revos_test", out, predictor=_oracle, progress=False,
                                mode="passthrough")
    again = evaluate.evaluate_split(world.cfg, None, "revos_test", out, limit=2, progress=False)  # same mode
    assert again["skipped_existing"] == 2 and again["mode"] == "policy"
    other = str(tmp_path / "passthrough")
    p = evaluate.evaluate_split(world.cfg, None, "revos_test", other, limit=1, predictor=_oracle, progress=False,
                                mode="passthrough")
    assert p["mode"] == "passthrough" and {r["mode"] for r in predictions.iter_records(other)} == {"passthrough"}


def test_cli_mode_and_mesh(world, tmp_path, capsys):
    mesh = evaluate.config_mesh(world.cfg)  # synthetic_tiny: data=-1 takes every device
    assert dict(mesh.shape) == {"data": jax.device_count(), "fsdp": 1, "tensor": 1}
    with pytest.raises(evaluate.EvalError, match="config.mesh"):
        evaluate.config_mesh(_config(world.root, **{"mesh.data": 3}))
    out = str(tmp_path)
    cli = ["omnir1-eval", f"--config={TINY}", f"--config.data.synthetic_root={world.root}", f"--out={out}",
           "--noprogress", "--checkpoint=init", "--split=revos_test"]
    assert evaluate.run(cli + ["--mode=bogus"]) == 2
    assert "policy|passthrough|random_keyframes" in capsys.readouterr().err
    evaluate.evaluate_split(world.cfg, None, "revos_test", out, limit=1, predictor=_oracle, progress=False)
    assert evaluate.run(cli + ["--mode=random_keyframes"]) == 2  # refused before any weight is loaded
    assert "written in mode 'policy'" in capsys.readouterr().err
