"""Checkpoint save and restore time on the char-shakespeare language model's training state (params, Adam state,
step, PRNG key, truncated-BPTT carry), for `rnnjax.train.checkpoint` and, optionally, another writer with the same
functions (`save_checkpoint(directory, step, state, metadata)`, `checkpoint_path`, `load_checkpoint(path, target)`),
e.g. the zip-per-step writer before orbax:

    git show 53dabc6:rnnjax/train/checkpoint.py > /tmp/zip_checkpoint.py
    python -m benchmarks.checkpoint_io --other /tmp/zip_checkpoint.py

A third line times orbax alone (no manifest digests, no fsync, no verification). Prints one line per writer:
the state's size and the median and min of `--repeats` saves and restores into a fresh directory each (the
first of each is a warm-up, not counted). No data set is read: the vocabulary size is tinyshakespeare's
(65 characters and <unk>).
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import statistics
import sys
import tempfile
import time

import jax
import numpy as np

import rnnjax
from experiments.language_modeling import train as lm

VOCAB_SIZE = 66  # tinyshakespeare's 65 characters and <unk>


def lm_state():
    """The char-shakespeare preset's TrainState as `experiments.language_modeling` builds it."""
    config = lm.Config(**lm.PRESETS["char-shakespeare"])
    model = lm.make_model(config, VOCAB_SIZE)
    init_key, state_key = jax.random.split(jax.random.key(config.seed))
    optimizer = lm.make_optimizer(config, 1000)
    return rnnjax.train.create_train_state(model.init(init_key), optimizer, state_key,
                                           carry=model.initial_carry(config.batch_size)), config


def load_module(path: str):
    spec = importlib.util.spec_from_file_location("other_checkpoint", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class PlainOrbax:
    """Orbax alone, as a reference for what rnnjax's layer adds (manifest digests, fsync, verification): one
    StandardSave of the state (typed keys as key data) and a StandardRestore into it, synchronous."""

    @staticmethod
    def _arrays(state):
        return jax.tree.map(lambda leaf: jax.random.key_data(leaf) if jax.dtypes.issubdtype(
            leaf.dtype, jax.dtypes.prng_key) else leaf, state)

    @staticmethod
    def save_checkpoint(directory, step, state, metadata):
        import orbax.checkpoint as ocp

        options = ocp.CheckpointManagerOptions(enable_async_checkpointing=False)
        with ocp.CheckpointManager(pathlib.Path(directory).absolute(), options=options) as manager:
            manager.save(step, args=ocp.args.StandardSave(PlainOrbax._arrays(state)))
        return pathlib.Path(directory).absolute() / str(step)

    @staticmethod
    def load_checkpoint(path, target):
        import orbax.checkpoint as ocp

        with ocp.StandardCheckpointer() as checkpointer:
            return (checkpointer.restore(path / "default", PlainOrbax._arrays(target)),)


def measure(module, state, metadata, repeats: int) -> tuple[list[float], list[float]]:
    saves, restores = [], []
    with tempfile.TemporaryDirectory() as root:
        for repeat in range(repeats + 1):
            directory = pathlib.Path(root) / f"run{repeat}"
            started = time.perf_counter()
            path = module.save_checkpoint(directory, 100, state, metadata)
            saved = time.perf_counter()
            restored = module.load_checkpoint(path, state)
            jax.block_until_ready(restored[0])
            done = time.perf_counter()
            if repeat:  # the first round compiles and warms caches
                saves.append(saved - started)
                restores.append(done - saved)
    return saves, restores


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--other", default="", help="path of another checkpoint module to time beside rnnjax's")
    parser.add_argument("--repeats", type=int, default=5, help="timed saves and restores per writer")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    rnnjax.train.retain_freed_memory()
    state, config = lm_state()
    metadata = {"epoch": 3, "batch_index": 17, "config": {"run": vars(config)}}
    size = sum(np.asarray(jax.random.key_data(leaf) if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)
                          else leaf).nbytes for leaf in jax.tree.leaves(state))
    writers = [("rnnjax.train.checkpoint (orbax)", rnnjax.train.checkpoint), ("orbax alone", PlainOrbax)]
    if args.other:
        writers.append((f"{args.other}", load_module(args.other)))
    print(f"state: {len(jax.tree.leaves(state))} leaves, {size / 2**20:.1f} MiB; {args.repeats} repeats; "
          f"jax {jax.__version__}, {jax.devices()[0].platform}")
    for name, module in writers:
        saves, restores = measure(module, state, metadata, args.repeats)
        print(f"{name}: save median {statistics.median(saves) * 1e3:.0f} ms (min {min(saves) * 1e3:.0f}), "
              f"restore median {statistics.median(restores) * 1e3:.0f} ms (min {min(restores) * 1e3:.0f})")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
