"""Warm-started tiny SAM2: the training step learns, checkpoints round-trip, and the shipped one segments."""

import os

import jax
import numpy as np
import pytest

from omnir1_jax.models.sam2 import load_checkpoint
from omnir1_jax.models.sam2.config import Sam2Config
from omnir1_jax.models.sam2.model import Sam2VideoModel
from omnir1_jax.warmstart import sam2 as W

SHIPPED = os.path.join(os.path.dirname(W.__file__), os.pardir, "assets", "synthetic_tiny", "sam2")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("sam2_warm"))
    return out, W.train_sam2(out, steps=12, seed=0, batch=1, log_every=2, learning_rate=1e-3, eval_clips=0,
                             progress=False, fixed_batch=True)


@pytest.fixture(scope="module")
def shipped():
    if not os.path.exists(os.path.join(SHIPPED, "sam2_config.json")):
        pytest.fail(f"shipped SAM2 checkpoint missing at {os.path.abspath(SHIPPED)}; make it with "
                    "`python -m omnir1_jax.warmstart.sam2 --out omnir1_jax/assets/synthetic_tiny/sam2`")
    return load_checkpoint(SHIPPED)


@pytest.fixture(scope="module")
def clips():
    return W.heldout_clips(4, seed=123, frames=(8,))  # one compiled shape (T=8)


def test_sample_example_shapes_and_targets():
    cfg = Sam2Config.tiny()
    ex = W.sample_example(np.random.default_rng(3), cfg)
    t, o, h = W.TRAIN_FRAMES, W.TRAIN_OBJECTS, cfg.mask_size
    assert ex["pixels"].shape == (t, 3, cfg.image_size, cfg.image_size)
    assert ex["boxes"].shape == (o, t, 4) and ex["target"].shape == (o, t, h, h)
    assert ex["box_valid"].any(axis=1).all()  # every track has a prompt ...
    vis = ex["target"].sum((-2, -1)) > 0
    assert np.all(vis[ex["box_valid"]])  # ... on a frame where its object is visible
    assert ex["target"].min() >= 0 and ex["target"].max() <= 1
    b = ex["boxes"][ex["box_valid"]]
    assert np.all(b[:, 2:] > b[:, :2]) and b.min() >= 0 and b.max() <= cfg.image_size
    short = W.sample_batch(np.random.default_rng(4), cfg, 3, frames=2)  # the cheap box -> mask phase
    assert short["pixels"].shape == (3, 2, 3, cfg.image_size, cfg.image_size)
    assert short["target"].shape == (3, o, 2, h, h) and short["box_valid"].any(axis=2).all()


def _mean_jump(ex: dict) -> float:
    """Mean move of each tracked object's mask centre between consecutive frames where it is visible."""
    tgt = ex["target"]  # [O, T, h, w]
    ys, xs = np.mgrid[: tgt.shape[-2], : tgt.shape[-1]]
    jumps = []
    for track in tgt:
        area = track.sum((-2, -1))
        c = np.stack([(track * ys).sum((-2, -1)), (track * xs).sum((-2, -1))], -1) / np.maximum(area, 1e-6)[:, None]
        for a, b in zip(range(len(track) - 1), range(1, len(track))):
            if area[a] > 0 and area[b] > 0:
                jumps.append(np.hypot(*(c[b] - c[a])))
    return float(np.mean(jumps)) if jumps else 0.0


def test_shuffle_frames_breaks_motion_and_defaults_to_off():
    """``shuffle_frames`` puts a clip's frames in a random order (objects jump), and 0 leaves the sampler exactly
    as the shipped recipes drew their clips."""
    cfg = Sam2Config.tiny()
    a = W.sample_example(np.random.default_rng(3), cfg)
    b = W.sample_example(np.random.default_rng(3), cfg, shuffle_frames=0.0)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    smooth = [_mean_jump(W.sample_example(np.random.default_rng(s), cfg)) for s in range(12)]
    jumpy = [_mean_jump(W.sample_example(np.random.default_rng(s), cfg, shuffle_frames=1.0)) for s in range(12)]
    assert np.mean(jumpy) > 1.5 * np.mean(smooth), (smooth, jumpy)  # cells of the 16x16 grid
    ex = W.sample_example(np.random.default_rng(9), cfg, shuffle_frames=1.0)
    vis = ex["target"].sum((-2, -1)) > 0
    assert np.all(vis[ex["box_valid"]])  # prompts still sit on frames that show their object


