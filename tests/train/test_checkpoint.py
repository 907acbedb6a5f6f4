"""Checkpoints on orbax: exact round trip (bfloat16 bits, typed PRNG keys, Python scalars, empty arrays), with and
without a target, readable by orbax alone; atomicity under an exception and under a real kill; detection of
truncated, bit-flipped, rewritten and missing files with fallback to the previous step; failing disks; retention;
clear errors for every mismatch."""

import errno
import json
import os
import pathlib
import shutil
import subprocess
import sys
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from orbax.checkpoint._src.path import async_path

from rnnjax.cells import LSTMState
from rnnjax.train.checkpoint import (
    CheckpointDirectory,
    CheckpointError,
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


def listing(directory) -> list[str]:
    return sorted(os.listdir(directory))


# -- round trip ----------------------------------------------------------------------------------------------------
def test_round_trip_is_exact(tmp_path):
    state = make_state()
    path = save_checkpoint(tmp_path, 7, state, METADATA)
    assert path == tmp_path / "checkpoint_000000007" == checkpoint_path(tmp_path, 7)
    restored, metadata, step = load_checkpoint(path, target=make_state(seed=1))
    assert step == 7 and metadata == METADATA
    assert_same_state(restored, state)
    assert isinstance(restored["params"]["lstm"], LSTMState) and isinstance(restored["opt"][0], AdamState)
    assert restored["params"]["embed"].dtype == jnp.bfloat16
    assert str(restored["rng"].dtype) == "key<fry>"
    assert jax.random.key_impl(restored["rng"]) == jax.random.key_impl(state["rng"])
    # The restored key draws the same numbers as the saved one.
    np.testing.assert_array_equal(jax.random.bits(restored["rng"][1]), jax.random.bits(state["rng"][1]))


def test_relative_paths_save_and_restore(tmp_path, monkeypatch):
    # Orbax itself refuses relative paths; experiments pass `runs/<name>/best` as typed on the command line.
    monkeypatch.chdir(tmp_path)
    state = make_state()
    path = save_checkpoint("runs/best", 3, state, METADATA)
    assert path == tmp_path / "runs" / "best" / "checkpoint_000000003"
    restored, metadata, step = load_checkpoint("runs/best/checkpoint_000000003", target=make_state(seed=1))
    assert step == 3 and metadata == METADATA
    assert_same_state(restored, state)
    restored, _, step = CheckpointDirectory("runs/best").restore_latest(target=make_state(seed=1))
    assert step == 3


def test_abstract_target_from_eval_shape(tmp_path):
    state = make_state()
    path = save_checkpoint(tmp_path, 1, state)
    restored, metadata, _ = load_checkpoint(path, target=jax.eval_shape(lambda: make_state(seed=3)))
    assert_same_state(restored, state)
    assert metadata == {}


def test_restore_without_a_target_takes_shapes_from_the_checkpoint(tmp_path):
    state = make_state()
    restored, metadata, step = load_checkpoint(save_checkpoint(tmp_path, 4, state, METADATA))
    assert step == 4 and metadata == METADATA
    # nested dicts keyed like the orbax tree: NamedTuple fields by name, sequence items by index
    assert sorted(restored) == ["opt", "params", "rng", "step", "tokens"]
    assert sorted(restored["params"]["lstm"]) == ["c", "h"] and list(restored["opt"]["0"]) == ["count", "mu"]
    np.testing.assert_array_equal(leaf_bits(restored["params"]["embed"]), leaf_bits(state["params"]["embed"]))
    assert str(restored["rng"].dtype) == "key<fry>"
    np.testing.assert_array_equal(leaf_bits(restored["rng"]), leaf_bits(state["rng"]))
    assert restored["step"].dtype == jnp.int32 and int(restored["step"]) == 100
    bare = load_checkpoint(save_checkpoint(tmp_path, 5, jnp.arange(3.0)))[0]  # a bare array as the whole state
    np.testing.assert_array_equal(bare, np.arange(3.0))


def test_empty_arrays_round_trip(tmp_path):
    # orbax refuses zero-size arrays: they live in the manifest alone
    state = {"empty": np.zeros((0, 3), np.float32), "keys": jax.random.split(jax.random.key(1), 0),
             "w": np.ones(2, np.float32)}
    restored, _, _ = load_checkpoint(save_checkpoint(tmp_path, 1, state), target=state)
    assert_same_state(restored, state)
    only_empty = {"empty": np.zeros((0,), np.int32)}
    restored, _, _ = load_checkpoint(save_checkpoint(tmp_path, 2, only_empty), target=only_empty)
    assert_same_state(restored, only_empty)


def test_a_checkpoint_is_a_plain_orbax_checkpoint(tmp_path):
    save_checkpoint(tmp_path, 3, make_state(), METADATA)
    options = ocp.CheckpointManagerOptions(step_prefix="checkpoint", step_format_fixed_length=9)
    with ocp.CheckpointManager(tmp_path, options=options) as manager:
        assert manager.all_steps() == [3]
        restored = manager.restore(3)
    assert restored["metadata"] == METADATA and restored["rnnjax"]["step"] == 3
    np.testing.assert_array_equal(restored["state"]["tokens"], np.arange(4, dtype=np.int32))
    assert restored["state"]["params"]["embed"].dtype == jnp.bfloat16  # stored natively, every bit kept
    np.testing.assert_array_equal(leaf_bits(restored["state"]["params"]["embed"]),
                                  leaf_bits(make_state()["params"]["embed"]))
    np.testing.assert_array_equal(restored["state"]["rng"], jax.random.key_data(make_state()["rng"]))


# -- atomicity -----------------------------------------------------------------------------------------------------
def io_error(*args, **kwargs):
    raise OSError(errno.EIO, os.strerror(errno.EIO))


async def async_io_error(*args, **kwargs):
    io_error()


@pytest.mark.parametrize("failure", ["rename", "write_text", "fsync"])  # orbax's commit, its writes, our sync
def test_failed_save_leaves_previous_checkpoint(tmp_path, monkeypatch, failure):
    manager = CheckpointDirectory(tmp_path)
    manager.save(1, make_state(seed=1), {"n": 1})
    if failure == "fsync":
        monkeypatch.setattr(os, "fsync", io_error)
    else:
        monkeypatch.setattr(async_path, failure, async_io_error)
    with pytest.raises(CheckpointWriteError, match=r"could not save checkpoint step 2 to .*checkpoint_000000002: "
                                                   r"Input/output error; nothing was written under its name") as info:
        manager.save(2, make_state(seed=2), {"n": 2})
    assert info.value.errno == errno.EIO
    monkeypatch.undo()
    assert listing(tmp_path) == ["checkpoint_000000001"]  # no final step, no temporary directory
    saved_steps_intact(manager, 1, seed=1)
    manager.save(2, make_state(seed=2), {"n": 2})  # the disk works again: so does saving
    saved_steps_intact(manager, 2, seed=2)


def test_saving_a_step_again_replaces_it_and_a_failed_replacement_keeps_the_old_one(tmp_path, monkeypatch):
    manager = CheckpointDirectory(tmp_path)
    manager.save(1, make_state(seed=1), {"n": 1})
    manager.save(2, make_state(seed=5), {"n": 5})
    manager.save(2, make_state(seed=2), {"n": 2})
    saved_steps_intact(manager, 2, seed=2)
    monkeypatch.setattr(async_path, "rename", async_io_error)
    with pytest.raises(CheckpointWriteError):
        manager.save(2, make_state(seed=3), {"n": 3})
    monkeypatch.undo()
    assert listing(tmp_path) == ["checkpoint_000000001", "checkpoint_000000002"]
    saved_steps_intact(manager, 2, seed=2)


KILLED_WRITER = """
import os, sys
import numpy as np
from orbax.checkpoint._src.path import async_path
from rnnjax.train.checkpoint import CheckpointDirectory
manager = CheckpointDirectory(sys.argv[1])
manager.save(1, {"w": np.ones(3, np.float32)}, {"n": 1})
manager.save(2, {"w": np.full(3, 2, np.float32)}, {"n": 2})
async def die(*args):
    os._exit(17)  # a kill: no cleanup, no finally, no atexit
async_path.rename = die  # orbax's commit: everything of the new step is written, only the rename is left
manager.save(int(sys.argv[2]), {"w": np.full(3, 3, np.float32)}, {"n": 3})
"""


@pytest.mark.parametrize("killed_step, leftover", [(3, ".orbax-checkpoint-tmp"), (2, ".rnnjax-old-")])
def test_killed_writer_leaves_only_a_temporary_directory(tmp_path, killed_step, leftover):
    """A real kill (os._exit, no cleanup runs) just before orbax's rename, in a child process: saving a new step,
    and replacing an existing one (set aside first, so it is gone, never half-replaced)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmp_path), str(killed_step)], env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 17, result.stderr
    left = [name for name in listing(tmp_path) if not name.startswith("checkpoint_00000000") or "." in name]
    assert any(leftover in name for name in left), listing(tmp_path)

    manager = CheckpointDirectory(tmp_path)
    expected = 2 if killed_step == 3 else 1
    assert manager.steps() == [1, 2][:expected]
    state, metadata, step = manager.restore_latest({"w": np.zeros(3, np.float32)})
    assert step == expected and metadata == {"n": expected}
    np.testing.assert_array_equal(state["w"], np.full(3, expected, np.float32))

    (tmp_path / "notes.txt").write_text("not ours")
    manager.save(4, {"w": np.full(3, 4, np.float32)})
    assert listing(tmp_path) == [f"checkpoint_00000000{s}" for s in [1, 2][:expected]] + ["checkpoint_000000004",
                                                                                          "notes.txt"]


# -- corruption ----------------------------------------------------------------------------------------------------
def largest_file(path: pathlib.Path) -> pathlib.Path:
    return max((p for p in (path / "state").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def truncate(path: pathlib.Path):
    victim = largest_file(path)
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])


def flip_byte(path: pathlib.Path):
    victim = largest_file(path)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x40
    victim.write_bytes(bytes(data))


def rewrite_leaf(path: pathlib.Path):
    """Replaces the step's arrays with a well-formed orbax tree of the same structure and other values: orbax
    reads it without complaint, so only the manifest's SHA-256 can notice."""
    other = save_checkpoint(path.parent / "other", 1, make_state(seed=9))
    shutil.rmtree(path / "state")
    shutil.copytree(other / "state", path / "state")
    shutil.rmtree(path.parent / "other")


def drop_state(path: pathlib.Path):
    """Orbax's `restore(step)` without args returns such a step as if it had only metadata."""
    shutil.rmtree(path / "state")


def edit_metadata(path: pathlib.Path):
    (path / "metadata" / "metadata").write_text(json.dumps({"n": 7}))


def drop_manifest(path: pathlib.Path):
    shutil.rmtree(path / "rnnjax")


@pytest.mark.parametrize("damage, reason", [
    (truncate, "unreadable|fails its checksum"), (flip_byte, "unreadable|fails its checksum"),
    (rewrite_leaf, r"leaf state\['opt'\]\[0\].count fails its checksum"),
    (drop_state, r"unreadable \(KeyError: .*state"),
    (edit_metadata, "metadata fails its checksum"), (drop_manifest, "no readable manifest"),
])
def test_damaged_checkpoint_is_detected_and_skipped(tmp_path, damage, reason):
    manager = CheckpointDirectory(tmp_path)
    manager.save(1, make_state(seed=1), {"n": 1})
    path = manager.save(2, make_state(seed=2), {"n": 2})
    damage(path)
    with pytest.raises(CorruptCheckpointError, match=reason):
        load_checkpoint(path, make_state())
    with pytest.warns(RuntimeWarning, match=r"checkpoint_000000002") as record:
        state, metadata, step = manager.restore_latest(make_state())
    assert len(record) == 1
    assert step == 1 and metadata == {"n": 1}
    assert_same_state(state, make_state(seed=1))


def test_all_checkpoints_corrupt_gives_none(tmp_path):
    manager = CheckpointDirectory(tmp_path)
    for step in (1, 2):
        truncate(manager.save(step, make_state()))
    with pytest.warns(RuntimeWarning) as record:
        assert manager.restore_latest(make_state()) is None
    assert len(record) == 2


def test_empty_or_missing_directory_gives_none(tmp_path):
    assert CheckpointDirectory(tmp_path).restore_latest(make_state()) is None
    manager = CheckpointDirectory(tmp_path / "does_not_exist")
    assert manager.steps() == [] and manager.restore_latest(make_state()) is None
    assert not (tmp_path / "does_not_exist").exists()


# -- retention -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("keep", [1, 2, 3, None])
def test_keep_retains_newest_steps(tmp_path, keep):
    manager = CheckpointDirectory(tmp_path, keep=keep)
    state = {"w": np.zeros(2, np.float32)}
    for step in (10, 30, 20, 40, 50):  # out of order: retention is by step, not by time
        manager.save(step, state)
    expected = [10, 20, 30, 40, 50][-keep:] if keep else [10, 20, 30, 40, 50]
    assert manager.steps() == expected
    assert len(os.listdir(tmp_path)) == len(expected)
    manager.delete_all()
    assert os.listdir(tmp_path) == [] and manager.restore_latest(state) is None


@pytest.mark.parametrize("keep, error", [(0, ValueError), (-1, ValueError), (2.0, TypeError), (True, TypeError)])
def test_keep_is_validated(tmp_path, keep, error):
    with pytest.raises(error, match="keep"):
        CheckpointDirectory(tmp_path, keep=keep)


def test_orbax_name_is_not_shadowed():
    import rnnjax.train

    assert not hasattr(rnnjax.train, "CheckpointManager")
    with pytest.raises(AttributeError, match="CheckpointDirectory.*orbax.checkpoint.CheckpointManager"):
        rnnjax.train.CheckpointManager  # noqa: B018


# -- mismatches and bad input --------------------------------------------------------------------------------------
def test_missing_step_raises(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at .*checkpoint_000000005"):
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
    manager = CheckpointDirectory(tmp_path)
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
    (1, {"a.b": np.ones(1), "a": {"b": np.ones(1)}}, {}, ValueError, r"state\['a'\]\['b'\] and state\['a.b'\]"),
])
def test_bad_input_raises_before_writing(tmp_path, step, state, metadata, error, message):
    with pytest.raises(error, match=message):
        save_checkpoint(tmp_path / "checkpoints", step, state, metadata)
    assert os.listdir(tmp_path) == []


