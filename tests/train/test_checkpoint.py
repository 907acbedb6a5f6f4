"""Checkpoints: exact round trip (bfloat16 bits, typed PRNG keys, Python scalars), atomicity under an exception and
under a real kill, detection of truncated and bit-flipped files with fallback to the previous step, retention, and
clear errors for every mismatch."""

import errno
import os
import pathlib
import subprocess
import sys
import textwrap
import zipfile
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnjax.cells import LSTMState
import rnnjax.train.checkpoint as checkpoint_module
from rnnjax.train.checkpoint import (
    CheckpointError,
    CheckpointManager,
    CheckpointWriteError,
    CorruptCheckpointError,
    checkpoint_path,
    load_checkpoint,
    save_checkpoint,
)

REPO = pathlib.Path(__file__).resolve().parents[2]


class AdamState(NamedTuple):
    count: jax.Array
    mu: dict


def make_state(seed: int = 0):
    """A small training state with every kind of leaf a checkpoint must carry."""
    rng = np.random.default_rng(seed)
    # NaN, -0.0 and inf in bfloat16: only a bit-exact round trip keeps all three.
    special = np.array([np.nan, -0.0, np.inf, 1e-40], np.float32)
    embed = jnp.concatenate([jnp.asarray(rng.normal(size=8), jnp.bfloat16), jnp.asarray(special, jnp.bfloat16)])
    return {
        "params": {
            "lstm": LSTMState(h=jnp.asarray(rng.normal(size=(2, 3)), jnp.float32),
                              c=jnp.asarray(rng.normal(size=(3,)), jnp.float32)),
            "embed": embed,
        },
        "opt": (AdamState(count=jnp.asarray(seed + 5, jnp.int32), mu={"w": np.full((2,), seed, np.float32)}),),
        "tokens": np.arange(4, dtype=np.int32) + seed,
        "step": 100 + seed,
        "rng": jax.random.split(jax.random.key(seed), 3),
    }


def leaf_bits(leaf) -> np.ndarray:
    """A leaf's exact bits: typed keys as their key data, everything else viewed as unsigned integers."""
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(leaf))
    array = np.asarray(leaf)
    return array.view(np.dtype(f"u{array.dtype.itemsize}")) if array.dtype != np.bool_ else array


def assert_same_state(restored, expected):
    assert jax.tree.structure(restored) == jax.tree.structure(expected)
    for (path, r), e in zip(jax.tree_util.tree_flatten_with_path(restored)[0], jax.tree.leaves(expected)):
        e = jnp.asarray(e) if not hasattr(e, "dtype") else e
        name = jax.tree_util.keystr(path)
        assert isinstance(r, jax.Array), name
        assert r.dtype == e.dtype and r.shape == e.shape, (name, r.dtype, e.dtype, r.shape, e.shape)
        np.testing.assert_array_equal(leaf_bits(r), leaf_bits(e), err_msg=name)


METADATA = {"config": {"hidden_size": 8, "learning_rate": 1e-3, "cells": ["lstm", "gru"]},
            "data": {"epoch": 2, "position": 12345}}


# -- round trip ----------------------------------------------------------------------------------------------------
def test_round_trip_is_exact(tmp_path):
    state = make_state()
    path = save_checkpoint(tmp_path, 7, state, METADATA)
    assert path == tmp_path / "checkpoint_000000007.npz" == checkpoint_path(tmp_path, 7)
    restored, metadata, step = load_checkpoint(path, target=make_state(seed=1))
    assert step == 7 and metadata == METADATA
    assert_same_state(restored, state)
    assert isinstance(restored["params"]["lstm"], LSTMState) and isinstance(restored["opt"][0], AdamState)
    assert restored["params"]["embed"].dtype == jnp.bfloat16
    assert str(restored["rng"].dtype) == "key<fry>"
    assert jax.random.key_impl(restored["rng"]) == jax.random.key_impl(state["rng"])
    # The restored key draws the same numbers as the saved one.
    np.testing.assert_array_equal(jax.random.bits(restored["rng"][1]), jax.random.bits(state["rng"][1]))


def test_abstract_target_from_eval_shape(tmp_path):
    state = make_state()
    path = save_checkpoint(tmp_path, 1, state)
    restored, metadata, _ = load_checkpoint(path, target=jax.eval_shape(lambda: make_state(seed=3)))
    assert_same_state(restored, state)
    assert metadata == {}


