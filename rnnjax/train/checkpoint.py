"""Checkpoints on orbax-checkpoint that survive a kill, detect damage, and restore bit for bit.

Format. A checkpoint is the step directory `orbax.checkpoint.CheckpointManager` writes,
`checkpoint_{step:09d}/`, with three items (`orbax.checkpoint.args.Composite`):

    checkpoint_000000030/
      state/      # StandardSave of the state as nested dicts of numpy arrays: state/params/rnn/weight_ih, ...
      metadata/   # JsonSave of the caller's metadata dict (config, data-iterator position, ...)
      rnnjax/     # JsonSave of the manifest: {"format", "version", "step", "metadata_sha256", "leaves": [...]}

so any orbax user reads it without rnnjax (`orbax.checkpoint.CheckpointManager(directory,
options=CheckpointManagerOptions(step_prefix="checkpoint", step_format_fixed_length=9)).restore(30)`). Each
manifest entry records a leaf's `path` (its `jax.tree_util.keystr`, "state" first), its `keys` inside the orbax
tree, its logical `dtype` and `shape`, the dtype it is `stored` as, the SHA-256 of the stored bytes and, for a
typed PRNG key, its `key_impl`. Typed keys (`jax.random.key`) are stored as `jax.random.key_data` and re-wrapped
with the recorded impl; bfloat16 is stored natively (tensorstore keeps every bit: NaN payloads, -0.0); Python
scalars are stored as `jnp.asarray` would make them (int32/float32 unless x64 is enabled). Arrays with a zero
dimension, which orbax refuses to save, live in the manifest alone. `metadata` is any JSON-serialisable dict;
JSON turns tuples into lists and dict keys into strings.

Guarantees (what orbax gives, and what this module adds around it).
- Atomic (orbax): a step is written into `checkpoint_{step}.orbax-checkpoint-tmp` and renamed to its final name
  when complete, so a writer killed at any instruction leaves at most a temporary directory, which never counts
  as a step and is removed by the next `CheckpointDirectory.save`.
- Durable (added: orbax does not `fsync`): before `save` returns, every file and directory of the new step and
  the checkpoint directory itself are `fsync`ed, so the step survives a power loss after the return.
- Synchronous (chosen): orbax's async saving is off, and `save` returns only when the step is complete, synced
  and verified on disk. Training is then a pure function of its inputs: a run killed right after a `save`
  returned resumes from that step, never from an older one that an unfinished background write left newest.
- Self-checking (added: orbax does not checksum): the manifest, committed in the same atomic rename as the data,
  holds the SHA-256 of every stored leaf and of the metadata. Restoring recomputes them; a damaged step
  (truncated or bit-flipped file, missing item, anything orbax cannot read) raises `CorruptCheckpointError`, and
  `CheckpointDirectory.restore_latest` warns and falls back to the previous step. Orbax alone returns flipped
  bits as data, and its `restore(step)` without args returns a step whose `state/` is gone as if it had only
  metadata. A *mismatch*
  with the target (structure, shape, dtype) raises `CheckpointError` and is never skipped: it means the code
  changed, and silently resuming from an older step or from scratch would hide that.
- Failing disks (added): any failure while writing (disk full, read-only directory, a directory path that is a
  file, an I/O error) raises one `CheckpointWriteError` (an `OSError` with the underlying `errno` where there is
  one) naming the step, the directory and the reason. The temporary directory is removed, nothing is left under
  the step's name (an earlier checkpoint of the same step is put back), and no other checkpoint is touched:
  older ones are deleted only after a new one is complete.

Why the manifest hashes the stored arrays rather than the files: orbax has no hook to add a file to a step
before its atomic rename, and a manifest written after the rename would leave a moment where a kill gives a
committed step without one. Hashes of the data, saved as an item of the same step, have no such moment, and they
check exactly what a restore returns; a flipped bit that orbax reads back as the same values cannot restore wrong.

Not guaranteed: several processes saving into one directory at once (one writer per directory, as in training),
and arrays that are not fully addressable from this process (multi-host sharding; the fit loop saves the
writer's complete copy of a replicated state). For sharded multi-host saving use orbax's `CheckpointManager`
directly: `CheckpointDirectory.orbax_manager` is the one this class drives.

`CheckpointDirectory` is named apart from `orbax.checkpoint.CheckpointManager` on purpose: its `save(step,
state, metadata)` and `restore_latest(target)` are a different API from orbax's `save(step, args=...)`, and the
same name would make `from rnnjax.train import *` silently shadow orbax's class in user code.

Example:

    >>> import tempfile
    >>> import jax, jax.numpy as jnp
    >>> state = {"params": jnp.ones((2, 3)), "rng": jax.random.key(0), "step": 10}
    >>> with tempfile.TemporaryDirectory() as directory:
    ...     checkpoints = CheckpointDirectory(directory, keep=2)
    ...     for step in (10, 20, 30):
    ...         _ = checkpoints.save(step, state, {"epoch": step // 10})
    ...     restored, metadata, step = checkpoints.restore_latest(target=state)
    ...     checkpoints.steps(), metadata, step, restored["params"].shape
    ([20, 30], {'epoch': 3}, 30, (2, 3))
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pathlib
import re
import secrets
import shutil
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from rnnjax import _checks

_FORMAT = "rnnjax.train.checkpoint"
_VERSION = 2  # 1 was the zip-per-step format before orbax
_ROOT = "state"  # leaf paths read as Python expressions: state['params'].weight_ih
_STATE, _METADATA, _MANIFEST = "state", "metadata", "rnnjax"  # the orbax items of a step
_PREFIX, _DIGITS = "checkpoint", 9
_STEP_RE = re.compile(r"checkpoint_(\d+)")
# What a killed writer can leave: orbax's temporary step directory, or one of ours set aside for deletion or
# replacement. None of these names is a step, for orbax or for `steps`.
_LEFTOVER_RE = re.compile(r"checkpoint_\d+\.(orbax-checkpoint-tmp.*|rnnjax-(old|deleting)-[0-9a-f]+)")


class CheckpointError(ValueError):
    """A checkpoint cannot be restored into the given target: missing step, or a structure/shape/dtype mismatch."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint is damaged (truncated, bit-flipped, incomplete, not a checkpoint): `restore_latest` skips it."""


