"""The Free Spoken Digit Dataset (FSDD) v1.0.10: 3,000 recordings `recordings/{digit}_{speaker}_{index}.wav` of 6
speakers x 10 digits x 50 (index 0-49), 8 kHz mono 16-bit PCM (Jackson et al.; CC BY-SA 4.0).

- `data_dir` (`--data-dir`): `data_dir/SHA256SUMS` or `data_dir/fsdd/SHA256SUMS` (the manifest, pinned by its own
  SHA-256 in `MANIFEST`, one `<sha256>  recordings/<name>` line per recording) with `recordings/` beside it; every
  recording is verified against its manifest line, read in place, never modified.
- No `data_dir`: the cache `cache_dir()/fsdd/` (the same layout), filled once from the release archive
  (`ARCHIVE_URL`, GitHub's tarball of tag v1.0.10). GitHub does not promise that an archive's bytes stay the same,
  so the archive is not pinned by its own digest: its recordings are, through the manifest. The manifest is rebuilt
  from the archive's recordings (their digests, sorted by name, in `sha256sum`'s format) and must hash to
  `MANIFEST.sha256`; only then is each recording written to the cache (atomically, verified), and the manifest
  last, so a cache with a manifest is complete.
- `read_wav`: RIFF/WAVE PCM through the standard `wave` module; a file with another sample rate, channel count,
  sample width or compression, an empty file, one `wave` cannot parse, and one whose data chunk is shorter than
  its header says (truncated) are each a ValueError naming the file.

Splits: `standard_split` (the README's: indices 0-4 of each speaker and digit are test; 5-9 are held out here as
dev for model selection; 10-49 train) and `leave_one_speaker_out` (all 500 recordings of one speaker are test; the
other speakers' indices 5-9 dev, the rest train).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import os
import pathlib
import re
import tarfile
import wave

import numpy as np

from experiments import datafiles
from experiments.datafiles import DataFile

FOLDER = "fsdd"
SAMPLE_RATE = 8000
CHANNELS = 1
SAMPLE_WIDTH = 2  # bytes: 16-bit PCM
SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
MANIFEST = DataFile("SHA256SUMS", "", "04e1baae96c6a26e39c623f2b01d0182ddae627ba0ac02a3cdc17ba2af99fd9b")
ARCHIVE_URL = "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/v1.0.10.tar.gz"
CITATION = ("Jackson, Souza, Flaks, Pan, Nicolas & Thite 2018, Free Spoken Digit Dataset (Zenodo, "
            "doi:10.5281/zenodo.1342401); files of release v1.0.10")
_NAME = re.compile(r"([0-9])_([a-z]+)_([0-9]+)\.wav")
_LINE = re.compile(r"([0-9a-f]{64})  recordings/([^/\s]+)")


@dataclasses.dataclass(frozen=True)
class Recording:
    """One file: its name, the digit spoken (the label), the speaker and the take index (0-49)."""

    name: str
    digit: int
    speaker: str
    index: int


def parse_name(name: str) -> Recording:
    """`"7_jackson_32.wav"` -> `Recording("7_jackson_32.wav", 7, "jackson", 32)`; anything else is a ValueError."""
    match = _NAME.fullmatch(name)
    if match is None:
        raise ValueError(f"{name!r} is not an FSDD recording name ({{digit}}_{{speaker}}_{{index}}.wav)")
    return Recording(name, int(match.group(1)), match.group(2), int(match.group(3)))


def read_wav(data: bytes, label: str) -> np.ndarray:
    """The int16 samples of a mono 16-bit 8 kHz PCM WAV file's bytes; `label` names the file in errors."""
    if not data:
        raise ValueError(f"{label} is empty (0 bytes): not a WAV file")
    try:
        with wave.open(io.BytesIO(data)) as reader:
            channels, width, rate = reader.getnchannels(), reader.getsampwidth(), reader.getframerate()
            compression, frames = reader.getcomptype(), reader.getnframes()
            samples = reader.readframes(frames)
    except (wave.Error, EOFError) as error:
        raise ValueError(f"{label} is not a readable PCM WAV file ({type(error).__name__}: {error})") from None
    found = f"{channels} channel(s), {8 * width}-bit, {rate} Hz, compression {compression}"
    if (channels, width, rate, compression) != (CHANNELS, SAMPLE_WIDTH, SAMPLE_RATE, "NONE"):
        raise ValueError(f"{label} is {found}; FSDD recordings are mono, 16-bit, {SAMPLE_RATE} Hz PCM")
    if frames == 0:
        raise ValueError(f"{label} holds no samples (its data chunk is empty)")
    if len(samples) != frames * SAMPLE_WIDTH:
        raise ValueError(f"{label} is truncated: its header says {frames} samples, the file holds "
                         f"{len(samples) // SAMPLE_WIDTH}")
    return np.frombuffer(samples, "<i2").copy()


def parse_manifest(text: str, label: str) -> dict[str, str]:
    """`{file name: sha256}` from `sha256sum` lines `<sha256>  recordings/<name>`; a malformed line, a name that is
    not an FSDD recording, or a name twice is a ValueError naming `label` and the line."""
    digests = {}
    for number, line in enumerate(text.splitlines(), start=1):
        match = _LINE.fullmatch(line)
        if match is None:
            raise ValueError(f"{label} line {number} is not '<sha256>  recordings/<name>': {line[:100]!r}")
        name = match.group(2)
        parse_name(name)
        if name in digests:
            raise ValueError(f"{label} line {number} lists {name} a second time")
        digests[name] = match.group(1)
    if not digests:
        raise ValueError(f"{label} lists no recordings")
    return digests