def test_pool_masks_is_area_average():
    m = np.zeros((96, 128), np.uint8)
    m[:6, :8] = 1  # exactly one low-res cell
    m[6:9, 8:16] = 1  # half of the next one
    p = W.pool_masks(m, 16)
    assert p[0, 0] == 1.0 and p[1, 1] == 0.5 and p.sum() == 1.5


def test_object_score_loss_weights_visible_frames():
    """obj_pos_weight scales the BCE of frames where the object is visible and leaves absent frames alone."""
    import jax.numpy as jnp

    target = jnp.zeros((2, 4, 4)).at[0, :2, :2].set(1.0)  # frame 0 visible, frame 1 absent
    raw = {"masks": jnp.zeros((2, 1, 4, 4)), "iou": jnp.zeros((2, 1)), "obj": jnp.array([-1.0, 2.0])}
    vis_only, absent_only = jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0])
    sp = lambda x: float(np.log1p(np.exp(x)))  # noqa: E731 - softplus
    for w in (1.0, 4.0):
        rules = W.LossRules(obj_pos_weight=w)
        assert float(W._heads_loss(raw, target, vis_only, rules)["obj"]) == pytest.approx(w * sp(1.0), rel=1e-5)
        assert float(W._heads_loss(raw, target, absent_only, rules)["obj"]) == pytest.approx(sp(2.0), rel=1e-5)


def test_mask_loss_rules_absent_frames_and_best_of():
    """absent_weight=0 leaves absent frames to the object score; best_of takes the best output's mask loss."""
    import jax.numpy as jnp

    target = jnp.zeros((2, 4, 4)).at[0, :2, :2].set(1.0)  # frame 0 visible, frame 1 absent
    good = jnp.where(target[0] > 0, 9.0, -9.0)
    # frame 0: output 0 right, output 1 empty; frame 1 (absent): both outputs mask everything
    masks = jnp.stack([jnp.stack([good, jnp.full((4, 4), -9.0)]), jnp.full((2, 4, 4), 9.0)])
    raw = {"masks": masks, "iou": jnp.zeros((2, 2)), "obj": jnp.array([3.0, -3.0])}
    both = jnp.ones(2)
    per = np.asarray(W._mask_loss(masks, target[:, None]))  # [frame, output]
    assert per[0, 0] < 0.05 and per[0, 1] > 0.9 and per[1].min() > 5  # the setup is what the comments say
    full = W._heads_loss(raw, target, both)
    assert float(full["mask"]) == pytest.approx(per.mean(), rel=1e-5)
    vis_only = W._heads_loss(raw, target, both, W.LossRules(absent_weight=0.0))
    assert float(vis_only["mask"]) == pytest.approx(per[0].mean(), rel=1e-5)
    assert float(vis_only["obj"]) == pytest.approx(float(full["obj"]), rel=1e-6)  # absence still taught here
    half = W._heads_loss(raw, target, both, W.LossRules(absent_weight=0.5))
    assert float(half["mask"]) == pytest.approx((per[0].mean() + 0.5 * per[1].mean()) / 1.5, rel=1e-5)
    best = W._heads_loss(raw, target, both, W.LossRules(absent_weight=0.0, best_of=True))
    assert float(best["mask"]) == pytest.approx(per[0, 0], rel=1e-5)
    # with no visible frame in the weight the mask loss is 0, not NaN
    absent_only = W._heads_loss(raw, target, jnp.array([0.0, 1.0]), W.LossRules(absent_weight=0.0))
    assert float(absent_only["mask"]) == 0.0


def test_train_lowers_loss_and_checkpoint_roundtrips(trained):
    out, r = trained
    losses = [row["loss"] for row in r["curve"]]
    assert len(losses) == 6 and np.isfinite(losses).all()
    # the loss falls over the first steps; later steps on one batch can spike (see the task report)
    assert min(losses[1:4]) < 0.8 * losses[0], losses
    model, params = load_checkpoint(out)
    assert isinstance(model, Sam2VideoModel) and model.cfg == Sam2Config.tiny()
    flat = jax.tree_util.tree_leaves_with_path(r["params"])
    assert len(flat) == len(jax.tree_util.tree_leaves(params))
    for path, leaf in flat:
        np.testing.assert_array_equal(np.asarray(leaf), np.asarray(_get(params, path)))
    assert os.path.exists(os.path.join(out, "warmstart.json"))


def _get(tree, path):
    for k in path:
        tree = tree[k.key]
    return tree


