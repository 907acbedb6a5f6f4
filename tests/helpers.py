"""Helpers shared by the test modules: fast XLA compile options for tiny programs, pytree comparisons, and
random pytrees. (The tests directory is on `sys.path`, so `from helpers import ...` works in every test file.)"""

import struct

import chex
import jax
import jax.numpy as jnp
import numpy as np

from rnnjax import native

# The path a float32 LSTM/GRU/SimpleRNN takes on this CPU: the C++ loop where the extension is built and enabled.
CLASSIC_PATH = "native" if native.is_enabled() else "fused"


def fast_compile_options() -> dict:
    """XLA options that compile these tiny programs ~4x faster (~0.07 s per LSTM scan instead of ~0.3 s on CPU,
    ~10x for `jax.random`'s kernels): backend optimization level 0 and no fusion emitters. They change how the
    code is generated, not what it computes. An XLA without these options gets the defaults."""
    options = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
    try:
        jax.jit(lambda x: x + 1, compiler_options=options)(np.float32(0))
    except jax.errors.JaxRuntimeError:
        return {}
    return options


FAST_COMPILE = fast_compile_options()


def every_cell(hidden: int) -> dict:
    """One instance of every core cell, by name, plus the MinGRU/MinLSTM forced onto the associative scan (in its
    log and linear spaces): the registry the time-loop, padding and property tests run over."""
    from rnnjax import GRU, LSTM, MinGRU, MinLSTM, SimpleRNN

    return {
        "rnn_tanh": SimpleRNN(hidden),
        "rnn_relu": SimpleRNN(hidden, activation="relu"),
        "lstm": LSTM(hidden),
        "gru": GRU(hidden),
        "mingru": MinGRU(hidden),
        "minlstm": MinLSTM(hidden),
        "mingru_parallel": MinGRU(hidden, parallel_min_length=0),
        "minlstm_parallel": MinLSTM(hidden, scan_space="linear", parallel_min_length=0),
    }


def assert_trees_close(actual, expected, atol: float = 1e-6, rtol: float = 1e-6):
    """Same tree structure (named tuples included), same shapes, leaves equal within the tolerances (chex's
    `assert_trees_all_close`, which names the leaf path that differs)."""
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    chex.assert_trees_all_equal_shapes(actual, expected)
    chex.assert_trees_all_close(actual, expected, atol=atol, rtol=rtol)


def assert_trees_equal(actual, expected):
    """Same tree structure and bit-identical leaves."""
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    chex.assert_trees_all_equal(actual, expected)


def random_like(tree, seed: int):
    """A float32 pytree shaped like `tree` with non-zero leaves (a non-zero initial carry makes masking visible)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda leaf: (0.5 * rng.standard_normal(leaf.shape)).astype(np.float32), tree)


def read_scalars(log_dir) -> dict:
    """`{tag: [(step, value), ...]}` from the TFRecord-framed event files (length u64, crc, data, crc)."""
    import pytest

    event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")
    scalars = {}
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def write_mnist_fixture(folder, monkeypatch, count: int = 100):
    """A `count`-image MNIST (random pixels and labels, the same in both splits) as the four .gz IDX files in
    `folder`, `experiments.mnist.FILES` pinned to their digests."""
    import gzip
    import hashlib

    import numpy as np

    from experiments import mnist
    from experiments.datafiles import DataFile

    rng = np.random.default_rng(1)
    arrays = {"images": rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8),
              "labels": rng.integers(0, 10, size=count, dtype=np.uint8)}
    folder.mkdir(parents=True)
    for key, file in mnist.FILES.items():
        data = gzip.compress(mnist.encode_idx(arrays[key.split("_")[1]]), mtime=0)
        (folder / file.name).write_bytes(data)
        monkeypatch.setitem(mnist.FILES, key, DataFile(file.name, "", hashlib.sha256(data).hexdigest()))


def autodiff_recurrence(cell, params, projected, carry, valid, reverse):
    """The reference every fast path is held to: `lax.scan` over `cell.recurrent_step` with packed-sequence
    masking by `valid` `[time, batch]` (None: every step valid), differentiated by autodiff."""
    def step(carry, inputs):
        projected_x, valid_t = inputs
        new_carry, y = cell.recurrent_step(params, carry, projected_x)
        if valid_t is not None:
            new_carry = jax.tree.map(lambda new, old: jnp.where(valid_t[:, None], new, old), new_carry, carry)
            y = jnp.where(valid_t[:, None], y, jnp.zeros_like(y))
        return new_carry, y

    return jax.lax.scan(step, carry, (projected, valid), reverse=reverse)


def make_loss(recurrence, cell, valid, reverse):
    """Jitted value-and-grad (params, xs, carry) of a loss over `recurrence(cell, params, projected, carry, valid,
    reverse)`'s outputs and final carry."""
    def loss(params, xs, carry):
        final_carry, ys = recurrence(cell, params, cell.project_inputs(params, xs), carry, valid, reverse)
        # Distinct weights per output and cos of the final carry: every cotangent is non-trivial.
        weights = jnp.sin(jnp.arange(ys.size, dtype=ys.dtype)).reshape(ys.shape)
        return jnp.sum(ys * weights) + sum(jnp.sum(jnp.cos(leaf)) for leaf in jax.tree.leaves(final_carry))

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)), compiler_options=FAST_COMPILE)
