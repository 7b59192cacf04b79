"""The procedural audio-visual world: clips of coloured shapes that move, appear, disappear and sound tones.

Everything is drawn from a `numpy.random.Generator`, so a clip is a pure function of its seed.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from data_pipelines.synthetic import words

COLOUR_RGB = {
    "red": (220, 40, 40), "green": (40, 190, 60), "blue": (50, 90, 235), "yellow": (235, 215, 40),
    "white": (240, 240, 240), "orange": (245, 140, 30), "purple": (150, 60, 205), "cyan": (40, 205, 215),
}
SIZE_RADIUS = {"small": 0.08, "big": 0.14}  # radius as a fraction of min(H, W)
PITCHES_HZ = (220.0, 330.0, 440.0, 660.0, 990.0, 1480.0, 2220.0)  # >= 1.33x apart: easy to tell by FFT


@dataclasses.dataclass
class SynthObject:
    """One shape: appearance, a bouncing straight-line motion, a visible frame interval and sounding intervals."""

    obj_id: int
    shape: str
    colour: str
    size: str
    radius: float  # pixels
    pitch_hz: float
    first_frame: int  # visible in [first_frame, last_frame] (inclusive), generative
    last_frame: int
    x0: float
    y0: float
    vx: float  # pixels per frame
    vy: float
    sound_intervals: list  # [[start_s, end_s], ...]

    @property
    def description(self) -> str:
        """Short unique answer description, e.g. "the red circle" ((colour, shape) is unique in a clip)."""
        return f"the {self.colour} {self.shape}"

    def center(self, t: int, width: int, height: int) -> tuple[float, float]:
        """Centre at frame t: straight motion reflected at the borders so the shape stays inside the frame."""
        return (_reflect(self.x0 + self.vx * t, self.radius, width - 1 - self.radius),
                _reflect(self.y0 + self.vy * t, self.radius, height - 1 - self.radius))


@dataclasses.dataclass
class Clip:
    """A clip: frame geometry, timing (frame t is at t / fps seconds), background, objects."""

    clip_id: str
    num_frames: int
    height: int
    width: int
    fps: float
    duration_s: float
    background: tuple
    objects: list

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "Clip":
        """Rebuilds a clip from `to_json()` output (extra keys, e.g. from world.json, are ignored)."""
        obj_keys = {f.name for f in dataclasses.fields(SynthObject)}
        kw = {f.name: d[f.name] for f in dataclasses.fields(cls)}
        kw["background"] = tuple(kw["background"])
        kw["objects"] = [SynthObject(**{k: v for k, v in o.items() if k in obj_keys}) for o in d["objects"]]
        return cls(**kw)


def _reflect(v: float, lo: float, hi: float) -> float:
    span = hi - lo
    if span <= 0:
        return (lo + hi) / 2
    m = (v - lo) % (2 * span)
    return lo + (m if m <= span else 2 * span - m)


def make_clip(
    rng: np.random.Generator,
    clip_id: str,
    *,
    num_frames: int,
    height: int = 96,
    width: int = 128,
    fps: float = 2.0,
    num_objects: tuple = (2, 4),
    shapes: tuple = words.SEEN_SHAPES,
    required_shapes: tuple = (),
    all_visible_at_start: bool = False,
    min_visible: float = 0.25,
) -> Clip:
    """Samples a clip with 2-4 objects of unique (colour, shape), distinct pitches, partial visibility.

    `all_visible_at_start` (RefAVS format: training sees frame 0 only) makes every object visible in frame 0
    while some still leave later; otherwise objects enter and leave so that each is visible in only part of
    the clip, at least `min_visible` of it (and at least 3 frames). `required_shapes` forces those shapes into
    the clip (used for unseen-category splits).
    """
    if not 0.0 < min_visible < 1.0:
        raise ValueError(f"min_visible must be in (0, 1), got {min_visible}")
    n_obj = int(rng.integers(num_objects[0], num_objects[1] + 1))
    n_obj = max(n_obj, len(required_shapes))
    pairs = [(c, s) for c in words.COLOURS for s in shapes]
    chosen: list = []
    for s in required_shapes:
        chosen.append((words.COLOURS[int(rng.integers(len(words.COLOURS)))], s))
    rest = [p for p in pairs if p not in chosen]
    for k in rng.permutation(len(rest))[: n_obj - len(chosen)]:
        chosen.append(rest[int(k)])
    order = rng.permutation(len(chosen))
    chosen = [chosen[int(k)] for k in order]
    pitches = rng.choice(len(PITCHES_HZ), size=n_obj, replace=False)
    duration = num_frames / fps
    md = min(height, width)
    objects = []
    for j, (colour, shape) in enumerate(chosen):
        size = words.SIZES[int(rng.integers(2))]
        r = SIZE_RADIUS[size] * md
        if all_visible_at_start:
            first = 0
            last = num_frames - 1 if rng.random() < 0.5 else int(rng.integers(num_frames // 2, num_frames - 1))
        else:
            min_len = min(num_frames - 1, max(3, int(min_visible * num_frames)))  # 0.25: num_frames // 4
            first = 0 if rng.random() < 0.25 else int(rng.integers(0, num_frames - min_len))
            last_lo = first + min_len - 1
            last = num_frames - 1 if rng.random() < 0.25 else int(rng.integers(last_lo, num_frames))
            if first == 0 and last == num_frames - 1:  # keep the target off part of the clip
                last = int(rng.integers(last_lo, num_frames - 1))
        speed = rng.uniform(0.02, 0.06) * md
        ang = rng.uniform(0, 2 * np.pi)
        t0, t1 = first / fps, (last + 1) / fps
        n_int = int(rng.integers(1, 3))
        intervals = []
        for _ in range(n_int):
            length = float(rng.uniform(0.2, 0.45) * (t1 - t0))
            start = float(np.round(rng.uniform(t0, max(t0, t1 - length)), 2))
            intervals.append([start, float(np.round(min(t1, start + length), 2))])
        intervals.sort()
        objects.append(SynthObject(
            obj_id=j, shape=shape, colour=colour, size=size, radius=float(r),
            pitch_hz=float(PITCHES_HZ[int(pitches[j])]),
            first_frame=first, last_frame=last,
            x0=float(rng.uniform(r, width - 1 - r)), y0=float(rng.uniform(r, height - 1 - r)),
            vx=float(speed * np.cos(ang)), vy=float(speed * np.sin(ang)), sound_intervals=intervals,
        ))
    bg = tuple(int(v) for v in rng.integers(20, 60, size=3))
    return Clip(clip_id=clip_id, num_frames=num_frames, height=height, width=width, fps=fps,
                duration_s=float(duration), background=bg, objects=objects)
