"""Hand-computed checks of every VOS reward term (omni_r1.md §6.2) and both weight presets (§6.3)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from omnir1_jax.rewards import (
    RewardWeights,
    completion_from_parse,
    completion_from_segments,
    get_weights,
    grounding_frames,
    make_target,
    sam_prompt_boxes,
    segment_cover,
    vos_reward,
    vos_reward_batch,
)

T, H, W, O, J, K = 10, 4, 4, 3, 4, 4  # static: 10 frame slots, 8 real frames
N_FRAMES = 8


def _target():
    """Two real objects (third slot padded); areas are 'full resolution', masks for R_G are 4x4."""
    area = np.zeros((O, T), np.float32)
    area[0] = [4, 4, 0, 0, 2, 2, 2, 2, 0, 100]  # frame 9 is padding: must not enter the max
    area[1] = [0, 2, 2, 2, 0, 0, 0, 0, 0, 0]
    area[2] = [9] * T  # invalid object: ignored everywhere
    boxes = -np.ones((O, T, 4), np.float32)
    boxes[0, 1] = [20, 20, 38, 38]  # scaled by 0.5 -> [10, 10, 19, 19]
    boxes[1, 1] = [0, 10, 18, 28]  # x1 = 0: the quirk forces IoU 0 (but the pair counts)
    boxes[1, 2] = [40, 40, 58, 58]  # -> [20, 20, 29, 29]
    boxes[0, 0] = [2, 2, 8, 8]
    boxes[1, 3] = [2, 2, 8, 8]
    masks = np.zeros((O, T, H, W), bool)
    for t in [0, 1, 4, 5, 6, 7]:
        masks[0, t, 0:2, 0:2] = True
    for t in [1, 2, 3]:
        masks[1, t, 3, 3] = True
    masks[2] = True  # invalid object
    return make_target(masks, boxes, [True, True, False], N_FRAMES, [0.5, 0.5], gt_obj_area=area)


def _pred_masks():
    """SAM2 union masks: per-frame J = 1, .8, 0, .5, 1, 1, 1, 1 (frames 8, 9 are padding)."""
    p = np.zeros((T, H, W), bool)
    for t in [0, 1, 4, 5, 6, 7]:
        p[t, 0:2, 0:2] = True
    p[0, 3, 3] = False
    p[3, 3, 2:4] = True  # J = 1/2 on frame 3
    p[9] = True  # padding frame, ignored
    return p


def _completion(num_json, present, fields, rng_ok, start, end, s2_boxes=None, s2_valid=None, s2_num=None):
    s2_boxes = np.zeros((K, O, 4), np.float32) if s2_boxes is None else s2_boxes
    s2_valid = np.zeros((K, O), bool) if s2_valid is None else s2_valid
    s2_num = np.zeros((K,), np.int32) if s2_num is None else s2_num
    return completion_from_segments(
        num_json, present, fields, rng_ok, start, end, T,
        s2_boxes=jnp.asarray(s2_boxes, jnp.float32),
        s2_valid=jnp.asarray(s2_valid, bool),
        s2_num_json=jnp.asarray(s2_num, jnp.int32),
        pred_masks=jnp.asarray(_pred_masks()),
    )


def _main_completion():
    """3 JSON objects: [1,2] valid, one out of range, [2,2] valid (duplicate frame 2)."""
    boxes = np.zeros((K, O, 4), np.float32)
    valid = np.zeros((K, O), bool)
    boxes[0, 0] = [10, 10, 14, 19]  # IoU 0.5 with GT obj0 on frame 1
    boxes[0, 1] = [0, 10, 9, 28]  # exact obj1 box, but GT x1 <= 0 -> 0
    boxes[0, 2] = [10, 10, 19, 19]  # slot 2 >= O_gt = 2: ignored (would be IoU 1)
    valid[0] = True
    boxes[1, 0] = [22, 20, 29, 29]  # IoU 0.8 with obj1 on frame 2
    valid[1, 0] = True
    boxes[2:] = [1, 1, 5, 5]  # grounding slots 2, 3 unused (only 2 grounding frames)
    valid[2:] = True
    s2_num = np.array([3, 1, 5, 5], np.int32)  # frame 1: one JSON too many
    return _completion(
        3, [1, 1, 1, 0], [1, 1, 1, 0], [1, 0, 1, 0], [1, 3, 2, 0], [2, 1, 2, 0], boxes, valid, s2_num
    )


# Hand computation for _main_completion (see the reference rules):
#  c = (0.2*3 + 0.2*3 + 0.2*2 + (3/4) + (1/2)) / 3 = 2.85 / 3 = 0.95
#  unique frames {1, 2}: frame reward 0.4*2 = 0.8; overlap = -0.2*(2-1) + 0 - 0.5*1 = -0.7
#  saliency: frame areas 6, 2 over max 6 -> (1 + 1/3) / 2
#  avg_iou = (0.5 + 0 + 0.8) / 3; mismatch = 0.5 * (-1 / 2) / 2 = -0.125
#  sam_iou = (1 + .8 + 0 + .5 + 1 + 1 + 1 + 1) / 8 = 0.7875
MAIN = {
    "c": 0.95,
    "total_frame_reward": 0.8,
    "total_overlap_reward": -0.7,
    "avg_ratio": (6 / (6 + 1e-6) + 2 / (6 + 1e-6)) / 2,
    "avg_iou": 1.3 / 3,
    "object_num_mismatch": 0.5 * (-1 / (2 + 1e-6)) / 2,
    "sam_iou": 0.7875,
}


def _long_completion():
    """One segment over frames 0..7: too many frames, no System-2 box."""
    return _completion(1, [1, 0, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [7, 0, 0, 0])


# c = (0.2 + 0.2 + 0.2 + 9/16) = 1.1625; U = 8 -> 0.4*(7-8) = -0.4; overlap -0.2*7 = -1.4
# saliency over frames 0..3 = (4 + 6 + 2 + 2) / 6 / 4; avg_iou = 0 (4 counted pairs); no mismatch; sam 0
LONG = {
    "c": 1.1625,
    "total_frame_reward": -0.4,
    "total_overlap_reward": -1.4,
    "avg_ratio": 14 / (6 + 1e-6) / 4,
    "avg_iou": 0.0,
    "object_num_mismatch": 0.0,
    "sam_iou": 0.0,
}


@pytest.fixture(scope="module")
def jitted():
    return jax.jit(vos_reward, static_argnums=(2,))


def _check(out, expected):
    for k, v in expected.items():
        np.testing.assert_allclose(float(out[k]), v, rtol=1e-5, atol=1e-6, err_msg=k)


def test_main_example_terms_and_presets(jitted):
    tgt, comp = _target(), _main_completion()
    out = jitted(comp, tgt, get_weights("released"))
    _check(out, MAIN)
    assert bool(out["has_valid_segment"]) and bool(out["has_valid_bbox"])
    np.testing.assert_array_equal(np.asarray(out["grounding_frames"])[:2], [1, 2])
    np.testing.assert_array_equal(np.asarray(out["grounding_valid"]), [1, 1, 0, 0])
    rest = 0.8 - 0.7 + MAIN["avg_iou"] + MAIN["object_num_mismatch"]
    # released: α_k 1, α_k_ratio 1, α_a 1, α_g 0
    np.testing.assert_allclose(float(out["acc"]), 0.95 + rest + MAIN["avg_ratio"], rtol=1e-5)
    # internal: α_k 1, α_k_ratio 0, α_a 1, α_g 2
    out = jitted(comp, tgt, get_weights("internal"))
    np.testing.assert_allclose(float(out["acc"]), 0.95 + rest + 2 * 0.7875, rtol=1e-5)
    # released code's gating: with α_g = 0 only c + α_k (frame + overlap) survive
    out = jitted(comp, tgt, get_weights("released", released_code_gating=True))
    np.testing.assert_allclose(float(out["acc"]), 0.95 + 0.1, rtol=1e-5)


def test_long_segment_and_clip_reward(jitted):
    tgt, comp = _target(), _long_completion()
    out = jitted(comp, tgt, get_weights("released"))
    _check(out, LONG)
    assert not bool(out["has_valid_bbox"])
    rest = -0.4 - 1.4 + LONG["avg_ratio"]
    np.testing.assert_allclose(float(out["acc"]), 1.1625 + rest, rtol=1e-5)
    out = jitted(comp, tgt, get_weights("released", clip_reward=True))  # rest <= 0 -> acc = c
    np.testing.assert_allclose(float(out["acc"]), 1.1625, rtol=1e-6)
    out = jitted(comp, tgt, get_weights("released", released_code_gating=True))
    np.testing.assert_allclose(float(out["acc"]), 1.1625 - 1.8, rtol=1e-5)


def test_no_json_and_no_valid_segment(jitted):
    tgt = _target()
    empty = _completion(0, [0] * 4, [0] * 4, [0] * 4, [0] * 4, [0] * 4)
    out = jitted(empty, tgt, RewardWeights(alpha_g=2.0))
    assert float(out["acc"]) == 0.0 and float(out["c"]) == 0.0
    # j0 well-formed but out of range, j1 malformed: c = (0.2*2 + 0.2) / 2; no other term
    bad = _completion(2, [1, 1, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0], [5, 0, 0, 0], [3, 0, 0, 0])
    out = jitted(bad, tgt, RewardWeights(alpha_g=2.0))
    np.testing.assert_allclose(float(out["acc"]), 0.3, rtol=1e-6)
    for k in ["total_frame_reward", "total_overlap_reward", "avg_ratio", "avg_iou", "sam_iou"]:
        assert float(out[k]) == 0.0, k


def test_batch_vmap_matches_single():
    tgt = _target()
    comps = [_main_completion(), _long_completion()]
    stack = jax.tree.map(lambda *xs: jnp.stack(xs)[None], *comps)  # [B=1, G=2]
    tgts = jax.tree.map(lambda x: x[None], tgt)
    out = jax.jit(vos_reward_batch, static_argnums=(2,))(stack, tgts, get_weights("internal"))
    assert out["acc"].shape == (1, 2)
    np.testing.assert_allclose(float(out["sam_iou"][0, 0]), 0.7875, rtol=1e-6)
    np.testing.assert_allclose(float(out["c"][0, 1]), 1.1625, rtol=1e-6)


def test_segment_cover_and_grounding_frames_rule():
    # segments [5,6], [1,1], [6,9] (+ an invalid one): unique sorted {1,5,6,7,8,9} -> first 4 = 1,5,6,7
    cbl = jax.jit(segment_cover, static_argnums=3)(
        jnp.array([5, 1, 6, 0]), jnp.array([6, 1, 9, 3]), jnp.array([True, True, True, False]), 12
    )
    assert int(cbl[1, 5]) == 1 and int(cbl[0, 1]) == 1 and int(cbl[3, 9]) == 1 and int(cbl.sum()) == 7
    count = cbl.sum(0)
    frames, valid = grounding_frames(count, 4)
    np.testing.assert_array_equal(np.asarray(frames), [1, 5, 6, 7])
    assert bool(valid.all()) and int(count[6]) == 2
    frames, valid = grounding_frames(jnp.zeros(12, jnp.int32).at[3].set(1), 4)
    np.testing.assert_array_equal(np.asarray(valid), [True, False, False, False])


def test_sam_prompts_follow_matching(jitted):
    tgt, comp = _target(), _main_completion()
    out = jitted(comp, tgt, get_weights("internal"))
    boxes, valid = jax.jit(sam_prompt_boxes)(comp, tgt, out)
    # frame 1: obj0 <- slot 0 (only positive IoU); back to original pixels (/0.5)
    assert bool(valid[0, 0]) and not bool(valid[0, 2]) and not bool(valid[2:].any())
    np.testing.assert_allclose(np.asarray(boxes[0, 0]), [20, 20, 28, 38])
    # frame 2: obj1 <- slot 0 (IoU 0.8)
    assert bool(valid[1, 1]) and int(out["match_perm"][1, 1]) == 0


def _obj(s, e):
    return '{"start_time": "%s", "end_time": "%s", "description": "red ball"}' % (s, e)


def test_from_real_parser_outputs(jitted):
    """The parser's outputs -> completion_from_parse reproduce the hand-computed main example."""
    from omnir1_jax.rollout.parse import parse_boxes, parse_completions
    from omnir1_jax.text import SyntheticTokenizer, byte_table

    tok = SyntheticTokenizer()
    table, tok_lens = byte_table(tok)
    objs = [_obj("00:00.50", "00:01.00"), _obj("00:02.00", "00:01.50"), _obj("00:01.00", "00:01.20")]
    answer = " ".join(objs)
    text = f"<think>look</think><answer>{answer}</answer>"
    box = lambda b: '{"bbox_2d": [%d, %d, %d, %d]}' % tuple(b)  # noqa: E731
    grounder = [
        " ".join(box(b) for b in ([10, 10, 14, 19], [0, 10, 9, 28], [10, 10, 19, 19])),
        box([22, 20, 29, 29]),
        " ".join([box([1, 1, 5, 5])] * 5),
        " ".join([box([1, 1, 5, 5])] * 5),
    ]

    def pad(texts):
        ids = [tok.encode(t) for t in texts]
        n = max(len(i) for i in ids)
        return jnp.asarray([i + [tok.pad_id] * (n - len(i)) for i in ids]), jnp.asarray([len(i) for i in ids])

    ids, lens = pad([text])
    parsed = parse_completions(ids, lens, table, tok_lens, jnp.array([N_FRAMES]), J=4, K=K, F=T)
    gids, glens = pad(grounder)
    s2 = parse_boxes(gids, glens, table, tok_lens, jnp.ones((K, 2)), O=O)
    s2 = jax.tree.map(lambda x: x[None], s2)  # [1, K, ...]
    comp = completion_from_parse(parsed, s2, jnp.asarray(_pred_masks())[None])
    comp = jax.tree.map(lambda x: x[0], comp)
    out = jitted(comp, _target(), get_weights("internal"))
    _check(out, MAIN)