def test_train_forward_matches_propagate(shipped):
    """The training pass is exactly the inference pass (forward propagation) on the same params."""
    from omnir1_jax.models.sam2 import video as V

    model, params = shipped
    ex = W.sample_example(np.random.default_rng(5), model.cfg)
    a = jax.jit(lambda p, e: W.train_forward(model, p, e["pixels"], e["boxes"], e["box_valid"])[0])(params, ex)
    b = jax.jit(lambda p, e: V.propagate(model, p, e["pixels"], e["boxes"], e["box_valid"], "forward",
                                         max_cond_frames=W.COND_SLOTS))(params, ex)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4)
    assert (np.asarray(b) > 0).any()  # non-trivial masks, so the comparison means something


def test_shipped_checkpoint_segments_heldout_clips(shipped, clips):
    model, params = shipped
    assert model.cfg == Sam2Config.tiny()
    random = W.init_params(model.cfg, 0)
    got, rnd = W.evaluate_views(model, params, clips), W.evaluate_views(model, random, clips)
    # measured at ship time (stage 3, 2026-12-07; these 4 clips): J on the GT-box frame 0.71, on visible frames
    # 0.50, and 0.42 / 0.42 / 0.38 at 1 / 2 / >= 3 frames from it (stage 2, shipped before: 0.65 prompted, 0.28
    # visible, 0.20 / 0.11 / 0.07). Random weights give empty masks everywhere (0.0).
    assert got["j_prompted"] > 0.5 and rnd["j_prompted"] < 0.01, (got, rnd)
    assert got["j_visible"] > 0.35 and rnd["j_visible"] < 0.01, (got, rnd)
    assert W.evaluate_j(model, params, clips, visible_only=True) == got["j_visible"]
    # stage 3 tracks: it keeps most of the prompted-frame J several frames away
    assert got["j_dist1"] > 0.3 and got["j_dist3plus"] > 0.25, got
    assert rnd["j_dist1"] == rnd["j_dist2"] == rnd["j_dist3plus"] == 0.0, rnd
    # ...but its presence gate does not tell absent frames apart (masked on 0.61 of them), so J over every frame
    # (0.44) is no better than empty masks (0.45); the assets README's fifteenth round has the numbers
    assert got["absent_masked"] > 0.3 and abs(got["j"] - rnd["j"]) < 0.1, (got, rnd)
    assert rnd["absent_masked"] == 0.0 and 0.0 <= got["absent_masked"] <= 1.0  # random weights: empty masks
    # the gate is an objectness detector, not an identity check (seventeenth round): on these clips it masks
    # every target-free frame where another object is on screen (1.0) and no frame that is empty (0.0)
    assert got["absent_masked_with_others"] > 0.8 and got["absent_masked_alone"] < 0.2, got
    assert rnd["absent_masked_with_others"] == rnd["absent_masked_alone"] == 0.0, rnd


def test_clip_loss_passes_the_mask_rules_through(shipped):
    """clip_loss applies LossRules: absent_weight / best_of change the tracked frames' mask loss and leave the
    object score alone; obj_weight scales the object-score term of the total."""
    import jax.numpy as jnp

    model, params = shipped[0], W.tie_positional_embeddings(jax.tree.map(jnp.asarray, shipped[1]))
    cfg = model.cfg
    ex = {k: jnp.asarray(v) for k, v in W.sample_example(np.random.default_rng(5), cfg, t_len=4).items()}
    loss = jax.jit(lambda aw, bo, ow: W.clip_loss(model, params, ex, False, W.LossRules(1.0, aw, bo, ow)))
    (t_full, full), (t_rule, sam2_rule) = loss(1.0, False, 1.0), loss(0.0, True, 1.0)  # one compile
    t_obj3 = loss(1.0, False, 3.0)[0]
    assert float(t_obj3 - t_full) == pytest.approx(2 * float(full["obj"]), rel=1e-4)
    assert float(t_rule) != pytest.approx(float(t_full), rel=1e-3)
    assert float(sam2_rule["mask_track"]) != pytest.approx(float(full["mask_track"]), rel=1e-3)
    assert float(sam2_rule["obj"]) == pytest.approx(float(full["obj"]), rel=1e-6)
    with pytest.raises(ValueError, match="select_by"):
        W.train_sam2(None, steps=1, eval_clips=0, progress=False, select_by="loss")


