"""RefAVS and SegZero rewards, the GT point helper, format reward, length bonus and weight presets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from omnir1_jax.rewards import (
    WEIGHT_PRESETS,
    LengthBonusConfig,
    SegZeroInputs,
    get_weights,
    length_bonus,
    refavs_reward,
    segzero_terms,
    top2_inscribed_circle_centers,
    total_reward,
)


def test_refavs_reward_hand_values():
    f = jax.jit(jax.vmap(refavs_reward, in_axes=(0, 0, 0, 0, None)))
    nonempty = jnp.array([True, False, True, True, True])
    box = jnp.array([[10.0, 10, 14, 19]] * 5)
    box_valid = jnp.array([True, True, False, True, True])
    gt = jnp.array([[20.0, 20, 38, 38]] * 3 + [[-1.0, -1, -1, -1], [0.0, 20, 38, 38]])
    out = np.asarray(f(nonempty, box, box_valid, gt, jnp.array([0.5, 0.5])))
    # GT scaled to [10, 10, 19, 19]: IoU 50/100; empty answer, no box and empty GT give 0;
    # no x1 <= 0 quirk for RefAVS: GT [0, 10, 19, 19] vs pred [10, 10, 14, 19] = 50 / 200
    np.testing.assert_allclose(out, [0.5, 0.0, 0.0, 0.0, 0.25], rtol=1e-6)


def _seg(box, points, box_ok=True, points_ok=True, fmt=True):
    return SegZeroInputs(
        pred_box=jnp.asarray(box, jnp.float32),
        box_ok=jnp.asarray(box_ok),
        pred_points=jnp.asarray(points, jnp.float32),
        points_ok=jnp.asarray(points_ok),
        format_ok=jnp.asarray(fmt),
        gt_box=jnp.array([21.0, 21, 61, 41]),  # int(c * 0.5) -> [10, 10, 30, 20]
        gt_points=jnp.array([[31.0, 31], [51, 31]]),  # -> (15, 15), (25, 15)
        resize_ratio=jnp.array([0.5, 0.5]),
    )


def test_segzero_reward_hand_values():
    f = jax.jit(segzero_terms)
    # perfect box, points given in swapped order (and truncated by int()): 1.4 + 1 + 1 + 1
    out = f(_seg([10, 10, 30, 20], [[25.7, 15.2], [15, 15]]))
    np.testing.assert_allclose(float(out["iou"]), 1.0)
    np.testing.assert_allclose(float(out["point_l1"]), 0.0, atol=1e-6)
    np.testing.assert_allclose(float(out["acc"]), 4.4, rtol=1e-6)
    # IoU 121/231 (strict-intersection +1 IoU), box L1 2.5, a point outside the box -> 999, no format
    out = f(_seg([10, 10, 20, 20], [[15, 15], [25, 15]], fmt=False))
    iou = 121 / 231
    np.testing.assert_allclose(float(out["iou"]), iou, rtol=1e-6)
    assert float(out["point_l1"]) == 999.0 and float(out["point_reward"]) == 0.0
    np.testing.assert_allclose(float(out["acc"]), 2 * (iou - 0.5) + 0.4 + 1.0, rtol=1e-6)
    # far points inside a big box: point L1 = 100*sqrt(2) -> (150 - 141.42)*0.02; IoU ~0, box L1 92.5
    out = f(_seg([0, 0, 200, 200], [[115, 115], [125, 115]]))
    np.testing.assert_allclose(float(out["point_l1"]), 100 * np.sqrt(2), rtol=1e-5)
    np.testing.assert_allclose(float(out["box_l1"]), 92.5)
    np.testing.assert_allclose(float(out["acc"]), (150 - 100 * np.sqrt(2)) * 0.02 + 1.0, rtol=1e-5)
    # no box at all: everything 0 except the format flag
    out = f(_seg([10, 10, 30, 20], [[15, 15], [25, 15]], box_ok=False, fmt=False))
    assert float(out["acc"]) == 0.0 and float(out["box_l1"]) == 999.0


def test_top2_inscribed_circle_centers():
    m = np.zeros((30, 50), np.uint8)
    m[5:25, 5:45] = 1  # 20 x 40 rectangle: distance 10 first reached at (row 14, col 14)
    np.testing.assert_array_equal(top2_inscribed_circle_centers(m), [14, 14, 34, 14])
    np.testing.assert_array_equal(top2_inscribed_circle_centers(np.zeros((5, 5))), [-1, -1, -1, -1])
    one = np.zeros((8, 8), bool)
    one[3, 6] = True  # nothing left after erasing the disc: falls back to a mask pixel
    pts = top2_inscribed_circle_centers(one, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(pts, [6, 3, 6, 3])


def test_length_bonus_group_rule():
    acc = jnp.array([[0.5, 0.2, 0.05, 0.9], [0.5, 0.1, 0.0, 0.0], [0.11, 0.2, 0.3, 0.4]])
    lens = jnp.array([[400, 800, 500, 320], [400] * 4, [750, 751, 319, 500]])
    bonus = np.asarray(jax.jit(length_bonus, static_argnums=2)(acc, lens, LengthBonusConfig()))
    # group 1: only one completion has acc > 0.1 (0.1 itself does not count) -> no bonus at all
    np.testing.assert_array_equal(bonus, [[1, 0, 0, 1], [0, 0, 0, 0], [1, 0, 0, 1]])
    off = length_bonus(acc, lens, LengthBonusConfig(enabled=False))
    assert float(jnp.abs(off).sum()) == 0.0
    custom = length_bonus(acc, lens, LengthBonusConfig(min_len=100, max_len=1000, min_count=4))
    np.testing.assert_array_equal(np.asarray(custom)[2], [1, 1, 1, 1])
    out = total_reward(acc, jnp.array([[True, False, True, True]] * 3), lens)
    np.testing.assert_allclose(np.asarray(out["reward"])[0], [2.5, 0.2, 1.05, 2.9], rtol=1e-6)


def test_weight_presets():
    r, i = WEIGHT_PRESETS["released"], WEIGHT_PRESETS["internal"]
    assert (r.alpha_k, r.alpha_k_ratio, r.alpha_a, r.alpha_g) == (1.0, 1.0, 1.0, 0.0)
    assert (i.alpha_k, i.alpha_k_ratio, i.alpha_a, i.alpha_g) == (1.0, 0.0, 1.0, 2.0)
    assert get_weights("internal", clip_reward=True).clip_reward
    with pytest.raises(KeyError):
        get_weights("nope")