class CheckpointWriteError(OSError):
    """Saving a checkpoint failed in the file system (disk full, read-only directory, a path that is a file, an
    I/O error): nothing is left under the checkpoint's name, the temporary directory is removed where the file
    system allows it, and every earlier checkpoint is untouched. `errno` is the underlying error's, or None."""


def checkpoint_path(directory: str | os.PathLike, step: int) -> pathlib.Path:
    """The step directory `save_checkpoint(directory, step, ...)` writes: `directory/checkpoint_{step:09d}`."""
    return pathlib.Path(directory) / f"{_PREFIX}_{_check_step(step):0{_DIGITS}d}"


def save_checkpoint(directory: str | os.PathLike, step: int, state: Any, metadata: dict | None = None) -> pathlib.Path:
    """Writes `state` (any pytree of arrays, typed PRNG keys and Python scalars), `metadata` (a JSON-serialisable
    dict) and `step` to `directory/checkpoint_{step:09d}` (see the module docstring), replacing any checkpoint of
    the same step and keeping every other one. Returns the step directory."""
    return CheckpointDirectory(directory, keep=None).save(step, state, metadata)


def load_checkpoint(path: str | os.PathLike, target: Any = None) -> tuple[Any, dict, int]:
    """Restores the checkpoint in the step directory `path` and returns `(state, metadata, step)`.

    `target` is a pytree of the same structure as the saved state (the freshly initialised state, or
    `jax.eval_shape` of it); its leaves are used only to check each leaf's shape and dtype, and the state comes
    back in its structure (NamedTuples and all). Without a target, shapes and dtypes come from the checkpoint's
    manifest and the state comes back as nested dicts keyed like the orbax tree (`state['opt'][0].mu` as
    `["opt"]["0"]["mu"]`). Restored leaves are jax arrays, typed PRNG keys re-wrapped. Raises
    `CorruptCheckpointError` for a damaged step and `CheckpointError` for a missing step or a mismatch, naming the
    first differing path."""
    path = pathlib.Path(path).absolute()  # orbax accepts absolute paths only
    if path.exists() and not path.is_dir():  # a file under a step's name: damage
        raise CorruptCheckpointError(f"checkpoint {path} is not a directory")
    if not path.is_dir():
        raise CheckpointError(f"no checkpoint at {path}")
    checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler(), multiprocessing_options=_this_process_only())
    try:
        manifest = _read_manifest(path, checkpointer)
        if target is not None:
            _check_target(path, manifest, target)
        state, metadata = _read_verified(path, checkpointer, manifest)
    finally:
        checkpointer.close()
    leaves = [_decode_leaf(entry, stored) for entry, stored in zip(manifest["leaves"], state)]
    if target is None:
        return _nest(manifest["leaves"], leaves), metadata, manifest["step"]
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(target), leaves), metadata, manifest["step"]


