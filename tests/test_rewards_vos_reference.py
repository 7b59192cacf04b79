"""Randomised cross-check of the jitted VOS terms against a literal plain-Python transcription of the
released reward rules (omni_r1.md §6.2: time_reward_multi_time + grounding2sam_process_reward)."""

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import linear_sum_assignment

from omnir1_jax.rewards import completion_from_segments, get_weights, make_target, vos_reward_batch

T, O, J, K = 8, 3, 4, 4


def _iou_quirk(g, p):
    iw = max(0.0, min(g[2], p[2]) - max(g[0], p[0]) + 1)
    ih = max(0.0, min(g[3], p[3]) - max(g[1], p[1]) + 1)
    inter = iw * ih
    union = (g[2] - g[0] + 1) * (g[3] - g[1] + 1) + (p[2] - p[0] + 1) * (p[3] - p[1] + 1) - inter
    return inter / union if (union > 0 and g[0] > 0) else 0.0


def reference(num_json, segs, area, boxes, ratio, s2):
    """area [O, n], boxes [O, n, 4] original pixels, s2: per grounding frame a list of box|None."""
    n_obj, n = area.shape
    if num_json == 0:
        return None
    c, pieces = 0.2 * num_json, []
    for fok, rok, s, e in segs:
        if not fok:
            continue
        c += 0.2
        if not rok:
            continue
        c += 0.2
        pieces.append(np.arange(s, e + 1))
    if not pieces:
        return {"c": c / num_json}
    ratios = [np.count_nonzero(area[:, d] > 0) / (len(d) * n_obj) for d in pieces]
    lengths = [min(0.0, (1 - len(d)) * 0.2) for d in pieces]
    allidx = np.concatenate(pieces)
    uniq = np.unique(allidx)
    out = {"c": (c + sum(ratios)) / num_json}
    out["total_overlap_reward"] = sum(lengths) - 0.5 * (len(allidx) - len(uniq))
    out["total_frame_reward"] = 0.4 * len(uniq) if len(uniq) <= 4 else (4 + 4 - len(uniq) - 1) * 0.4
    g = uniq[:4]
    pred = [[] for _ in range(n_obj)]
    offset = 0.0
    for i in range(len(g)):
        cnt = 0
        for b in s2[i]:
            if cnt == n_obj:
                offset -= len(s2[i]) - n_obj
                break
            pred[cnt].append(b if b is not None else [-1, -1, -1, -1])
            cnt += 1
        for j in range(cnt, n_obj):
            pred[j].append([-1, -1, -1, -1])
    pred = np.asarray(pred, np.float32)  # [O, K, 4]
    scale = np.array([ratio[0], ratio[1], ratio[0], ratio[1]], np.float32)
    gt = boxes[:, g].astype(np.float32) * scale
    matched = np.zeros((n_obj, len(g)))
    for f in range(len(g)):
        m = np.array([[_iou_quirk(gt[a, f], pred[b, f]) for b in range(n_obj)] for a in range(n_obj)])
        r, cidx = linear_sum_assignment(-m)
        matched[r, f] = m[r, cidx]
    valid = np.all(boxes != -1, axis=2)[:, g]
    out["avg_iou"] = matched[valid].mean() if valid.sum() else 0.0
    tot = area.sum(0)
    out["avg_ratio"] = np.mean((tot / (tot.max() + 1e-6))[g])
    out["object_num_mismatch"] = offset / (n_obj + 1e-6) * 0.5 / len(g)
    out["has_valid_bbox"] = bool(np.any(np.all(pred != -1, axis=2)))
    return out


