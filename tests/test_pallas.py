"""The Pallas kernels in interpret mode (how CPU runs them) equal autodiff of the plain `lax.scan`: outputs, final
carries, and gradients for params, inputs and the initial carry, for the LSTM and GRU, with masks (a zero length
included), reverse, odd sizes (H not a multiple of 8, several column tiles, B = 1, T = 1, two batch blocks), and
bfloat16 GEMM operands (against the fused path, which rounds the same operands); `unroll` takes the kernels on a
GPU backend (unbatched, time-major, under vmap); and every kernel lowers through Pallas's Triton backend for CUDA
(an export for the "cuda" platform, which runs no GPU code). Shapes stay tiny: interpret mode is slow."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import FAST_COMPILE
from helpers import assert_trees_close
from helpers import random_like

from rnnjax import GRU, LSTM, native, unroll, unroll_path
from rnnjax import _gpu
from rnnjax import _pallas


def jit(f):
    return jax.jit(f, compiler_options=FAST_COMPILE)


def make_inputs(cell, batch, time, features, lengths, seed=1):
    params = random_like(cell.init(jax.random.key(0), features), seed=seed)
    xs = jnp.asarray(random_like(jnp.zeros((batch, time, features)), seed=seed + 1))
    carry = random_like(cell.initial_carry((batch,)), seed=seed + 2)
    return params, xs, carry, None if lengths is None else jnp.asarray(lengths)


def loss(path, cell, lengths, reverse, block_h=_pallas.BLOCK_H):
    def value(params, xs, carry):
        if path == "pallas":
            final, ys = _pallas.pallas_unroll(cell, params, jnp.swapaxes(xs, 0, 1), carry, lengths, reverse,
                                              interpret=True, block_h=block_h)
            ys = jnp.swapaxes(ys, 0, 1)
        else:
            ys, final = unroll(cell, params, xs, carry=carry, lengths=lengths, reverse=reverse, backward=path)
        weights = jnp.sin(jnp.arange(ys.size, dtype=ys.dtype)).reshape(ys.shape)
        return jnp.sum(ys * weights) + sum(jnp.sum(jnp.cos(leaf)) for leaf in jax.tree.leaves(final)), (ys, final)

    return jit(jax.value_and_grad(value, argnums=(0, 1, 2), has_aux=True))


CASES = [  # cell, (batch, time, features), lengths, reverse, block_h
    (LSTM(5), (4, 5, 3), (5, 2, 0, 1), False, 64),
    (LSTM(5), (4, 5, 3), (5, 2, 0, 1), True, 64),
    (GRU(5), (4, 5, 3), (5, 2, 0, 1), False, 64),
    (GRU(5), (4, 5, 3), (5, 2, 0, 1), True, 64),
    (LSTM(37), (3, 4, 2), (4, 1, 3), True, 16),  # three 16-wide column tiles, the last one padded
    (GRU(37), (3, 4, 2), None, False, 16),
    (LSTM(3), (1, 1, 2), None, False, 64),  # B = 1, T = 1
    (GRU(7), (17, 3, 2), tuple(range(4)) * 4 + (3,), True, 64),  # two batch blocks
]


@pytest.mark.parametrize("cell, shape, lengths, reverse, block_h", CASES,
                         ids=[f"{type(c[0]).__name__}{c[0].hidden_size}-{c[1]}-{'masked' if c[2] else 'full'}-"
                              f"{'reverse' if c[3] else 'forward'}" for c in CASES])
def test_the_kernels_equal_autodiff_of_the_plain_scan(cell, shape, lengths, reverse, block_h):
    params, xs, carry, lengths = make_inputs(cell, *shape, lengths)
    (value, outputs), grads = loss("pallas", cell, lengths, reverse, block_h)(params, xs, carry)
    (expected_value, expected_outputs), expected_grads = loss("autodiff", cell, lengths, reverse)(params, xs, carry)
    np.testing.assert_allclose(value, expected_value, rtol=1e-5)
    assert_trees_close(outputs, expected_outputs, atol=1e-5)
    assert_trees_close(grads, expected_grads, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("cell", [LSTM(6, matmul_dtype="bfloat16"), GRU(6, matmul_dtype="bfloat16")],
                         ids=["LSTM", "GRU"])
def test_bfloat16_operands_round_as_the_fused_path_does(cell):
    params, xs, carry, lengths = make_inputs(cell, 3, 4, 3, (4, 0, 2))
    (value, outputs), grads = loss("pallas", cell, lengths, True)(params, xs, carry)
    # The fused XLA path itself: on a CPU with AMX the native loop sums bf16 dW_ih in float32 before rounding it,
    # where XLA's CPU bf16 dot lands one bf16 ulp away in places.
    with native.flags(enabled=False):
        (expected_value, expected_outputs), expected_grads = loss("custom", cell, lengths, True)(params, xs, carry)
    np.testing.assert_allclose(value, expected_value, rtol=1e-5)
    assert_trees_close(outputs, expected_outputs, atol=1e-5)
    assert_trees_close(grads, expected_grads, atol=1e-4, rtol=1e-4)


def test_unroll_takes_the_pallas_path_on_a_gpu_backend(monkeypatch):
    cell = GRU(5)
    params, xs, carry, lengths = make_inputs(cell, 2, 3, 2, (3, 1))
    xs_time_major = jnp.swapaxes(xs, 0, 1)
    expected = unroll(cell, params, xs_time_major, carry=carry, lengths=lengths, time_major=True)
    expected_unbatched = unroll(cell, params, xs[1], carry=carry[1], lengths=jnp.asarray(1), reverse=True)
    stacked = jax.tree.map(lambda leaf: jnp.stack([leaf, 0.5 * leaf]), params)
    expected_vmapped = jax.vmap(lambda p: unroll(cell, p, xs, lengths=lengths))(stacked)
    monkeypatch.setattr(_gpu, "backend", lambda: "cuda")
    assert unroll_path(cell, params, xs) == "pallas"
    lstm = LSTM(5, matmul_dtype="bfloat16")
    assert unroll_path(lstm, jax.eval_shape(lambda: lstm.init(jax.random.key(0), 2)), xs) == "pallas"
    actual = jit(lambda p, x: unroll(cell, p, x, carry=carry, lengths=lengths, time_major=True))(params, xs_time_major)
    assert_trees_close(actual, expected, atol=1e-5)
    actual_unbatched = unroll(cell, params, xs[1], carry=carry[1], lengths=jnp.asarray(1), reverse=True)
    assert_trees_close(actual_unbatched, expected_unbatched, atol=1e-5)
    actual_vmapped = jit(jax.vmap(lambda p: unroll(cell, p, xs, lengths=lengths)))(stacked)
    assert_trees_close(actual_vmapped, expected_vmapped, atol=1e-5)


def test_padded_hidden_sizes():
    assert [_pallas.padded_hidden(h) for h in (1, 5, 16, 17, 64, 65, 100, 256, 1000)] == [
        16, 16, 16, 32, 64, 128, 128, 256, 1024]
    assert _pallas.padded_hidden(40, block_h=16) == 48


def triton_kernels(cell, batch, time, features, train: bool) -> int:
    """How many Triton kernels an export of the call for CUDA holds (the lowering runs; nothing executes)."""
    params = jax.eval_shape(lambda: cell.init(jax.random.key(0), features))
    xs = jax.ShapeDtypeStruct((time, batch, features), jnp.float32)
    lengths = jax.ShapeDtypeStruct((batch,), jnp.int32)

    def run(params, xs, lengths):
        final, ys = _pallas.pallas_unroll(cell, params, xs, cell.initial_carry((batch,)), lengths, True,
                                          interpret=False)
        return jnp.sum(ys**2) + sum(jnp.sum(leaf) for leaf in jax.tree.leaves(final))

    function = jax.jit(jax.grad(run) if train else run)
    check = jax.export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")
    exported = jax.export.export(function, platforms=["cuda"], disabled_checks=[check])(params, xs, lengths)
    return exported.mlir_module().count("stablehlo.custom_call @__gpu$xla.gpu.triton")


@pytest.mark.parametrize("cell", [LSTM(5), GRU(200, matmul_dtype="bfloat16"), LSTM(1024), GRU(64)],
                         ids=["LSTM5", "GRU200-bf16", "LSTM1024", "GRU64"])
def test_every_kernel_lowers_to_triton_for_cuda(cell):
    assert triton_kernels(cell, 20, 7, 3, train=False) == 1  # the forward kernel, saving nothing
    assert triton_kernels(cell, 20, 7, 3, train=True) == 2  # the forward kernel saving activations, the backward