class CheckpointDirectory:
    """The numbered checkpoints of one directory, written by `orbax.checkpoint.CheckpointManager`: saves a step,
    keeps the newest `keep` (by step; None keeps all), and restores the newest one that is intact.

    One writer per directory: `save` removes the temporary directories it finds, which would break a concurrent
    writer. Retention is by step number, not by time: saving a step older than the `keep` newest deletes it at
    once. Nothing is created or read until the first call that needs the directory."""

    def __init__(self, directory: str | os.PathLike, keep: int | None = 3):
        # Orbax accepts absolute paths only; resolving here also pins the directory if the process changes cwd.
        self.directory = pathlib.Path(directory).absolute()
        self.keep = None if keep is None else _checks.check_positive_int("keep", keep)
        self._manager: ocp.CheckpointManager | None = None

    def __repr__(self) -> str:
        return f"CheckpointDirectory({str(self.directory)!r}, keep={self.keep})"

    @property
    def orbax_manager(self) -> ocp.CheckpointManager:
        """The `orbax.checkpoint.CheckpointManager` this class saves through (items "state", "metadata",
        "rnnjax"; synchronous; this process alone; retention left to this class). The directory must exist."""
        if self._manager is None:
            options = ocp.CheckpointManagerOptions(
                step_prefix=_PREFIX, step_format_fixed_length=_DIGITS, enable_async_checkpointing=False,
                create=False, save_root_metadata=False,  # the directory holds steps only
                multiprocessing_options=_this_process_only())
            self._manager = ocp.CheckpointManager(self.directory, options=options,
                                                  item_names=(_STATE, _METADATA, _MANIFEST))
        return self._manager

    def close(self) -> None:
        """Releases orbax's manager (a later call makes a new one)."""
        if self._manager is not None:
            self._manager.close()
            self._manager = None

    def steps(self) -> list[int]:
        """The steps with a checkpoint directory, ascending (temporary directories are not checkpoints)."""
        if not self.directory.is_dir():
            return []
        matches = (_STEP_RE.fullmatch(name) for name in os.listdir(self.directory))
        return sorted(int(match.group(1)) for match in matches if match)

    def save(self, step: int, state: Any, metadata: dict | None = None) -> pathlib.Path:
        """Saves `state` and `metadata` as step `step` (see `save_checkpoint`), then deletes all but the newest
        `keep`, and the temporary directories a killed writer left behind. Returns the step directory."""
        path = checkpoint_path(self.directory, step)
        step = int(step)
        arrays, manifest = _encode(step, state, metadata)
        self._prepare_directory(step, path)
        self._remove_leftovers()
        set_aside = None
        if path.exists():  # the same step again (e.g. the end of an epoch on a checkpoint step): replace it
            set_aside = self._rename_aside(path, "old", step)
        try:
            self._write(step, arrays, metadata, manifest)
            _fsync_tree(path)
            _fsync_directory(self.directory)
        except BaseException as error:
            self._undo(path, set_aside)
            if isinstance(error, Exception):
                raise _write_error(error, step, path, "nothing was written under its name") from error
            raise
        if set_aside is not None:
            shutil.rmtree(set_aside, ignore_errors=True)
        self._apply_retention(step, path)
        return path

    def restore_latest(self, target: Any = None) -> tuple[Any, dict, int] | None:
        """`load_checkpoint` of the newest intact checkpoint, or None when there is none.

        A corrupt checkpoint is reported with `warnings.warn` (naming the step directory and the reason) and the
        previous one is tried. A mismatch with `target` raises: it is a code change, not damage, and falling back
        would silently resume from the wrong state."""
        for step in reversed(self.steps()):
            path = checkpoint_path(self.directory, step)
            try:
                return load_checkpoint(path, target)
            except CorruptCheckpointError as error:
                warnings.warn(f"skipping corrupt checkpoint {path}: {error}", RuntimeWarning, stacklevel=2)
        return None

    def delete_all(self) -> None:
        """Deletes every checkpoint in the directory (a fresh run replacing a previous one)."""
        self.delete_after(-1)

    def delete_after(self, step: int) -> None:
        """Deletes the checkpoints of steps after `step` (what a killed run saved past the point it resumes from)."""
        newer = [later for later in self.steps() if later > step]
        for later in newer:
            shutil.rmtree(self._rename_aside(checkpoint_path(self.directory, later), "deleting", later))
        if newer:
            _fsync_directory(self.directory)
        self._reload()

    # -- saving, step by step ---------------------------------------------------------------------------------
    def _prepare_directory(self, step: int, path: pathlib.Path) -> None:
        directory = self.directory
        if directory.exists() and not directory.is_dir():
            raise CheckpointWriteError(errno.ENOTDIR, f"cannot save checkpoint step {step}: {directory} exists and "
                                       "is not a directory")
        try:
            if not directory.is_dir():
                directory.mkdir(parents=True, exist_ok=True)
                _fsync_directory(directory.parent)  # the new directory's own entry must survive a crash too
        except OSError as error:
            raise _write_error(error, step, path, "could not create its directory") from error

    def _remove_leftovers(self) -> None:
        for name in os.listdir(self.directory):
            if _LEFTOVER_RE.fullmatch(name):
                # best effort: a leftover is never read, and the save below reports a failing disk
                shutil.rmtree(self.directory / name, ignore_errors=True)

    def _rename_aside(self, path: pathlib.Path, why: str, step: int) -> pathlib.Path:
        """Moves a step out of the steps' names in one atomic rename, so a kill never leaves half of it there."""
        aside = path.with_name(f"{path.name}.rnnjax-{why}-{secrets.token_hex(4)}")
        try:
            os.replace(path, aside)
        except OSError as error:
            raise _write_error(error, step, path, "nothing was changed") from error
        return aside

    def _write(self, step: int, arrays: dict, metadata: dict | None, manifest: dict) -> None:
        manager = self.orbax_manager
        self._reload()  # steps set aside or deleted outside orbax
        items = {_METADATA: ocp.args.JsonSave({} if metadata is None else metadata),
                 _MANIFEST: ocp.args.JsonSave(manifest)}
        if arrays:  # orbax cannot save an empty tree: a state of only empty arrays has no "state" item
            items[_STATE] = ocp.args.StandardSave(arrays)
        manager.save(step, args=ocp.args.Composite(**items), force=True)
        manager.wait_until_finished()  # synchronous already; this keeps it so if orbax's defaults change

    def _undo(self, path: pathlib.Path, set_aside: pathlib.Path | None) -> None:
        """After a failed save: nothing under the step's name but what was there before."""
        try:
            if path.exists():
                shutil.rmtree(path)
            if set_aside is not None:
                os.replace(set_aside, path)
            self._remove_leftovers()
        except OSError:
            pass  # a failing disk: leftovers keep names that are never steps, and the next save removes them
        self._reload()

    def _apply_retention(self, step: int, path: pathlib.Path) -> None:
        if self.keep is None:
            return
        # Older checkpoints go only after the new one is complete, so a failed save never loses one.
        stale = self.steps()[:-self.keep]
        try:
            for old in stale:
                shutil.rmtree(self._rename_aside(checkpoint_path(self.directory, old), "deleting", old))
            if stale:
                _fsync_directory(self.directory)
        except OSError as error:  # the new checkpoint is saved: losing only the retention is worth a warning
            warnings.warn(f"checkpoint step {step} saved to {path}, but removing older checkpoints failed: {error}",
                          RuntimeWarning, stacklevel=3)
        self._reload()

    def _reload(self) -> None:
        if self._manager is not None and self.directory.is_dir():
            self._manager.reload()


