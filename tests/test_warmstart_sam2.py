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
        assert float(W._heads_loss(raw, target, vis_only, w)["obj"]) == pytest.approx(w * sp(1.0), rel=1e-5)
        assert float(W._heads_loss(raw, target, absent_only, w)["obj"]) == pytest.approx(sp(2.0), rel=1e-5)


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
    # measured at ship time (these 4 clips): J 0.56 vs random 0.45 (the empty-mask score), visible-frame J
    # 0.28 vs 0.0, J on the GT-box frame 0.65 vs 0.0 (the previous checkpoint: 0.48 / 0.09 / 0.33).
    # The task's goal (J >= 0.6) is NOT met; these bounds pin what the checkpoint does today.
    assert got["j_prompted"] > 0.5 and rnd["j_prompted"] < 0.01, (got, rnd)
    assert got["j_visible"] > 0.2 and rnd["j_visible"] < 0.01, (got, rnd)
    assert got["j"] > rnd["j"] + 0.05, (got, rnd)
    assert W.evaluate_j(model, params, clips, visible_only=True) == got["j_visible"]
    # tracking decays with the distance from the prompted frame (measured on these 4 clips: 0.65 prompted,
    # 0.20 / 0.11 / 0.07 at 1 / 2 / >= 3 frames; on the record's 20 clips 0.65 / 0.19 / 0.17 / 0.14, assets
    # README, fourteenth round); random weights give empty masks everywhere
    assert got["j_prompted"] > got["j_dist1"] > got["j_dist3plus"] > 0.0, got
    assert 0.1 < got["j_dist1"] < 0.4, got
    assert rnd["j_dist1"] == rnd["j_dist2"] == rnd["j_dist3plus"] == 0.0, rnd
    assert rnd["absent_masked"] == 0.0 and 0.0 <= got["absent_masked"] <= 1.0  # random weights: empty masks
