"""Translation loaders: Multi30k's bad inputs (missing split or file, mismatched line counts, corrupt gzip, checksum
mismatch) raise clear errors; the shared copy has the published line counts; CLDR dates are disjoint splits."""

import gzip
import hashlib
import pathlib

import pytest

from experiments.datafiles import DataFile
from experiments.translation import data

SHARED = pathlib.Path(__file__).resolve().parents[4] / "shared" / "data"  # next to the checkout
needs_shared = pytest.mark.skipif(not (SHARED / "multi30k").is_dir(), reason="shared/data/multi30k not present")


def _write(folder: pathlib.Path, contents: dict[str, bytes]) -> dict[str, DataFile]:
    """Writes each file and returns a pinned table for them (the real table for every other name)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = dict(data.MULTI30K_FILES)
    for name, payload in contents.items():
        (folder / name).write_bytes(payload)
        files[name] = DataFile(name, "", hashlib.sha256(payload).hexdigest())
    return files


def _gz(lines: list[str]) -> bytes:
    return gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0)


def test_reads_both_sides_line_aligned(tmp_path):
    files = _write(tmp_path, {"val.de.gz": _gz(["Ein Hund.", "Zwei Katzen."]),
                              "val.en.gz": _gz(["A dog.", "Two cats."])})
    splits = data.load_multi30k("de", "en", ["val"], tmp_path, files=files)
    assert splits["val"].source == ("Ein Hund.", "Zwei Katzen.") and splits["val"].target == ("A dog.", "Two cats.")
    reverse = data.load_multi30k("en", "de", ["val"], tmp_path, files=files)["val"]
    assert reverse.source == ("A dog.", "Two cats.")


def test_mismatched_line_counts_name_both_files(tmp_path):
    files = _write(tmp_path, {"val.de.gz": _gz(["Ein Hund.", "Zwei Katzen."]), "val.en.gz": _gz(["A dog."])})
    with pytest.raises(ValueError, match=r"val: .*val\.de\.gz has 2 lines but .*val\.en\.gz has 1; line i of each"):
        data.load_multi30k("de", "en", ["val"], tmp_path, files=files)


def test_corrupt_gzip_is_named(tmp_path):
    good = _gz(["A dog."])
    files = _write(tmp_path, {"val.de.gz": good[:-6] + b"XXXXXX", "val.en.gz": good})
    with pytest.raises(ValueError, match=r"val\.de\.gz is not a valid gzip file .*expected a gzip of UTF-8 text"):
        data.load_multi30k("de", "en", ["val"], tmp_path, files=files)
    files = _write(tmp_path, {"val.de.gz": b"plain text, not gzip\n"})
    with pytest.raises(ValueError, match="is not a valid gzip file"):
        data.load_multi30k("de", "en", ["val"], tmp_path, files=files)


def test_checksum_mismatch_names_file_and_digests(tmp_path):
    (tmp_path / "val.de.gz").write_bytes(_gz(["Ein Hund."]))
    (tmp_path / "val.en.gz").write_bytes(_gz(["A dog."]))
    expected = data.MULTI30K_FILES["val.de.gz"].sha256
    with pytest.raises(ValueError, match=rf"val\.de\.gz has sha256 [0-9a-f]{{64}}, expected {expected}"):
        data.load_multi30k("de", "en", ["val"], tmp_path)


def test_missing_split_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match=r"Multi30k has no split 'dev'; expected one of train, val, test_2016_flickr"):
        data.load_multi30k("de", "en", ["train", "dev"], tmp_path)
    files = _write(tmp_path, {"val.de.gz": _gz(["Ein Hund."])})
    with pytest.raises(FileNotFoundError, match=r"val\.en\.gz does not exist: 'multi30k' expects val\.de\.gz, "
                                                r"val\.en\.gz"):
        data.load_multi30k("de", "en", ["val"], tmp_path, files=files)


def test_bad_languages_and_empty_lines(tmp_path):
    with pytest.raises(ValueError, match="source language must be one of en, de, fr for Multi30k, got 'cs'"):
        data.load_multi30k("cs", "en", ["val"], tmp_path)
    with pytest.raises(ValueError, match="both 'en'"):
        data.load_multi30k("en", "en", ["val"], tmp_path)
    files = _write(tmp_path, {"val.de.gz": _gz(["Ein Hund.", "", "Drei."]), "val.en.gz": _gz(["A", "B", "C"])})
    with pytest.raises(ValueError, match=r"val\.de\.gz, line 2: empty line"):
        data.load_multi30k("de", "en", ["val"], tmp_path, files=files)
    with pytest.raises(ValueError, match="2 source sentences but 1 target"):
        data.ParallelText(("a", "b"), ("c",), "x")


def test_aliases_and_urls_pin_the_source_commit():
    assert data.canonical_split("test_2016") == "test_2016_flickr"
    assert all(f.url.startswith("https://") and data.MULTI30K_COMMIT in f.url for f in data.MULTI30K_FILES.values())
    assert len(data.MULTI30K_FILES) == len(data.MULTI30K_SPLITS) * len(data.MULTI30K_LANGUAGES)


@needs_shared
def test_shared_copy_has_the_published_line_counts():
    splits = data.load_multi30k("de", "en", ["train", "val", "test_2016", "test_2017"], SHARED)
    assert {name: len(split) for name, split in splits.items()} == {
        "train": 29000, "val": 1014, "test_2016_flickr": 1000, "test_2017_flickr": 1000}
    assert splits["train"].target[0] == "Two young, White males are outside near many bushes."
    french = data.load_multi30k("fr", "en", ["test_2018"], SHARED / "multi30k")["test_2018_flickr"]
    assert len(french) == data.MULTI30K_LINES["test_2018_flickr.fr.gz"] == 1071


def test_cldr_dates_are_disjoint_repeatable_translations():
    splits = data.cldr_dates("de", "en", {"train": 50, "val": 10, "test": 10}, seed=3)
    assert {k: len(v) for k, v in splits.items()} == {"train": 50, "val": 10, "test": 10}
    targets = [t for split in splits.values() for t in split.target]
    assert len(set(targets)) == 70  # distinct dates (a weekday-less long form never equals a full form)
    assert splits == data.cldr_dates("de", "en", {"train": 50, "val": 10, "test": 10}, seed=3)
    source, target = splits["train"].source[0], splits["train"].target[0]
    assert source.split()[-1] == target.split()[-1]  # the year is shared: "... Dezember 2060" / "..., 2060"
    with pytest.raises(ValueError, match="source language 'xx_YY' is not a CLDR locale known to Babel"):
        data.cldr_dates("xx_YY", "en")
