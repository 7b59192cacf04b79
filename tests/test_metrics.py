"""Official-parity metrics: hand-computed values for every special case in the reference."""

import numpy as np
import pytest

from omnir1_jax.metrics import davis, refavs, revos


# ----------------------------------------------------------------------------- DAVIS J / F
def test_jaccard_special_cases():
    z = np.zeros((4, 4), np.uint8)
    one = z.copy(); one[1:3, 1:3] = 1
    assert davis.jaccard(z, z) == 1.0  # both empty
    assert davis.jaccard(one, z) == 0.0 and davis.jaccard(z, one) == 0.0
    other = z.copy(); other[1:3, 1:4] = 255  # 0/255 input behaves as 0/1
    assert davis.jaccard(one, other) == pytest.approx(4 / 6)
    stack = davis.jaccard(np.stack([one, z]), np.stack([other, z]))
    assert stack.dtype == np.float64 and stack.shape == (2,)
    np.testing.assert_allclose(stack, [4 / 6, 1.0])


def test_seg2bmap_hand_computed():
    s = np.zeros((4, 4), bool); s[1:3, 1:3] = True
    expected = np.array([[1, 1, 1, 0], [1, 0, 1, 0], [1, 1, 1, 0], [0, 0, 0, 0]], bool)
    np.testing.assert_array_equal(davis.seg2bmap(s), expected)
    assert not davis.seg2bmap(np.ones((5, 7), bool)).any()  # the image border is never a boundary


@pytest.mark.parametrize("shape, pix, count", [((256, 256), 3, 29), ((480, 854), 8, 197), ((64, 64), 1, 5),
                                               ((720, 1280), 12, 441), ((384, 384), 5, 81)])
def test_bound_pixels_and_disk(shape, pix, count):
    assert davis.bound_pixels(shape) == pix
    assert davis.disk(pix).sum() == count


def test_boundary_f_special_cases():
    z = np.zeros((32, 32), np.uint8)
    sq = z.copy(); sq[8:20, 8:20] = 1
    assert davis.boundary_f(z, z) == 1.0  # both empty
    assert davis.boundary_f(np.ones_like(z), z) == 1.0  # full-frame prediction, empty GT: F = 1
    assert davis.boundary_f(z, sq) == 0.0 and davis.boundary_f(sq, z) == 0.0
    assert davis.boundary_f(sq, sq) == 1.0
    shifted = np.roll(sq, 1, axis=1)  # within the 1-pixel tolerance of a 32x32 image
    assert davis.boundary_f(shifted, sq) == 1.0
    far = np.roll(sq, 6, axis=1)
    f = davis.boundary_f(far, sq)
    assert 0.0 < f < 1.0


def test_boundary_f_matches_manual_precision_recall():
    gt = np.zeros((64, 64), np.uint8); gt[10:30, 10:30] = 1
    pred = np.zeros_like(gt); pred[10:30, 14:34] = 1
    gb, pb = davis.seg2bmap(gt), davis.seg2bmap(pred)
    r = davis.bound_pixels(gt.shape)
    import cv2
    gd = cv2.dilate(gb.astype(np.uint8), davis.disk(r)) > 0
    pdl = cv2.dilate(pb.astype(np.uint8), davis.disk(r)) > 0
    p, rc = (pb & gd).sum() / pb.sum(), (gb & pdl).sum() / gb.sum()
    assert davis.boundary_f(pred, gt) == pytest.approx(2 * p * rc / (p + rc))


# ----------------------------------------------------------------------------- Ref-AVS
def test_thresholds_are_torch_float32_linspace():
    t = refavs.thresholds()
    assert t.dtype == np.float32 and t.shape == (255,)
    assert t[0] == 0.0 and t[-1] == 1.0
    np.testing.assert_allclose(t, np.arange(255) / 254, atol=1e-7)
    assert np.all(np.diff(t) > 0)


