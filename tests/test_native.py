"""The native CPU recurrence (`rnnjax.native`, csrc/native_recurrence.cc) equals autodiff of the plain `lax.scan`:
outputs, final carries and every gradient, in the batch-major and time-major layouts, with masks, reverse,
bidirectional and stacked layers, random initial carries, odd sizes and bfloat16 GEMM operands; its nonlinearities
are accurate to float32 rounding; its results do not depend on the thread count; and without the extension
`unroll` falls back to XLA with one logged line."""

import ctypes
import dataclasses
import logging
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import FAST_COMPILE
from helpers import autodiff_recurrence
from helpers import make_loss
from helpers import assert_trees_close
from helpers import random_like

from rnnjax import GRU, LSTM, Bidirectional, Recurrent, SimpleRNN, Stack, native, unroll, unroll_path
from rnnjax._fused import scan_recurrence
from rnnjax._native_recurrence import _weight_gradient
from rnnjax._native_recurrence import native_unroll

pytestmark = pytest.mark.skipif(not native.is_available(), reason=f"{native.unavailable_reason()}")

CELLS = [LSTM(37), GRU(37), SimpleRNN(37), SimpleRNN(37, activation="relu")]
CELL_IDS = ["lstm", "gru", "rnn_tanh", "rnn_relu"]
TIME, BATCH, FEATURES = 7, 5, 4
LENGTHS = (7, 0, 3, 5, 1)  # full, empty and partial sequences


def case(cell, key, time=TIME, batch=BATCH, features=FEATURES, lengths=LENGTHS):
    # PyTorch's initialisation (uniform within 1/sqrt(H)), a random non-zero carry: the regime the layers train in
    # (random weights of O(1) make a 37-unit RNN chaotic, and any rounding difference grows by ~3x a step).
    params = cell.init(key, features)
    xs = random_like(jnp.zeros((time, batch, features)), seed=2)
    carry = random_like(cell.initial_carry((batch,)), seed=3)
    valid = None if lengths is None else jnp.arange(time)[:, None] < jnp.asarray(lengths)[None, :]
    return params, xs, carry, valid


def native_layer(cell, params, xs, carry, valid, reverse, batch_major=False):
    """`(final_carry, ys)` of the native path over time-major `xs` `[T, B, D]`, run in the batch-major layout
    (and transposed back) when `batch_major`, so both layouts are held to the same references."""
    if batch_major:
        ys, final = native_unroll(cell, params, jnp.swapaxes(xs, 0, 1), carry, valid, reverse, time_major=False)
        return final, jnp.swapaxes(ys, 0, 1)
    ys, final = native_unroll(cell, params, xs, carry, valid, reverse, time_major=True)
    return final, ys


def make_layer_loss(layer, cell, valid, reverse, **options):
    """Jitted value-and-grad (params, xs, carry) of the loss of `helpers.make_loss` over `layer(cell, params, xs,
    carry, valid, reverse)`, a layer over raw inputs (the native path projects its inputs itself)."""
    def loss(params, xs, carry):
        final_carry, ys = layer(cell, params, xs, carry, valid, reverse, **options)
        weights = jnp.sin(jnp.arange(ys.size, dtype=ys.dtype)).reshape(ys.shape)
        return jnp.sum(ys * weights) + sum(jnp.sum(jnp.cos(leaf)) for leaf in jax.tree.leaves(final_carry))

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)), compiler_options=FAST_COMPILE)


def elementwise(x, function):
    return jax.ffi.ffi_call("rnnjax_elementwise", jax.ShapeDtypeStruct(x.shape, jnp.float32))(
        x, function=np.int32(function))


