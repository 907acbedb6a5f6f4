"""The cuDNN path on CPU, where cuDNN has no lowering: `LSTMParams` pack into `jax.experimental.rnn`'s flat weight
vector and back; its reference `lstm_ref` on the packed weights computes what rnnjax computes (one layer, and a
stacked bidirectional `RNN`); the wrapper `unroll` calls on a GPU (lengths, zero lengths, reverse, NaN padding,
gradients, vmap) equals the XLA scan when `lstm_ref` stands in for cuDNN; and the dispatch rule, a pure function,
picks "cudnn" / "pallas" / the XLA paths for `backend="cuda"`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import CLASSIC_PATH
from helpers import FAST_COMPILE
from helpers import assert_trees_close
from helpers import random_like
from jax.experimental import rnn as jax_rnn

import rnnjax
from rnnjax import GRU, LSTM, MinGRU, SimpleRNN, unroll, unroll_path
from rnnjax import _cudnn
from rnnjax import _gpu

TIME, BATCH, FEATURES, HIDDEN = 6, 4, 3, 5
LENGTHS = (6, 2, 0, 1)  # a full sequence, a short one, an empty one, a single step


def test_packing_round_trips_and_matches_jax_layout(key):
    model = rnnjax.RNN("lstm", input_size=FEATURES, hidden_size=HIDDEN, num_layers=2, bidirectional=True)
    layers = [p for layer in model.init(key) for p in (layer.forward, layer.backward)]
    packed = _cudnn.pack_lstm_weights(layers)
    assert packed.shape == (_cudnn.num_weights(FEATURES, HIDDEN, 2, True),)
    assert packed.shape == (jax_rnn.get_num_params_in_lstm(FEATURES, HIDDEN, 2, True),)
    unpacked = _cudnn.unpack_lstm_weights(packed, FEATURES, HIDDEN, 2, True)
    assert_trees_close(unpacked, layers, atol=0, rtol=0)
    # The layout itself: pseudo-layer 0's W_ih first, then its W_hh; the biases after every weight matrix.
    np.testing.assert_array_equal(packed[: 4 * HIDDEN * FEATURES], layers[0].weight_ih.reshape(-1))
    assert float(packed[-1]) == float(layers[-1].bias_hh[-1])


def test_lstm_ref_on_packed_weights_equals_a_stacked_bidirectional_rnn(key):
    model = rnnjax.RNN("lstm", input_size=FEATURES, hidden_size=HIDDEN, num_layers=2, bidirectional=True)
    params = random_like(model.init(key), seed=1)
    layers = [p for layer in params for p in (layer.forward, layer.backward)]
    xs = random_like(jnp.zeros((BATCH, TIME, FEATURES)), seed=2)
    carry = random_like(model.initial_carry((BATCH,)), seed=3)
    lengths = jnp.asarray((6, 2, 3, 1), jnp.int32)  # lstm_ref reads the carry at length - 1: no zero here
    ys, expected = model.apply(params, xs, carry=carry, lengths=lengths)
    w_ih, w_hh, b_ih, b_hh = jax_rnn.unpack_lstm_weights(_cudnn.pack_lstm_weights(layers), FEATURES, HIDDEN, 2, True)
    y_ref, h_n, c_n = jax_rnn.lstm_ref(xs, carry.h, carry.c, w_ih, w_hh, b_ih, b_hh, lengths, FEATURES, HIDDEN, 2,
                                       0.0, True)
    assert_trees_close((y_ref, h_n, c_n), (ys, expected.h, expected.c), atol=1e-6)


def run(path, params, xs, carry, lengths, reverse):
    """`unroll`'s XLA scan, or the cuDNN wrapper with `lstm_ref` standing in for cuDNN; batch-major."""
    if path == "xla":
        return unroll(LSTM(HIDDEN), params, xs, carry=carry, lengths=lengths, reverse=reverse, backward="autodiff")
    final, ys = _cudnn.cudnn_unroll(params, jnp.swapaxes(xs, 0, 1), carry, lengths, reverse, "reference")
    return jnp.swapaxes(ys, 0, 1), final


