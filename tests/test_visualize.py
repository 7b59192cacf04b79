"""Rollout figures and training curves: PNGs are written, open, and show what they claim to show."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from omnir1_jax import visualize as vis

T, H, W = 6, 24, 32


def _frames() -> np.ndarray:
    """Smooth gradients (no saturated magenta anywhere, so the keyframe colour is detectable)."""
    yy, xx = np.mgrid[:H, :W]
    return np.stack([np.stack([(xx * 4 + 20 * t) % 160, (yy * 5) % 160, np.full_like(xx, 70)], -1)
                     for t in range(T)]).astype(np.uint8)


def _count_colour(path: str, rgb: tuple[float, float, float], tol: int = 12) -> int:
    img = np.asarray(Image.open(path).convert("RGB")).astype(int)
    target = np.round(np.asarray(rgb) * 255).astype(int)
    return int(np.all(np.abs(img - target) <= tol, axis=-1).sum())


@pytest.fixture(scope="module")
def rollout_pngs(tmp_path_factory):
    d = tmp_path_factory.mktemp("vis")
    frames = _frames()
    masks = np.zeros((2, T, H, W), bool)
    masks[0, :, 2:10, 3:12] = True
    masks[1, 2:, 12:20, 18:30] = True
    hires = [np.repeat(np.repeat(frames[k], 4, 0), 4, 1) for k in (1, 4)]
    boxes = [np.array([[8.0, 8.0, 48.0, 40.0], [70.0, 50.0, 120.0, 90.0]]), np.zeros((0, 4))]
    full = vis.rollout_figure(frames, [1, 4], ["red square, left", "cost is $5 & 100% {odd} text_x"], hires, boxes,
                              masks, "Which shape beeps after the flash?",
                              "<think>" + "the tone starts at 00:02 " * 20 + "</think><answer>...</answer>",
                              str(d / "sub" / "full.png"))
    bare = vis.rollout_figure(frames, [], [], [], [], np.zeros((T, H, W), bool), "no keyframes", None,
                              str(d / "bare.png"))
    # Per-frame masks at another resolution, keyframes without hi-res images, an out-of-range keyframe.
    odd = vis.rollout_figure(frames, [0, 99], ["only one description"], [], [np.array([[1.0, 2.0, np.nan, 4.0]])],
                             np.ones((T, 12, 16), bool), "", "", str(d / "odd.png"))
    return full, bare, odd


def test_rollout_png_written_and_nontrivial(rollout_pngs):
    for path in rollout_pngs:
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 150
            assert np.asarray(im.convert("L")).std() > 5  # not a blank canvas
    assert all(os.path.getsize(p) > 5000 for p in rollout_pngs)


def test_keyframe_highlight_and_masks_visible(rollout_pngs):
    full, bare, _ = rollout_pngs
    assert _count_colour(full, vis.HIGHLIGHT) > 400  # coloured borders around 2 strip frames + 2 hi-res frames
    assert _count_colour(bare, vis.HIGHLIGHT) < 20
    # The first object's overlay colour is blended into the clip strip only when masks are non-empty.
    frame0 = _frames()[0, 2:10, 3:12].astype(np.float32)
    blend = (1 - vis.MASK_ALPHA) * frame0.mean((0, 1)) + vis.MASK_ALPHA * np.asarray(vis.OBJECT_COLORS[0]) * 255
    assert _count_colour(full, tuple(blend / 255), tol=30) > _count_colour(bare, tuple(blend / 255), tol=30)


def test_overlay_and_mask_shapes():
    frame = np.zeros((4, 4, 3), np.uint8)
    m = np.zeros((1, 4, 4), bool)
    m[0, 1, 1] = True
    out = vis.overlay_masks(frame, m)
    assert np.abs(out[1, 1].astype(float) - vis.MASK_ALPHA * np.asarray(vis.OBJECT_COLORS[0]) * 255).max() <= 1
    assert out[0, 0].tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="masks must be"):
        vis.rollout_figure(_frames(), [], [], [], [], np.zeros((T + 1, H, W), bool), "q", None, "/tmp/never.png")


def _write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 99, "rewa')  # torn last line


def test_training_curves_two_runs_and_missing_key(tmp_path):
    a = tmp_path / "seed0" / "metrics.jsonl"
    b = tmp_path / "seed1" / "metrics.jsonl"
    _write(a, [{"step": s, "time": 0.0, "reward_mean": 0.01 * s, "format_rate": min(1.0, s / 20),
                **({"val_JF": 30.0 + s / 4} if s % 10 == 0 else {})} for s in range(0, 40, 2)])
    _write(b, [{"step": s, "time": 0.0, "reward_mean": 0.02 * s if s != 6 else None, "format_rate": 0.5}
               for s in range(0, 40, 2)])
    out = tmp_path / "curves.png"
    plotted = vis.training_curves([str(a), str(b)], str(out), keys=("reward_mean", "format_rate", "val_JF", "kl"))
    assert plotted == ["reward_mean", "format_rate", "val_JF"]  # "kl" logged by no run: skipped
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > im.size[1] > 100  # one row of 3 subplots
    # Legend labels come from the run directories; each run's default colour (C0, C1) is drawn.
    assert _count_colour(str(out), (0.122, 0.467, 0.706), tol=10) > 50
    assert _count_colour(str(out), (1.0, 0.498, 0.055), tol=10) > 50
    only = vis.training_curves(str(b), str(tmp_path / "b.png"), keys=None)
    assert only == ["reward_mean", "format_rate"]
    assert vis.training_curves(str(b), str(tmp_path / "none.png"), keys=("val_JF",)) == []
    assert (tmp_path / "none.png").stat().st_size > 1000
