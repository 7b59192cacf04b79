"""Sound of a clip: each object plays a sine tone of its own pitch during its intervals, panned by position."""

from __future__ import annotations

import numpy as np
from scipy.io import wavfile

from data_pipelines.synthetic.world import Clip

FADE_S = 0.01


def synth_audio(clip: Clip, *, sample_rate: int = 48000, channels: int = 2,
                duration_s: float | None = None) -> np.ndarray:
    """Float32 [n, channels] waveform in [-1, 1]: the sum of every object's tones (stereo pan = x position)."""
    dur = clip.duration_s if duration_s is None else duration_s
    n = int(round(dur * sample_rate))
    out = np.zeros((n, channels), np.float64)
    amp = 0.8 / max(1, len(clip.objects))
    for obj in clip.objects:
        for start, end in obj.sound_intervals:
            i0, i1 = int(round(start * sample_rate)), min(n, int(round(end * sample_rate)))
            if i1 <= i0:
                continue
            tt = np.arange(i1 - i0) / sample_rate
            env = np.minimum(1.0, np.minimum(tt, tt[-1] - tt) / FADE_S)
            tone = amp * env * np.sin(2 * np.pi * obj.pitch_hz * tt)
            frame = min(clip.num_frames - 1, int(0.5 * (start + end) * clip.fps))
            x = obj.center(frame, clip.width, clip.height)[0] / max(1, clip.width - 1)
            gains = [np.cos(0.5 * np.pi * x), np.sin(0.5 * np.pi * x)] if channels == 2 else [1.0] * channels
            for c in range(channels):
                out[i0:i1, c] += gains[c] * tone
    return out.astype(np.float32)


def write_wav(path: str, audio: np.ndarray, sample_rate: int) -> None:
    """Writes float audio [n, C] as 16-bit PCM WAV (the Ref-AVS format)."""
    pcm = np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16)
    wavfile.write(path, sample_rate, pcm)
