"""Whisper log-mel features for the Qwen2.5-Omni audio tower (NumPy; matches `WhisperFeatureExtractor`).

Qwen2.5-Omni's preprocessor config uses 128 mel bins, 16 kHz mono, n_fft 400, hop 160 and chunk_length 300
(its processor pads every clip to 300 s = 30000 frames, with a frame-level `feature_attention_mask`; the model
keeps only the masked frames).  The valid frames do not depend on how far the clip is padded (the padding is
zeros and the -8 clamp is taken against the max, which the signal sets), so the pipeline pads to a shorter
static length (RefAVS clips are 10 s) and still matches the processor on every valid frame (tested).
The STFT is centred with reflect padding, a periodic Hann window, power 2, slaney mel filters (0-8 kHz,
slaney norm), log10 with a 1e-10 floor, last frame dropped, then `max(x, x.max() - 8)` and `(x + 4) / 4`,
exactly as transformers' NumPy path computes it.
"""

from __future__ import annotations

import numpy as np

WHISPER_SAMPLE_RATE = 16000
WHISPER_N_FFT = 400
WHISPER_HOP = 160


def _hz_to_mel_slaney(freq: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    freq = np.asarray(freq, np.float64)
    mels = 3.0 * freq / 200.0
    logstep = 27.0 / np.log(6.4)
    return np.where(freq >= 1000.0, 15.0 + np.log(np.maximum(freq, 1e-10) / 1000.0) * logstep, mels)


def _mel_to_hz_slaney(mels: np.ndarray) -> np.ndarray:
    """Inverse of `_hz_to_mel_slaney`."""
    mels = np.asarray(mels, np.float64)
    logstep = np.log(6.4) / 27.0
    return np.where(mels >= 15.0, 1000.0 * np.exp(logstep * (mels - 15.0)), 200.0 * mels / 3.0)


def mel_filter_bank(
    n_mels: int = 128,
    n_fft: int = WHISPER_N_FFT,
    sample_rate: int = WHISPER_SAMPLE_RATE,
    f_min: float = 0.0,
    f_max: float = 8000.0,
) -> np.ndarray:
    """Slaney-normalised triangular mel filters, float64 [n_fft//2 + 1, n_mels]."""
    n_bins = n_fft // 2 + 1
    mel_pts = np.linspace(_hz_to_mel_slaney(f_min), _hz_to_mel_slaney(f_max), n_mels + 2)
    hz_pts = _mel_to_hz_slaney(mel_pts)  # [n_mels + 2]
    fft_freqs = np.linspace(0, sample_rate // 2, n_bins)  # [n_bins]
    diff = np.diff(hz_pts)
    slopes = hz_pts[None, :] - fft_freqs[:, None]  # [n_bins, n_mels + 2]
    down = -slopes[:, :-2] / diff[:-1]
    up = slopes[:, 2:] / diff[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    enorm = 2.0 / (hz_pts[2:n_mels + 2] - hz_pts[:n_mels])
    return filters * enorm[None, :]


def whisper_log_mel(
    waveform: np.ndarray,
    n_mels: int = 128,
    n_fft: int = WHISPER_N_FFT,
    hop_length: int = WHISPER_HOP,
    sample_rate: int = WHISPER_SAMPLE_RATE,
) -> np.ndarray:
    """Log-mel spectrogram of an (already padded) mono waveform: float32 [n_mels, len // hop]."""
    x = np.pad(np.asarray(waveform, np.float32), (n_fft // 2, n_fft // 2), mode="reflect").astype(np.float64)
    n_frames = 1 + (x.size - n_fft) // hop_length
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop_length][:n_frames]  # [F, n_fft]
    window = np.hanning(n_fft + 1)[:-1]  # periodic Hann
    spec = np.fft.rfft(frames * window, axis=-1).astype(np.complex64)  # transformers stores complex64
    power = np.abs(spec, dtype=np.float64) ** 2  # [F, n_bins]
    mel = np.maximum(1e-10, mel_filter_bank(n_mels, n_fft, sample_rate).T @ power.T)  # [n_mels, F]
    log_spec = np.log10(mel).astype(np.float32)[:, :-1]
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


def audio_output_lengths(feature_lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Qwen2.5-Omni audio tower lengths: (after the stride-2 conv, after the 2x average pool = #tokens)."""
    after_cnn = (np.asarray(feature_lengths) - 1) // 2 + 1
    return after_cnn, (after_cnn - 2) // 2 + 1


def whisper_features(
    audio: np.ndarray,
    n_mels: int = 128,
    chunk_length_s: int = 300,
    sample_rate: int = WHISPER_SAMPLE_RATE,
    hop_length: int = WHISPER_HOP,
    n_fft: int = WHISPER_N_FFT,
) -> dict[str, np.ndarray]:
    """Qwen2.5-Omni processor audio inputs for one mono 16 kHz clip (padded/truncated to `chunk_length_s`).

    Returns input_features float32 [n_mels, T] (T = chunk_length_s * sr / hop), feature_attention_mask
    int32 [T], feature_length, num_audio_tokens (int32 scalars).
    """
    n_samples = chunk_length_s * sample_rate
    audio = np.asarray(audio, np.float32).reshape(-1)[:n_samples]
    padded = np.zeros(n_samples, np.float32)
    padded[: audio.size] = audio
    feats = whisper_log_mel(padded, n_mels, n_fft, hop_length, sample_rate)
    sample_mask = np.zeros(n_samples, np.int32)
    sample_mask[: audio.size] = 1
    mask = sample_mask[::hop_length]
    if n_samples % hop_length:
        mask = mask[:-1]
    length = np.int32(mask.sum())
    return {
        "input_features": feats,
        "feature_attention_mask": mask.astype(np.int32),
        "feature_length": length,
        "num_audio_tokens": np.int32(audio_output_lengths(length)[1]),
    }