def test_file_is_a_plain_npz_with_named_leaves(tmp_path):
    path = save_checkpoint(tmp_path, 3, make_state(), METADATA)
    with np.load(path) as archive:
        assert archive.files[0] == "manifest.json" and archive.files[-1] == "checksum.sha256"
        np.testing.assert_array_equal(archive["state['tokens']"], np.arange(4, dtype=np.int32))
        assert archive["state['params']['embed']"].dtype == np.uint16  # bfloat16 stored as its bits
    # Same contents, same bytes: nothing in the file depends on the time or the temp name.
    assert save_checkpoint(tmp_path / "again", 3, make_state(), METADATA).read_bytes() == path.read_bytes()


# -- atomicity -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("failure", ["replace", "write"])
def test_failed_save_leaves_previous_checkpoint(tmp_path, monkeypatch, failure):
    manager = CheckpointManager(tmp_path)
    manager.save(1, make_state(seed=1), {"n": 1})

    def boom(*args, **kwargs):
        raise OSError("disk on fire")

    if failure == "replace":
        monkeypatch.setattr(os, "replace", boom)
    else:  # fail after the first member is written: a half-written temp file exists at that point
        original = zipfile.ZipFile.writestr
        calls = []

        def writestr(self, *args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                boom()
            return original(self, *args, **kwargs)

        monkeypatch.setattr(zipfile.ZipFile, "writestr", writestr)
    with pytest.raises(OSError, match="disk on fire"):
        manager.save(2, make_state(seed=2), {"n": 2})
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_000000001.npz"]  # no final file, no temp file
    state, metadata, step = manager.restore_latest(make_state())
    assert step == 1 and metadata == {"n": 1}
    assert_same_state(state, make_state(seed=1))


def test_killed_writer_leaves_only_a_temp_file(tmp_path):
    """A real kill (os._exit, no cleanup runs) between the fsync and the rename, in a child process."""
    script = textwrap.dedent(f"""
        import os
        import numpy as np
        from rnnjax.train.checkpoint import CheckpointManager
        manager = CheckpointManager({str(tmp_path)!r})
        manager.save(1, {{"w": np.ones(3, np.float32)}}, {{"n": 1}})
        os.replace = lambda *args: os._exit(17)
        manager.save(2, {{"w": np.full(3, 2, np.float32)}}, {{"n": 2}})
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 17, result.stderr
    temps = [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]
    assert len(temps) == 1 and temps[0].startswith("checkpoint_000000002.npz.")

    manager = CheckpointManager(tmp_path)
    assert manager.steps() == [1]
    target = {"w": np.zeros(3, np.float32)}
    state, metadata, step = manager.restore_latest(target)
    assert step == 1 and metadata == {"n": 1}
    np.testing.assert_array_equal(state["w"], np.ones(3, np.float32))

    (tmp_path / "notes.txt").write_text("not ours")
    manager.save(3, {"w": np.full(3, 3, np.float32)})
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_000000001.npz", "checkpoint_000000003.npz", "notes.txt"]


# -- corruption ----------------------------------------------------------------------------------------------------
def truncate(path: pathlib.Path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip_byte(path: pathlib.Path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))


def rewrite_leaf(path: pathlib.Path):
    """Replaces one leaf with different, well-formed data in a valid zip: the zip's own CRC-32 passes, so only the
    SHA-256 can notice."""
    with zipfile.ZipFile(path) as archive:
        members = [(info.filename, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members:
            if name == "state['tokens'].npy":
                data = data[:-4] + np.int32(99).tobytes()
            archive.writestr(name, data)


@pytest.mark.parametrize("damage, reason", [(truncate, "unreadable"), (flip_byte, "unreadable|checksum"),
                                            (rewrite_leaf, "fails its checksum")])
def test_damaged_checkpoint_is_detected_and_skipped(tmp_path, damage, reason):
    manager = CheckpointManager(tmp_path)
    manager.save(1, make_state(seed=1), {"n": 1})
    path = manager.save(2, make_state(seed=2), {"n": 2})
    damage(path)
    with pytest.raises(CorruptCheckpointError, match=reason):
        load_checkpoint(path, make_state())
    with pytest.warns(RuntimeWarning, match=r"checkpoint_000000002\.npz") as record:
        state, metadata, step = manager.restore_latest(make_state())
    assert len(record) == 1
    assert step == 1 and metadata == {"n": 1}
    assert_same_state(state, make_state(seed=1))


def test_all_checkpoints_corrupt_gives_none(tmp_path):
    manager = CheckpointManager(tmp_path)
    for step in (1, 2):
        truncate(manager.save(step, make_state()))
    with pytest.warns(RuntimeWarning) as record:
        assert manager.restore_latest(make_state()) is None
    assert len(record) == 2


def test_empty_or_missing_directory_gives_none(tmp_path):
    assert CheckpointManager(tmp_path).restore_latest(make_state()) is None
    manager = CheckpointManager(tmp_path / "does_not_exist")
    assert manager.steps() == [] and manager.restore_latest(make_state()) is None


# -- retention -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("keep", [1, 2, 3])
def test_keep_retains_newest_steps(tmp_path, keep):
    manager = CheckpointManager(tmp_path, keep=keep)
    state = {"w": np.zeros(2, np.float32)}
    for step in (10, 30, 20, 40, 50):  # out of order: retention is by step, not by time
        manager.save(step, state)
    assert manager.steps() == [10, 20, 30, 40, 50][-keep:]
    assert len(os.listdir(tmp_path)) == keep


@pytest.mark.parametrize("keep, error", [(0, ValueError), (-1, ValueError), (2.0, TypeError), (True, TypeError)])
def test_keep_is_validated(tmp_path, keep, error):
    with pytest.raises(error, match="keep"):
        CheckpointManager(tmp_path, keep=keep)


# -- mismatches and bad input --------------------------------------------------------------------------------------
def test_missing_file_raises(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint file at .*checkpoint_000000005.npz"):
        load_checkpoint(checkpoint_path(tmp_path, 5), make_state())


def renamed_field(state):
    state["params"]["embedding"] = state["params"].pop("embed")
    return state


def extra_leaf(state):
    state["velocity"] = np.zeros(2, np.float32)  # sorts last among the dict's keys
    return state


def missing_leaf(state):
    del state["tokens"]
    return state


def other_shape(state):
    state["tokens"] = np.arange(5, dtype=np.int32)
    return state


def other_dtype(state):
    state["params"]["embed"] = state["params"]["embed"].astype(jnp.float32)
    return state


def raw_key(state):
    state["rng"] = jax.random.key_data(state["rng"])
    return state


@pytest.mark.parametrize("change, message", [
    (renamed_field, (r"structure: leaf 2 is state\['params'\]\['embed'\] in the file "
                     r"and state\['params'\]\['embedding'\] in the target")),
    (extra_leaf, r"structure: the file has 8 leaves, the target 9; first missing from the file: state\['velocity'\]"),
    (missing_leaf, r"structure: the file has 8 leaves, the target 7; first extra in the file: state\['tokens'\]"),
    (other_shape, r"leaf state\['tokens'\] is int32\[4\] in the file, the target expects int32\[5\]"),
    (other_dtype, r"leaf state\['params'\]\['embed'\] is bfloat16\[12\] in the file, the target expects float32\[12\]"),
    (raw_key, r"leaf state\['rng'\] is key<fry>\[3\] in the file, the target expects uint32\[3, 2\]"),
])
def test_mismatch_raises_and_is_not_skipped(tmp_path, change, message):
    manager = CheckpointManager(tmp_path)
    manager.save(1, make_state())
    manager.save(2, make_state())
    target = change(make_state())
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(checkpoint_path(tmp_path, 2), target)
    assert not isinstance(info.value, CorruptCheckpointError)
    # A mismatch is a code change, not damage: restore_latest raises instead of falling back to step 1.
    with pytest.raises(CheckpointError, match=message):
        manager.restore_latest(target)


@pytest.mark.parametrize("step, state, metadata, error, message", [
    (-1, {}, {}, ValueError, "step must be >= 0"),
    (1.0, {}, {}, TypeError, "step must be an int"),
    (1, {"name": "lstm"}, {}, TypeError, r"leaf state\['name'\] must be an array or a number"),
    (1, {"w": np.array(["a"])}, {}, TypeError, r"leaf state\['w'\] must have a numeric or bool dtype"),
    (1, {}, {"shape": object()}, TypeError, "metadata must be JSON-serialisable"),
    (1, {}, [1, 2], TypeError, "metadata must be a dict"),
])
def test_bad_input_raises_before_writing(tmp_path, step, state, metadata, error, message):
    with pytest.raises(error, match=message):
        save_checkpoint(tmp_path, step, state, metadata)
    assert os.listdir(tmp_path) == []


# -- failing disks -------------------------------------------------------------------------------------------------
class FillingFile:
    """A file whose writes stop with ENOSPC once `capacity` bytes are on disk: a disk filling mid-checkpoint."""

    def __init__(self, file, capacity):
        self._file, self._left = file, capacity

    def write(self, data):
        if len(data) > self._left:
            self._file.write(bytes(data[:self._left]))  # the part that fit really is on disk
            self._file.flush()
            self._left = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._left -= len(data)
        return self._file.write(data)

    def __getattr__(self, name):
        return getattr(self._file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._file.close()


def saved_steps_intact(manager, expected_step, seed):
    state, metadata, step = manager.restore_latest(make_state())
    assert step == expected_step and metadata == {"n": expected_step}
    assert_same_state(state, make_state(seed=seed))


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.97])  # before the first byte, inside a leaf, in the checksum
def test_a_disk_filling_mid_write_raises_one_clear_error_and_keeps_every_earlier_checkpoint(
        tmp_path, monkeypatch, fraction):
    manager = CheckpointManager(tmp_path, keep=2)
    for step in (1, 2):
        manager.save(step, make_state(seed=step), {"n": step})
    capacity = int(fraction * checkpoint_path(tmp_path, 2).stat().st_size)  # step 3's file is as large
    monkeypatch.setattr(checkpoint_module, "open", lambda *args: FillingFile(open(*args), capacity), raising=False)
    with pytest.raises(CheckpointWriteError) as error_info:
        manager.save(3, make_state(seed=3), {"n": 3})
    monkeypatch.undo()
    error = error_info.value
    assert isinstance(error, OSError) and error.errno == errno.ENOSPC
    assert str(error) == (f"[Errno 28] could not save checkpoint step 3 to {checkpoint_path(tmp_path, 3)}: No space "
                          f"left on device; nothing was written under its name, and the earlier checkpoints in "
                          f"{tmp_path} are untouched")
    # the half-written file is gone, retention did not run (keep=2 would have deleted step 1), resume finds step 2
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_000000001.npz", "checkpoint_000000002.npz"]
    saved_steps_intact(manager, 2, seed=2)
    manager.save(3, make_state(seed=3), {"n": 3})  # the disk has room again: saving works as before
    assert manager.steps() == [2, 3]


@pytest.mark.parametrize("failure", ["fsync", "replace"])
def test_an_io_error_at_fsync_or_rename_is_reported_the_same_way(tmp_path, monkeypatch, failure):
    manager = CheckpointManager(tmp_path)
    manager.save(1, make_state(seed=1), {"n": 1})

    def io_error(*args):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, failure, io_error)
    with pytest.raises(CheckpointWriteError, match=r"could not save checkpoint step 2 to .*checkpoint_000000002\.npz: "
                                                   r"Input/output error; nothing was written under its name"):
        manager.save(2, make_state(seed=2), {"n": 2})
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_000000001.npz"]
    saved_steps_intact(manager, 1, seed=1)


def test_a_read_only_directory_raises_one_clear_error(tmp_path, monkeypatch):
    manager = CheckpointManager(tmp_path)
    manager.save(1, make_state(seed=1), {"n": 1})
    # Permission bits do not stop root (this suite may run as root): the refusal is injected where the OS gives it.
    def refuse(path, mode):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(checkpoint_module, "open", refuse, raising=False)
    with pytest.raises(CheckpointWriteError, match=r"could not save checkpoint step 2 to .*: Permission denied \(.*"
                                                   r"\.tmp\); nothing was written under its name, and the earlier "
                                                   r"checkpoints in .* are untouched") as error_info:
        manager.save(2, make_state(seed=2), {"n": 2})
    assert error_info.value.errno == errno.EACCES
    monkeypatch.undo()
    saved_steps_intact(manager, 1, seed=1)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permission bits")
def test_a_really_read_only_directory(tmp_path):
    manager = CheckpointManager(tmp_path / "checkpoints")
    manager.save(1, make_state(seed=1), {"n": 1})
    (tmp_path / "checkpoints").chmod(0o555)
    try:
        with pytest.raises(CheckpointWriteError, match="Permission denied"):
            manager.save(2, make_state(seed=2), {"n": 2})
        saved_steps_intact(manager, 1, seed=1)
    finally:
        (tmp_path / "checkpoints").chmod(0o755)


def test_a_checkpoint_directory_that_is_a_file_raises_one_clear_error(tmp_path):
    occupied = tmp_path / "checkpoints"
    occupied.write_text("not a directory")
    with pytest.raises(CheckpointWriteError, match=r"cannot save checkpoint step 1: .*checkpoints exists and is not "
                                                   r"a directory") as error_info:
        CheckpointManager(occupied).save(1, make_state(), {"n": 1})
    assert error_info.value.errno == errno.ENOTDIR
    with pytest.raises(CheckpointWriteError, match=r"could not save checkpoint step 1 to .*: (Not a directory|File "
                                                   r"exists).*could not create its directory"):
        save_checkpoint(occupied / "inner", 1, make_state())
    assert occupied.read_text() == "not a directory"
    assert CheckpointManager(occupied).restore_latest(make_state()) is None  # nothing to resume, no crash


def test_something_else_under_a_checkpoints_name_is_skipped_as_damage(tmp_path):
    manager = CheckpointManager(tmp_path)
    manager.save(1, make_state(seed=1), {"n": 1})
    checkpoint_path(tmp_path, 2).mkdir()  # e.g. a copy gone wrong
    with pytest.warns(RuntimeWarning, match="is not a regular file"):
        saved_steps_intact(manager, 1, seed=1)
