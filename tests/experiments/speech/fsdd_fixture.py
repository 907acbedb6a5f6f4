"""Helpers for a tiny FSDD on disk: synthetic WAVs (a digit-specific tone per recording), their SHA256SUMS manifest, and
`experiments.speech.data.MANIFEST` pinned to it."""

import hashlib
import io
import pathlib
import wave

import numpy as np

from experiments.datafiles import DataFile
from experiments.speech import data as fsdd

SPEAKERS = ("george", "jackson")
DIGITS = (0, 1, 2)
TAKES = (0, 5, 10, 11)  # one test take, one dev take, two training takes (the standard split's ranges)


def wav_bytes(samples: np.ndarray, rate: int = 8000, channels: int = 1, width: int = 2) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(width)
        writer.setframerate(rate)
        writer.writeframes(np.asarray(samples, f"<i{width}").tobytes())
    return buffer.getvalue()


def tone(digit: int, speaker: int, take: int, seconds: float = 0.12) -> np.ndarray:
    rng = np.random.default_rng([digit, speaker, take])
    t = np.arange(int(8000 * seconds * (1 + 0.2 * rng.random()))) / 8000
    frequency = 300 + 700 * digit + 40 * speaker
    return (8000 * np.sin(2 * np.pi * frequency * t) + 300 * rng.standard_normal(len(t))).astype(np.int16)


def write_dataset(folder: pathlib.Path, monkeypatch, replace: dict | None = None) -> pathlib.Path:
    """`folder/fsdd/{SHA256SUMS, recordings/*.wav}`; `replace` maps names to other bytes (listed with their own
    digest). Returns `folder`."""
    root = folder / "fsdd"
    (root / "recordings").mkdir(parents=True, exist_ok=True)
    digests = {}
    for s, speaker in enumerate(SPEAKERS):
        for digit in DIGITS:
            for take in TAKES:
                name = f"{digit}_{speaker}_{take}.wav"
                data = (replace or {}).get(name, wav_bytes(tone(digit, s, take)))
                (root / "recordings" / name).write_bytes(data)
                digests[name] = hashlib.sha256(data).hexdigest()
    text = fsdd.manifest_text(digests).encode()
    (root / "SHA256SUMS").write_bytes(text)
    monkeypatch.setattr(fsdd, "MANIFEST", DataFile("SHA256SUMS", "", hashlib.sha256(text).hexdigest()))
    return folder