def test_sample_example_names_each_tracked_objects_identity():
    """``identity`` [O, 2] is the colour and shape index of each tracked object: the clip the sampler drew is
    re-made from the same seed (its first two draws) and each track's target frames are found among one
    object's masks, whose colour and shape must be the ones named."""
    from data_pipelines.synthetic import words
    from data_pipelines.synthetic.render import render_clip
    from data_pipelines.synthetic.world import make_clip

    cfg = Sam2Config.tiny()
    for seed in range(4):
        ex = W.sample_example(np.random.default_rng(seed), cfg)
        assert ex["identity"].shape == (W.TRAIN_OBJECTS, 2) and ex["identity"].dtype == np.int32
        rng = np.random.default_rng(seed)
        n = int(rng.integers(W.TRAIN_FRAMES, 2 * W.TRAIN_FRAMES + 1))
        clip = make_clip(rng, "warm", num_frames=n, height=W.HEIGHT, width=W.WIDTH)
        pooled = W.pool_masks(render_clip(clip)[1], cfg.mask_size)  # [O_all, n, h, w]
        for o in range(W.TRAIN_OBJECTS):
            frames = [f for f in ex["target"][o] if f.any()]
            owners = [j for j in range(len(pooled))
                      if all(any(np.array_equal(f, g) for g in pooled[j]) for f in frames)]
            assert len(owners) == 1, (seed, o, owners)
            obj = clip.objects[owners[0]]
            assert tuple(ex["identity"][o]) == (words.COLOURS.index(obj.colour), words.SHAPES.index(obj.shape))


def test_identity_loss_names_colour_and_shape_from_pooled_features():
    """``identity_loss`` pools features over each object's area and scores the head's colour and shape; entries
    where the object is absent do not count, whatever stands in its cells."""
    import jax.numpy as jnp

    c, (nc, ns) = 32, W.NUM_IDENTITY_CLASSES
    head = {"w": jnp.eye(c, nc + ns), "b": jnp.zeros(nc + ns)}  # channel k votes for class k
    feats = np.zeros((2, 2, 16, c), np.float32)  # [O, T, cells, C]
    area = np.zeros((2, 2, 16), np.float32)
    ident = np.array([[3, 1], [5, 2]], np.int32)
    for o, cell in enumerate([0, 11]):
        for t in range(2):
            feats[o, t, cell, ident[o, 0]] = feats[o, t, cell, nc + ident[o, 1]] = 1.0
            area[o, t, cell] = 0.7
    area[1, 1] = 0.0  # object 1 is gone in frame 1 ...
    feats[1, 1, 11] = 0.0
    feats[1, 1, 11, 0] = 1.0  # ... and a "colour 0" thing stands there: it must not count
    lab = np.broadcast_to(ident[:, None], (2, 2, 2))
    loss, acc = W.identity_loss(head, jnp.asarray(feats), jnp.asarray(area), jnp.asarray(lab))
    assert float(acc) == 1.0 and float(loss) < 1e-3, (loss, acc)
    wrong = lab.copy()
    wrong[..., 0] = (wrong[..., 0] + 1) % nc
    loss_w, acc_w = W.identity_loss(head, jnp.asarray(feats), jnp.asarray(area), jnp.asarray(wrong))
    assert float(acc_w) == 0.0 and float(loss_w) > 10.0, (loss_w, acc_w)
    empty, _ = W.identity_loss(head, jnp.asarray(feats), jnp.zeros(area.shape), jnp.asarray(lab))
    assert float(empty) == 0.0  # no visible object: nothing to score
    np.testing.assert_allclose(np.asarray(W._cell_area(jnp.ones((1, 16, 16)), 4)), np.ones((1, 16)))


