"""+1-pixel box IoU, the x1 <= 0 quirk, exact permutation Hungarian vs scipy, DAVIS J of masks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from omnir1_jax.rewards import box_iou_plus1, clip_mean_iou, hungarian_max, mask_iou, matched_iou


def test_iou_plus1_convention_hand_values():
    iou = jax.jit(box_iou_plus1)
    # 10x10 boxes shifted by 5: inter 5*10 = 50, union 150
    np.testing.assert_allclose(float(iou(jnp.array([0.0, 0, 9, 9]), jnp.array([5.0, 0, 14, 9]))), 1 / 3)
    # touching at x = 9 share one pixel column under +1: inter 10, union 190
    np.testing.assert_allclose(float(iou(jnp.array([0.0, 0, 9, 9]), jnp.array([9.0, 0, 18, 9]))), 10 / 190)
    # a degenerate 1-pixel box equal to the GT has IoU 1 (area 1, not 0)
    assert float(iou(jnp.array([3.0, 3, 3, 3]), jnp.array([3.0, 3, 3, 3]))) == 1.0
    # disjoint
    assert float(iou(jnp.array([0.0, 0, 4, 4]), jnp.array([6.0, 6, 9, 9]))) == 0.0


def test_gt_x1_quirk():
    f = jax.jit(lambda p, g: box_iou_plus1(p, g, gt_x1_quirk=True))
    box0 = jnp.array([0.0, 5, 9, 14])
    assert float(f(box0, box0)) == 0.0  # GT x1 = 0 -> forced 0
    assert float(box_iou_plus1(box0, box0)) == 1.0  # without the quirk
    box1 = jnp.array([1.0, 5, 9, 14])
    assert float(f(box1, box1)) == 1.0
    dummy = jnp.array([-1.0, -1, -1, -1])
    assert float(f(dummy, dummy)) == 0.0  # dummy GT never scores


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_hungarian_by_permutations_equals_scipy(n):
    rng = np.random.default_rng(n)
    f = jax.jit(hungarian_max)
    for _ in range(25):
        score = rng.random((n, n)).astype(np.float32)
        if rng.random() < 0.3:
            score[rng.random((n, n)) < 0.5] = 0.0  # many ties / zero rows as with IoUs
        rows, cols = linear_sum_assignment(-score)
        perm, total = f(jnp.asarray(score))
        np.testing.assert_allclose(float(total), score[rows, cols].sum(), rtol=1e-6)
        picked = score[np.arange(n), np.asarray(perm)].sum()
        np.testing.assert_allclose(picked, score[rows, cols].sum(), rtol=1e-6)
        assert sorted(np.asarray(perm).tolist()) == list(range(n))


def test_matched_iou_on_boxes():
    gt = jnp.array([[10.0, 10, 19, 19], [30.0, 30, 39, 39], [-1.0, -1, -1, -1]])
    pred = jnp.array([[30.0, 30, 39, 39], [10.0, 10, 14, 19], [-1.0, -1, -1, -1]])  # swapped order
    m = np.asarray(jax.jit(matched_iou)(gt, pred))
    np.testing.assert_allclose(m, [0.5, 1.0, 0.0])


def test_mask_iou_and_empty_vs_empty():
    a = np.zeros((3, 4, 4), bool)
    b = np.zeros((3, 4, 4), bool)
    a[0, :2, :2] = True
    b[0, :2, :] = True  # J = 4/8
    b[1, 0, 0] = True  # pred empty, GT non-empty: 0
    # frame 2: both empty -> 1
    j = np.asarray(jax.jit(mask_iou)(a, b))
    np.testing.assert_allclose(j, [0.5, 0.0, 1.0])
    # clip mean over the first 2 frames only (frame 2 is padding)
    np.testing.assert_allclose(float(jax.jit(clip_mean_iou)(a, b, 2)), 0.25)