def test_refavs_mask_iou_hand_computed():
    gt = np.array([[[1, 0], [0, 0]], [[0, 0], [0, 0]]], np.float32)
    logits = np.array([[[5, -5], [0.0, -5]],  # sigmoid(0) = 0.5 > 0.4 -> foreground
                       [[-5, -5], [-0.3, -0.5]]], np.float32)  # 0.4256 > 0.4 fg, 0.3775 bg
    # frame 0: inter 1 / union 2; frame 1 (empty GT): 3 background pixels right / 4.
    assert refavs.mask_iou(logits, gt) == pytest.approx((0.5 + 0.75) / 2, abs=1e-6)


def test_refavs_f_is_max_of_mean_curve_not_mean_of_max():
    gt = np.array([[[1, 0], [0, 1]], [[1, 1], [0, 0]], [[0, 0], [0, 0]]], np.float32)  # 3rd frame: skipped
    logits = np.array([[[5, 1], [-1, 0]], [[0, 0], [-1, -1]], [[9, 9], [9, 9]]], np.float32)
    # Frame A peaks at 0.8125, frame B at 1.0; the mean curve peaks at (0.7222 + 1) / 2 = 0.86111.
    assert refavs.f_measure(logits, gt) == pytest.approx((1.3 * (2 / 3) / (0.3 * (2 / 3) + 1) + 1) / 2, abs=1e-5)
    assert refavs.f_measure(logits[2:], gt[2:]) == 0.0  # no valid frame


def test_refavs_null_s():
    logits = np.array([[[1, 2], [3, 0]], [[-1, -2], [-3, -4]]], np.float32)  # sigmoid(0) is not > 0.5
    assert refavs.null_s(logits) == pytest.approx(np.sqrt(3 / 8))


def test_binary_masks_need_logit_mapping():
    gt = np.zeros((2, 8, 8), np.float32); gt[:, 2:4, 2:6] = 1
    binary = gt.copy()
    # The pitfall: raw 0/1 makes every pixel foreground, J collapses to the GT area fraction.
    assert refavs.mask_iou(binary, gt) == pytest.approx(8 / 64, abs=1e-6)
    assert refavs.mask_iou(refavs.binary_to_logits(binary), gt) == pytest.approx(1.0, abs=1e-6)


def test_refavs_evaluate_official_batches_of_four():
    rng = np.random.default_rng(0)
    gts = [(rng.random((10, 40, 60)) > 0.6).astype(np.uint8) for _ in range(8)]
    preds = [np.where(rng.random(g.shape) > 0.2, g, 1 - g).astype(np.uint8) for g in gts]
    res = refavs.evaluate(preds, gts, protocol="official")
    assert res.num_expressions == 8 and res.protocol.startswith("official@256")
    b = [(np.concatenate([np.stack([refavs.official_pred(x) for x in p]) for p in preds[i:i + 4]]),
          np.concatenate([np.stack([refavs.official_gt(x) for x in g]) for g in gts[i:i + 4]])) for i in (0, 4)]
    assert res.J == pytest.approx(100 * np.mean([refavs.mask_iou(*x) for x in b]))
    assert res.F == pytest.approx(100 * np.mean([refavs.f_measure(*x) for x in b]))
    assert res.JF == pytest.approx((res.J + res.F) / 2)
    per = refavs.evaluate(preds, gts, protocol="per_expression")
    assert per.protocol.startswith("per_expression") and per.num_expressions == 8
    dv = refavs.evaluate(preds, gts, protocol="davis")
    assert dv.protocol == "davis@native" and 0 < dv.J < 100
    null = refavs.evaluate(preds, gts, null_split=True)
    assert null.S is not None and 0 < null.S < 1
    with pytest.raises(ValueError, match="unknown RefAVS protocol"):
        refavs.evaluate(preds, gts, protocol="x")


def test_official_gt_resize_dilates():
    m = np.zeros((100, 100), np.uint8); m[50, 50] = 255  # a single pixel survives INTER_LINEAR + > 0
    g = refavs.official_gt(m)
    assert g.shape == (256, 256) and g.sum() >= 1


