"""Parity of data_pipelines.preprocess with transformers' processors (Qwen2-VL image/video, Whisper, SAM2)."""

import numpy as np
import pytest

from data_pipelines import preprocess as pp


def _image(rng, h, w):
    """Smooth-ish random uint8 RGB image (a gradient plus noise) so resizing is non-trivial."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (h + w)], -1)
    return np.clip(base + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)


def test_sample_frame_indices_rules():
    rng = np.random.default_rng(0)
    # Short clip: all frames, odd count padded by repeating the last.
    np.testing.assert_array_equal(pp.sample_frame_indices(7, rng), [0, 1, 2, 3, 4, 5, 6, 6])
    np.testing.assert_array_equal(pp.sample_frame_indices(16, rng), np.arange(16))
    counts = set()
    for _ in range(200):
        idx = pp.sample_frame_indices(100, rng)
        assert len(idx) % 2 == 0 and 16 <= len(idx) <= 24
        assert idx[0] == 0 and idx[-1] == 99 and np.all(np.diff(idx) >= 0)
        f = len(idx) if idx[-1] != idx[-2] else len(idx) - 1
        np.testing.assert_array_equal(idx[:f], np.linspace(0, 99, f).astype(int))
        counts.add(f)
    assert counts == set(range(16, 25))  # UniformInt inclusive of both ends
    inf = pp.sample_frame_indices(100, rng, train=False)
    np.testing.assert_array_equal(inf, np.linspace(0, 99, 24).astype(int))
    np.testing.assert_array_equal(pp.sample_frame_indices(9, rng, train=False), [0, 1, 2, 3, 4, 5, 6, 7, 8, 8])


def test_smart_resize_matches_transformers():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as ref

    rng = np.random.default_rng(1)
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(20, 2000, 2))
        if max(h, w) / min(h, w) > 150:
            continue
        for lo, hi in [(pp.VIDEO_MIN_PIXELS, pp.VIDEO_MAX_PIXELS), (pp.GROUNDING_MIN_PIXELS, pp.GROUNDING_MAX_PIXELS)]:
            assert pp.smart_resize(h, w, 28, lo, hi) == ref(h, w, 28, lo, hi)


@pytest.mark.parametrize("hw", [(90, 130), (300, 200)])
def test_images_match_qwen2vl_pil_processor(hw):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    rng = np.random.default_rng(2)
    imgs = [_image(rng, *hw), _image(rng, hw[1], hw[0])]
    proc = Qwen2VLImageProcessorPil(min_pixels=16 * 28 * 28, max_pixels=64 * 28 * 28)
    ref = proc(images=imgs, return_tensors="np")
    pv, grid = pp.preprocess_images(imgs, 16 * 28 * 28, 64 * 28 * 28)
    np.testing.assert_array_equal(grid, ref["image_grid_thw"])
    assert pv.shape == ref["pixel_values"].shape and pv.dtype == np.float32
    np.testing.assert_array_equal(pv, ref["pixel_values"])  # bit-exact (same PIL resize, same float ops)


@pytest.mark.parametrize("num_frames", [4, 5])
def test_video_matches_qwen2vl_processor_layout(num_frames):
    """Omni-R1 path: qwen-omni-utils PIL resize, then the HF processor with do_resize=False.

    transformers' `Qwen2VLVideoProcessor` needs torchvision (not installed), so the reference is its PIL image
    processor per frame: an image is a 2-frame video of itself, and a video's temporal patch t holds frame
    2t in slot 0 and frame 2t+1 in slot 1 of the (C, tp, P, P) patch vector.
    """
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    rng = np.random.default_rng(3)
    frames = np.stack([_image(rng, 120, 170) for _ in range(num_frames)])
    pv, grid = pp.preprocess_video(frames, pp.VIDEO_MIN_PIXELS, 32 * 28 * 28)
    hw = pp.smart_resize(120, 170, 28, pp.VIDEO_MIN_PIXELS, 32 * 28 * 28)
    proc = Qwen2VLImageProcessorPil(min_pixels=pp.VIDEO_MIN_PIXELS, max_pixels=32 * 28 * 28)
    ref = proc(images=list(frames), return_tensors="np")
    per_frame = ref["pixel_values"].reshape(num_frames, -1, 3, 2, 14 * 14)  # [T, hw, C, tp, P*P]
    gt = (num_frames + 1) // 2
    np.testing.assert_array_equal(grid, [gt, hw[0] // 14, hw[1] // 14])
    ours = pv.reshape(gt, -1, 3, 2, 14 * 14)
    padded = np.concatenate([per_frame, per_frame[-1:]]) if num_frames % 2 else per_frame
    for t in range(gt):
        np.testing.assert_array_equal(ours[t, :, :, 0], padded[2 * t, :, :, 0])
        np.testing.assert_array_equal(ours[t, :, :, 1], padded[2 * t + 1, :, :, 0])
    assert pp.num_vision_tokens(grid) == grid.prod() // 4


def test_whisper_features_match_feature_extractor():
    from transformers import WhisperFeatureExtractor
    from transformers.models.qwen2_5_omni.processing_qwen2_5_omni import _get_feat_extract_output_lengths

    rng = np.random.default_rng(4)
    t = np.arange(int(16000 * 2.3)) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.normal(size=t.size)).astype(np.float32)
    fe = WhisperFeatureExtractor(feature_size=128, chunk_length=30)
    ours = pp.whisper_features(audio, chunk_length_s=30)
    # NumPy reference path on the same padded waveform.
    padded = np.zeros(fe.n_samples, np.float32)
    padded[: audio.size] = audio
    ref_np = fe._np_extract_fbank_features(padded[None], "cpu")[0]
    assert ours["input_features"].shape == (128, 3000)
    np.testing.assert_allclose(ours["input_features"], ref_np, rtol=0, atol=1e-5)
    # Full call as Qwen2.5-Omni's processor makes it (its config: chunk_length 300, max_length padding, mask).
    fe300 = WhisperFeatureExtractor(feature_size=128, chunk_length=300)
    ref = fe300(audio, sampling_rate=16000, padding="max_length", return_attention_mask=True, return_tensors="np")
    assert ref["input_features"].shape == (1, 128, 30000)
    np.testing.assert_array_equal(ours["feature_attention_mask"], ref["attention_mask"][0, :3000])
    assert ours["feature_length"] == ref["attention_mask"].sum() == 230  # 2.3 s at hop 160
    # Shorter static padding (the pipeline uses 10 s): identical on every valid frame.
    np.testing.assert_allclose(ours["input_features"][:, :230], ref["input_features"][0, :, :230], atol=1e-4)
    short = pp.whisper_features(audio, chunk_length_s=10)
    np.testing.assert_allclose(short["input_features"][:, :230], ours["input_features"][:, :230], atol=1e-6)
    assert ours["num_audio_tokens"] == _get_feat_extract_output_lengths(np.array(230))


def test_mel_filters_match_transformers():
    from transformers.audio_utils import mel_filter_bank

    ref = mel_filter_bank(num_frequency_bins=201, num_mel_filters=128, min_frequency=0.0, max_frequency=8000.0,
                          sampling_rate=16000, norm="slaney", mel_scale="slaney")
    np.testing.assert_allclose(pp.mel_filter_bank(128), ref, rtol=1e-12, atol=1e-15)


def test_sam2_preprocess_and_masks_match_torch_reference():
    """`Sam2ImageProcessor` needs torchvision (not installed); its ops are reproduced with torch directly:
    uint8 antialiased bilinear resize (what torchvision's resize runs), /255, ImageNet normalise; 'nearest'
    for label maps; bilinear align_corners=False for `post_process_masks`."""
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(5)
    img = _image(rng, 150, 220)
    t_img = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None]
    resized = F.interpolate(t_img, (128, 128), mode="bilinear", antialias=True, align_corners=False)
    ref = resized[0].numpy().astype(np.float32) / 255.0
    ref = (ref - np.array(pp.IMAGENET_MEAN, np.float32)[:, None, None]) / np.array(pp.IMAGENET_STD,
                                                                                    np.float32)[:, None, None]
    ours = pp.sam2_preprocess(img, size=128)
    assert ours.shape == (3, 128, 128)
    diff = np.abs(ours - ref)
    # torch's uint8 antialiased bilinear vs PIL's: at most one uint8 step (1/255/0.225 = 0.0175).
    assert diff.max() <= 0.018 and diff.mean() < 2e-3, (diff.max(), diff.mean())
    mask = np.zeros((150, 220), np.uint8)
    mask[30:100, 50:170] = 1
    ref_lab = F.interpolate(torch.from_numpy(mask)[None, None].float(), (32, 32), mode="nearest")[0, 0].numpy()
    np.testing.assert_array_equal(pp.resize_mask_nearest(mask, (32, 32)), ref_lab)
    logits = rng.normal(size=(1, 2, 32, 32)).astype(np.float32)
    ref_up = F.interpolate(torch.from_numpy(logits), (150, 220), mode="bilinear", align_corners=False).numpy()
    np.testing.assert_allclose(pp.resize_mask_bilinear(logits, (150, 220)), ref_up, atol=1e-5)
    assert (pp.postprocess_masks(logits, (150, 220)) != (ref_up > 0)).mean() < 1e-4
    np.testing.assert_array_equal(pp.mask_to_box(mask), [50, 30, 169, 99])
    np.testing.assert_array_equal(pp.mask_to_box(np.zeros((4, 5))), [-1, -1, -1, -1])


def test_jax_resize_and_patchify_close_to_numpy():
    import jax

    from data_pipelines.preprocess_jax import keyframe_grid, resize_and_patchify

    rng = np.random.default_rng(6)
    imgs = np.stack([_image(rng, 100, 150), _image(rng, 100, 150)])
    hw, grid_thw = keyframe_grid(100, 150, 4 * 28 * 28, 12 * 28 * 28)
    assert keyframe_grid(720, 1280)[0] == pp.smart_resize(720, 1280, 28, 64 * 28 * 28, 900 * 28 * 28)
    out = jax.jit(resize_and_patchify, static_argnums=1)(imgs, hw)
    ref, grid = pp.preprocess_images(list(imgs), 4 * 28 * 28, 12 * 28 * 28)
    assert out.shape == (2, grid[0].prod(), 3 * 2 * 14 * 14) and tuple(grid[0]) == grid_thw
    diff = np.abs(np.asarray(out).reshape(ref.shape) - ref)
    # Same kernel, different arithmetic (PIL rounds/clips to uint8 between its two passes): measured max 0.088
    # (~6 uint8 steps on noisy pixels where bicubic overshoots), mean 0.003, 99th percentile two uint8 steps.
    one_step = 1 / 255 / min(pp.OPENAI_CLIP_STD)
    assert diff.max() < 0.12 and diff.mean() < 0.01, (diff.max(), diff.mean())
    assert np.quantile(diff, 0.99) <= 2 * one_step + 1e-6 and np.mean(diff < 0.5 * one_step) > 0.7
    # Identity resize is exact (pure normalise + patchify).
    same = jax.jit(resize_and_patchify, static_argnums=1)(imgs[:, :84, :112], (84, 112))
    ref_same, _ = pp.preprocess_images(list(imgs[:, :84, :112]), 84 * 112, 84 * 112)
    np.testing.assert_allclose(np.asarray(same).reshape(ref_same.shape), ref_same, atol=1e-5)
