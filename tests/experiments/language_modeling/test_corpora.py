"""Corpora: the registry's checksums and split sizes against the real files in shared/data, downloads into the
cache (`file://` sources), the embedded pydoc corpus, zip-archived corpora (enwik8, text8) on small fake archives
written here, and a clear error for every way a file can be wrong. The download layer itself
(`experiments.datafiles`: atomic verified downloads over `file://` and HTTP) is tested in tests/experiments/
test_datafiles.py."""

import dataclasses
import hashlib
import pathlib
import platform
import re
import zipfile

import pytest

from experiments.language_modeling import corpora
from experiments.language_modeling.corpora import ByteSplit, Corpus, CorpusFile, load_corpus

DATA = pathlib.Path(__file__).resolve().parents[4] / "shared" / "data"  # next to the checkout
FIXTURE = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 50
FIXTURE_SHA = hashlib.sha256(FIXTURE.encode()).hexdigest()
WRONG_SHA = "0" * 64


def shared(name: str) -> pathlib.Path:
    """A corpus folder of shared/data, or a skip when this checkout has no shared data next to it."""
    if not (DATA / name).is_dir():
        pytest.skip(f"no shared data at {DATA / name}")
    return DATA / name


def one_file_corpus(name: str, url: str, sha256: str, split=(90, 10)) -> Corpus:
    return Corpus(name=name, files=(CorpusFile("input.txt", url, sha256),), citation="@misc{test}", split=split)


# -- the real corpora -----------------------------------------------------------------------------------------------
def test_ptb_from_data_dir_has_the_published_sizes():
    text = load_corpus("ptb", data_dir=shared("ptb"))
    # (sentences, words before <eos>, characters); words + sentences = the 929,589 / 73,760 / 82,430 tokens incl.
    # <eos> that SOURCES.md and the PTB literature give.
    sizes = {"train": (42068, 887521, 5101618), "valid": (3370, 70390, 399782), "test": (3761, 78669, 449945)}
    for split, (lines, words, chars) in sizes.items():
        split_text = getattr(text, split)
        assert (split_text.count("\n"), len(split_text.split()), len(split_text)) == (lines, words, chars), split
    assert len(set(text.train.split()) | {"<eos>"}) == 10000  # the standard 10k vocabulary
    assert [f["sha256"] for f in text.record["files"]] == [f.sha256 for f in corpora.CORPORA["ptb"].files]
    assert text.record["characters"] == {"train": 5101618, "valid": 399782, "test": 449945}


def test_tinyshakespeare_from_data_dir_splits_90_10():
    directory = shared("tinyshakespeare")
    full = (directory / "input.txt").read_text(encoding="utf-8")
    text = load_corpus("tinyshakespeare", data_dir=directory)
    assert len(full) == 1115394
    assert (len(text.train), len(text.valid)) == (1003854, 111540) == (int(len(full) * 0.9), len(full) - 1003854)
    assert text.train + text.valid == full
    assert text.test == text.valid  # nanoGPT's convention: no separate test set
    assert text.record["split"] == [90, 10]


def test_load_corpus_downloads_into_the_cache(monkeypatch, tmp_path):
    """The real tinyshakespeare entry with only its URL swapped for a file:// copy: downloads into
    $RNNJAX_DATA/tinyshakespeare/, then loads from there without the source."""
    source = tmp_path / "source.txt"
    source.write_text(FIXTURE)
    corpus = one_file_corpus("tinyshakespeare", source.as_uri(), FIXTURE_SHA)
    if DATA.is_dir():  # the registry's own hash, so a typo in it fails here too
        source.write_bytes((shared("tinyshakespeare") / "input.txt").read_bytes())
        real = corpora.CORPORA["tinyshakespeare"]
        corpus = dataclasses.replace(real, files=(dataclasses.replace(real.files[0], url=source.as_uri()),))
    monkeypatch.setitem(corpora.CORPORA, "tinyshakespeare", corpus)
    monkeypatch.setenv("RNNJAX_DATA", str(tmp_path / "cache"))
    text = load_corpus("tinyshakespeare")
    cached = tmp_path / "cache" / "tinyshakespeare" / "input.txt"
    assert [p.name for p in cached.parent.iterdir()] == ["input.txt"]
    assert cached.read_bytes() == source.read_bytes()
    assert text.train + text.valid == source.read_text()
    source.unlink()  # the second load must come from the cache
    assert load_corpus("tinyshakespeare") == text
    assert text.record["files"] == [{"name": "input.txt", "url": source.as_uri(), "sha256": corpus.files[0].sha256}]


