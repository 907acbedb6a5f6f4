"""MNIST (LeCun et al. 1998): the four canonical gzip-compressed IDX files, verified and parsed strictly. The one
MNIST loader of the experiments (sequential MNIST, image captioning).

    >>> data = load_mnist("../shared/data")                        # doctest: +SKIP
    >>> data.train_images.shape, data.train_labels[:5].tolist()    # doctest: +SKIP
    ((60000, 28, 28), [5, 0, 4, 1, 9])

- Files: `FILES`, each pinned by the SHA-256 of its `.gz` bytes (`experiments.datafiles`): read from `data_dir`
  (`data_dir/<name>` or `data_dir/mnist/<name>`, verified in place) or downloaded once into the cache
  (`cache_dir()/mnist/`) from the mirror PyTorch's torchvision reads, byte-identical to yann.lecun.com's files.
- IDX (big-endian): a uint32 magic, 2051 for images (then count, rows, columns) and 2049 for labels (then count),
  then the uint8 payload. `parse_idx` checks the magic, that the payload is exactly the size the header says
  (truncated or trailing bytes are errors), and `load_mnist` that images and labels agree in count and that every
  label is 0-9. A corrupt gzip stream is an error naming the file. With pinned digests none of these can happen to
  a verified canonical file; they guard files given with other digests (a test's fixture, a different copy).
- No official validation split: `split_validation` holds out a fixed random subset of the training images.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import zlib

import numpy as np

from experiments import datafiles
from experiments.datafiles import DataFile

FOLDER = "mnist"
_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
FILES = {
    "train_images": DataFile("train-images-idx3-ubyte.gz", _URL + "train-images-idx3-ubyte.gz",
                             "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
    "train_labels": DataFile("train-labels-idx1-ubyte.gz", _URL + "train-labels-idx1-ubyte.gz",
                             "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
    "test_images": DataFile("t10k-images-idx3-ubyte.gz", _URL + "t10k-images-idx3-ubyte.gz",
                            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
    "test_labels": DataFile("t10k-labels-idx1-ubyte.gz", _URL + "t10k-labels-idx1-ubyte.gz",
                            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
}
IMAGE_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
LABEL_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
ROWS = COLUMNS = 28
CITATION = "LeCun, Bottou, Bengio & Haffner 1998, Gradient-based learning applied to document recognition"


@dataclasses.dataclass(frozen=True)
class MNIST:
    """Images uint8 `[n, 28, 28]` (0 = background, 255 = ink) and labels uint8 `[n]`, in file order."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    record: dict  # the files read: names, paths, sha256, counts (for a run's config)

    def __repr__(self) -> str:  # the default repr would print the arrays
        return f"MNIST(train={len(self.train_labels)}, test={len(self.test_labels)})"


def parse_idx(data: bytes, magic: int, label: str) -> np.ndarray:
    """The uint8 array of an uncompressed IDX file's bytes `data` whose magic must be `magic` (2051: images
    `[count, rows, columns]`; 2049: labels `[count]`). Any deviation is a ValueError naming `label`."""
    dims = {IMAGE_MAGIC: 3, LABEL_MAGIC: 1}[magic]
    header = 4 * (1 + dims)
    if len(data) < header:
        raise ValueError(f"{label} is truncated: {len(data)} bytes, shorter than the {header}-byte IDX header")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        kind = "images" if magic == IMAGE_MAGIC else "labels"
        raise ValueError(f"{label} has IDX magic {found} (0x{found:08x}), expected {magic} (0x{magic:08x}, MNIST "
                         f"{kind}): not an MNIST {kind} file")
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims))
    if dims == 3 and shape[1:] != (ROWS, COLUMNS):
        raise ValueError(f"{label} holds images of {shape[1]}x{shape[2]} pixels, expected {ROWS}x{COLUMNS}")
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise ValueError(f"{label} is {what}: {len(data)} bytes, expected {expected} for shape {shape}")
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def encode_idx(array: np.ndarray) -> bytes:
    """The IDX bytes of a uint8 array: `[count, 28, 28]` images (magic 2051) or `[count]` labels (2049); the inverse
    of `parse_idx` (for fixtures)."""
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim not in (1, 3):
        raise ValueError(f"expected uint8 labels [count] or images [count, rows, columns], got {array.dtype} "
                         f"{array.shape}")
    magic = IMAGE_MAGIC if array.ndim == 3 else LABEL_MAGIC
    return b"".join(int(n).to_bytes(4, "big") for n in (magic,) + array.shape) + array.tobytes()


def decompress(data: bytes, label: str) -> bytes:
    """`gzip.decompress(data)`, with a corrupt or truncated stream a ValueError naming `label`."""
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as error:
        raise ValueError(f"{label} is not a valid gzip file ({type(error).__name__}: {error})") from None


def read_idx_file(file: DataFile, magic: int, data_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, dict]:
    """`(array, record)` of one verified `.gz` IDX file (see `parse_idx`)."""
    data, path = datafiles.read_verified(file, FOLDER, data_dir, expected=[f.name for f in FILES.values()])
    array = parse_idx(decompress(data, str(path)), magic, str(path))
    return array, {"name": file.name, "path": str(path), "sha256": file.sha256, "count": int(array.shape[0])}


def load_mnist(data_dir: str | os.PathLike | None = None) -> MNIST:
    """The four files (`FILES`) from `data_dir` or the cache (see the module docstring), parsed and checked."""
    arrays, records = {}, []
    for key, file in FILES.items():
        magic = IMAGE_MAGIC if key.endswith("images") else LABEL_MAGIC
        arrays[key], record = read_idx_file(file, magic, data_dir)
        records.append(record)
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if len(images) != len(labels):
            raise ValueError(f"{FILES[split + '_images'].name} holds {len(images)} images but "
                             f"{FILES[split + '_labels'].name} {len(labels)} labels")
        if len(labels) and labels.max() > 9:
            raise ValueError(f"{FILES[split + '_labels'].name} has label {int(labels.max())}; MNIST labels are 0-9")
    return MNIST(arrays["train_images"], arrays["train_labels"], arrays["test_images"], arrays["test_labels"],
                 {"dataset": "mnist", "citation": CITATION, "files": records})


def split_validation(count: int, validation_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`(train_indices, validation_indices)`: a fixed random `validation_size` of `range(count)` held out
    (`np.random.default_rng(seed)`), both sorted."""
    if not 0 < validation_size < count:
        raise ValueError(f"validation_size must be in (0, {count}), got {validation_size}")
    order = np.random.default_rng(seed).permutation(count)
    return np.sort(order[validation_size:]), np.sort(order[:validation_size])
