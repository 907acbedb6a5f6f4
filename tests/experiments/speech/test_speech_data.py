"""FSDD: manifest-verified recordings, the WAV checks, the download path through the release archive, the splits;
the log-mel features and the synthetic digit strings."""

import io
import pathlib
import tarfile

import numpy as np
import pytest
from fsdd_fixture import DIGITS, SPEAKERS, TAKES, tone, wav_bytes, write_dataset

from experiments.speech import data as fsdd
from experiments.speech import features as feats

SHARED = pathlib.Path(__file__).resolve().parents[4] / "shared" / "data"


def test_a_tiny_dataset_loads_verified(tiny_fsdd):
    dataset = fsdd.load_fsdd(tiny_fsdd)  # the parent of fsdd/, as ../shared/data is laid out
    assert len(dataset.recordings) == len(SPEAKERS) * len(DIGITS) * len(TAKES)
    first = dataset.recordings[0]
    assert (first.name, first.digit, first.speaker, first.index) == ("0_george_0.wav", 0, "george", 0)
    np.testing.assert_array_equal(dataset.signals[0], tone(0, 0, 0))
    assert fsdd.load_fsdd(tiny_fsdd / "fsdd").record["recordings"] == 24  # the dataset's own folder works too


def test_splits():
    recordings = [fsdd.parse_name(f"{d}_{s}_{i}.wav") for s in ("george", "theo") for d in (3, 4) for i in range(50)]
    standard = fsdd.standard_split(recordings)
    assert {recordings[i].index for i in standard["test"]} == set(range(5))
    assert {recordings[i].index for i in standard["dev"]} == set(range(5, 10))
    assert len(standard["train"]) == 4 * 40
    loso = fsdd.leave_one_speaker_out(recordings, "theo")
    assert {recordings[i].speaker for i in loso["test"]} == {"theo"} and len(loso["test"]) == 100
    assert {recordings[i].speaker for i in np.concatenate([loso["train"], loso["dev"]])} == {"george"}
    assert len(loso["train"]) + len(loso["dev"]) == 100
    with pytest.raises(ValueError, match="speaker 'lucas' has no recordings"):
        fsdd.leave_one_speaker_out(recordings, "lucas")


@pytest.mark.parametrize("data, message", [
    (wav_bytes(tone(1, 0, 5), rate=16000), r"1_george_5.wav is 1 channel\(s\), 16-bit, 16000 Hz"),
    (wav_bytes(np.zeros(200), channels=2), r"1_george_5.wav is 2 channel\(s\), 16-bit, 8000 Hz"),
    (wav_bytes(np.zeros(200), width=1), r"1_george_5.wav is 1 channel\(s\), 8-bit"),
    (wav_bytes(tone(1, 0, 5))[:-100], "1_george_5.wav is truncated: its header says"),
    (wav_bytes(np.zeros(0)), "1_george_5.wav holds no samples"),
    (b"RIFF\x00\x00", "1_george_5.wav is not a readable PCM WAV file"),
    (b"", r"1_george_5.wav is empty \(0 bytes\)"),
])
def test_bad_recordings_are_clear_errors_naming_the_file(tmp_path, monkeypatch, data, message):
    folder = write_dataset(tmp_path, monkeypatch, replace={"1_george_5.wav": data})  # listed with its own digest
    with pytest.raises(ValueError, match=message):
        fsdd.load_fsdd(folder)


def test_manifest_mismatches_name_the_file(tiny_fsdd):
    recording = tiny_fsdd / "fsdd" / "recordings" / "2_jackson_10.wav"
    recording.write_bytes(recording.read_bytes()[:-2] + b"\x00\x01")
    with pytest.raises(ValueError, match=r"2_jackson_10.wav has sha256 .* expected .*2_jackson_10.wav as listed in"):
        fsdd.load_fsdd(tiny_fsdd)
    recording.unlink()
    with pytest.raises(FileNotFoundError, match=r"2_jackson_10.wav does not exist: .*SHA256SUMS lists it"):
        fsdd.load_fsdd(tiny_fsdd)
    manifest = tiny_fsdd / "fsdd" / "SHA256SUMS"
    manifest.write_bytes(manifest.read_bytes() + b"extra line\n")
    with pytest.raises(ValueError, match=r"SHA256SUMS has sha256 .* expected"):  # the manifest is pinned too
        fsdd.load_fsdd(tiny_fsdd)
    with pytest.raises(ValueError, match=r"x line 2 is not '<sha256>  recordings/<name>'"):
        fsdd.parse_manifest("0" * 64 + "  recordings/1_theo_2.wav\nextra line\n", "x")
    with pytest.raises(ValueError, match="lists 1_theo_2.wav a second time"):
        fsdd.parse_manifest(("0" * 64 + "  recordings/1_theo_2.wav\n") * 2, "x")


def tarball(folder: pathlib.Path, prefix: str = "free-spoken-digit-dataset-1.0.10") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(folder / "fsdd" / "recordings", arcname=f"{prefix}/recordings")
        readme = f"{prefix}/README.md"
        info = tarfile.TarInfo(readme)
        info.size = 5
        archive.addfile(info, io.BytesIO(b"hello"))
    return buffer.getvalue()