def _case(rng):
    n_obj, n = int(rng.integers(1, O + 1)), int(rng.integers(4, T + 1))
    area = np.where(rng.random((n_obj, n)) < 0.6, rng.integers(1, 50, (n_obj, n)), 0).astype(np.float32)
    boxes = rng.integers(0, 30, (n_obj, n, 4)).astype(np.float32)
    boxes[..., 2:] = boxes[..., :2] + rng.integers(0, 30, (n_obj, n, 2))
    boxes[area == 0] = -1
    num_json = int(rng.integers(0, J + 1))
    segs = []
    for _ in range(num_json):
        s = int(rng.integers(0, n))
        e = min(n - 1, s + int(rng.integers(0, 3)))
        segs.append((rng.random() < 0.85, rng.random() < 0.8, s, e))
    s2 = []
    for _ in range(K):
        objs = []
        for _ in range(int(rng.integers(0, O + 2))):
            b = rng.integers(0, 20, 4).astype(np.float32)
            b[2:] += b[:2] + rng.integers(0, 20, 2)
            objs.append(None if rng.random() < 0.2 else b.tolist())
        s2.append(objs)
    return n_obj, n, area, boxes, num_json, segs, s2


def _arrays(case, ratio):
    n_obj, n, area, boxes, num_json, segs, s2 = case
    a = np.zeros((O, T), np.float32)
    a[:n_obj, :n] = area
    b = -np.ones((O, T, 4), np.float32)
    b[:n_obj, :n] = boxes
    tgt = make_target(np.zeros((O, T, 2, 2), bool), b, np.arange(O) < n_obj, n, ratio, gt_obj_area=a)
    f = np.zeros((4, J), np.int32)
    for j, (fok, rok, s, e) in enumerate(segs):
        f[:, j] = [fok, rok, s, e]
    sb = np.zeros((K, O, 4), np.float32)
    sv = np.zeros((K, O), bool)
    for k, objs in enumerate(s2):
        for j, box in enumerate(objs[:O]):
            if box is not None:
                sb[k, j], sv[k, j] = box, True
    comp = completion_from_segments(
        num_json, np.arange(J) < num_json, f[0], f[1], f[2], f[3], T,
        s2_boxes=jnp.asarray(sb),
        s2_valid=jnp.asarray(sv),
        s2_num_json=jnp.asarray([len(o) for o in s2], jnp.int32),
        pred_masks=jnp.zeros((T, 2, 2), bool),
    )
    return comp, tgt


def test_random_cases_match_literal_reference():
    rng = np.random.default_rng(0)
    ratio = (0.5, 0.75)
    cases = [_case(rng) for _ in range(48)]
    pairs = [_arrays(c, ratio) for c in cases]
    comps = jax.tree.map(lambda *x: jnp.stack(x)[:, None], *[p[0] for p in pairs])  # [B, G=1]
    tgts = jax.tree.map(lambda *x: jnp.stack(x), *[p[1] for p in pairs])
    out = jax.jit(vos_reward_batch, static_argnums=(2,))(comps, tgts, get_weights("released"))
    out = jax.tree.map(lambda x: np.asarray(x)[:, 0], out)
    n_valid = 0
    for i, case in enumerate(cases):
        _, n, area, boxes, num_json, segs, s2 = case
        # the grounding frames' System-2 lists: pad to K (reference only reads the first len(g))
        ref = reference(num_json, segs, area, boxes, ratio, s2)
        if ref is None:
            assert out["acc"][i] == 0.0
            continue
        for key, val in ref.items():
            if key == "has_valid_bbox":
                assert bool(out[key][i]) == val, (i, key)
            else:
                np.testing.assert_allclose(out[key][i], val, rtol=1e-5, atol=1e-6, err_msg=f"case {i} {key}")
        if "avg_iou" in ref:
            n_valid += 1
            acc = ref["c"] + ref["total_frame_reward"] + ref["total_overlap_reward"] + ref["avg_ratio"]
            acc += ref["avg_iou"] + ref["object_num_mismatch"]
            np.testing.assert_allclose(out["acc"][i], acc, rtol=1e-5, atol=1e-5, err_msg=f"case {i}")
    assert n_valid >= 20  # the random cases exercise the full path