def test_pydoc_corpus_is_embedded_deterministic_and_recorded(monkeypatch, tmp_path):
    from pydoc_data.topics import topics

    monkeypatch.setenv("RNNJAX_DATA", str(tmp_path))  # proves nothing is downloaded or cached
    first, second = load_corpus("pydoc"), load_corpus("pydoc")
    assert first == second
    full = "\n\n".join(topics[key].rstrip() for key in sorted(topics)) + "\n"
    assert first.train + first.valid + first.test == full
    n = len(full)
    assert (len(first.train), len(first.valid)) == (n * 90 // 100, n * 95 // 100 - n * 90 // 100)
    assert len(first.test) > 0 and "The \"if\" statement" in full
    assert first.record["sha256"] == hashlib.sha256(full.encode("utf-8")).hexdigest()
    assert first.record["python_version"] == platform.python_version()
    assert first.record["split"] == [90, 5, 5] and "Python Software Foundation" in first.record["citation"]
    assert list(tmp_path.iterdir()) == []
    assert load_corpus("pydoc", data_dir=tmp_path / "ignored") == first


# -- errors ---------------------------------------------------------------------------------------------------------
def test_unknown_corpus():
    with pytest.raises(ValueError, match="unknown corpus 'wikitext'; known corpora: enwik8, ptb, pydoc, text8, "
                                         "tinyshakespeare"):
        load_corpus("wikitext")


def test_missing_file_in_data_dir(tmp_path):
    message = (f"{tmp_path / 'ptb.train.txt'} does not exist: corpus 'ptb' expects the files "
               "ptb.train.txt, ptb.valid.txt, ptb.test.txt")
    with pytest.raises(FileNotFoundError, match=re.escape(message)):
        load_corpus("ptb", data_dir=tmp_path)


def test_wrong_checksum_in_data_dir(tmp_path):
    (tmp_path / "ptb.train.txt").write_text(" a different corpus \n")
    actual = hashlib.sha256(b" a different corpus \n").hexdigest()
    expected = corpora.CORPORA["ptb"].files[0].sha256
    with pytest.raises(ValueError, match=f"ptb.train.txt has sha256 {actual}, expected {expected}"):
        load_corpus("ptb", data_dir=tmp_path)
    assert (tmp_path / "ptb.train.txt").read_text() == " a different corpus \n"  # a user's file is never replaced


def test_empty_file(tmp_path):
    (tmp_path / "input.txt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"input.txt is empty \(0 bytes\)"):
        load_corpus("tinyshakespeare", data_dir=tmp_path)


def test_non_utf8_file(monkeypatch, tmp_path):
    data = "caf\u00e9 au lait".encode("latin-1")  # the é is the single byte 0xe9 at offset 3
    (tmp_path / "input.txt").write_bytes(data)
    bad = one_file_corpus("latin1", "file:///unused", hashlib.sha256(data).hexdigest())
    monkeypatch.setitem(corpora.CORPORA, "latin1", bad)
    with pytest.raises(ValueError, match=r"input.txt is not valid UTF-8: .* at byte offset 3 \(bytes b'\\xe9'\)"):
        load_corpus("latin1", data_dir=tmp_path)


# -- zip-archived corpora (enwik8, text8) on small fakes --------------------------------------------------------------
# The real entries with only their URL, checksums and split swapped: the loader's member name, archive name and
# encoding are the registry's own. 10,240 bytes holding every byte value, cut 90/5/5 like enwik8's 90M/5M/5M.
ZIP_DATA = bytes(range(256)) * 40
ZIP_SPLIT = ByteSplit(train=9216, valid=512, test=512)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_zip(path: pathlib.Path, members: dict[str, bytes]) -> str:
    """A deflated zip archive of `members` at `path`; returns its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return sha(path.read_bytes())


def fake_zip_corpus(monkeypatch, name: str, url: str, archive_sha: str, member_sha: str,
                    split: ByteSplit = ZIP_SPLIT, **changes) -> Corpus:
    real = corpora.CORPORA[name]
    file = dataclasses.replace(real.files[0], url=url, sha256=member_sha,
                               archive=dataclasses.replace(real.files[0].archive, sha256=archive_sha))
    corpus = dataclasses.replace(real, files=(file,), split=split, **changes)
    monkeypatch.setitem(corpora.CORPORA, name, corpus)
    return corpus


@pytest.fixture
def cache(monkeypatch, tmp_path):
    monkeypatch.setenv("RNNJAX_DATA", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_enwik8_and_text8_registry_entries():
    for name, encoding in (("enwik8", "latin-1"), ("text8", "ascii")):
        corpus = corpora.CORPORA[name]
        (file,) = corpus.files
        assert (corpus.name, file.name, file.archive.name) == (name, name, f"{name}.zip")
        assert file.url == f"http://mattmahoney.net/dc/{name}.zip"
        assert corpus.split == ByteSplit(90_000_000, 5_000_000, 5_000_000) and corpus.encoding == encoding
        assert "mattmahoney.net" in corpus.citation
    assert corpora.CORPORA["enwik8"].files[0].sha256.startswith("2b49720e")
    assert corpora.CORPORA["enwik8"].files[0].archive.sha256.startswith("547994d9")
    assert corpora.CORPORA["text8"].files[0].sha256.startswith("6e890197")
    assert corpora.CORPORA["text8"].files[0].archive.sha256.startswith("a6640522")


def test_zip_corpus_is_downloaded_extracted_verified_and_cached(monkeypatch, tmp_path, cache):
    source = tmp_path / "source" / "enwik8.zip"
    archive_sha = write_zip(source, {"enwik8": ZIP_DATA})
    url = source.as_uri()
    fake_zip_corpus(monkeypatch, "enwik8", url, archive_sha, sha(ZIP_DATA))
    text = load_corpus("enwik8")
    assert [p.name for p in (cache / "enwik8").iterdir()] == ["enwik8"]  # the archive is gone, no temporary left
    assert (cache / "enwik8" / "enwik8").read_bytes() == ZIP_DATA
    # Byte level: exact cuts, and every byte value is the character of the same code.
    assert (text.train, text.valid, text.test) == (ZIP_DATA[:9216].decode("latin-1"),
                                                   ZIP_DATA[9216:9728].decode("latin-1"),
                                                   ZIP_DATA[9728:].decode("latin-1"))
    assert [ord(c) for c in text.train[:256]] == list(range(256))
    assert (text.train + text.valid + text.test).encode("latin-1") == ZIP_DATA
    assert text.record["split"] == {"bytes": {"train": 9216, "valid": 512, "test": 512}}
    assert text.record["characters"] == {"train": 9216, "valid": 512, "test": 512}
    assert text.record["encoding"] == "latin-1"
    assert text.record["files"] == [{"name": "enwik8", "url": url, "sha256": sha(ZIP_DATA),
                                     "archive": {"name": "enwik8.zip", "sha256": archive_sha}}]
    source.unlink()  # the second load must come from the cache
    assert load_corpus("enwik8") == text


def test_zip_member_checksum_mismatch_leaves_nothing(monkeypatch, tmp_path, cache):
    archive_sha = write_zip(tmp_path / "enwik8.zip", {"enwik8": ZIP_DATA})
    url = (tmp_path / "enwik8.zip").as_uri()
    fake_zip_corpus(monkeypatch, "enwik8", url, archive_sha, WRONG_SHA)
    message = (f"checksum mismatch for member 'enwik8' of {url}: expected sha256 {WRONG_SHA}, "
               f"got {sha(ZIP_DATA)}; the extracted file was discarded")
    with pytest.raises(ValueError, match=re.escape(message)):
        load_corpus("enwik8")
    assert list((cache / "enwik8").iterdir()) == []
    fake_zip_corpus(monkeypatch, "enwik8", url, WRONG_SHA, sha(ZIP_DATA))  # the archive's own checksum
    with pytest.raises(ValueError, match=re.escape(f"checksum mismatch for {url}: expected sha256 {WRONG_SHA}, "
                                                   f"got {archive_sha}")):
        load_corpus("enwik8")
    assert list((cache / "enwik8").iterdir()) == []


def test_zip_without_the_member(monkeypatch, tmp_path, cache):
    archive_sha = write_zip(tmp_path / "data" / "enwik8.zip", {"enwik9.txt": ZIP_DATA})
    url = (tmp_path / "data" / "enwik8.zip").as_uri()
    fake_zip_corpus(monkeypatch, "enwik8", url, archive_sha, sha(ZIP_DATA))
    with pytest.raises(ValueError, match=re.escape(f"the zip archive {url} has no member 'enwik8' "
                                                   f"(it has 'enwik9.txt')")):
        load_corpus("enwik8")
    assert list((cache / "enwik8").iterdir()) == []
    archive = tmp_path / "data" / "enwik8.zip"
    with pytest.raises(ValueError, match=re.escape(f"the zip archive {archive} has no member 'enwik8'")):
        load_corpus("enwik8", data_dir=tmp_path / "data")


def test_zip_corpus_from_data_dir_with_only_the_archive(monkeypatch, tmp_path, cache):
    data_dir = tmp_path / "data"
    archive_sha = write_zip(data_dir / "enwik8.zip", {"enwik8": ZIP_DATA})
    fake_zip_corpus(monkeypatch, "enwik8", "file:///unused", archive_sha, sha(ZIP_DATA))
    text = load_corpus("enwik8", data_dir=data_dir)
    assert (text.train + text.valid + text.test).encode("latin-1") == ZIP_DATA
    assert len(text.train) == 9216 and len(text.test) == 512
    assert [p.name for p in data_dir.iterdir()] == ["enwik8.zip"]  # read in place, nothing extracted
    assert not cache.exists()
    # The archive is verified too, and so is the member read from it.
    fake_zip_corpus(monkeypatch, "enwik8", "file:///unused", WRONG_SHA, sha(ZIP_DATA))
    with pytest.raises(ValueError, match=re.escape(f"{data_dir / 'enwik8.zip'} has sha256 {archive_sha}, expected "
                                                   f"{WRONG_SHA} (the archive of enwik8 of corpus 'enwik8'")):
        load_corpus("enwik8", data_dir=data_dir)
    fake_zip_corpus(monkeypatch, "enwik8", "file:///unused", archive_sha, WRONG_SHA)
    with pytest.raises(ValueError, match=re.escape(f"member 'enwik8' of {data_dir / 'enwik8.zip'} has sha256 "
                                                   f"{sha(ZIP_DATA)}, expected {WRONG_SHA}")):
        load_corpus("enwik8", data_dir=data_dir)


def test_zip_corpus_from_data_dir_with_the_extracted_file(monkeypatch, tmp_path):
    (tmp_path / "enwik8").write_bytes(ZIP_DATA)
    fake_zip_corpus(monkeypatch, "enwik8", "file:///unused", WRONG_SHA, sha(ZIP_DATA))  # the archive is not read
    text = load_corpus("enwik8", data_dir=tmp_path)
    assert (text.train + text.valid + text.test).encode("latin-1") == ZIP_DATA
    (tmp_path / "enwik8").write_bytes(ZIP_DATA[:-1])
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'enwik8'} has sha256 {sha(ZIP_DATA[:-1])}, "
                                                   f"expected {sha(ZIP_DATA)}")):
        load_corpus("enwik8", data_dir=tmp_path)
    (tmp_path / "enwik8").unlink()
    message = (f"neither {tmp_path / 'enwik8'} nor {tmp_path / 'enwik8.zip'} exists: corpus 'enwik8' expects the "
               f"files enwik8 (or its archive enwik8.zip) in {tmp_path}")
    with pytest.raises(FileNotFoundError, match=re.escape(message)):
        load_corpus("enwik8", data_dir=tmp_path)


def test_cached_member_with_wrong_bytes_is_extracted_again(monkeypatch, tmp_path, cache):
    archive_sha = write_zip(tmp_path / "text8.zip", {"text8": b"anarchism originated as a term " * 40})
    data = b"anarchism originated as a term " * 40  # 1,240 ASCII characters
    fake_zip_corpus(monkeypatch, "text8", (tmp_path / "text8.zip").as_uri(), archive_sha, sha(data),
                    split=ByteSplit(1116, 62, 62))
    (cache / "text8").mkdir(parents=True)
    (cache / "text8" / "text8").write_bytes(b"truncated")
    with pytest.warns(RuntimeWarning, match=f"has sha256 {sha(b'truncated')}, expected {sha(data)}: extracting"):
        text = load_corpus("text8")
    assert text.train + text.valid + text.test == data.decode("ascii")
    assert (len(text.train), len(text.valid), len(text.test)) == (1116, 62, 62)
    assert text.record["encoding"] == "ascii"
    assert [p.name for p in (cache / "text8").iterdir()] == ["text8"]
    assert (cache / "text8" / "text8").read_bytes() == data


def test_text8_is_strict_ascii(monkeypatch, tmp_path):
    data = bytearray(b"a b c d " * 155)  # 1,240 bytes
    data[1116 + 7] = 0xE9  # in the valid split: the offset is counted from the start of the file
    (tmp_path / "text8").write_bytes(bytes(data))
    fake_zip_corpus(monkeypatch, "text8", "file:///unused", WRONG_SHA, sha(bytes(data)),
                    split=ByteSplit(1116, 62, 62))
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'text8'} is not valid ASCII: ordinal not in "
                                                   "range(128) at byte offset 1123 (bytes b'\\xe9')")):
        load_corpus("text8", data_dir=tmp_path)


def test_byte_split_must_fit_the_files(monkeypatch, tmp_path):
    (tmp_path / "enwik8").write_bytes(ZIP_DATA)
    fake_zip_corpus(monkeypatch, "enwik8", "file:///unused", WRONG_SHA, sha(ZIP_DATA), split=ByteSplit(100, 10, 10))
    with pytest.raises(ValueError, match=re.escape("corpus 'enwik8': its files hold 10240 bytes, but its split "
                                                   "ByteSplit(train=100, valid=10, test=10) needs exactly 120")):
        load_corpus("enwik8", data_dir=tmp_path)
    fake_zip_corpus(monkeypatch, "enwik8", "file:///unused", WRONG_SHA, sha(ZIP_DATA), split=ByteSplit(10240, 0, 0))
    with pytest.raises(ValueError, match="a ByteSplit needs 3 positive integer sizes"):
        load_corpus("enwik8", data_dir=tmp_path)
    fake_zip_corpus(monkeypatch, "enwik8", "file:///unused", WRONG_SHA, sha(ZIP_DATA), encoding="cp1252")
    with pytest.raises(ValueError, match="encoding must be one of utf-8, ascii, latin-1, got 'cp1252'"):
        load_corpus("enwik8", data_dir=tmp_path)
    # A byte split of UTF-8 text that cuts a character in two is an error, not a silently mangled character.
    text = "caf\u00e9 ".encode("utf-8") * 2  # 12 bytes; the first é is bytes 3-4
    (tmp_path / "enwik8").write_bytes(text)
    fake_zip_corpus(monkeypatch, "enwik8", "file:///unused", WRONG_SHA, sha(text), split=ByteSplit(4, 4, 4),
                    encoding="utf-8")
    with pytest.raises(ValueError, match=r"enwik8 is not valid UTF-8: unexpected end of data at byte offset 3"):
        load_corpus("enwik8", data_dir=tmp_path)