def _this_process_only() -> ocp.options.MultiprocessingOptions:
    """Orbax synchronises every process at each save and restore; the fit loop saves from one writer process (a
    replicated state's complete copy) and would wait forever for the others, so this process acts alone."""
    return ocp.options.MultiprocessingOptions(primary_host=jax.process_index(),
                                              active_processes={jax.process_index()})


def _write_error(error: Exception, step: int, path: pathlib.Path, outcome: str) -> CheckpointWriteError:
    """One error that says which checkpoint failed, why (the OS's reason, `errno` kept) and what is left."""
    os_error = _os_error_in(error)
    if os_error is not None:
        reason = os_error.strerror or str(os_error)
        filename = os_error.filename
        where = f" ({filename})" if filename and str(filename) != str(path) else ""
    else:  # e.g. tensorstore's own error for a failed write
        reason, where = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}", ""
    message = (f"could not save checkpoint step {step} to {path}: {reason}{where}; {outcome}, and the earlier "
               f"checkpoints in {path.parent} are untouched")
    code = None if os_error is None else os_error.errno
    # No filename argument: OSError would append it to a message that already names the step.
    return CheckpointWriteError(code, message) if code is not None else CheckpointWriteError(message)


def _os_error_in(error: BaseException | None) -> OSError | None:
    """The first OSError in an exception's chain: orbax re-raises some of them wrapped."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
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


def _key_name(entry: Any) -> str:
    """One element of a leaf's path as a key of the orbax tree."""
    for attribute in ("key", "name", "idx"):  # DictKey / FlattenedIndexKey, GetAttrKey, SequenceKey
        if hasattr(entry, attribute):
            return str(getattr(entry, attribute))
    return str(entry)


