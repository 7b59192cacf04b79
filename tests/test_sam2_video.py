"""SAM2 video propagation: parity with transformers' Sam2VideoModel + inference session, streaming, groups."""

import dataclasses
from unittest import mock

import jax
import numpy as np
import pytest
import torch

from omnir1_jax.models.sam2 import Sam2Config, Sam2VideoModel, load_hf
from omnir1_jax.models.sam2.streaming import propagate_chunked
from omnir1_jax.models.sam2.video import propagate, propagate_groups

T = 7
# object id -> [(frame, box)], boxes in the 64x64 input frame
PROMPTS_FWD = {0: [(0, [5.0, 6.0, 40.0, 50.0])], 1: [(3, [20.0, 10.0, 60.0, 30.0])]}
PROMPTS_BIDIR = {0: [(2, [5.0, 6.0, 40.0, 50.0])], 1: [(4, [20.0, 10.0, 60.0, 30.0]), (5, [0.0, 0.0, 30.0, 30.0])]}


def randomize(hf_model: torch.nn.Module, seed: int) -> None:
    """Fan-in scaled random weights; object-score bias > 0 so objects mostly 'appear' (memory path exercised)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in hf_model.named_parameters():
            if t.ndim >= 2:
                t.copy_(torch.randn(t.shape, generator=g) / np.sqrt(np.prod(t.shape[1:])))
            elif "norm" in name and name.endswith("weight"):
                t.copy_(1.0 + 0.1 * torch.randn(t.shape, generator=g))
            else:
                t.copy_(0.1 * torch.randn(t.shape, generator=g))
        hf_model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(3.0)


@pytest.fixture(scope="module")
def models():
    from transformers import Sam2VideoModel as HfVideo

    hf = HfVideo(Sam2Config.tiny().to_hf()).eval()
    randomize(hf, 1)
    model, params = load_hf(hf)
    assert isinstance(model, Sam2VideoModel) and model.cfg == Sam2Config.tiny()
    # HF stores spatial memories in bf16; the fp32 parity below disables that rounding on both sides (a 1-ulp
    # bf16 flip from a 1e-7 fp32 difference would otherwise dominate the comparison).
    fp32 = Sam2VideoModel(dataclasses.replace(model.cfg, round_memory_to_bf16=False))
    return hf, fp32, params


@pytest.fixture(scope="module")
def video():
    return np.random.RandomState(0).randn(T, 3, 64, 64).astype(np.float32)


def to_arrays(prompts):
    boxes, valid = np.zeros((len(prompts), T, 4), np.float32), np.zeros((len(prompts), T), bool)
    for obj, items in prompts.items():
        for frame, box in items:
            boxes[obj, frame], valid[obj, frame] = box, True
    return boxes, valid


def hf_propagate(hf, video, prompts, bidirectional: bool, passes=None) -> np.ndarray:
    """HF flow: box -> run the frame (initial conditioning), per object; then propagate (and reverse)."""
    from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

    sess = Sam2VideoInferenceSession(video=torch.from_numpy(video), video_height=64, video_width=64,
                                     dtype=torch.float32)
    out = {}
    with torch.no_grad(), mock.patch.object(torch, "bfloat16", torch.float32):
        for obj, items in prompts.items():
            for frame, box in items:
                idx = sess.obj_id_to_idx(obj)
                sess.add_point_inputs(idx, frame, {"point_coords": torch.tensor(box).reshape(1, 1, 2, 2),
                                                   "point_labels": torch.tensor([[[2, 3]]], dtype=torch.int32)})
                sess.obj_with_new_inputs = [obj]
                hf(inference_session=sess, frame_idx=frame)
        if passes is None:
            passes = [dict(), dict(reverse=True)] if bidirectional else [dict(start_frame_idx=0)]
        for kw in passes:
            for o in hf.propagate_in_video_iterator(sess, **kw):
                out[o.frame_idx] = o.pred_masks[:, 0].numpy()
    return np.stack([out[t] for t in range(T)], axis=1)  # [O, T, h, w]


@pytest.fixture(scope="module")
def forward_run(models, video):
    """G=2 rollouts through propagate_groups (shared frame features): the prompts, and the objects swapped."""
    hf, model, params = models
    boxes, valid = to_arrays(PROMPTS_FWD)
    gb, gv = np.stack([boxes, boxes[::-1]]), np.stack([valid, valid[::-1]])
    out = jax.jit(lambda p, x, b, v: propagate_groups(model, p, x, b, v))(params, video, gb, gv)
    return np.asarray(out), hf_propagate(hf, video, PROMPTS_FWD, False)


def test_forward_parity(forward_run):
    groups, ref = forward_run
    assert groups.shape == (2, 2, T, 16, 16) and ref.shape == (2, T, 16, 16)
    np.testing.assert_allclose(groups[1], groups[0][::-1], atol=1e-5)  # rollouts are independent
    out = groups[0]
    appearing = ref.max(axis=(2, 3)) > -1000
    assert appearing.mean() > 0.5 and np.abs(ref[appearing]).max() > 5.0  # non-trivial, tracked logits
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)
    # object 1 is tracked on frames 0-2 purely from its (future) conditioning frame 3 memory
    assert np.isfinite(out).all() and (out[1, :3] > 0).any()


def test_bidirectional_parity(models, video, forward_run):
    hf, model, params = models
    boxes, valid = to_arrays(PROMPTS_BIDIR)
    out = np.asarray(jax.jit(lambda p, x, b, v: propagate(model, p, x, b, v, direction="bidirectional"))(
        params, video, boxes, valid))
    ref = hf_propagate(hf, video, PROMPTS_BIDIR, True)
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)
    fwd_only = hf_propagate(hf, video, PROMPTS_BIDIR, False)
    assert np.abs(fwd_only[:, :2] - ref[:, :2]).max() > 1e-2  # the reverse pass really changed frames 0-1


def test_chunked_streaming_matches(models, video, forward_run):
    _, model, params = models
    boxes, valid = to_arrays(PROMPTS_FWD)
    out = propagate_chunked(model, params, video, boxes, valid, chunk_size=3)  # 7 frames: 3 + 3 + padded 1
    np.testing.assert_allclose(out, forward_run[0][0], atol=1e-5)


def test_reverse_from_last_frame_parity(models, video):
    hf, model, params = models
    boxes, valid = to_arrays(PROMPTS_BIDIR)
    out = np.asarray(jax.jit(lambda p, x, b, v: propagate(model, p, x, b, v, direction="reverse"))(
        params, video, boxes, valid))
    ref = hf_propagate(hf, video, PROMPTS_BIDIR, False, passes=[dict(start_frame_idx=T - 1, reverse=True)])
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)


def test_object_score_threshold_gates_frames(models, video, forward_run):
    """``object_score_threshold`` moves SAM2's presence gate (the parity runs above use SAM2's 0): a threshold
    no frame's score clears blanks every mask, although at 0 most frames show the object."""
    from omnir1_jax.models.sam2.model import NO_OBJ_SCORE

    _, model, params = models
    boxes, valid = to_arrays(PROMPTS_FWD)
    assert model.cfg.object_score_threshold == 0.0
    assert (forward_run[0][0].max(axis=(2, 3)) > NO_OBJ_SCORE).mean() > 0.5
    m = Sam2VideoModel(dataclasses.replace(model.cfg, object_score_threshold=1e6))
    out = np.asarray(jax.jit(lambda p, x, b, v: propagate(m, p, x, b, v))(params, video, boxes, valid))
    assert (out == NO_OBJ_SCORE).all()


def test_build_segmenter_applies_the_configured_gate(tmp_path, models):
    from omnir1_jax.config import default_config
    from omnir1_jax.models.sam2 import save_checkpoint
    from omnir1_jax.rl.task import build_segmenter

    _, model, params = models
    save_checkpoint(str(tmp_path), model.cfg, params)
    c = default_config()
    c.segmenter.checkpoint = str(tmp_path)
    assert build_segmenter(c)[0].cfg.object_score_threshold == 0.0
    c.segmenter.object_score_threshold = 1.5
    built, loaded = build_segmenter(c)
    assert built.cfg.object_score_threshold == 1.5 and built.cfg.round_memory_to_bf16 is False
    assert jax.tree.structure(loaded) == jax.tree.structure(params)