def test_without_data_dir_the_release_archive_is_verified_through_the_manifest(tmp_path, monkeypatch):
    source = write_dataset(tmp_path / "source", monkeypatch)
    archive = tmp_path / "v1.0.10.tar.gz"
    archive.write_bytes(tarball(source))
    monkeypatch.setenv("RNNJAX_DATA", str(tmp_path / "cache"))
    monkeypatch.setattr(fsdd, "ARCHIVE_URL", archive.as_uri())
    dataset = fsdd.load_fsdd()
    cached = tmp_path / "cache" / "fsdd"
    assert (cached / "SHA256SUMS").read_bytes() == (source / "fsdd" / "SHA256SUMS").read_bytes()
    assert len(list((cached / "recordings").glob("*.wav"))) == 24 and len(dataset.recordings) == 24
    archive.unlink()  # the cache is complete: nothing is downloaded again
    assert fsdd.load_fsdd().record["recordings"] == 24


def test_an_archive_whose_recordings_differ_caches_nothing(tmp_path, monkeypatch):
    source = write_dataset(tmp_path / "source", monkeypatch)
    changed = source / "fsdd" / "recordings" / "0_jackson_11.wav"
    changed.write_bytes(wav_bytes(tone(1, 1, 11)))
    archive = tmp_path / "v1.0.10.tar.gz"
    archive.write_bytes(tarball(source))
    monkeypatch.setenv("RNNJAX_DATA", str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="do not match the pinned FSDD v1.0.10 manifest.*nothing was cached"):
        fsdd.ensure_cache(archive.as_uri())
    assert not (tmp_path / "cache" / "fsdd" / "SHA256SUMS").exists()
    archive.write_bytes(b"not a tarball")
    with pytest.raises(ValueError, match="is not a readable .tar.gz archive"):
        fsdd.ensure_cache(archive.as_uri())


@pytest.mark.skipif(not (SHARED / "fsdd").is_dir(), reason="../shared/data/fsdd is not there")
def test_the_release_files_from_shared_data():
    dataset = fsdd.load_fsdd(SHARED)
    assert len(dataset.recordings) == 3000 and dataset.record["speakers"] == list(fsdd.SPEAKERS)
    assert {len(v) for v in fsdd.standard_split(dataset.recordings).values()} == {2400, 300}


def test_log_mel_puts_a_tone_in_its_mel_channel():
    t = np.arange(8000) / 8000
    low = feats.log_mel(np.sin(2 * np.pi * 300 * t), 8000)
    high = feats.log_mel(np.sin(2 * np.pi * 3000 * t), 8000)
    assert low.shape == (1 + (8000 - 200 + 79) // 80, 40) and low.dtype == np.float32
    assert np.argmax(low[50]) < 10 and np.argmax(high[50]) > 30
    assert feats.log_mel(np.zeros(50), 8000).shape == (1, 40)  # shorter than one frame: one padded frame
    assert np.isfinite(feats.log_mel(np.zeros(400), 8000)).all()
    stacked = feats.stack_frames(np.arange(10.0).reshape(5, 2), 2)
    assert stacked.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 8, 9]]
    normalizer = feats.Normalizer.fit([np.array([[1.0, 2.0], [3.0, 6.0]])])
    np.testing.assert_allclose(normalizer(np.array([[3.0, 6.0]])), [[1.0, 1.0]])


def test_digit_strings_are_fixed_by_the_seed_and_drawn_from_the_pool():
    recordings = [fsdd.parse_name(f"{d}_{s}_{i}.wav") for s in SPEAKERS for d in DIGITS for i in TAKES]
    signals = [tone(r.digit, 0, r.index) for r in recordings]
    pool = np.array([i for i, r in enumerate(recordings) if r.index >= 10])
    make = lambda seed: feats.make_utterances(recordings, signals, pool, 20, seed, 8000, min_digits=2,
                                              max_digits=4, silence_ms=(10.0, 20.0))
    first, again, other = make(0), make(0), make(1)
    assert [u.sources for u in first] == [u.sources for u in again]
    assert all(np.array_equal(a.signal, b.signal) for a, b in zip(first, again))
    assert [u.sources for u in first] != [u.sources for u in other]
    for utterance in first:
        assert 2 <= len(utterance.digits) <= 4 and set(utterance.sources) <= set(pool.tolist())
        assert utterance.digits == tuple(recordings[s].digit for s in utterance.sources)
        assert {recordings[s].speaker for s in utterance.sources} == {utterance.speaker}  # one speaker per string
        recorded = sum(len(signals[s]) for s in utterance.sources)
        gaps = len(utterance.signal) - recorded  # len(digits) + 1 gaps of 10-20 ms
        assert 80 * (len(utterance.digits) + 1) <= gaps <= 160 * (len(utterance.digits) + 1)
        assert np.abs(utterance.signal).max() == pytest.approx(0.5)
