"""Checkpoints that survive a kill: one self-checking file per step, written atomically.

Format. A checkpoint is one uncompressed zip file, `checkpoint_{step:09d}.npz`, readable with plain `np.load`:

    manifest.json                   # {"format", "version", "step", "metadata", "leaves": [...]} as UTF-8 JSON
    state['params'].weight_ih.npy   # one .npy member per leaf of the state, named "state" + its keystr path,
    ...                             # in `jax.tree_util.tree_flatten_with_path` order
    checksum.sha256                 # hex SHA-256 over every member above (name, length and bytes, in order)

Each manifest entry records a leaf's `path`, logical `dtype` and `shape`, the dtype it is `stored` as and, for a
typed PRNG key, its `key_impl`. `.npy` cannot describe every JAX dtype, so two kinds of leaf are stored as raw
bits: bfloat16 (and the other ml_dtypes types) as the unsigned integer of the same width, viewed back on load, so
every bit (NaN payloads, -0.0) round-trips; typed PRNG keys (`jax.random.key`, dtype `key<fry>`) as
`jax.random.key_data`, re-wrapped with `jax.random.wrap_key_data` and the recorded impl. Python scalars are
stored as `jnp.asarray` would make them (int32/float32 unless x64 is enabled). `metadata` is any JSON-serialisable
dict (config, data-iterator position, ...); JSON turns tuples into lists and dict keys into strings.

Guarantees.
- Atomic: the file is written to a temporary name in the same directory, flushed and `fsync`ed, renamed over the
  final name with `os.replace`, and the directory is `fsync`ed. A write that fails part-way (disk full, read-only
  directory, a directory path that is a file, an I/O error) raises one `CheckpointWriteError` (an `OSError` with the
  underlying `errno`) naming the step, the file and the reason; the temporary file is removed, and no earlier
  checkpoint is touched (the manager deletes old ones only after a new one is complete). A reader therefore sees
  either the old set of files or the new complete file, never a partial one, even if the writer is killed at any
  instruction or the machine loses power after `save_checkpoint` returns. A killed writer can leave a temporary
  file behind; it never matches the checkpoint name, is ignored by `CheckpointManager.steps`, and is removed by the
  next `CheckpointManager.save`.
- Self-checking: a file damaged after the fact (truncated copy, flipped bit) fails the zip's CRC-32 or the SHA-256
  and raises `CorruptCheckpointError`; `CheckpointManager.restore_latest` warns and falls back to the previous
  checkpoint. A *mismatch* with the target (structure, shape, dtype) raises `CheckpointError` and is never
  skipped: it means the code changed, and silently resuming from an older step or from scratch would hide that.

Not guaranteed: several processes saving into one directory at once (one writer per directory, as in training),
and arrays that are not fully addressable from this process (multi-host sharding).

Example:

    >>> import tempfile
    >>> import jax, jax.numpy as jnp
    >>> state = {"params": jnp.ones((2, 3)), "rng": jax.random.key(0), "step": 10}
    >>> with tempfile.TemporaryDirectory() as directory:
    ...     manager = CheckpointManager(directory, keep=2)
    ...     for step in (10, 20, 30):
    ...         _ = manager.save(step, state, {"epoch": step // 10})
    ...     restored, metadata, step = manager.restore_latest(target=state)
    ...     manager.steps(), metadata, step, restored["params"].shape
    ([20, 30], {'epoch': 3}, 30, (2, 3))
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import pathlib
import re
import secrets
import warnings
import zipfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax import _checks

_FORMAT = "rnnjax.train.checkpoint"
_VERSION = 1
_MANIFEST = "manifest.json"
_CHECKSUM = "checksum.sha256"
_ROOT = "state"  # leaf names read as Python expressions: state['params'].weight_ih
_CHECKPOINT_RE = re.compile(r"checkpoint_(\d+)\.npz")
_TEMP_RE = re.compile(r"checkpoint_\d+\.npz\.[0-9a-f]+\.tmp")
# A fixed timestamp makes the file a pure function of its contents: saving the same state twice gives the same bytes.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


class CheckpointError(ValueError):
    """A checkpoint cannot be restored into the given target: missing file, or a structure/shape/dtype mismatch."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint file is damaged (truncated, bit-flipped, not a checkpoint): `restore_latest` skips these."""


class CheckpointWriteError(OSError):
    """Saving a checkpoint failed in the file system (disk full, read-only directory, a path that is a file, an
    I/O error): nothing was written under the checkpoint's name, the temporary file is removed where the file
    system allows it, and every earlier checkpoint is untouched. `errno` is the underlying error's."""


