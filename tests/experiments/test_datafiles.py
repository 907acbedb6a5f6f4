"""The verified-file layer (`experiments.datafiles`): atomic verified downloads over `file://` and a real local HTTP
server (nothing left behind on a bad checksum, no request when the cache is good, a stale cached file replaced only
once the new bytes verify), the cache directory, and `fetch`/`read_verified` from a read-only `data_dir` (found,
found in its per-dataset subfolder, missing, empty, wrong checksum) or downloaded into a temporary cache."""

import hashlib
import http.server
import pathlib
import re
import threading

import pytest

from experiments import datafiles
from experiments.datafiles import DataFile, DownloadError, cache_dir, download

FIXTURE = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 50
FIXTURE_SHA = hashlib.sha256(FIXTURE.encode()).hexdigest()
WRONG_SHA = "0" * 64


@pytest.fixture
def server():
    """A real HTTP server on 127.0.0.1 (any free port) serving `files` by path and counting each request's path."""
    files, requests = {"/fixture.txt": FIXTURE.encode()}, []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # the method name http.server dispatches GET to
            requests.append(self.path)
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # keep the test output clean
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", files, requests
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


# -- download -------------------------------------------------------------------------------------------------------
def test_download_file_url_is_verified_and_leaves_no_temp_file(tmp_path):
    source = tmp_path / "source" / "fixture.txt"
    source.parent.mkdir()
    source.write_text(FIXTURE)
    destination = tmp_path / "cache" / "sub" / "fixture.txt"  # missing parents are created
    assert download(source.as_uri(), FIXTURE_SHA, destination) == destination
    assert destination.read_text() == FIXTURE
    assert sorted(p.name for p in destination.parent.iterdir()) == ["fixture.txt"]


def test_download_http(tmp_path, server):
    base, _, requests = server
    destination = download(f"{base}/fixture.txt", FIXTURE_SHA, tmp_path / "fixture.txt")
    assert destination.read_text() == FIXTURE
    assert requests == ["/fixture.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["fixture.txt"]


def test_download_checksum_mismatch_leaves_nothing(tmp_path, server):
    base, _, _ = server
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match=re.escape(f"checksum mismatch for {base}/fixture.txt: expected sha256 "
                                                   f"{WRONG_SHA}, got {FIXTURE_SHA}")):
        download(f"{base}/fixture.txt", WRONG_SHA, cache / "fixture.txt")
    assert list(cache.iterdir()) == []  # neither the temporary nor the final file


def test_download_existing_good_file_is_not_fetched(tmp_path, server):
    base, _, requests = server
    destination = tmp_path / "fixture.txt"
    destination.write_text(FIXTURE)
    before = destination.stat().st_mtime_ns
    download(f"{base}/fixture.txt", FIXTURE_SHA, destination)
    assert requests == []
    assert destination.stat().st_mtime_ns == before


def test_download_existing_wrong_file_is_replaced_atomically(tmp_path, server):
    base, files, requests = server
    destination = tmp_path / "fixture.txt"
    destination.write_text("truncated")
    files["/broken.txt"] = b"also wrong"
    again = pytest.warns(RuntimeWarning, match="downloading it again")
    with again, pytest.raises(ValueError, match="checksum mismatch"):
        download(f"{base}/broken.txt", FIXTURE_SHA, destination)
    assert destination.read_text() == "truncated"  # a failed download never touches the existing file
    with pytest.warns(RuntimeWarning, match=f"has sha256 {hashlib.sha256(b'truncated').hexdigest()}"):
        download(f"{base}/fixture.txt", FIXTURE_SHA, destination)
    assert destination.read_text() == FIXTURE
    assert requests == ["/broken.txt", "/fixture.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["fixture.txt"]


def test_download_network_errors_name_the_url(tmp_path, server):
    base, _, _ = server
    message = re.escape(f"could not download {base}/missing.txt: HTTP 404") + ".*--data-dir"
    with pytest.raises(DownloadError, match=message):
        download(f"{base}/missing.txt", FIXTURE_SHA, tmp_path / "a.txt")
    missing = (tmp_path / "nowhere.txt").as_uri()
    with pytest.raises(DownloadError, match=re.escape(f"could not download {missing}") + ".*--data-dir"):
        download(missing, FIXTURE_SHA, tmp_path / "b.txt")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="sha256 must be 64 lowercase hex digits, got 'abc'"):
        download(f"{base}/fixture.txt", "abc", tmp_path / "c.txt")


def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("RNNJAX_DATA", str(tmp_path))
    assert cache_dir() == tmp_path
    monkeypatch.delenv("RNNJAX_DATA")
    assert cache_dir() == pathlib.Path.home() / ".cache" / "rnnjax"


