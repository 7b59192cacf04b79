"""The synthetic world: deterministic from a seed, queries answerable (checked on masks and audio), vocabulary."""

import filecmp
import json
import os

import numpy as np
import pytest
from scipy.io import wavfile

from data_pipelines.synthetic import audio, queries, render, words, writer
from data_pipelines.synthetic.world import Clip, make_clip

pytestmark = pytest.mark.filterwarnings("ignore:.*__array__ implementation:DeprecationWarning")


def _tree(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def test_writers_are_deterministic_from_seed(tmp_path):
    for name, fn in (("refavs", lambda r, s: writer.write_refavs(r, seed=s, num_train=1, num_val=1, num_test=1)),
                     ("revos", lambda r, s: writer.write_vos(r, seed=s, num_train=2, num_valid=1,
                                                             frames_range=(6, 8)))):
        a, b, c = (str(tmp_path / f"{name}_{k}") for k in "abc")
        fn(a, 7), fn(b, 7), fn(c, 8)
        files = _tree(a)
        assert files == _tree(b) and len(files) > 5
        match, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
        assert not mismatch and not errors
        world_c = json.load(open(os.path.join(c, "world.json")))
        assert json.load(open(os.path.join(a, "world.json"))) != world_c and world_c["seed"] == 8


def test_make_clip_pure_function_of_rng():
    k = dict(num_frames=12, height=48, width=64)
    a = make_clip(np.random.default_rng(1), "x", **k).to_json()
    assert a == make_clip(np.random.default_rng(1), "x", **k).to_json()
    assert a != make_clip(np.random.default_rng(2), "x", **k).to_json()
    j = json.loads(json.dumps(a))
    assert json.loads(json.dumps(Clip.from_json(j).to_json())) == j


def _clips(n=30):
    for i in range(n):
        rng = np.random.default_rng([11, i])
        refavs = i % 2 == 0
        clip = make_clip(rng, f"c{i}", num_frames=10 if refavs else int(rng.integers(12, 20)), height=72, width=96,
                         fps=1.0 if refavs else 2.0, all_visible_at_start=refavs)
        _, masks = render.render_clip(clip)
        facts = render.mask_facts(masks)
        kinds = ("audio", "temporal", "relational", "referring", "no_target")
        qs = queries.make_queries(rng, clip, facts, kinds=kinds, max_queries=5)
        yield clip, masks, qs


def _band_envelope(x, rate, f, win):
    """Energy of x near frequency f in consecutive windows (a one-bin DFT per window)."""
    n = len(x) // win
    frames = x[: n * win].reshape(n, win)
    ph = np.exp(-2j * np.pi * f * np.arange(win) / rate)
    return np.abs(frames @ ph) / win


def test_queries_are_answerable_by_their_description():
    kinds_seen = set()
    for clip, masks, qs in _clips():
        o_n, t_n = masks.shape[:2]
        area = masks.reshape(o_n, t_n, -1).sum(-1)  # [O, T]
        first = {j: int(np.argmax(area[j] > 0)) for j in range(o_n) if area[j].any()}
        last = {j: int(t_n - 1 - np.argmax(area[j, ::-1] > 0)) for j in range(o_n) if area[j].any()}
        for q in qs:
            kinds_seen.add(q["kind"])
            assert queries.resolve(q["kind"], q["params"], clip, render.mask_facts(masks)) == (
                [] if q["target"] is None else [q["target"]])
            if q["target"] is None:
                assert q["answer"] == "none" and q["type_id"] == 2
                continue
            tgt = clip.objects[q["target"]]
            # the answer names exactly one object of the clip, the target
            named = [j for j, o in enumerate(clip.objects) if f"the {o.colour} {o.shape}" == q["answer"]]
            assert named == [q["target"]] and area[q["target"]].any()
            w = q["params"].get("which")
            if q["kind"] == "temporal":  # checked directly on the rendered masks
                ref = first if w.startswith("appears") else last
                pick = max if w.endswith("last") else min
                assert ref[q["target"]] == pick(ref.values())
                assert sum(v == ref[q["target"]] for v in ref.values()) == 1
            elif q["kind"] == "relational":
                r = q["params"]["ref"]
                both = np.nonzero((area[q["target"]] > 0) & (area[r] > 0))[0]
                assert len(both) > 0
                ax = 1 if q["params"]["rel"] in ("left", "right") else 0
                sign = -1 if q["params"]["rel"] in ("left", "above") else 1
                for t in both:
                    ct = np.argwhere(masks[q["target"], t]).mean(0)[ax]
                    cr = np.argwhere(masks[r, t]).mean(0)[ax]
                    assert sign * (ct - cr) > 0
            elif q["kind"] == "referring":
                assert q["text"] == f"the {tgt.size} {tgt.colour} {tgt.shape}"
            elif q["kind"] == "audio":  # checked on the synthesised waveform
                rate = 16000
                x = audio.synth_audio(clip, sample_rate=rate, channels=1)[:, 0]
                win = rate // 20
                env = {j: _band_envelope(x, rate, o.pitch_hz, win) for j, o in enumerate(clip.objects)}
                if w in ("highest", "lowest"):
                    audible = [o.pitch_hz for j, o in enumerate(clip.objects) if env[j].max() > 0.02]
                    assert tgt.pitch_hz == (max(audible) if w == "highest" else min(audible))
                else:
                    onset = {j: int(np.argmax(e > 0.02)) * win / rate for j, e in env.items() if e.max() > 0.02}
                    best = min(onset.values()) if w == "first" else max(onset.values())
                    assert abs(onset[q["target"]] - best) <= 0.1
                    others = [v for j, v in onset.items() if j != q["target"]]
                    assert all(abs(v - best) > queries.ONSET_MARGIN_S - 0.1 for v in others)
    assert kinds_seen == {"audio", "temporal", "relational", "referring", "no_target"}


def test_targets_visible_in_part_of_vos_clips():
    partial = total = 0
    for clip, masks, _ in _clips():
        if clip.fps == 2.0:
            vis = masks.reshape(masks.shape[0], masks.shape[1], -1).any(-1)  # [O, T]
            partial += int((~vis.all(1)).sum())
            total += vis.shape[0]
    assert total > 0 and partial / total > 0.6


def test_min_visible_sets_the_share_of_the_clip_each_vos_object_is_on_screen(tmp_path):
    """``min_visible``: every object's generative visible interval covers at least that share of its clip (and
    still ends before or starts after part of it); the default 0.25 is the world as it was first written."""
    for share in (0.25, 0.75):
        spans = []
        for i in range(40):
            clip = make_clip(np.random.default_rng(i), "x", num_frames=20, min_visible=share)
            spans += [(o.last_frame - o.first_frame + 1) / 20 for o in clip.objects]
            assert all(o.first_frame > 0 or o.last_frame < 19 for o in clip.objects)
        assert min(spans) >= share - 1e-9 and (share == 0.25 or np.mean(spans) > 0.8)
    legacy = make_clip(np.random.default_rng(3), "x", num_frames=17).to_json()
    assert legacy == make_clip(np.random.default_rng(3), "x", num_frames=17, min_visible=0.25).to_json()
    with pytest.raises(ValueError, match="min_visible"):
        make_clip(np.random.default_rng(0), "x", num_frames=8, min_visible=1.0)
    writer.write_vos(str(tmp_path / "revos"), seed=1, num_train=1, num_valid=1, frames_range=(6, 8), min_visible=0.75)
    assert json.load(open(tmp_path / "revos" / "world.json"))["min_visible"] == 0.75
    from omnir1_jax.rl.sft import ensure_synthetic_data

    with pytest.raises(ValueError, match="min_visible=0.75"):  # an existing world written otherwise is refused
        ensure_synthetic_data(str(tmp_path), vos_min_visible=0.25)


def test_every_emitted_word_is_in_WORDS(tmp_path):
    assert isinstance(words.WORDS, tuple) and len(set(words.WORDS)) == len(words.WORDS)
    vocab = set(words.WORDS)
    texts = list(queries.NULL_TEXTS)
    for _, _, qs in _clips(12):
        texts += [q["text"] for q in qs] + [q["answer"] for q in qs]
    writer.write_refavs(str(tmp_path / "r"), seed=1, num_train=2, num_val=1, num_test=1)
    texts += [line.rsplit(",", 1)[1] for line in open(tmp_path / "r" / "metadata.csv").read().splitlines()[1:]]
    for t in texts:
        assert set(t.split()) <= vocab, t


def test_refavs_audio_is_48k_stereo_10s_and_boxes_match_masks(tmp_path):
    root = str(tmp_path / "r")
    writer.write_refavs(root, seed=2, num_train=1, num_val=0, num_test=0)
    world = json.load(open(os.path.join(root, "world.json")))
    c = world["splits"]["train"][0]
    rate, data = wavfile.read(os.path.join(root, "media", c["media_id"], "audio.wav"))
    assert rate == 48000 and data.shape == (480000, 2) and data.dtype == np.int16 and np.abs(data).max() > 1000
    _, masks = render.render_clip(Clip.from_json(c))
    for j, o in enumerate(c["objects"]):
        assert masks[j, 0].any()  # RefAVS-format objects are all visible in frame 0 (training sees it only)
        for t, (x0, y0, x1, y1) in o["boxes_xyxy"].items():
            ys, xs = np.nonzero(masks[j, int(t)])
            assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