def test_the_vectorised_nonlinearities_are_accurate_to_float32_rounding():
    x = np.concatenate([np.linspace(-30, 30, 200_001), np.linspace(-1e-3, 1e-3, 2_001), [0.0, -0.0, 88.0, -100.0]])
    x = x.astype(np.float32)
    exact = x.astype(np.float64)
    sigmoid = np.asarray(elementwise(x, 0))
    tanh = np.asarray(elementwise(x, 1))
    np.testing.assert_allclose(sigmoid, 1 / (1 + np.exp(-exact)), rtol=4e-7, atol=1e-30)
    np.testing.assert_allclose(tanh, np.tanh(exact), rtol=4e-7, atol=1e-9)
    assert np.all(np.abs(tanh) <= 1) and np.all((sigmoid >= 0) & (sigmoid <= 1))
    inside = np.abs(x) < 80
    np.testing.assert_allclose(np.asarray(elementwise(x, 2))[inside], np.exp(exact[inside]), rtol=4e-7)
    # NaN propagates (a clamp must not turn it into a number); bfloat16 rounding is XLA's, ties to even.
    special = np.array([np.nan, np.inf, -np.inf], np.float32)
    assert np.isnan(np.asarray(elementwise(special[:1], 0))[0]) and np.isnan(np.asarray(elementwise(special[:1], 1))[0])
    np.testing.assert_array_equal(np.asarray(elementwise(special[1:], 1)), [1.0, -1.0])
    rounded = np.asarray(elementwise(np.concatenate([x, special]), 3))
    expected = np.asarray(jnp.asarray(np.concatenate([x, special])).astype(jnp.bfloat16).astype(jnp.float32))
    np.testing.assert_array_equal(rounded, expected)


