"""The MNIST loader: strict IDX parsing (magic, sizes, truncation, gzip), verification against pinned digests, the
validation split; on a 100-image fixture the tests write, and on ../shared/data when it is there."""

import gzip
import hashlib
import pathlib

import numpy as np
import pytest

from experiments import mnist
from experiments.datafiles import DataFile

SHARED = pathlib.Path(__file__).resolve().parents[3] / "shared" / "data"


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    """IDX bytes with any magic (a wrong one for the tests of the check)."""
    header = magic.to_bytes(4, "big") + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fixture(folder: pathlib.Path, monkeypatch, count: int = 100, files: dict | None = None) -> dict:
    """Four .gz IDX files of `count` random images and labels in `folder`, `mnist.FILES` pinned to them. `files`
    replaces some files' uncompressed (or, for keys ending in ".gz", compressed) bytes."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=count, dtype=np.uint8)
    contents = {"train_images": mnist.encode_idx(images), "train_labels": mnist.encode_idx(labels),
                "test_images": mnist.encode_idx(images[::-1]), "test_labels": mnist.encode_idx(labels[::-1])}
    folder.mkdir(parents=True, exist_ok=True)
    for key, file in mnist.FILES.items():
        data = gzip.compress((files or {}).get(key, contents[key]), mtime=0)
        data = (files or {}).get(key + ".gz", data)
        (folder / file.name).write_bytes(data)
        monkeypatch.setitem(mnist.FILES, key, DataFile(file.name, "", hashlib.sha256(data).hexdigest()))
    return {"images": images, "labels": labels}


def test_a_fixture_loads_in_file_order(tmp_path, monkeypatch):
    written = write_fixture(tmp_path / "mnist", monkeypatch)
    data = mnist.load_mnist(tmp_path)  # the parent of the per-dataset folder works, as ../shared/data is laid out
    np.testing.assert_array_equal(data.train_images, written["images"])
    np.testing.assert_array_equal(data.test_labels, written["labels"][::-1])
    assert data.train_images.shape == (100, 28, 28) and data.train_images.dtype == np.uint8
    assert [f["count"] for f in data.record["files"]] == [100] * 4


@pytest.mark.parametrize("files, message", [
    ({"train_images": idx_bytes(np.zeros((3, 28, 28)), 2049)}, r"magic 2049 .*expected 2051"),
    ({"train_labels": idx_bytes(np.zeros((3, 28, 28)), 2051)}, r"magic 2051 .*expected 2049"),
    ({"train_images": idx_bytes(np.zeros((100, 28, 28)), 2051)[:-5]}, "is truncated: 78411 bytes, expected 78416"),
    ({"test_images": b"\x00\x00\x08"}, "shorter than the 16-byte IDX header"),
    ({"test_labels": idx_bytes(np.zeros(100), 2049) + b"\x00"}, "longer than its header says"),
    ({"train_images": idx_bytes(np.zeros((100, 32, 32)), 2051)}, "32x32 pixels, expected 28x28"),
    ({"train_labels": idx_bytes(np.zeros(99), 2049)}, "holds 100 images but train-labels-idx1-ubyte.gz 99 labels"),
    ({"test_labels": idx_bytes(np.full(100, 10), 2049)}, "has label 10; MNIST labels are 0-9"),
    ({"test_images.gz": gzip.compress(b"x" * 1000)[:-12]}, "t10k-images-idx3-ubyte.gz is not a valid gzip file"),
    ({"train_labels.gz": b"\x1f\x8b\x08\x00" + b"\xff" * 40}, "train-labels-idx1-ubyte.gz is not a valid gzip"),
])
def test_bad_files_are_clear_errors_naming_the_file(tmp_path, monkeypatch, files, message):
    write_fixture(tmp_path, monkeypatch, files=files)
    with pytest.raises(ValueError, match=message):
        mnist.load_mnist(tmp_path)


def test_a_file_that_is_not_the_pinned_one_is_rejected(tmp_path, monkeypatch):
    write_fixture(tmp_path, monkeypatch)
    monkeypatch.setitem(mnist.FILES, "test_labels", DataFile("t10k-labels-idx1-ubyte.gz", "", "0" * 64))
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte.gz has sha256 .* expected 0000"):
        mnist.load_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte.gz does not exist"):
        mnist.load_mnist(tmp_path)


def test_encode_idx_round_trips():
    labels = np.arange(10, dtype=np.uint8)
    assert mnist.encode_idx(labels) == idx_bytes(labels, 2049)
    np.testing.assert_array_equal(mnist.parse_idx(mnist.encode_idx(labels), 2049, "x"), labels)
    with pytest.raises(ValueError, match="expected uint8"):
        mnist.encode_idx(np.zeros((2, 3)))


def test_validation_split_is_fixed_and_disjoint():
    train, valid = mnist.split_validation(100, 10, seed=3)
    again = mnist.split_validation(100, 10, seed=3)
    assert np.array_equal(train, again[0]) and np.array_equal(valid, again[1])
    assert len(valid) == 10 and not set(train) & set(valid) and len(set(train) | set(valid)) == 100
    assert not np.array_equal(valid, mnist.split_validation(100, 10, seed=4)[1])
    with pytest.raises(ValueError, match="validation_size"):
        mnist.split_validation(100, 100, seed=0)


@pytest.mark.skipif(not (SHARED / "mnist").is_dir(), reason="../shared/data/mnist is not there")
def test_the_canonical_files_from_shared_data():
    data = mnist.load_mnist(SHARED)
    assert data.train_images.shape == (60000, 28, 28) and data.test_images.shape == (10000, 28, 28)
    # SOURCES.md's label counts for 0-9
    assert np.bincount(data.test_labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert data.train_labels[:5].tolist() == [5, 0, 4, 1, 9]
