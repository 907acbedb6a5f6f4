"""Verified data files: every file an experiment reads is pinned by the SHA-256 of its exact bytes, and is either
read from a directory the user gives (`--data-dir`) or downloaded once into a cache, never anything in between.

- `DataFile(name, url, sha256)`: a file of a dataset (its name in `data_dir` and in the cache, the URL it is
  downloaded from, empty when it has no public one, and the lowercase hex SHA-256 of its bytes).
- `fetch(file, folder, data_dir=None)` -> the path of the verified file; `read_verified(...)` -> `(bytes, path)`,
  read once and verified. With `data_dir`, the file is `data_dir/name` or `data_dir/folder/name` (so the parent of
  per-dataset folders, as `../shared/data` is laid out, works for every dataset), verified in place and never
  downloaded or modified. Without it, the file is downloaded into `cache_dir()/folder/name`.
- `download(url, sha256, destination)`: the atomic, verified download the cache is filled with (`http(s)://` or
  `file://`), built on `write_verified` (temporary file, digest, fsync, rename); `cache_dir()` (`$RNNJAX_DATA`,
  else `~/.cache/rnnjax`); `sha256_file(path)`; `verify_bytes` and `verify_file`, the one check every reader
  applies (empty, then the digest), with the messages they raise.

Not pooch: its downloaders speak only http(s), ftp, sftp and doi (no `file://`, which offline mirrors and the tests
use), it has no notion of a read-only user directory verified in place, and it would add requests and platformdirs
as dependencies for what this one small module does.

>>> file = DataFile("notes.txt", "", hashlib.sha256(b"hello\\n").hexdigest())
>>> verify_bytes(b"hello\\n", file, "notes.txt")
b'hello\\n'
>>> verify_bytes(b"", file, "notes.txt")
Traceback (most recent call last):
ValueError: notes.txt is empty (0 bytes); expected notes.txt with sha256 5891b5b5...be03
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.client
import os
import pathlib
import re
import secrets
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

_CHUNK = 1 << 20  # stream in 1 MiB pieces: memory stays flat whatever the file size
_TIMEOUT = 60.0  # seconds without progress before a download is abandoned
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


@dataclasses.dataclass(frozen=True)
class DataFile:
    """A file of a dataset: its name (in `data_dir` and in the cache), the URL it is downloaded from (empty when
    there is no public URL: then it can only be read from `data_dir`), and the lowercase hex SHA-256 of its exact
    bytes."""

    name: str
    url: str
    sha256: str


class DownloadError(OSError):
    """A file could not be fetched (network, HTTP status, missing `file://` path). Not raised for a wrong checksum,
    which is a `ValueError`: retrying cannot fix that."""


def cache_dir() -> pathlib.Path:
    """Where downloads go: `$RNNJAX_DATA` if set and non-empty, else `~/.cache/rnnjax`."""
    return pathlib.Path(os.environ.get("RNNJAX_DATA") or "~/.cache/rnnjax").expanduser()


def sha256_file(path: str | os.PathLike) -> str:
    """The lowercase hex SHA-256 of the file at `path`, streamed (memory stays flat whatever its size)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_bytes(data: bytes | bytearray, file: DataFile, label: str, what: str | None = None) -> bytes | bytearray:
    """`data`, after checking it is `file`'s exact bytes; `label` names where it was read (a path, or an archive
    member) and `what` describes the file in errors (default: its name). An empty `data` is a `ValueError` saying
    so (a truncated copy), a wrong digest one naming `label` and both digests."""
    _check(len(data), lambda: hashlib.sha256(data).hexdigest(), file, label, what)
    return data


def verify_file(path: str | os.PathLike, file: DataFile, what: str | None = None) -> pathlib.Path:
    """`path`, after checking it holds `file`'s exact bytes (streamed; the errors of `verify_bytes`)."""
    path = pathlib.Path(path)
    _check(path.stat().st_size, lambda: sha256_file(path), file, str(path), what)
    return path


def locate(file: DataFile, folder: str, data_dir: str | os.PathLike) -> pathlib.Path | None:
    """Where `file` is in `data_dir`: `data_dir/name`, else `data_dir/folder/name` (the parent of per-dataset
    folders), else None. Nothing is verified here."""
    for path in (pathlib.Path(data_dir) / file.name, pathlib.Path(data_dir) / folder / file.name):
        if path.is_file():
            return path
    return None


def fetch(file: DataFile, folder: str, data_dir: str | os.PathLike | None = None,
          expected: Sequence[str] | None = None) -> pathlib.Path:
    """The path of `file`, verified: from `data_dir` (see `locate`; read in place, never downloaded or modified)
    or, without `data_dir`, from `cache_dir()/folder/name`, downloaded there when missing.

    Raises `FileNotFoundError` for a file missing from `data_dir` (naming the path and what `folder` expects:
    `expected`, default the file's name) or, without `data_dir`, for a file with no URL (saying to pass
    `--data-dir`); `ValueError` for an empty file or a wrong checksum (naming the path and both digests);
    `DownloadError` when a download fails.
    """
    if data_dir is None:
        if not file.url:
            raise FileNotFoundError(f"{file.name} has no pinned download URL; pass the directory holding it as "
                                    f"data_dir (--data-dir)")
        return download(file.url, file.sha256, cache_dir() / folder / file.name)  # verified by download
    return verify_file(_find(file, folder, data_dir, expected), file)