def _encode(step: int, state: Any, metadata: dict | None) -> tuple[dict, dict]:
    """The nested dict of numpy arrays orbax saves, and the manifest; every bad input raises before a write."""
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
    try:
        metadata_sha256 = _metadata_digest(json.loads(json.dumps(metadata)))
    except (TypeError, ValueError) as error:
        raise TypeError(f"metadata must be JSON-serialisable: {error}") from None
    arrays: dict = {}
    entries, seen = [], {}
    for key_path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        name = _ROOT + jax.tree_util.keystr(key_path)
        keys = [_key_name(entry) for entry in key_path] or ["value"]  # a bare array as the whole state
        orbax_name = ".".join(keys)  # how orbax names the array on disk: "a.b" and ("a", "b") would collide
        if orbax_name in seen:
            raise ValueError(f"two leaves of state, {seen[orbax_name]} and {name}, have the same path {orbax_name!r} "
                             "in the checkpoint: their names must be distinct")
        seen[orbax_name] = name
        stored, entry = _encode_leaf(name, leaf)
        entry["keys"] = keys
        entries.append(entry)
        if stored.size:
            node = arrays
            for key in keys[:-1]:
                node = node.setdefault(key, {})
            node[keys[-1]] = stored
    manifest = {"format": _FORMAT, "version": _VERSION, "step": step, "metadata_sha256": metadata_sha256,
                "leaves": entries}
    return arrays, manifest


def _encode_leaf(name: str, leaf: Any) -> tuple[np.ndarray, dict]:
    """The numpy array stored for `leaf` (a typed key's key data) and its manifest entry."""
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
    stored = np.asarray(stored, order="C")  # not ascontiguousarray: it turns a 0-d array into 1-d
    entry.update(stored=str(stored.dtype), stored_shape=list(stored.shape), sha256=_array_digest(stored))
    return stored, entry


def _array_digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(array, order="C").reshape(-1).view(np.uint8)).hexdigest()


def _metadata_digest(metadata: Any) -> str:
    return hashlib.sha256(json.dumps(metadata, sort_keys=True).encode("utf-8")).hexdigest()


# -- decoding -------------------------------------------------------------------------------------------------------
def _read_manifest(path: pathlib.Path, checkpointer: ocp.Checkpointer) -> dict:
    try:
        manifest = checkpointer.restore(path, args=ocp.args.Composite(**{_MANIFEST: ocp.args.JsonRestore()}))
        manifest = manifest[_MANIFEST]
    except Exception as error:  # noqa: BLE001 -- a missing or unreadable manifest is damage, whatever orbax raises
        raise CorruptCheckpointError(f"checkpoint {path} has no readable manifest ({_MANIFEST}/: "
                                     f"{type(error).__name__}: {_first_line(error)})") from None
    if not isinstance(manifest, dict):
        raise CorruptCheckpointError(f"checkpoint {path} has a manifest that is not a JSON object")
    if manifest.get("format") != _FORMAT or manifest.get("version") != _VERSION:
        raise CheckpointError(f"checkpoint {path} is format {manifest.get('format')!r} version "
                              f"{manifest.get('version')!r}, expected {_FORMAT!r} version {_VERSION}")
    if not isinstance(manifest.get("leaves"), list) or not isinstance(manifest.get("step"), int):
        raise CorruptCheckpointError(f"checkpoint {path} has a manifest without its leaves or step")
    return manifest


def _check_target(path: pathlib.Path, manifest: dict, target: Any) -> None:
    targets = jax.tree_util.tree_flatten_with_path(target)[0]
    stored_names = [entry["path"] for entry in manifest["leaves"]]
    target_names = [_ROOT + jax.tree_util.keystr(key_path) for key_path, _ in targets]
    if stored_names != target_names:
        raise CheckpointError(f"checkpoint {path} does not match the target's structure: " +
                              _first_difference(stored_names, target_names))
    for entry, (_, target_leaf) in zip(manifest["leaves"], targets):
        shape, dtype = _spec(target_leaf)
        if entry["dtype"] != dtype or tuple(entry["shape"]) != shape:
            raise CheckpointError(f"checkpoint {path}: leaf {entry['path']} is {entry['dtype']}{list(entry['shape'])} "
                                  f"in the file, the target expects {dtype}{list(shape)}")


