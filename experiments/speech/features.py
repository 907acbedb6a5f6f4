"""Log-mel filterbank features in NumPy (no audio library is needed), their normalisation, and the synthetic
spoken-digit strings of the CTC task.

`log_mel`: pre-emphasis, frames of `frame_ms` every `hop_ms` (zero-padded at the end so every sample is in a
frame), a Hamming window, the power spectrum of an `n_fft`-point FFT, `n_mels` triangular filters equally spaced
on the HTK mel scale (mel = 2595 log10(1 + f / 700)) between `fmin` and `fmax`, and the natural log of each
filter's energy plus `floor` (so silence stays finite). `Normalizer` holds per-feature mean and standard deviation
estimated on the training split's frames only. `stack_frames` concatenates `k` consecutive frames and keeps every
`k`-th (a k-times shorter sequence, as Graves-style acoustic models subsample).

`make_utterances`: strings of `min_digits`..`max_digits` digits spoken by one speaker, made by concatenating that
speaker's recordings from a pool (one split's), with Gaussian noise of standard deviation `noise` as silence before,
between and after the digits (each gap `silence_ms` uniform in a range); every recording is first scaled to peak
amplitude `peak`. Everything is drawn from `np.random.default_rng(seed)`, so the strings are fixed by the seed.
"""

from __future__ import annotations

import dataclasses

import numpy as np


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int, fmin: float, fmax: float) -> np.ndarray:
    """Triangular filters `[n_mels, n_fft // 2 + 1]` on the HTK mel scale, each peaking at 1."""
    def to_mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f, np.float64) / 700.0)

    def to_hz(m):
        return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)

    edges = to_hz(np.linspace(to_mel(fmin), to_mel(fmax), n_mels + 2))
    bins = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    lower, center, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - lower) / (center - lower)
    falling = (upper - bins[None, :]) / (upper - center)
    return np.maximum(0.0, np.minimum(rising, falling))


def log_mel(signal: np.ndarray, sample_rate: int, n_mels: int = 40, frame_ms: float = 25.0, hop_ms: float = 10.0,
            n_fft: int = 256, preemphasis: float = 0.97, fmin: float = 20.0, fmax: float | None = None,
            floor: float = 1e-6) -> np.ndarray:
    """float32 `[frames, n_mels]` log-mel energies of a float `signal` (see the module docstring)."""
    signal = np.asarray(signal, np.float64)
    if signal.ndim != 1 or signal.size == 0:
        raise ValueError(f"signal must be a non-empty 1-D array, got shape {signal.shape}")
    frame = round(sample_rate * frame_ms / 1000)
    hop = round(sample_rate * hop_ms / 1000)
    if not 0 < hop <= frame <= n_fft:
        raise ValueError(f"need 0 < hop ({hop}) <= frame ({frame}) <= n_fft ({n_fft}) samples")
    emphasized = np.concatenate([signal[:1], signal[1:] - preemphasis * signal[:-1]])
    count = 1 + max(0, -(-(len(emphasized) - frame) // hop))
    padded = np.concatenate([emphasized, np.zeros(frame + (count - 1) * hop - len(emphasized))])
    starts = np.arange(count)[:, None] * hop + np.arange(frame)[None, :]
    frames = padded[starts] * np.hamming(frame)[None, :]
    power = np.abs(np.fft.rfft(frames, n_fft, axis=1)) ** 2 / n_fft
    filters = mel_filterbank(n_mels, n_fft, sample_rate, fmin, fmax or sample_rate / 2)
    return np.log(power @ filters.T + floor).astype(np.float32)


def stack_frames(features: np.ndarray, k: int) -> np.ndarray:
    """`[T, F]` -> `[ceil(T / k), k * F]`: each output frame is `k` consecutive input frames side by side (the last
    padded by repeating the final frame)."""
    if k == 1:
        return features
    count = -(-len(features) // k)
    padded = np.concatenate([features, np.repeat(features[-1:], count * k - len(features), axis=0)])
    return padded.reshape(count, k * features.shape[1])


@dataclasses.dataclass(frozen=True)
class Normalizer:
    """Per-feature standardisation with statistics of the training frames only."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, features: list[np.ndarray]) -> Normalizer:
        frames = np.concatenate(features).astype(np.float64)
        return cls(frames.mean(axis=0).astype(np.float32), np.maximum(frames.std(axis=0), 1e-5).astype(np.float32))

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return ((features - self.mean[None, :]) / self.std[None, :]).astype(np.float32)


def scale_to_peak(signal: np.ndarray, peak: float) -> np.ndarray:
    """int16 (or float) samples -> float32 scaled so that max |x| = `peak` (a silent signal stays zero)."""
    signal = np.asarray(signal, np.float32)
    top = float(np.max(np.abs(signal))) if signal.size else 0.0
    return signal * (peak / top) if top > 0 else signal


@dataclasses.dataclass(frozen=True)
class Utterance:
    """A synthetic digit string: its samples, the digits, the speaker and the recordings used (indices)."""

    signal: np.ndarray
    digits: tuple[int, ...]
    speaker: str
    sources: tuple[int, ...]


def make_utterances(recordings, signals, pool: np.ndarray, count: int, seed: int, sample_rate: int,
                    min_digits: int = 3, max_digits: int = 7, silence_ms: tuple[float, float] = (50.0, 300.0),
                    noise: float = 1e-3, peak: float = 0.5) -> list[Utterance]:
    """`count` digit strings from the recordings at the indices `pool` (see the module docstring)."""
    if not 1 <= min_digits <= max_digits:
        raise ValueError(f"need 1 <= min_digits <= max_digits, got {min_digits}, {max_digits}")
    if not 0 <= silence_ms[0] <= silence_ms[1]:
        raise ValueError(f"silence_ms must be a range (low, high) with 0 <= low <= high, got {silence_ms}")
    rng = np.random.default_rng(seed)
    by_speaker: dict[str, list[int]] = {}
    for index in np.asarray(pool).tolist():
        by_speaker.setdefault(recordings[index].speaker, []).append(index)
    speakers = sorted(by_speaker)
    if not speakers:
        raise ValueError("the recording pool is empty")
    utterances = []
    for _ in range(count):
        speaker = speakers[int(rng.integers(len(speakers)))]
        choices = by_speaker[speaker]
        sources = tuple(choices[int(i)] for i in rng.integers(len(choices), size=int(rng.integers(min_digits,
                                                                                                    max_digits + 1))))

        def gap():
            samples = int(rng.uniform(*silence_ms) * sample_rate / 1000)
            return (rng.standard_normal(samples) * noise).astype(np.float32)

        parts = [gap()]
        for source in sources:
            parts += [scale_to_peak(signals[source], peak), gap()]
        utterances.append(Utterance(np.concatenate(parts), tuple(recordings[s].digit for s in sources), speaker,
                                    sources))
    return utterances