def read_verified(file: DataFile, folder: str, data_dir: str | os.PathLike | None = None,
                  expected: Sequence[str] | None = None) -> tuple[bytes, pathlib.Path]:
    """`(bytes, path)` of `file`, found as `fetch` finds it (same errors), read once and those bytes verified."""
    path = fetch(file, folder) if data_dir is None else _find(file, folder, data_dir, expected)
    return verify_bytes(path.read_bytes(), file, str(path)), path


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
    downloaded again and replaced, with a warning: `destination` is meant to be a cache path (`fetch` never calls
    this on a user's `data_dir`), where a wrong file is a stale or truncated download that no reader can use, since
    every read verifies. The replacement is atomic and happens only after the new bytes verify; if the download
    fails, the existing file is left untouched.
    """
    if not isinstance(sha256, str) or not _SHA256_RE.fullmatch(sha256):
        raise ValueError(f"sha256 must be 64 lowercase hex digits, got {sha256!r}")
    destination = pathlib.Path(destination)
    if destination.is_file():
        actual = sha256_file(destination)
        if actual == sha256:
            return destination
        warnings.warn(f"{destination} has sha256 {actual}, expected {sha256}: downloading it again from {url}",
                      RuntimeWarning, stacklevel=2)
    destination.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(_read_url(url, sha256)) as chunks:
        return write_verified(chunks, sha256, destination, url)


def write_verified(chunks: Iterable[bytes], sha256: str, destination: str | os.PathLike, origin: str,
                   discarded: str = "download") -> pathlib.Path:
    """Writes the bytes of `chunks` to `destination` only if their SHA-256 is `sha256`, atomically, and returns
    its path (the write `download` and an archive's extraction share).

    The bytes are streamed to a temporary file next to `destination` (`{name}.{random}.tmp`) while being hashed,
    `fsync`ed, and renamed over `destination` with `os.replace` only if the digest matches; on a mismatch a
    `ValueError` names `origin` and both digests and says the `discarded` was discarded. Any exception, from
    `chunks` too, removes the temporary file and leaves `destination` as it was.
    """
    destination = pathlib.Path(destination)
    # A random suffix, not mkstemp: the file gets the usual umask permissions instead of mkstemp's 0600.
    temp = destination.parent / f"{destination.name}.{secrets.token_hex(8)}.tmp"
    digest = hashlib.sha256()
    try:
        with open(temp, "xb") as file:  # opened before `chunks` is read: a local failure keeps its own error
            for chunk in chunks:
                digest.update(chunk)
                file.write(chunk)
            file.flush()
            os.fsync(file.fileno())  # the bytes are on disk before the name points at them
        actual = digest.hexdigest()
        if actual != sha256:
            raise ValueError(f"checksum mismatch for {origin}: expected sha256 {sha256}, got {actual}; "
                             f"the {discarded} was discarded")
        # No directory fsync (unlike checkpoints): a rename lost to a power cut only costs a second download.
        os.replace(temp, destination)
    finally:
        temp.unlink(missing_ok=True)  # after os.replace the name is gone, so this only removes a failed write
    return destination


# -- helpers --------------------------------------------------------------------------------------------------------
def _find(file: DataFile, folder: str, data_dir: str | os.PathLike, expected: Sequence[str] | None) -> pathlib.Path:
    """`locate`, with a missing file a `FileNotFoundError` naming both places looked and what `folder` expects."""
    path = locate(file, folder, data_dir)
    if path is None:
        names = ", ".join(expected or (file.name,))
        raise FileNotFoundError(f"{pathlib.Path(data_dir) / file.name} does not exist: {folder!r} expects {names} "
                                f"in {data_dir} (or in its subfolder {folder}/)")
    return path


def _check(size: int, digest: Callable[[], str], file: DataFile, label: str, what: str | None) -> None:
    what = file.name if what is None else what
    # Checked before the checksum: "empty" says what went wrong (a truncated copy) better than two digests do.
    if not size:
        raise ValueError(f"{label} is empty (0 bytes); expected {what} with sha256 {file.sha256}")
    actual = digest()
    if actual != file.sha256:
        origin = f", from {file.url}" if file.url else ""
        raise ValueError(f"{label} has sha256 {actual}, expected {file.sha256} ({what}{origin}): a different or "
                         f"damaged copy")


def _read_url(url: str, sha256: str) -> Iterator[bytes]:
    """The bytes at `url` in pieces. Only the network side is wrapped (`_network`), so a local write failure (disk
    full, permissions) keeps its own error."""
    with _network(url, sha256, lambda: urllib.request.urlopen(url, timeout=_TIMEOUT)) as response:
        while chunk := _network(url, sha256, lambda: response.read(_CHUNK)):
            yield chunk


def _network(url: str, sha256: str, call: Callable[[], Any]) -> Any:
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
                            f"(data_dir=... in Python)") from error