# -- failing disks -------------------------------------------------------------------------------------------------
def saved_steps_intact(manager, expected_step, seed):
    state, metadata, step = manager.restore_latest(make_state())
    assert step == expected_step and metadata == {"n": expected_step}
    assert_same_state(state, make_state(seed=seed))


def test_a_disk_filling_mid_write_raises_one_clear_error_and_keeps_every_earlier_checkpoint(tmp_path, monkeypatch):
    manager = CheckpointDirectory(tmp_path, keep=2)
    for step in (1, 2):
        manager.save(step, make_state(seed=step), {"n": step})
    writes = []

    async def fill(*args, **kwargs):  # orbax's JSON and array-metadata files: the disk fills after the arrays
        writes.append(1)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(async_path, "write_text", fill)
    with pytest.raises(CheckpointWriteError) as error_info:
        manager.save(3, make_state(seed=3), {"n": 3})
    monkeypatch.undo()
    assert writes
    error = error_info.value
    assert isinstance(error, OSError) and error.errno == errno.ENOSPC
    assert str(error) == (f"[Errno 28] could not save checkpoint step 3 to {checkpoint_path(tmp_path, 3)}: No space "
                          f"left on device; nothing was written under its name, and the earlier checkpoints in "
                          f"{tmp_path} are untouched")
    # the half-written step is gone, retention did not run (keep=2 would have deleted step 1), resume finds step 2
    assert listing(tmp_path) == ["checkpoint_000000001", "checkpoint_000000002"]
    saved_steps_intact(manager, 2, seed=2)
    manager.save(3, make_state(seed=3), {"n": 3})  # the disk has room again: saving works as before
    assert manager.steps() == [2, 3]


