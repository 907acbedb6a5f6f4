"""The hand-written backward pass equals autodiff of the plain `lax.scan` over `recurrent_step`: values, and
gradients for params, inputs and the initial carry, with and without masks, forward and reverse, every cell; and
the path is chosen by the capability a cell's class declares, never inherited."""

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import FAST_COMPILE
from helpers import autodiff_recurrence
from helpers import make_loss
from helpers import assert_trees_close
from helpers import random_like

from rnnjax import GRU, LSTM, MinGRU, SimpleRNN, native, unroll, unroll_path
from rnnjax._fused import fused_unroll
from rnnjax._fused import scan_recurrence
from rnnjax._fused import supports_fused

CELLS = [LSTM(5), GRU(5), SimpleRNN(5), SimpleRNN(5, activation="relu")]


@pytest.fixture(autouse=True)
def xla_only():
    """The fused XLA path itself, not the native CPU loop that `unroll` prefers where it is built
    (tests/test_native.py holds that one to the same checks)."""
    with native.flags(enabled=False):
        yield
TIME, BATCH, FEATURES = 6, 3, 4


@pytest.mark.parametrize("cell", CELLS, ids=lambda cell: f"{type(cell).__name__}{getattr(cell, 'activation', '')}")
@pytest.mark.parametrize("lengths", [None, (6, 0, 3)], ids=["full", "masked"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_custom_backward_equals_autodiff(cell, lengths, reverse, key):
    params = random_like(cell.init(key, FEATURES), seed=1)
    xs = random_like(jnp.zeros((TIME, BATCH, FEATURES)), seed=2)
    carry = random_like(cell.initial_carry((BATCH,)), seed=3)
    valid = None if lengths is None else jnp.arange(TIME)[:, None] < jnp.asarray(lengths)[None, :]
    expected_value, expected_grads = make_loss(autodiff_recurrence, cell, valid, reverse)(params, xs, carry)
    value, grads = make_loss(scan_recurrence, cell, valid, reverse)(params, xs, carry)
    np.testing.assert_allclose(value, expected_value, rtol=1e-6)
    assert_trees_close(grads, expected_grads, atol=1e-5, rtol=1e-5)
    # The custom path's outputs themselves are the plain scan's, masking included.
    projected = cell.project_inputs(params, xs)
    assert_trees_close(scan_recurrence(cell, params, projected, carry, valid, reverse),
                       autodiff_recurrence(cell, params, projected, carry, valid, reverse), atol=1e-6)


@pytest.mark.parametrize("cell", CELLS, ids=lambda cell: f"{type(cell).__name__}{getattr(cell, 'activation', '')}")
def test_custom_backward_with_bfloat16_matmuls_matches_autodiff(cell, key):
    """matmul_dtype="bfloat16": the forward pass is the plain scan's exactly; the gradients round their GEMM
    operands at different points than autodiff does, so they agree to bf16 precision, not bit for bit."""
    cell = dataclasses.replace(cell, matmul_dtype="bfloat16")
    params = random_like(cell.init(key, FEATURES), seed=1)
    xs = random_like(jnp.zeros((TIME, BATCH, FEATURES)), seed=2)
    carry = random_like(cell.initial_carry((BATCH,)), seed=3)
    valid = jnp.arange(TIME)[:, None] < jnp.asarray([6, 0, 3])[None, :]
    projected = cell.project_inputs(params, xs)
    assert_trees_close(scan_recurrence(cell, params, projected, carry, valid, False),
                       autodiff_recurrence(cell, params, projected, carry, valid, False), atol=0)
    expected_value, expected_grads = make_loss(autodiff_recurrence, cell, valid, False)(params, xs, carry)
    value, grads = make_loss(scan_recurrence, cell, valid, False)(params, xs, carry)
    np.testing.assert_allclose(value, expected_value, rtol=1e-6)
    for got, expected in zip(jax.tree.leaves(grads), jax.tree.leaves(expected_grads)):
        scale = float(jnp.max(jnp.abs(expected)))
        np.testing.assert_allclose(got, expected, atol=2e-2 * scale)


@pytest.mark.parametrize("cell", CELLS, ids=lambda cell: f"{type(cell).__name__}{getattr(cell, 'activation', '')}")
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_fused_unroll_projects_inside_the_loop_for_inference_and_before_it_for_gradients(cell, reverse, key):
    """`fused_unroll`'s undifferentiated path (input GEMM inside the loop) and its differentiated path (one
    projection GEMM, then the hand-written recurrence) both equal the plain scan over the projected inputs; the
    gradients w.r.t. params, raw inputs and carry equal autodiff of that scan."""
    params = random_like(cell.init(key, FEATURES), seed=1)
    xs = random_like(jnp.zeros((TIME, BATCH, FEATURES)), seed=2)
    carry = random_like(cell.initial_carry((BATCH,)), seed=3)
    valid = jnp.arange(TIME)[:, None] < jnp.asarray([6, 0, 3])[None, :]
    expected = autodiff_recurrence(cell, params, cell.project_inputs(params, xs), carry, valid, reverse)
    inference = jax.jit(fused_unroll, static_argnums=(0, 5))(cell, params, xs, carry, valid, reverse)
    assert_trees_close(inference, expected, atol=1e-6)

    def loss(recurrence):
        def value(params, xs, carry):
            final_carry, ys = recurrence(cell, params, xs, carry)
            weights = jnp.sin(jnp.arange(ys.size, dtype=ys.dtype)).reshape(ys.shape)
            return jnp.sum(ys * weights) + sum(jnp.sum(jnp.cos(leaf)) for leaf in jax.tree.leaves(final_carry))

        return jax.jit(jax.value_and_grad(value, argnums=(0, 1, 2)), compiler_options=FAST_COMPILE)

    expected_value, expected_grads = loss(lambda cell, params, xs, carry: autodiff_recurrence(
        cell, params, cell.project_inputs(params, xs), carry, valid, reverse))(params, xs, carry)
    value, grads = loss(lambda cell, params, xs, carry: fused_unroll(cell, params, xs, carry, valid, reverse))(
        params, xs, carry)
    np.testing.assert_allclose(value, expected_value, rtol=1e-6)
    assert_trees_close(grads, expected_grads, atol=1e-5, rtol=1e-5)


def test_supports_fused_only_matching_float_dtypes(key):
    cell = LSTM(4)
    params = cell.init(key, 3)
    projected = jnp.zeros((2, 1, 16))
    assert supports_fused(cell, params, projected.dtype, cell.initial_carry((1,)))
    assert not supports_fused(cell, params, jnp.bfloat16, cell.initial_carry((1,)))


def test_unknown_cell_is_rejected():
    with pytest.raises(TypeError, match="MinGRU declares no fused_recurrence kernel"):
        scan_recurrence(MinGRU(1), None, jnp.zeros((1, 1, 1)), None, None, False)
    with pytest.raises(TypeError, match="object declares no fused_recurrence kernel"):
        scan_recurrence(object(), None, jnp.zeros((1, 1, 1)), None, None, False)


# -- the capability: declared per class, never inherited -------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ScaledLSTM(LSTM):
    """A user's subclass that changes the step (its hidden state halved) and declares nothing."""

    def recurrent_step(self, params, carry, projected_x):
        carry, h = super().recurrent_step(params, carry, projected_x)
        return carry._replace(h=0.5 * carry.h), 0.5 * h


@dataclasses.dataclass(frozen=True)
class DeclaredLSTM(LSTM):
    """A subclass that keeps the LSTM's math (a new field only) and declares the kernel again."""

    tag: str = "mine"
    fused_recurrence: ClassVar[str | None] = "lstm"


def test_a_subclass_that_changes_the_step_falls_back_to_the_plain_scan(key):
    cell = ScaledLSTM(4)
    params = cell.init(key, 3)
    xs = jax.random.normal(jax.random.key(1), (2, 5, 3))
    assert ScaledLSTM.fused_recurrence is None and LSTM.fused_recurrence == "lstm"
    assert unroll_path(cell, params, xs) == "sequential"
    ys, carry = unroll(cell, params, xs)
    step_carry, step_ys = cell.initial_carry((2,)), []
    for t in range(5):  # the override is what runs, not the inherited LSTM kernel
        step_carry, y = cell.step(params, step_carry, xs[:, t])
        step_ys.append(y)
    assert_trees_close((ys, carry), (jnp.stack(step_ys, axis=1), step_carry), atol=1e-6)
    with pytest.raises(ValueError, match="backward='custom' needs a cell that declares a fused_recurrence"):
        unroll(cell, params, xs, backward="custom")


def test_a_subclass_that_declares_the_kernel_runs_fused_and_matches_autodiff(key):
    cell = DeclaredLSTM(4)
    params = cell.init(key, 3)
    xs = jax.random.normal(jax.random.key(1), (2, 5, 3))
    lengths = jnp.array([5, 2])
    assert unroll_path(cell, params, xs) == "fused"

    def loss(backward):
        return jax.grad(lambda p: jnp.sum(jnp.sin(unroll(cell, p, xs, lengths=lengths, backward=backward)[0])))

    assert_trees_close(loss("custom")(params), loss("autodiff")(params), atol=1e-6)


def test_an_unknown_kernel_name_is_rejected(key):
    @dataclasses.dataclass(frozen=True)
    class Typo(LSTM):
        fused_recurrence: ClassVar[str | None] = "lstmm"

    cell = Typo(4)
    with pytest.raises(ValueError, match=r"Typo.fused_recurrence must be None or one of \('rnn', 'lstm', 'gru'\)"):
        unroll(cell, cell.init(key, 3), jnp.ones((1, 2, 3)))