def test_count_balanced_object_score_makes_counting_worthless():
    """``LossRules.count_prior``: the object-score BCE weighs a visible frame at N objects on screen by
    1 / (2 p_N) and a target-free one by 1 / (2 (1 - p_N)), so a score that depends on N only is best at 0 (the
    same loss whatever N says); without it, plain BCE pays the counting score."""
    import jax.numpy as jnp

    prior = W.count_prior(samples=30, seed=1)
    assert prior[0] == 0.0 and all(0.0 <= p <= 1.0 for p in prior)  # an empty frame never shows the target
    assert prior[1] < prior[2] < prior[3], prior  # the more objects on screen, the likelier the target is one
    h = 4
    vis = np.array([1, 1, 1, 0, 1, 0, 0, 0], np.float32)  # 8 frames: N = 3, 3, 3, 3, 1, 1, 1, 1
    on_screen = jnp.array([3, 3, 3, 3, 1, 1, 1, 1])
    target = jnp.asarray(vis[:, None, None] * np.ones((8, h, h), np.float32))
    rules = W.LossRules(obj_pos_weight=1.0, count_prior=(0.0, 0.25, 0.5, 0.75))

    def obj_loss(x, r, n):
        raw = {"masks": jnp.zeros((8, 1, h, h)), "iou": jnp.zeros((8, 1)), "obj": x}
        return float(W._heads_loss(raw, target, jnp.ones(8), r, n)["obj"])

    sp = lambda v: float(jax.nn.softplus(v))  # noqa: E731
    x = jnp.array([2.0, 2.0, 2.0, 2.0, -1.0, -1.0, -1.0, -1.0])  # "present" where N = 3, "absent" where N = 1
    want = (3 * (0.5 / 0.75) * sp(-2) + (0.5 / 0.25) * sp(2) + (0.5 / 0.25) * sp(1) + 3 * (0.5 / 0.75) * sp(-1)) / 8
    assert obj_loss(x, rules, on_screen) == pytest.approx(want, rel=1e-5)
    assert obj_loss(x, rules, None) == pytest.approx(np.mean([sp(-2)] * 3 + [sp(2), sp(1)] + [sp(-1)] * 3), rel=1e-5)
    # the counting score beats a constant under plain BCE, and not under the balanced weights
    zero = jnp.zeros(8)
    assert obj_loss(x, W.LossRules(obj_pos_weight=1.0), None) < obj_loss(zero, W.LossRules(obj_pos_weight=1.0), None)
    assert obj_loss(x, rules, on_screen) > obj_loss(zero, rules, on_screen)


def test_identity_rule_adds_the_auxiliary_term_and_trains_its_head(shipped):
    """``LossRules.identity_weight`` / ``match_weight``: clip_loss adds weight x each auxiliary loss (and asks for
    the heads), and a training step updates both SAM2 and the heads."""
    import jax.numpy as jnp
    import optax

    model, params = shipped[0], W.tie_positional_embeddings(jax.tree.map(jnp.asarray, shipped[1]))
    ex = {k: jnp.asarray(v) for k, v in W.sample_example(np.random.default_rng(5), model.cfg, t_len=4).items()}
    head = W.init_identity_head(model.cfg, 0)
    rules = W.LossRules(1.0, 0.0, False, 1.0, 0.5)
    with_id, parts = jax.jit(lambda p, h: W.clip_loss(model, p, ex, False, rules, h))(params, head)
    base, _ = jax.jit(lambda p: W.clip_loss(model, p, ex, False, W.LossRules(1.0, 0.0, False, 1.0)))(params)
    assert float(parts["identity"]) > 1.0  # an untrained head: about log(8) + log(6)
    assert float(with_id - base) == pytest.approx(0.5 * float(parts["identity"]), rel=1e-4)
    with pytest.raises(ValueError, match="auxiliary heads"):
        W.clip_loss(model, params, ex, False, rules)
    # match_weight: a presence head on the memory-conditioned map of the tracked frames
    m_rules = W.LossRules(1.0, 0.0, False, 1.0, 0.0, (), 0.25)
    with_m, m_parts = jax.jit(lambda p, h: W.clip_loss(model, p, ex, False, m_rules, h))(params, head)
    assert float(m_parts["match"]) == pytest.approx(np.log(2), rel=1e-4)  # a zero head: logit 0 everywhere
    assert float(with_m - base) == pytest.approx(0.25 * float(m_parts["match"]), rel=1e-4)
    assert "identity" not in m_parts
    tx = optax.adam(1e-3)
    tree = (params, head)
    step = W.make_train_step(model, tx, False, W.LossRules(1.0, 0.0, False, 1.0, 0.5, (), 0.25))
    batch = jax.tree.map(lambda x: x[None], ex)
    new, _, m = step(jax.tree.map(jnp.array, tree), tx.init(tree), batch)
    assert {"identity", "identity_acc", "identity_mem_acc", "match", "match_acc"} <= set(m)
    assert not np.allclose(np.asarray(new[1]["match"]["w"]), 0.0)
    assert not np.allclose(np.asarray(new[1]["feat"]["w"]), np.asarray(head["feat"]["w"]))
    assert not np.allclose(np.asarray(new[1]["mem"]["w"]), np.asarray(head["mem"]["w"]))
    assert any(not np.allclose(np.asarray(a), np.asarray(b)) for a, b in
               zip(jax.tree.leaves(new[0]["vision_encoder"]), jax.tree.leaves(params["vision_encoder"])))