def checkpoint_path(directory: str | os.PathLike, step: int) -> pathlib.Path:
    """The file `save_checkpoint(directory, step, ...)` writes: `directory/checkpoint_{step:09d}.npz`."""
    return pathlib.Path(directory) / f"checkpoint_{_check_step(step):09d}.npz"


def save_checkpoint(directory: str | os.PathLike, step: int, state: Any, metadata: dict | None = None) -> pathlib.Path:
    """Writes `state` (any pytree of arrays, typed PRNG keys and Python scalars), `metadata` (a JSON-serialisable
    dict) and `step` to `directory/checkpoint_{step:09d}.npz`, atomically (see the module docstring), replacing
    any checkpoint of the same step. Returns the file's path."""
    path = checkpoint_path(directory, step)
    step = int(step)
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
    leaves, entries = [], []
    for key_path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        name = _ROOT + jax.tree_util.keystr(key_path)
        stored, entry = _encode_leaf(name, leaf)
        leaves.append((name + ".npy", _npy_bytes(stored)))
        entries.append(entry)
    names = [member for member, _ in leaves]
    if len(set(names)) != len(names):
        duplicate = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"two leaves of state have the same path {duplicate[:-4]!r}: their names must be distinct")
    manifest = {"format": _FORMAT, "version": _VERSION, "step": step, "metadata": metadata, "leaves": entries}
    try:
        manifest_bytes = json.dumps(manifest, indent=1).encode("utf-8")
    except (TypeError, ValueError) as error:
        raise TypeError(f"metadata must be JSON-serialisable: {error}") from None
    members = [(_MANIFEST, manifest_bytes), *leaves]
    members.append((_CHECKSUM, _digest(members).encode("ascii")))

    directory = path.parent
    if directory.exists() and not directory.is_dir():
        raise CheckpointWriteError(errno.ENOTDIR, f"cannot save checkpoint step {step}: {directory} exists and is "
                                   "not a directory")
    try:
        if not directory.is_dir():
            directory.mkdir(parents=True, exist_ok=True)
            _fsync_directory(directory.parent)  # the new directory's own entry must survive a crash too
    except OSError as error:
        raise _write_error(error, step, path, "could not create its directory") from error
    # A random suffix, not mkstemp: the file gets the usual umask permissions instead of mkstemp's 0600.
    temp = directory / f"{path.name}.{secrets.token_hex(8)}.tmp"
    try:
        with open(temp, "xb") as file:
            with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_STORED) as archive:
                for name, data in members:
                    archive.writestr(zipfile.ZipInfo(name, date_time=_ZIP_DATE), data)
            file.flush()
            os.fsync(file.fileno())  # the bytes are on disk before the name points at them
        os.replace(temp, path)
    except BaseException as error:
        # An exception (not a kill) leaves nothing behind. On a failing disk the unlink can fail too; the temp
        # name never matches a checkpoint's, so a leftover is ignored by `steps` and removed by the next save.
        try:
            temp.unlink(missing_ok=True)
        except OSError:
            pass
        if isinstance(error, OSError):
            raise _write_error(error, step, path, "nothing was written under its name") from error
        raise
    try:
        _fsync_directory(directory)  # the rename itself is durable
    except OSError as error:
        raise _write_error(error, step, path, "the file is complete, but the directory entry may not survive a "
                           "crash") from error
    return path


def _write_error(error: OSError, step: int, path: pathlib.Path, outcome: str) -> CheckpointWriteError:
    """One error that says which checkpoint failed, why (the OS's reason, `errno` kept) and what is left."""
    reason = error.strerror or str(error)
    where = f" ({error.filename})" if error.filename and str(error.filename) != str(path) else ""
    message = (f"could not save checkpoint step {step} to {path}: {reason}{where}; {outcome}, and the earlier "
               f"checkpoints in {path.parent} are untouched")
    # No filename argument: OSError would append it to a message that already names the file.
    return CheckpointWriteError(error.errno, message) if error.errno is not None else CheckpointWriteError(message)