@pytest.mark.parametrize("cell", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "masked"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("batch_major", [False, True], ids=["time-major", "batch-major"])
def test_native_equals_autodiff_of_the_plain_scan(cell, lengths, reverse, batch_major, key):
    """Outputs, final carry and the gradients of params, inputs and initial carry, in either layout."""
    params, xs, carry, valid = case(cell, key, lengths=lengths)
    projected = cell.project_inputs(params, xs)
    assert_trees_close(native_layer(cell, params, xs, carry, valid, reverse, batch_major),
                       autodiff_recurrence(cell, params, projected, carry, valid, reverse), atol=1e-5, rtol=1e-5)
    expected_value, expected_grads = make_loss(autodiff_recurrence, cell, valid, reverse)(params, xs, carry)
    value, grads = make_layer_loss(native_layer, cell, valid, reverse, batch_major=batch_major)(params, xs, carry)
    np.testing.assert_allclose(value, expected_value, rtol=1e-6)
    assert_trees_close(grads, expected_grads, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cell", [LSTM(1), GRU(16), SimpleRNN(33), LSTM(48)], ids=["lstm1", "gru16", "rnn33", "lstm48"])
@pytest.mark.parametrize("time, batch, lengths", [(1, 1, None), (1, 3, (0, 1, 1)), (4, 1, (4,)), (3, 13, None)],
                         ids=["T1B1", "T1-empty", "B1", "B13"])
def test_odd_sizes(cell, time, batch, lengths, key):
    """H of 1, a whole vector, a partial last vector and three vectors; B = 1 and B over a register block; T = 1,
    empty and full sequences."""
    params, xs, carry, valid = case(cell, key, time=time, batch=batch, features=3, lengths=lengths)
    expected_value, expected_grads = make_loss(autodiff_recurrence, cell, valid, False)(params, xs, carry)
    for batch_major in (False, True):
        value, grads = make_layer_loss(native_layer, cell, valid, False, batch_major=batch_major)(params, xs, carry)
        np.testing.assert_allclose(value, expected_value, rtol=1e-6)
        assert_trees_close(grads, expected_grads, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh"])
def test_unroll_takes_the_native_path_in_bidirectional_stacks_and_matches_autodiff(mode, key):
    """A two-level stack of bidirectional layers with lengths and random initial carries: `unroll` runs every
    level natively, and its outputs, carries and gradients equal the plain scan's (`remat=True` takes it)."""
    cell = {"lstm": LSTM(20), "gru": GRU(20), "rnn_tanh": SimpleRNN(20)}[mode]
    assert unroll_path(cell, cell.init(key, 6), jnp.zeros((3, 9, 6))) == "native"
    lengths = jnp.asarray([9, 4, 0])

    def run(remat):  # remat=True: the plain scan, differentiated by autodiff (rematerialised)
        stack = Stack([Bidirectional(Recurrent(cell, remat=remat)) for _ in range(2)])
        params = stack.init(key, 6)
        xs = random_like(jnp.zeros((3, 9, 6)), seed=5)
        carry = random_like(stack.initial_carry((3,)), seed=6)

        def loss(params, xs, carry):
            ys, final = stack.apply(params, xs, carry=carry, lengths=lengths)
            weights = jnp.cos(jnp.arange(ys.size, dtype=ys.dtype)).reshape(ys.shape)
            return jnp.sum(ys * weights) + sum(jnp.sum(jnp.sin(leaf)) for leaf in jax.tree.leaves(final))

        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(params, xs, carry)

    (value, grads), (expected_value, expected_grads) = run(False), run(True)
    # A sum over two stacked levels of outputs and carries: float32 rounding of its terms reaches ~2e-6 relative
    # (seen with the -O1 sanitizer build, whose FMA contraction differs from the -O3 one).
    np.testing.assert_allclose(value, expected_value, rtol=1e-5)
    assert_trees_close(grads, expected_grads, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cell", CELLS[:3], ids=CELL_IDS[:3])
def test_bfloat16_operands_match_the_fused_path(cell, key):
    """matmul_dtype="bfloat16": the same rounded operands as the fused XLA path, float32 accumulation in another
    order, so the forward agrees to float32 rounding and the gradients (rounded at other points than autodiff
    rounds them) to bf16 precision."""
    cell = dataclasses.replace(cell, matmul_dtype="bfloat16")
    params, xs, carry, valid = case(cell, key)
    projected = cell.project_inputs(params, xs)
    assert_trees_close(native_layer(cell, params, xs, carry, valid, False),
                       scan_recurrence(cell, params, projected, carry, valid, False), atol=2e-6, rtol=2e-6)
    _, expected_grads = make_loss(scan_recurrence, cell, valid, False)(params, xs, carry)
    _, grads = make_layer_loss(native_layer, cell, valid, False, batch_major=True)(params, xs, carry)
    for got, expected in zip(jax.tree.leaves(grads), jax.tree.leaves(expected_grads)):
        np.testing.assert_allclose(got, expected, atol=1e-2 * float(jnp.max(jnp.abs(expected))))
    _, autodiff_grads = make_loss(autodiff_recurrence, cell, valid, False)(params, xs, carry)
    for got, expected in zip(jax.tree.leaves(grads), jax.tree.leaves(autodiff_grads)):
        np.testing.assert_allclose(got, expected, atol=2e-2 * float(jnp.max(jnp.abs(expected))))


@pytest.mark.parametrize("cell", [LSTM(70), GRU(70), LSTM(70, matmul_dtype="bfloat16")],
                         ids=["lstm", "gru", "lstm-bf16"])
def test_results_do_not_depend_on_the_thread_count(cell, key, monkeypatch):
    """`RNNJAX_NATIVE_THREADS` is read per call; every tile is computed the same way on any thread, so one thread
    and the whole pool give bit-identical outputs and gradients (H = 70: five tiles, split unevenly)."""
    params, xs, carry, valid = case(cell, key, time=9, batch=7, lengths=(9, 0, 3, 5, 1, 9, 8))
    grad = make_layer_loss(native_layer, cell, valid, True, batch_major=True)
    results = []
    for threads in ("1", "2", "3", ""):
        monkeypatch.setenv("RNNJAX_NATIVE_THREADS", threads)
        results.append(jax.device_get(grad(params, xs, carry)))
    for result in results[1:]:
        for got, expected in zip(jax.tree.leaves(result), jax.tree.leaves(results[0])):
            np.testing.assert_array_equal(got, expected)


amx_only = pytest.mark.skipif(not native.uses_amx(), reason="bfloat16 runs on AMX tiles only with the amx build")


@pytest.mark.parametrize("rows, gates, width", [(1, 3, 1), (37, 50, 19), (300, 130, 100), (513, 17, 49)])
def test_the_float32_weight_gradient_is_the_float64_product(rows, gates, width):
    """[dW_1 | dW_2] = dgates^T [inputs_1 | inputs_2] in float32 on the FMA kernel, at sizes that leave partial
    panels of rows (128), blocks of gates (8 and 64) and blocks of columns (48 with AVX-512, 24 with AVX2). One pass
    serves both inputs: each equals its product alone, also when the other is empty."""
    rng = np.random.default_rng(rows)
    dgates = rng.standard_normal((rows, gates), dtype=np.float32)
    inputs = rng.standard_normal((rows, width), dtype=np.float32)
    second = rng.standard_normal((rows, width // 2 + 3), dtype=np.float32)
    got = _weight_gradient(jnp.asarray(dgates), jnp.asarray(inputs), jnp.asarray(second), "rnnjax_weight_gradient_f32")
    for result, operand in zip(got, (inputs, second)):
        exact = dgates.astype(np.float64).T @ operand
        scale = np.abs(dgates.astype(np.float64)).T @ np.abs(operand)
        assert result.shape == exact.shape
        np.testing.assert_array_less(np.abs(np.asarray(result) - exact), 4e-7 * scale + 1e-30)
    alone, empty = _weight_gradient(jnp.asarray(dgates), jnp.asarray(inputs), jnp.zeros((rows, 0)),
                                    "rnnjax_weight_gradient_f32")
    np.testing.assert_array_equal(alone, got[0])
    assert empty.shape == (gates, 0)
    empty, alone = _weight_gradient(jnp.asarray(dgates), jnp.zeros((rows, 0)), jnp.asarray(second),
                                    "rnnjax_weight_gradient_f32")
    np.testing.assert_array_equal(alone, got[1])
    assert empty.shape == (gates, 0)
    none, _ = _weight_gradient(jnp.zeros((0, gates)), jnp.zeros((0, width)), jnp.zeros((0, 1)),
                               "rnnjax_weight_gradient_f32")
    np.testing.assert_array_equal(none, np.zeros((gates, width)))


@amx_only
@pytest.mark.parametrize("rows, gates, width", [(1, 3, 1), (37, 50, 19), (64, 16, 32), (700, 300, 70), (300, 150, 800)])
def test_the_amx_weight_gradient_is_the_bf16_gemm(rows, gates, width):
    """[dW_1 | dW_2] = dgates^T [inputs_1 | inputs_2] on AMX tiles: the bfloat16-rounded operands' products summed in
    float32, at sizes that leave partial chunks of rows, partial blocks of gates and columns, and several groups of
    gates and panels of rows (of both sizes: the inputs' width past 768 takes the smaller); with no second input, the
    first's result is bit for bit the same."""
    rng = np.random.default_rng(rows)
    dgates = rng.standard_normal((rows, gates), dtype=np.float32)
    inputs = rng.standard_normal((rows, width), dtype=np.float32)
    second = rng.standard_normal((rows, width // 2 + 3), dtype=np.float32)  # packed from a multiple of 32 columns
    got = _weight_gradient(jnp.asarray(dgates), jnp.asarray(inputs), jnp.asarray(second))
    rounded = [np.asarray(jnp.asarray(a).astype(jnp.bfloat16).astype(jnp.float32), np.float64)
               for a in (dgates, inputs, second)]
    for result, operand in zip(got, rounded[1:]):
        exact = rounded[0].T @ operand
        scale = np.abs(rounded[0]).T @ np.abs(operand)  # float32 sums of these terms are within ~rows ulp of it
        assert result.shape == exact.shape
        np.testing.assert_array_less(np.abs(np.asarray(result) - exact), 4e-7 * scale + 1e-30)
    alone, empty = _weight_gradient(jnp.asarray(dgates), jnp.asarray(inputs), jnp.zeros((rows, 0)))
    np.testing.assert_array_equal(alone, got[0])
    assert empty.shape == (gates, 0)


@amx_only
@pytest.mark.parametrize("cell", [LSTM(70), GRU(33), SimpleRNN(17)], ids=["lstm70", "gru33", "rnn17"])
@pytest.mark.parametrize("time, batch, lengths, reverse", [(1, 1, None, False), (5, 17, (5, 0, 2) + (5,) * 14, True),
                                                           (9, 3, (9, 4, 1), False)], ids=["T1B1", "B17-reverse", "B3"])
def test_amx_matches_the_avx512_kernel(cell, time, batch, lengths, reverse, key, monkeypatch):
    """bfloat16 operands on AMX tiles against the same operands on the AVX-512 FMA kernel (RNNJAX_NATIVE_AMX=0):
    outputs, carries and gradients in both layouts, at sizes that leave partial blocks of 16 rows and 32 values of k
    (H of 70, 33 and 17; B of 1, 3 and 17; D of 5). The sums differ in order only, but an operand that rounds to the
    other side of a bfloat16 boundary moves the next steps by ~1e-3, hence the tolerances."""
    cell = dataclasses.replace(cell, matmul_dtype="bfloat16")
    params, xs, carry, valid = case(cell, key, time=time, batch=batch, features=5, lengths=lengths)
    results = {}
    for setting in ("1", "0"):
        monkeypatch.setenv("RNNJAX_NATIVE_AMX", setting)
        assert native.uses_amx() == (setting == "1")
        for batch_major in (False, True):
            forward = native_layer(cell, params, xs, carry, valid, reverse, batch_major)
            results[setting, batch_major] = forward, make_layer_loss(native_layer, cell, valid, reverse,
                                                                     batch_major=batch_major)(params, xs, carry)
    for batch_major in (False, True):
        (forward, (_, grads)), (expected_forward, (_, expected_grads)) = (results["1", batch_major],
                                                                          results["0", batch_major])
        assert_trees_close(forward, expected_forward, atol=2e-3, rtol=0)
        for got, expected in zip(jax.tree.leaves(grads), jax.tree.leaves(expected_grads)):
            np.testing.assert_allclose(got, expected, atol=1e-2 * float(jnp.max(jnp.abs(expected))))
        # dW_ih is bfloat16, as autodiff of the bf16 projection returns it on the fused path and the AVX-512 kernel.
        weight_ih = np.asarray(grads[0].weight_ih)
        np.testing.assert_array_equal(weight_ih, np.asarray(jnp.asarray(weight_ih).astype(jnp.bfloat16), np.float32))


def test_vmap_runs_once_per_element(key):
    cell = LSTM(8)
    params, xs, carry, valid = case(cell, key, time=4, batch=3, lengths=None)
    stacked = jax.tree.map(lambda leaf: jnp.stack([leaf, 2 * leaf]), params)
    mapped = jax.vmap(lambda p: unroll(cell, p, xs, time_major=True)[0])(stacked)
    for index in range(2):
        single = unroll(cell, jax.tree.map(lambda leaf: leaf[index], stacked), xs, time_major=True)[0]
        np.testing.assert_allclose(mapped[index], single, atol=1e-6)


def test_flags_and_environment_switch_the_path(key):
    cell = GRU(8)
    params = cell.init(key, 3)
    xs = jnp.zeros((2, 5, 3))
    assert unroll_path(cell, params, xs) == "native"
    with native.flags(enabled=False):
        assert unroll_path(cell, params, xs) == "fused"
    assert unroll_path(cell, params, xs) == "native"
    # What the native path does not take: float64-free XLA paths keep their own rules.
    assert unroll_path(cell, params, xs, backward="autodiff") == "sequential"
    assert unroll_path(cell, params, xs, remat=True) == "sequential"
    assert unroll_path(cell, params, jnp.zeros((2, 0, 3))) == "fused"  # an empty time axis stays on XLA


def test_each_installed_build_is_compiled_for_the_isa_in_its_name():
    # The builds compile one source side by side; sharing an object file, one once linked another's code.
    directory, flags, checked = pathlib.Path(native.__file__).parent, native._cpu_flags(), []
    for isa, needs in native.BUILDS:
        for path in directory.glob(f"_native_{isa}*.so"):
            if needs <= flags:  # only what this CPU can load
                library = ctypes.CDLL(str(path))
                library.RnnjaxNativeIsa.restype = ctypes.c_char_p
                assert library.RnnjaxNativeIsa().decode() == isa, path.name
                checked.append(isa)
    assert checked and native.isa() in (*checked, "custom")  # "custom": RNNJAX_NATIVE_LIBRARY (csrc/sanitize.sh)


def test_find_build_prefers_amx_then_avx512_and_says_why_not(tmp_path):
    assert native.find_build(tmp_path, frozenset({"avx2", "fma"}))[0] is None
    assert "not built" in native.find_build(tmp_path, frozenset())[1]
    for isa in ("avx512", "avx2"):
        (tmp_path / f"_native_{isa}.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")
    avx512 = frozenset({"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx2", "fma"})
    amx = avx512 | {"avx512_bf16", "amx_tile", "amx_bf16"}
    assert native.find_build(tmp_path, amx)[1] == "avx512"  # no AMX build (an older compiler): the next best
    (tmp_path / "_native_amx.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")
    assert native.find_build(tmp_path, amx)[1] == "amx"
    assert native.find_build(tmp_path, avx512 | {"amx_tile"})[1] == "avx512"  # AMX without its bf16 unit
    assert native.find_build(tmp_path, frozenset({"avx2", "fma", "sse4_2"}))[1] == "avx2"
    path, reason = native.find_build(tmp_path, frozenset({"sse4_2"}))
    assert path is None and "neither AVX-512 nor AVX2" in reason


def test_an_unavailable_build_falls_back_to_xla_with_one_logged_line(key, monkeypatch, caplog):
    monkeypatch.setattr(native, "_load", lambda: (None, "no _native_*.so (a test)"))
    native._log_fallback.cache_clear()
    cell = LSTM(8)
    params = cell.init(key, 3)
    with caplog.at_level(logging.WARNING, logger="rnnjax"):
        assert unroll_path(cell, params, jnp.zeros((2, 5, 3))) == "fused"
        assert unroll_path(cell, params, jnp.zeros((2, 5, 3))) == "fused"
        ys, _ = unroll(cell, params, jnp.ones((2, 5, 3)))
    assert ys.shape == (2, 5, 8)
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 1 and "no _native_*.so (a test)" in lines[0] and "XLA path" in lines[0]
    native._log_fallback.cache_clear()


def test_the_built_library_is_the_one_setup_py_names():
    here = pathlib.Path(native.__file__).parent
    assert native.isa() in ("amx", "avx512", "avx2")
    built = {path.name.split(".")[0] for path in here.glob("_native_*.so")}
    # setup.py builds all three; the AMX build needs a compiler that knows -mamx-tile (GCC 11, Clang 12).
    assert {"_native_avx2", "_native_avx512"} <= built <= {"_native_amx", "_native_avx2", "_native_avx512"}
    assert [name for name, _ in native.BUILDS] == ["amx", "avx512", "avx2"]
    assert os.environ.get("RNNJAX_NATIVE", "1") != "0"


def test_a_mask_of_the_wrong_shape_is_refused(key):
    cell = LSTM(8)
    params, xs, carry, _ = case(cell, key, lengths=None)
    with pytest.raises(ValueError, match=r"valid must be \[time, batch\] = \(7, 5\) .* got \(7, 4\)"):
        native_unroll(cell, params, xs, carry, jnp.ones((7, 4), bool), False, time_major=True)