def test_probe_shows_objectness_gate_and_order_free_tracks(shipped):
    """``sam2_probe`` on the shipped tracker (seventeenth round): its object score is > 0 on every target-free
    frame with another object on screen and on none that is empty, and shuffling a clip's frames leaves its
    tracks nearly unchanged (it re-detects the object from the prompted frame)."""
    from omnir1_jax.warmstart import sam2_probe as P

    model, params = shipped
    params = W.tie_positional_embeddings(params)
    clips = W.heldout_clips(2, seed=123, frames=(8,))
    perm = P.shuffled(clips, seed=0)
    assert not np.array_equal(perm[0][0], clips[0][0])  # the frames really moved ...
    assert all(np.array_equal(pc[0][pc[2][j]], c[0][t]) for c, pc in zip(clips, perm)
               for j, t in enumerate(c[2]) if t >= 0)  # ... and each prompt moved with its frame
    split = P.score_by_objects(model, params, clips)
    assert split["visible"]["score_above_0"] > 0.9 and split["others_0"]["score_above_0"] < 0.1, split
    assert split["others_1"]["frames"] > 0 and split["others_1"]["score_above_0"] > 0.9, split
    order = P.order_sensitivity(model, params, clips)
    assert order["frames"] > 0 and order["mask_iou"] > 0.9, order


def test_probe_feature_colour_shows_the_stride16_level_loses_colour(shipped):
    """``sam2_probe.feature_colour`` on the shipped tracker (eighteenth round): a linear probe names an object's
    colour from the stride-4 features far better than from the stride-16 map that memories are made of
    (0.90 vs 0.42 with the probe's defaults; here 16 clips)."""
    from omnir1_jax.warmstart import sam2_probe as P

    model, params = shipped
    got = P.feature_colour(model, W.tie_positional_embeddings(params), clips=16)
    acc = got["colour_accuracy"]
    assert got["samples"] > 150 and set(acc) == {"s0", "s1", "feat"}
    assert acc["s0"] > 0.7 and acc["s0"] - acc["feat"] > 0.2, acc


def test_probe_gate_readout_on_the_shipped_tracker(shipped):
    """``sam2_probe.gate_readout``: on tracked frames with another object on screen, the shipped gate says
    "present" every time, so its accuracy is the share of frames that do show the target; the two linear
    probes return accuracies on the clips held out from their fit."""
    from omnir1_jax.warmstart import sam2_probe as P

    model, params = shipped
    got = P.gate_readout(model, W.tie_positional_embeddings(params), W.heldout_clips(6, seed=0, frames=(8,)))
    assert got["frames"] > 40 and 0.0 < got["present_share"] < 1.0, got
    assert got["gate"] == pytest.approx(got["present_share"], abs=0.03), got
    assert got["majority"] == pytest.approx(max(got["present_share"], 1 - got["present_share"]))
    assert 0.0 <= got["conditioned"] <= 1.0 and 0.0 <= got["frame_only"] <= 1.0
    x = np.random.default_rng(0).normal(size=(60, 3))
    y = (x[:, 0] > 0).astype(float)  # linearly separable: the probe must find it on the held-out groups
    assert P._ridge_accuracy(x, y, np.arange(60) // 5, ridge=0.1) > 0.85


def test_shipped_128_pixel_tracker_is_a_drop_in_checkpoint(shipped):
    """``sam2_128/`` (seventeenth round, not the default) is the same tiny SAM2 at 128-pixel input: the same
    parameter shapes as the default checkpoint, so ``segmenter.checkpoint`` can point at either, and its record
    names the command that made it from the default one."""
    import json

    model, params = shipped
    other = os.path.join(SHIPPED, os.pardir, "sam2_128")
    model128, params128 = load_checkpoint(other)
    assert model128.cfg == Sam2Config.tiny(128) and model.cfg.image_size == 64
    shapes = lambda p: jax.tree.map(lambda x: tuple(x.shape), p)  # noqa: E731
    assert shapes(params128) == shapes(params)
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params128), jax.tree.leaves(params)))
    with open(os.path.join(other, "warmstart.json")) as fh:
        record = json.load(fh)
    assert "--image_size 128" in record["command"]
    assert "--init omnir1_jax/assets/synthetic_tiny/sam2 " in record["command"]
    assert record["image_size"] == 128 and record["j_visible_after"] > 0.5