def loss(path, lengths, reverse):
    def value(params, xs, carry):
        ys, final = run(path, params, xs, carry, lengths, reverse)
        weights = jnp.sin(jnp.arange(ys.size, dtype=ys.dtype)).reshape(ys.shape)
        return jnp.sum(ys * weights) + sum(jnp.sum(jnp.cos(leaf)) for leaf in jax.tree.leaves(final))

    return jax.value_and_grad(value, argnums=(0, 1, 2))


def jit(f):
    return jax.jit(f, compiler_options=FAST_COMPILE)


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "masked"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_the_cudnn_wrapper_equals_the_xla_scan(lengths, reverse, key):
    params = random_like(LSTM(HIDDEN).init(key, FEATURES), seed=1)
    xs = random_like(jnp.zeros((BATCH, TIME, FEATURES)), seed=2)
    carry = random_like(LSTM(HIDDEN).initial_carry((BATCH,)), seed=3)
    if lengths is not None:
        lengths = jnp.asarray(lengths)
        xs = jnp.asarray(xs).at[1, 2:].set(jnp.nan).at[2].set(jnp.inf)  # padding of any value reaches nothing
    assert_trees_close(run("cudnn", params, xs, carry, lengths, reverse),
                       run("xla", params, jnp.nan_to_num(xs, posinf=0.0), carry, lengths, reverse), atol=1e-6)
    value, grads = jit(loss("cudnn", lengths, reverse))(params, xs, carry)
    expected_value, expected_grads = jit(loss("xla", lengths, reverse))(params, jnp.nan_to_num(xs, posinf=0.0), carry)
    np.testing.assert_allclose(value, expected_value, rtol=1e-6)
    assert_trees_close(grads, expected_grads, atol=1e-5, rtol=1e-5)
    if lengths is not None:
        assert float(jnp.abs(grads[1][1, 2:]).max()) == 0.0  # padded inputs get exactly zero gradient


def test_the_cudnn_wrapper_loops_under_vmap(key):
    params = random_like(LSTM(HIDDEN).init(key, FEATURES), seed=1)
    stacked = jax.tree.map(lambda leaf: jnp.stack([leaf, -0.5 * leaf]), params)  # per-seed weights, as vmapped
    xs = random_like(jnp.zeros((BATCH, TIME, FEATURES)), seed=2)
    carry = random_like(LSTM(HIDDEN).initial_carry((BATCH,)), seed=3)
    lengths = jnp.asarray(LENGTHS)

    def grads(path):
        value = loss(path, lengths, False)
        return jit(jax.vmap(lambda p: value(p, xs, carry)))(stacked)

    assert_trees_close(grads("cudnn"), grads("xla"), atol=1e-5, rtol=1e-5)


def test_unroll_takes_the_cudnn_path_on_a_gpu_backend(monkeypatch, key):
    cell = LSTM(HIDDEN)
    params = random_like(cell.init(key, FEATURES), seed=1)
    xs = random_like(jnp.zeros((TIME, BATCH, FEATURES)), seed=2)  # time-major
    lengths = jnp.asarray(LENGTHS)
    expected = unroll(cell, params, xs, lengths=lengths, reverse=True, time_major=True)
    expected_unbatched = unroll(cell, params, xs[:, 1], lengths=jnp.asarray(2))
    monkeypatch.setattr(_gpu, "backend", lambda: "cuda")
    assert unroll_path(cell, params, xs) == "cudnn"
    assert unroll_path(cell, params, xs, backward="autodiff") == "sequential"
    actual = jax.jit(lambda p, x: unroll(cell, p, x, lengths=lengths, reverse=True, time_major=True))(params, xs)
    assert_trees_close(actual, expected, atol=1e-6)
    assert_trees_close(unroll(cell, params, xs[:, 1], lengths=jnp.asarray(2)), expected_unbatched, atol=1e-6)