def test_sha256_file_streams_the_digest(tmp_path):
    path = tmp_path / "fixture.txt"
    path.write_text(FIXTURE)
    assert datafiles.sha256_file(path) == FIXTURE_SHA


# -- fetch / read_verified ------------------------------------------------------------------------------------------
FILE = DataFile("fixture.txt", "", FIXTURE_SHA)  # no public URL: data_dir only


def test_fetch_from_data_dir_and_its_folder_in_place(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNJAX_DATA", str(tmp_path / "cache"))  # proves nothing is downloaded or cached
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "fixture.txt").write_text(FIXTURE)
    assert datafiles.fetch(FILE, "plays", tmp_path / "flat") == tmp_path / "flat" / "fixture.txt"
    # The parent of per-dataset folders (as ../shared/data is laid out): data_dir/folder/name.
    (tmp_path / "parent" / "plays").mkdir(parents=True)
    (tmp_path / "parent" / "plays" / "fixture.txt").write_text(FIXTURE)
    path = datafiles.fetch(FILE, "plays", tmp_path / "parent")
    assert path == tmp_path / "parent" / "plays" / "fixture.txt"
    assert datafiles.read_verified(FILE, "plays", str(tmp_path / "parent")) == (FIXTURE.encode(), path)
    assert datafiles.locate(FILE, "plays", tmp_path / "parent") == path
    assert datafiles.locate(FILE, "other", tmp_path) is None
    assert not (tmp_path / "cache").exists()


def test_fetch_missing_file_names_what_the_folder_expects(tmp_path):
    message = (f"{tmp_path / 'fixture.txt'} does not exist: 'plays' expects fixture.txt, notes.txt in {tmp_path} "
               f"(or in its subfolder plays/)")
    for read in (datafiles.fetch, datafiles.read_verified):
        with pytest.raises(FileNotFoundError, match=re.escape(message)):
            read(FILE, "plays", tmp_path, expected=["fixture.txt", "notes.txt"])
    with pytest.raises(FileNotFoundError, match=re.escape("'plays' expects fixture.txt in")):
        datafiles.fetch(FILE, "plays", tmp_path)


def test_fetch_empty_file_in_data_dir(tmp_path):
    (tmp_path / "fixture.txt").write_bytes(b"")
    message = f"{tmp_path / 'fixture.txt'} is empty (0 bytes); expected fixture.txt with sha256 {FIXTURE_SHA}"
    for read in (datafiles.fetch, datafiles.read_verified):
        with pytest.raises(ValueError, match=re.escape(message)):
            read(FILE, "plays", tmp_path)


def test_fetch_wrong_checksum_in_data_dir_is_never_replaced(tmp_path):
    path = tmp_path / "plays" / "fixture.txt"
    path.parent.mkdir()
    path.write_text("a different play\n")
    actual = hashlib.sha256(b"a different play\n").hexdigest()
    online = DataFile("fixture.txt", "file:///unused", FIXTURE_SHA)
    message = (f"{path} has sha256 {actual}, expected {FIXTURE_SHA} (fixture.txt, from file:///unused): "
               f"a different or damaged copy")
    for read in (datafiles.fetch, datafiles.read_verified):
        with pytest.raises(ValueError, match=re.escape(message)):
            read(online, "plays", tmp_path)
    assert path.read_text() == "a different play\n"  # a user's file is never downloaded over
    with pytest.raises(ValueError, match=re.escape(f"expected {FIXTURE_SHA} (the play): a different")):
        datafiles.verify_file(path, FILE, "the play")


def test_fetch_without_data_dir_downloads_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNJAX_DATA", str(tmp_path / "cache"))
    source = tmp_path / "source.txt"
    source.write_text(FIXTURE)
    online = DataFile("fixture.txt", source.as_uri(), FIXTURE_SHA)
    cached = tmp_path / "cache" / "plays" / "fixture.txt"
    assert datafiles.fetch(online, "plays") == cached
    assert [p.name for p in cached.parent.iterdir()] == ["fixture.txt"]
    source.unlink()  # the second read must come from the cache
    assert datafiles.read_verified(online, "plays") == (FIXTURE.encode(), cached)
    with pytest.raises(DownloadError, match=re.escape(f"could not download {source.as_uri()}")):
        datafiles.fetch(online, "series/plays")  # a fresh folder, nothing cached there: the source is gone
    assert list((tmp_path / "cache" / "series" / "plays").iterdir()) == []


def test_fetch_without_data_dir_a_file_with_no_url(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNJAX_DATA", str(tmp_path / "cache"))
    message = "fixture.txt has no pinned download URL; pass the directory holding it as data_dir (--data-dir)"
    for read in (datafiles.fetch, datafiles.read_verified):
        with pytest.raises(FileNotFoundError, match=re.escape(message)):
            read(FILE, "plays")
    assert not (tmp_path / "cache").exists()