# ----------------------------------------------------------------------------- ReVOS / MeViS
def _frame(cells, value=1, size=4):
    a = np.zeros((size, size), np.uint8)
    for y, x in cells:
        a[y, x] = value
    return a


def test_robustness_uint8_semantics():
    cells = [(0, 0), (0, 1), (1, 0), (1, 1)]
    fg = _frame(cells)
    gt = _frame(cells); gt[0, 0] = 2  # overlapping objects: the sum is 2
    pred = _frame(cells)
    assert revos.robustness(pred, gt, fg, pred_scale=1)[0] == 0.0  # 1 - 2 wraps to 255
    assert revos.robustness(pred, gt, fg, pred_scale=255)[0] == pytest.approx(0.75)  # 255*255 % 256 = 1
    gt1 = _frame(cells)
    fp = pred.copy(); fp[3, 3] = 1  # one false positive
    assert revos.robustness(fp, gt1, fg, pred_scale=1)[0] == pytest.approx(0.75)
    assert revos.robustness(fp, gt1, fg, pred_scale=255)[0] == 0.0  # counts 255
    empty = np.zeros((4, 4), np.uint8)
    assert revos.robustness(empty, empty, empty)[0] == 1.0
    assert revos.robustness(fp, empty, empty)[0] == 0.0


def test_revos_per_expression_rounding_and_aggregation():
    S = revos.ExpressionScore
    rows = [S("v", "0", 0, 1, 50.0, 40.0, 0, 0, 45.0), S("v", "1", 0, 2, 60.0, 50.0, 0, 0, 55.0),
            S("v", "2", 1, 1, 30.0, 20.0, 0, 0, 25.0), S("v", "3", 2, 1, 0.0, 0.0, 0, 0, 0.0)]
    agg = revos.aggregate(rows)
    assert agg["referring"]["JF"] == 50.0 and agg["reasoning"]["JF"] == 25.0
    assert agg["overall"]["JF"] == 37.5  # mean of the two subsets, not of the expressions
    assert agg["overall"]["count"] == 3  # type_id 2 excluded
    assert agg["single"]["count"] == 2 and agg["multi"]["count"] == 1
    assert "assumption" in agg["protocol"]


def test_revos_score_expression_rounds_per_expression():
    gt = np.zeros((3, 8, 8), np.uint8); gt[:, 2:5, 2:5] = 1
    pred = gt.copy(); pred[0] = 0
    s = revos.score_expression(pred, gt, gt)
    assert s.J == round(100 * (2 / 3), 2) == 66.67
    assert s.JF == round(100 * (2 / 3 + 2 / 3) / 2, 2)
    out = revos.evaluate([{"pred": pred, "gt": gt, "fg": gt, "type_id": 0, "num_objects": 1},
                          {"pred": gt, "gt": gt, "fg": gt, "type_id": 1, "num_objects": 2}])
    assert out["reasoning"]["JF"] == 100.0 and len(out["expressions"]) == 2


def test_mevis_rounds_only_at_the_end():
    gt = np.zeros((3, 8, 8), np.uint8); gt[:, 2:5, 2:5] = 1
    pred = gt.copy(); pred[0] = 0
    out = revos.evaluate_mevis([{"pred": pred, "gt": gt}, {"pred": gt, "gt": gt}])
    assert out["J"] == round(100 * (2 / 3 + 1) / 2, 2) and out["count"] == 2


def test_refavs_oracle_binary_prediction_scores_100_at_any_resolution():
    rng = np.random.default_rng(1)
    for hw in ((32, 48), (96, 128), (720, 1280)):
        gt = np.zeros((10,) + hw, np.uint8)
        gt[:, hw[0] // 4: hw[0] // 2, hw[1] // 3: hw[1] // 2] = 1
        gt[rng.integers(10)] = 0  # an empty frame
        res = refavs.evaluate([gt] * 4, [gt] * 4, protocol="official")
        assert res.J == pytest.approx(100.0, abs=1e-3) and res.F == pytest.approx(100.0, abs=1e-3)