def test_a_read_only_directory_raises_one_clear_error(tmp_path, monkeypatch):
    manager = CheckpointDirectory(tmp_path)
    manager.save(1, make_state(seed=1), {"n": 1})

    # Permission bits do not stop root (this suite may run as root): the refusal is injected where the OS gives it.
    async def refuse(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(async_path, "mkdir", refuse)
    with pytest.raises(CheckpointWriteError, match=r"could not save checkpoint step 2 to .*: Permission denied \(.*"
                                                   r"orbax-checkpoint-tmp.*\); nothing was written under its name, "
                                                   r"and the earlier checkpoints in .* are untouched") as error_info:
        manager.save(2, make_state(seed=2), {"n": 2})
    assert error_info.value.errno == errno.EACCES
    monkeypatch.undo()
    saved_steps_intact(manager, 1, seed=1)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permission bits")
def test_a_really_read_only_directory(tmp_path):
    manager = CheckpointDirectory(tmp_path / "checkpoints")
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
        CheckpointDirectory(occupied).save(1, make_state(), {"n": 1})
    assert error_info.value.errno == errno.ENOTDIR
    with pytest.raises(CheckpointWriteError, match=r"could not save checkpoint step 1 to .*: (Not a directory|File "
                                                   r"exists).*could not create its directory"):
        save_checkpoint(occupied / "inner", 1, make_state())
    assert occupied.read_text() == "not a directory"
    assert CheckpointDirectory(occupied).restore_latest(make_state()) is None  # nothing to resume, no crash


@pytest.mark.parametrize("occupant", ["file", "empty directory"])
def test_something_else_under_a_checkpoints_name_is_skipped_as_damage(tmp_path, occupant):
    manager = CheckpointDirectory(tmp_path)
    manager.save(1, make_state(seed=1), {"n": 1})
    if occupant == "file":
        checkpoint_path(tmp_path, 2).write_text("a copy gone wrong")
    else:
        checkpoint_path(tmp_path, 2).mkdir()
    with pytest.warns(RuntimeWarning, match="is not a directory|no readable manifest"):
        saved_steps_intact(manager, 1, seed=1)
