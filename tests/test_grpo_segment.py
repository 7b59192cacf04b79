"""SAM2 track compaction of the GRPO step (grpo_rollout.segment with GRPOSettings.sam_tracks_per_clip)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from omnir1_jax import parallel
from omnir1_jax.models.sam2.config import Sam2Config
from omnir1_jax.models.sam2.model import Sam2VideoModel
from omnir1_jax.rl import grpo, grpo_rollout
from omnir1_jax.rl.grpo_settings import GRPOSettings

B, G, K, O, F, S = 2, 3, 2, 3, 4, 64  # clips, generations, keyframes, objects, frames, SAM2 side
M = 4 * S // 16  # SAM2's low-res mask side = the reward-mask side here (no resize)

# (clip, completion) -> prompted objects.  Clip 0: completion 0 has all three objects, completion 1 only
# object 1, completion 2 none (4 tracks); clip 1: completions 1 and 2 one object each (2 tracks).
PROMPTED = {(0, 0): (0, 1, 2), (0, 1): (1,), (1, 1): (2,), (1, 2): (0,)}


@pytest.fixture(scope="module")
def env():
    sam = Sam2VideoModel(Sam2Config.tiny())
    params = parallel.unbox(jax.jit(lambda r: sam.init(r, jnp.zeros((1, 3, S, S)),
                                                       method=Sam2VideoModel.init_all)["params"])(jax.random.key(1)))
    # A positive object-score bias makes objects "appear", so the masks are not all empty.
    head = params["mask_decoder"]["pred_obj_score_head"]["proj_out"]
    head["bias"] = jnp.full_like(head["bias"], 3.0)
    rng = np.random.default_rng(0)
    batch = {"sam_pixels": jnp.asarray(rng.normal(size=(B, F, 3, S, S)).astype(np.float32)),
             "sam_scale": jnp.ones((B, 2), jnp.float32), "gt_masks": jnp.zeros((B, O, F, M, M), bool)}
    xy = rng.uniform(0, 30, size=(B, G, K, O, 2))
    wh = rng.uniform(12, 30, size=(B, G, K, O, 2))
    boxes = jnp.asarray(np.concatenate([xy, xy + wh], -1).astype(np.float32))  # [B, G, K, O, 4]
    frames = jnp.asarray(np.stack([rng.permutation(F)[:K] for _ in range(B * G)]).reshape(B, G, K), jnp.int32)
    valid = np.zeros((B, G, K, O), bool)
    for (b, g), objs in PROMPTED.items():
        valid[b, g, 0, list(objs)] = True
        valid[b, g, 1, objs[0]] = True  # the first object has a second keyframe box
    models = grpo_rollout.StepModels(thinker=None, segmenter=sam)
    base = GRPOSettings(num_generations=G, max_keyframes=K, max_objects=O)

    jitted = {}  # one compile per capacity

    def seg(cap: int, v: np.ndarray):
        if cap not in jitted:
            s = dataclasses.replace(base, sam_tracks_per_clip=cap)
            jitted[cap] = jax.jit(lambda p, bt, bx, fr, va: grpo_rollout.segment(models, s, p, bt, bx, fr, va))
        masks, counts = jitted[cap](params, batch, boxes, frames, jnp.asarray(v))
        return np.asarray(masks), {k: np.asarray(c) for k, c in counts.items()}

    full, full_counts = seg(0, valid)
    return dict(seg=seg, valid=valid, full=full, full_counts=full_counts, models=models, base=base,
                params=params, batch=batch, boxes=boxes, frames=frames)


def test_track_slots_order_keeps_every_completions_first_object():
    prompted = jnp.asarray([[True, True, True], [False, True, False], [False, False, False]])
    order, on = grpo_rollout.track_slots(prompted, 4)
    # rank 0 of every completion first (g0 o0, g1 o1), then g0's second and third objects
    assert np.asarray(order).tolist() == [0, 4, 1, 2] and np.asarray(on).all()
    order, on = grpo_rollout.track_slots(prompted, 6)
    assert np.asarray(on).tolist() == [True] * 4 + [False] * 2  # free slots are unprompted tracks
    assert sorted(np.asarray(order).tolist()) == sorted(set(np.asarray(order).tolist()))  # no duplicates


def test_uncompacted_masks_are_non_trivial(env):
    full = env["full"]
    assert full.shape == (B, G, F, M, M) and full.dtype == bool
    assert full[0, 0].any() and full[1, 2].any() and 0.02 < full.mean() < 0.9
    assert not full[0, 2].any() and not full[1, 0].any()  # completions without a prompted object
    assert env["full_counts"]["sam_tracks_prompted"].tolist() == [4, 2]
    assert env["full_counts"]["sam_tracks_dropped"].tolist() == [0, 0]


def test_compacted_equals_uncompacted_when_capacity_suffices(env):
    """C = 4 >= the prompted count of every clip (4 and 2; clip 1 fills 2 slots with unprompted tracks)."""
    masks, counts = env["seg"](4, env["valid"])
    np.testing.assert_array_equal(masks, env["full"])
    assert counts["sam_tracks_prompted"].tolist() == [4, 2] and counts["sam_tracks_dropped"].tolist() == [0, 0]


def test_tracks_beyond_capacity_are_dropped_and_counted(env):
    """C = 2: clip 0 keeps (g0, o0) and (g1, o1) and drops g0's objects 1 and 2; clip 1 keeps both."""
    masks, counts = env["seg"](2, env["valid"])
    assert counts["sam_tracks_dropped"].tolist() == [2, 0] and counts["sam_tracks_prompted"].tolist() == [4, 2]
    kept = env["valid"].copy()
    kept[0, 0, :, 1:] = False
    expected, _ = env["seg"](0, kept)  # the uncompacted pass given only the kept tracks
    np.testing.assert_array_equal(masks, expected)
    assert (expected[0, 0] != env["full"][0, 0]).any()  # the dropped tracks did contribute
    np.testing.assert_array_equal(masks[1], env["full"][1])


def test_bidirectional_propagation_is_rejected_with_slots(env):
    s = dataclasses.replace(env["base"], sam_tracks_per_clip=2, sam_direction="bidirectional")
    with pytest.raises(ValueError, match="bidirectional"):
        jax.eval_shape(lambda bx, fr, va: grpo_rollout.segment(env["models"], s, env["params"], env["batch"],
                                                               bx, fr, va),
                       env["boxes"], env["frames"], jnp.asarray(env["valid"]))


def test_step_metrics_log_track_counts_as_step_totals():
    ro = {"terms": {"sam_tracks_dropped": jnp.asarray([2, 1], jnp.int32),
                    "sam_tracks_prompted": jnp.asarray([4, 3], jnp.int32), "sam_iou": jnp.ones((2, 2))},
          "reward": jnp.ones((2, 2)), "lengths": jnp.ones((4,), jnp.int32), "format_ok": jnp.ones((4,), bool),
          "truncated": jnp.zeros((4,), bool), "num_approx": jnp.int32(0)}
    out = grpo.step_metrics(GRPOSettings(num_generations=2), ro, {})
    assert float(out["sam_tracks_dropped"]) == 3.0 and float(out["sam_tracks_prompted"]) == 7.0
    assert "reward/sam_tracks_dropped" not in out and float(out["reward/sam_iou"]) == 1.0