def shapes(cell, xs_dtype="float32", params_dtype="float32", carry_dtype="float32"):
    params = jax.eval_shape(lambda: cell.init(jax.random.key(0), FEATURES, jnp.dtype(params_dtype)))
    carry = jax.eval_shape(lambda: cell.initial_carry((BATCH,), jnp.dtype(carry_dtype)))
    return params, jnp.dtype(xs_dtype), carry


RULE = [  # (cell, dtypes of xs/params/carry, flags, expected path on an NVIDIA GPU)
    (LSTM(8), ("float32",) * 3, {}, "cudnn"),
    (LSTM(8, forget_bias=1.0), ("bfloat16", "float32", "float32"), {}, "cudnn"),  # bf16 inputs are cast
    (LSTM(8, matmul_dtype="bfloat16"), ("float32",) * 3, {}, "pallas"),
    (GRU(8), ("float32",) * 3, {}, "pallas"),
    (GRU(8, matmul_dtype="bfloat16"), ("bfloat16", "float32", "float32"), {}, "pallas"),
    (LSTM(8, matmul_dtype="float16"), ("float32",) * 3, {}, None),
    (LSTM(8), ("float32", "bfloat16", "float32"), {}, None),  # bf16 params: the XLA scan
    (LSTM(8), ("float32", "float32", "bfloat16"), {}, None),
    (SimpleRNN(8), ("float32",) * 3, {}, None),
    (MinGRU(8), ("float32",) * 3, {}, None),
    (LSTM(8), ("float32",) * 3, {"remat": True}, None),
    (GRU(8), ("float32",) * 3, {"backward": "autodiff"}, None),
    (LSTM(8), ("float32",) * 3, {"backward": "custom"}, "cudnn"),
    (LSTM(8), ("float32",) * 3, {"lengths": jax.ShapeDtypeStruct((BATCH,), jnp.int64)}, "cudnn"),
    (LSTM(8), ("float32",) * 3, {"lengths": jax.ShapeDtypeStruct((BATCH,), jnp.float32)}, None),
    (LSTM(8), ("float32",) * 3, {"time": 0}, None),
    (GRU(8), ("float32",) * 3, {"batch_size": 0}, None),
]


@pytest.mark.parametrize("cell, dtypes, flags, expected", RULE)
def test_the_dispatch_rule(cell, dtypes, flags, expected):
    params, xs_dtype, carry = shapes(cell, *dtypes)
    flags = {"time": TIME, "batch_size": BATCH, **flags}
    assert _gpu.gpu_path("cuda", cell, params, xs_dtype, carry, **flags) == expected
    assert _gpu.gpu_path("gpu", cell, params, xs_dtype, carry, **flags) == expected
    for backend in ("cpu", "tpu", "rocm"):  # only NVIDIA GPUs get either kernel
        assert _gpu.gpu_path(backend, cell, params, xs_dtype, carry, **flags) is None


def test_unroll_path_on_cpu_is_unchanged(key):
    xs = jax.ShapeDtypeStruct((BATCH, TIME, FEATURES), jnp.float32)
    for cell in (LSTM(8), GRU(8), LSTM(8, matmul_dtype="bfloat16")):
        params = jax.eval_shape(lambda cell=cell: cell.init(key, FEATURES))
        assert unroll_path(cell, params, xs) == CLASSIC_PATH


def test_reverse_valid_is_its_own_inverse():
    x = jnp.arange(2 * 5, dtype=jnp.float32).reshape(2, 5)
    lengths = jnp.asarray([3, 0])
    np.testing.assert_array_equal(_cudnn.reverse_valid(x, lengths), [[2, 1, 0, 3, 4], [5, 6, 7, 8, 9]])
    np.testing.assert_array_equal(_cudnn.reverse_valid(_cudnn.reverse_valid(x, lengths), lengths), x)