def manifest_text(digests: dict[str, str]) -> str:
    """The manifest of `{name: sha256}` as `sha256sum` writes it for `recordings/*.wav`, sorted by name."""
    return "".join(f"{digests[name]}  recordings/{name}\n" for name in sorted(digests))


@dataclasses.dataclass(frozen=True)
class FSDD:
    """The recordings in manifest order with their int16 samples, and a record of what was read."""

    recordings: tuple[Recording, ...]
    signals: tuple[np.ndarray, ...]
    record: dict

    def __repr__(self) -> str:
        return f"FSDD({len(self.recordings)} recordings, {len({r.speaker for r in self.recordings})} speakers)"


def load_fsdd(data_dir: str | os.PathLike | None = None) -> FSDD:
    """Every recording of the manifest, verified and decoded (see the module docstring for where they come from)."""
    if data_dir is None:
        data_dir = ensure_cache()
    manifest_bytes, manifest_path = datafiles.read_verified(MANIFEST, FOLDER, data_dir,
                                                            expected=["SHA256SUMS", "recordings/*.wav"])
    digests = parse_manifest(manifest_bytes.decode("ascii", errors="replace"), str(manifest_path))
    folder = manifest_path.parent / "recordings"
    recordings, signals = [], []
    for name, digest in digests.items():
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: {manifest_path} lists it")
        data = datafiles.verify_bytes(path.read_bytes(), DataFile(name, "", digest), str(path),
                                      f"{name} as listed in {manifest_path}")
        signals.append(read_wav(data, str(path)))
        recordings.append(parse_name(name))
    record = {"dataset": "fsdd", "version": "1.0.10", "citation": CITATION, "manifest": str(manifest_path),
              "manifest_sha256": MANIFEST.sha256, "recordings": len(recordings),
              "speakers": sorted({r.speaker for r in recordings})}
    return FSDD(tuple(recordings), tuple(signals), record)


def ensure_cache(url: str | None = None) -> pathlib.Path:
    """`cache_dir()/fsdd`, filled from the release archive at `url` (default `ARCHIVE_URL`) unless it already holds
    a verified manifest."""
    folder = datafiles.cache_dir() / FOLDER
    manifest_path = folder / MANIFEST.name
    if manifest_path.is_file() and datafiles.sha256_file(manifest_path) == MANIFEST.sha256:
        return folder
    url = url or ARCHIVE_URL
    with contextlib.closing(datafiles._read_url(url, MANIFEST.sha256)) as chunks:  # the one network layer
        archive = b"".join(chunks)
    members = archive_recordings(archive, url)
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in members.items()}
    text = manifest_text(digests)
    actual = hashlib.sha256(text.encode("ascii")).hexdigest()
    if actual != MANIFEST.sha256:
        raise ValueError(f"the {len(digests)} recordings in {url} do not match the pinned FSDD v1.0.10 manifest: "
                         f"the sha256 of their list is {actual}, expected {MANIFEST.sha256}; nothing was cached")
    (folder / "recordings").mkdir(parents=True, exist_ok=True)
    for name, data in members.items():
        datafiles.write_verified([data], digests[name], folder / "recordings" / name, f"{url} ({name})")
    datafiles.write_verified([text.encode("ascii")], MANIFEST.sha256, manifest_path, url)  # last: marks complete
    return folder


def archive_recordings(archive: bytes, origin: str) -> dict[str, bytes]:
    """`{name: bytes}` of the `*/recordings/*.wav` members of a `.tar.gz` archive; a file that is not one, or one
    without recordings, is a ValueError naming `origin`."""
    members = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as opened:
            for member in opened:
                parts = member.name.split("/")
                if member.isfile() and len(parts) >= 2 and parts[-2] == "recordings" and parts[-1].endswith(".wav"):
                    members[parts[-1]] = opened.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as error:
        raise ValueError(f"{origin} is not a readable .tar.gz archive ({type(error).__name__}: {error})") from None
    if not members:
        raise ValueError(f"{origin} holds no recordings/*.wav files")
    return members


# -- splits ---------------------------------------------------------------------------------------------------------
def standard_split(recordings) -> dict[str, np.ndarray]:
    """Indices into `recordings`: test = takes 0-4 (FSDD's README), dev = takes 5-9, train = takes 10-49."""
    index = np.array([r.index for r in recordings])
    return {"train": np.flatnonzero(index >= 10), "dev": np.flatnonzero((index >= 5) & (index < 10)),
            "test": np.flatnonzero(index < 5)}


def leave_one_speaker_out(recordings, speaker: str) -> dict[str, np.ndarray]:
    """Indices into `recordings`: test = every take of `speaker`; dev = the other speakers' takes 5-9; train = the
    rest of theirs."""
    speakers = np.array([r.speaker for r in recordings])
    if speaker not in set(speakers.tolist()):
        raise ValueError(f"speaker {speaker!r} has no recordings; there are {sorted(set(speakers.tolist()))}")
    index = np.array([r.index for r in recordings])
    others = speakers != speaker
    dev = others & (index >= 5) & (index < 10)
    return {"train": np.flatnonzero(others & ~dev), "dev": np.flatnonzero(dev),
            "test": np.flatnonzero(~others)}