def load_checkpoint(path: str | os.PathLike, target: Any) -> tuple[Any, dict, int]:
    """Restores the checkpoint at `path` into the tree structure of `target` and returns `(state, metadata, step)`.

    `target` is a pytree of the same structure as the saved state (the freshly initialised state, or
    `jax.eval_shape` of it); its leaves are used only to check each leaf's shape and dtype. Restored leaves are jax
    arrays, typed PRNG keys re-wrapped. Raises `CorruptCheckpointError` for a damaged file and `CheckpointError`
    for a missing file or a mismatch, naming the first differing path."""
    path = pathlib.Path(path)
    if path.exists() and not path.is_file():  # a directory (or a device) under a checkpoint's name: damage
        raise CorruptCheckpointError(f"checkpoint {path} is not a regular file")
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}")
    manifest, arrays = _read_verified(path)
    targets, treedef = jax.tree_util.tree_flatten_with_path(target)
    stored_names = [entry["path"] for entry in manifest["leaves"]]
    target_names = [_ROOT + jax.tree_util.keystr(key_path) for key_path, _ in targets]
    if stored_names != target_names:
        raise CheckpointError(f"checkpoint {path} does not match the target's structure: " +
                              _first_difference(stored_names, target_names))
    leaves = []
    for entry, (_, target_leaf) in zip(manifest["leaves"], targets):
        shape, dtype = _spec(target_leaf)
        if entry["dtype"] != dtype or tuple(entry["shape"]) != shape:
            raise CheckpointError(f"checkpoint {path}: leaf {entry['path']} is {entry['dtype']}{list(entry['shape'])} "
                                  f"in the file, the target expects {dtype}{list(shape)}")
        leaves.append(_decode_leaf(entry, arrays[entry["path"] + ".npy"], path))
    return jax.tree_util.tree_unflatten(treedef, leaves), manifest["metadata"], manifest["step"]


class CheckpointManager:
    """Saves numbered checkpoints into `directory`, keeps the newest `keep` (by step), and restores the newest one
    that is intact.

    One writer per directory: `save` removes temporary files it finds, which would break a concurrent writer.
    Retention is by step number, not by time: saving a step older than the `keep` newest deletes it at once."""

    def __init__(self, directory: str | os.PathLike, keep: int = 3):
        self.directory = pathlib.Path(directory)
        self.keep = _checks.check_positive_int("keep", keep)

    def __repr__(self) -> str:
        return f"CheckpointManager({str(self.directory)!r}, keep={self.keep})"

    def steps(self) -> list[int]:
        """The steps with a checkpoint file in the directory, ascending (temporary files are not checkpoints)."""
        if not self.directory.is_dir():
            return []
        matches = (_CHECKPOINT_RE.fullmatch(name) for name in os.listdir(self.directory))
        return sorted(int(match.group(1)) for match in matches if match)

    def save(self, step: int, state: Any, metadata: dict | None = None) -> pathlib.Path:
        """Saves a checkpoint (see `save_checkpoint`), then deletes all but the newest `keep`, and the temporary
        files a killed writer left behind. Returns the new file's path."""
        if self.directory.is_dir():
            for name in os.listdir(self.directory):
                if _TEMP_RE.fullmatch(name):
                    try:
                        (self.directory / name).unlink(missing_ok=True)
                    except OSError:
                        pass  # best effort: a leftover temp file is never read, and the save below reports the disk
        path = save_checkpoint(self.directory, step, state, metadata)
        # Older checkpoints go only after the new one is complete, so a failed save never loses one.
        stale = self.steps()[:-self.keep]
        try:
            for old in stale:
                checkpoint_path(self.directory, old).unlink(missing_ok=True)
            if stale:
                _fsync_directory(self.directory)
        except OSError as error:  # the new checkpoint is saved: losing only the retention is worth a warning
            warnings.warn(f"checkpoint step {step} saved to {path}, but removing older checkpoints failed: {error}",
                          RuntimeWarning, stacklevel=2)
        return path

    def restore_latest(self, target: Any) -> tuple[Any, dict, int] | None:
        """`load_checkpoint` of the newest intact checkpoint, or None when there is none.

        A corrupt checkpoint is reported with `warnings.warn` (naming the file and the reason) and the previous
        one is tried. A mismatch with `target` raises: it is a code change, not damage, and falling back would
        silently resume from the wrong state."""
        for step in reversed(self.steps()):
            path = checkpoint_path(self.directory, step)
            try:
                return load_checkpoint(path, target)
            except CorruptCheckpointError as error:
                warnings.warn(f"skipping corrupt checkpoint {path}: {error}", RuntimeWarning, stacklevel=2)
        return None