def _read_verified(path: pathlib.Path, checkpointer: ocp.Checkpointer, manifest: dict) -> tuple[list, dict]:
    """The stored leaves (numpy, in manifest order) and the metadata, after checking every digest."""
    try:
        abstract: dict = {}
        for entry in manifest["leaves"]:
            if np.prod(entry["stored_shape"], dtype=np.int64):
                node = abstract
                for key in entry["keys"][:-1]:
                    node = node.setdefault(key, {})
                # numpy leaves: orbax restores numpy arrays on the host, so the digests need no device transfer
                node[entry["keys"][-1]] = np.empty(entry["stored_shape"], jnp.dtype(entry["stored"]))
        items = {_METADATA: ocp.args.JsonRestore()}
        if abstract:
            items[_STATE] = ocp.args.StandardRestore(abstract)
        restored = checkpointer.restore(path, args=ocp.args.Composite(**items))
        metadata, tree = restored[_METADATA], restored[_STATE] if abstract else {}
    except Exception as error:  # noqa: BLE001 -- damage surfaces as whatever orbax or tensorstore trips on
        raise CorruptCheckpointError(f"checkpoint {path} is unreadable ({type(error).__name__}: "
                                     f"{_first_line(error)})") from None
    if metadata is None or _metadata_digest(metadata) != manifest["metadata_sha256"]:
        raise CorruptCheckpointError(f"checkpoint {path}: its metadata fails its checksum")
    leaves = []
    for entry in manifest["leaves"]:
        if not np.prod(entry["stored_shape"], dtype=np.int64):
            leaves.append(np.zeros(entry["stored_shape"], jnp.dtype(entry["stored"])))
            continue
        try:
            stored = tree
            for key in entry["keys"]:
                stored = stored[key]
            stored = np.asarray(stored)
        except (KeyError, TypeError):
            raise CorruptCheckpointError(f"checkpoint {path} lacks leaf {entry['path']}") from None
        if (str(stored.dtype) != entry["stored"] or list(stored.shape) != entry["stored_shape"]
                or _array_digest(stored) != entry["sha256"]):
            raise CorruptCheckpointError(f"checkpoint {path}: leaf {entry['path']} fails its checksum (SHA-256 "
                                         f"{_array_digest(stored)}, expected {entry['sha256']})")
        leaves.append(stored)
    return leaves, metadata


def _decode_leaf(entry: dict, stored: np.ndarray) -> jax.Array:
    if entry["key_impl"] is not None:
        return jax.random.wrap_key_data(jnp.asarray(stored), impl=entry["key_impl"])
    return jnp.asarray(stored)


def _nest(entries: list[dict], leaves: list) -> Any:
    """Leaves as nested dicts keyed like the orbax tree: the state, for a restore without a target."""
    if len(entries) == 1 and entries[0]["path"] == _ROOT:
        return leaves[0]
    tree: dict = {}
    for entry, leaf in zip(entries, leaves):
        node = tree
        for key in entry["keys"][:-1]:
            node = node.setdefault(key, {})
        node[entry["keys"][-1]] = leaf
    return tree


def _first_line(error: BaseException) -> str:
    text = str(error)
    return text.splitlines()[0] if text else ""


def _first_difference(stored: list[str], target: list[str]) -> str:
    for index, (a, b) in enumerate(zip(stored, target)):
        if a != b:
            return f"leaf {index} is {a} in the file and {b} in the target"
    counts = f"the file has {len(stored)} leaves, the target {len(target)}"
    if len(stored) > len(target):
        return f"{counts}; first extra in the file: {stored[len(target)]}"
    return f"{counts}; first missing from the file: {target[len(stored)]}"


# -- durability -----------------------------------------------------------------------------------------------------
def _fsync_tree(path: pathlib.Path) -> None:
    """`fsync`s every file and directory under `path`, deepest first: orbax leaves this to the page cache."""
    for root, _, files in os.walk(path, topdown=False):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_directory(pathlib.Path(root))


def _fsync_directory(directory: pathlib.Path) -> None:
    """Makes renames and deletions in `directory` durable. POSIX only: Windows cannot open a directory to sync it."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