# -- encoding -------------------------------------------------------------------------------------------------------
def _check_step(step: Any) -> int:
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
        raise TypeError(f"step must be an int, got {type(step).__name__} {step!r}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return int(step)


def _is_key(dtype: Any) -> bool:
    return jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _spec(leaf: Any) -> tuple[tuple[int, ...], str]:
    """(shape, dtype name) of a target leaf, with Python scalars typed by `jnp.asarray` as `_encode_leaf` types
    them, so a Python int saved restores against a Python int target."""
    if not (hasattr(leaf, "shape") and hasattr(leaf, "dtype")):  # arrays and jax.ShapeDtypeStruct have both
        leaf = jnp.asarray(leaf)
    return tuple(leaf.shape), str(leaf.dtype)


def _encode_leaf(name: str, leaf: Any) -> tuple[np.ndarray, dict]:
    """The array stored for `leaf` (raw bits where .npy cannot describe the dtype) and its manifest entry."""
    if not (hasattr(leaf, "shape") and hasattr(leaf, "dtype")):
        if not isinstance(leaf, (bool, int, float, complex, np.generic)):
            raise TypeError(f"leaf {name} must be an array or a number, got {type(leaf).__name__} {leaf!r}")
        leaf = jnp.asarray(leaf)  # typed as in `_spec`, so a Python int target checks against it
    entry = {"path": name, "dtype": str(leaf.dtype), "shape": list(leaf.shape), "key_impl": None}
    if _is_key(leaf.dtype):
        entry["key_impl"] = str(jax.random.key_impl(leaf))
        stored = np.asarray(jax.random.key_data(leaf))
    else:
        stored = np.asarray(leaf)
        if stored.dtype.kind in "OSUMm" or stored.dtype.fields is not None:
            raise TypeError(f"leaf {name} must have a numeric or bool dtype, got {stored.dtype}")
        if np.dtype(stored.dtype.str) != stored.dtype:  # bfloat16 & co. would come back from .npy as void ('V2')
            stored = stored.view(np.dtype(f"u{stored.dtype.itemsize}"))
    entry["stored"] = stored.dtype.str
    return stored, entry


def _decode_leaf(entry: dict, data: bytes, path: pathlib.Path) -> jax.Array:
    stored = np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
    if stored.dtype.str != entry["stored"]:  # only reachable with a forged checksum or a bug in the writer
        raise CorruptCheckpointError(f"checkpoint {path}: leaf {entry['path']} is stored as {stored.dtype.str}, "
                                     f"the manifest says {entry['stored']}")
    if entry["key_impl"] is not None:
        return jax.random.wrap_key_data(jnp.asarray(stored), impl=entry["key_impl"])
    dtype = jnp.dtype(entry["dtype"])
    return jnp.asarray(stored if stored.dtype == dtype else stored.view(dtype))


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _digest(members: list[tuple[str, bytes]]) -> str:
    """SHA-256 over (name, length, bytes) of each member: the lengths frame the members, so no two different
    archives hash the same concatenation."""
    sha = hashlib.sha256()
    for name, data in members:
        encoded = name.encode("utf-8")
        sha.update(len(encoded).to_bytes(8, "little") + encoded + len(data).to_bytes(8, "little"))
        sha.update(data)
    return sha.hexdigest()


def _read_verified(path: pathlib.Path) -> tuple[dict, dict[str, bytes]]:
    """The manifest and the raw members of a checkpoint, after checking the checksum; any damage raises
    `CorruptCheckpointError`."""
    # Damage surfaces as whatever the zip reader trips on first (BadZipFile, EOFError, KeyError for a mangled name,
    # NotImplementedError for a mangled compression method, UnicodeDecodeError, ...), so every failure while
    # reading is reported as corruption, with its original message.
    try:
        with zipfile.ZipFile(path) as archive:
            members = [(info.filename, archive.read(info)) for info in archive.infolist()]
    except Exception as error:  # noqa: BLE001 -- see above: any failure here is damage
        raise CorruptCheckpointError(f"checkpoint {path} is unreadable ({type(error).__name__}: {error})") from None
    if not members or members[-1][0] != _CHECKSUM:
        raise CorruptCheckpointError(f"checkpoint {path} has no {_CHECKSUM} as its last member")
    expected = members[-1][1].decode("ascii", errors="replace")
    actual = _digest(members[:-1])
    if actual != expected:
        raise CorruptCheckpointError(f"checkpoint {path} fails its checksum: SHA-256 {actual}, expected {expected}")
    arrays = dict(members[:-1])
    try:
        manifest = json.loads(arrays.pop(_MANIFEST).decode("utf-8"))
    except (KeyError, ValueError) as error:
        raise CorruptCheckpointError(f"checkpoint {path} has no readable {_MANIFEST} ({error})") from None
    if manifest.get("format") != _FORMAT or manifest.get("version") != _VERSION:
        raise CheckpointError(f"checkpoint {path} is format {manifest.get('format')!r} version "
                              f"{manifest.get('version')!r}, expected {_FORMAT!r} version {_VERSION}")
    return manifest, arrays


def _first_difference(stored: list[str], target: list[str]) -> str:
    for index, (a, b) in enumerate(zip(stored, target)):
        if a != b:
            return f"leaf {index} is {a} in the file and {b} in the target"
    counts = f"the file has {len(stored)} leaves, the target {len(target)}"
    if len(stored) > len(target):
        return f"{counts}; first extra in the file: {stored[len(target)]}"
    return f"{counts}; first missing from the file: {target[len(stored)]}"


def _fsync_directory(directory: pathlib.Path) -> None:
    """Makes renames and deletions in `directory` durable. POSIX only: Windows cannot open a directory to sync it."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
