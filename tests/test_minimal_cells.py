"""MinGRU and MinLSTM (Feng et al. 2024): the step equations against NumPy, log-space coefficients against the
linear ones (finite at extreme pre-activations), the nn.Linear initializer, the parallel path against the
sequential one at T = 4096 (outputs and gradients, lengths, reverse, arbitrary initial carries), masked runs
against per-sequence runs, layers and step-by-step generation, and bad input. The time-loop properties (jit,
vmap, time-major, unbatched, float64 finite differences, ...) run over these cells in `test_time_loop.py`."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import FAST_COMPILE, assert_trees_close

from rnnjax import Bidirectional, Stack, make_cell, unroll
from rnnjax.minimal_cells import MinGRU, MinGRUParams, MinLSTM, MinLSTMParams, g, log_g
from rnnjax.rnn import CELL_MODES, MINIMAL_MODES

INPUT, HIDDEN = 3, 8
CELLS = {"mingru": MinGRU, "minlstm": MinLSTM}
SPACES = ("log", "linear")


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_step(cell, params, h, x):
    """The paper's equations in NumPy (float64), independent of rnnjax's code path."""
    w, b = (np.asarray(value, np.float64) for value in params)
    h, x = np.asarray(h, np.float64), np.asarray(x, np.float64)
    pre = x @ w.T + b
    positive = lambda v: np.where(v >= 0, v + 0.5, sigmoid(v))  # noqa: E731
    if isinstance(cell, MinGRU):
        k, p = np.split(pre, 2, axis=-1)
        z = sigmoid(k)
        return (1 - z) * h + z * positive(p)
    k_f, k_i, p = np.split(pre, 3, axis=-1)
    f, i = sigmoid(k_f), sigmoid(k_i)
    return f / (f + i) * h + i / (f + i) * positive(p)


def setup(name, key, time, batch=2, scale=1.0, **options):
    """A cell with non-zero biases, inputs `[batch, time, INPUT]` and a random (partly negative) initial carry."""
    cell = CELLS[name](HIDDEN, **options)
    params_key, bias_key, xs_key, carry_key = jax.random.split(key, 4)
    params = cell.init(params_key, INPUT)
    params = params._replace(bias_ih=jax.random.normal(bias_key, params.bias_ih.shape))
    xs = scale * jax.random.normal(xs_key, (batch, time, INPUT))
    carry = 2.0 * jax.random.normal(carry_key, (batch, HIDDEN))
    return cell, params, xs, carry


@functools.partial(jax.jit, static_argnums=(0, 5), compiler_options=FAST_COMPILE)
def loss_and_grads(cell, params, xs, carry, lengths, mode):
    """Forward and reverse runs in one compile: `((loss, outputs), grads wrt params, xs and carry)`."""
    def loss(params, xs, carry):
        forward = unroll(cell, params, xs, carry=carry, lengths=lengths, scan=mode)
        backward = unroll(cell, params, xs, carry=carry, lengths=lengths, reverse=True, scan=mode)
        value = sum(jnp.sum(jnp.sin(ys)) + jnp.sum(final**2) for ys, final in (forward, backward))
        return value, (forward, backward)
    return jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(params, xs, carry)


@functools.partial(jax.jit, static_argnums=0, static_argnames=("reverse", "scan"), compiler_options=FAST_COMPILE)
def run(cell, params, xs, carry=None, lengths=None, reverse=False, scan="auto"):
    return unroll(cell, params, xs, carry=carry, lengths=lengths, reverse=reverse, scan=scan)


@functools.partial(jax.jit, static_argnums=0, compiler_options=FAST_COMPILE)
def python_loop(cell, params, xs, carry):
    """The reference: `step` once per time step (a `lax.scan` over `step` itself, no masking, no projection)."""
    return jax.lax.scan(lambda h, x: cell.step(params, h, x), carry, jnp.swapaxes(xs, 0, 1))


def assert_close_relative_to_scale(actual, expected, rtol):
    """Leaves equal within `rtol` of each leaf's largest magnitude (sums over 4096 steps round differently)."""
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        scale = float(np.max(np.abs(e))) if np.size(e) else 0.0
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=rtol, atol=rtol * max(scale, 1.0))


# -- the cell --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", CELLS)
def test_step_matches_numpy_equations(name, key):
    cell, params, xs, carry = setup(name, key, time=1, batch=4, scale=3.0)
    h, y = cell.step(params, carry, xs[:, 0])
    np.testing.assert_allclose(h, numpy_step(cell, params, carry, xs[:, 0]), atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(h, y)
    assert cell.project_inputs(params, xs).shape == (4, 1, cell.num_gates * HIDDEN)


@pytest.mark.parametrize("name", CELLS)
def test_log_coefficients_are_the_logs_of_the_linear_ones_and_stay_finite(name, key):
    """The guard of the log space: logs are taken of positive quantities only, finite even where a gate
    saturates (log σ(-1e4) = -1e4, where log(σ(-1e4)) would be -inf and its gradient NaN)."""
    cell = CELLS[name](HIDDEN)
    params = cell.init(key, INPUT)
    values = jnp.array([-1e4, -200.0, -30.0, -1.0, -1e-3, 0.0, 1e-3, 1.0, 30.0, 200.0, 1e4])
    projected = jnp.tile(values[:, None], (1, cell.num_gates * HIDDEN))
    projected = jax.random.permutation(key, projected.reshape(-1)).reshape(projected.shape)  # mixed gates
    log_a, log_b = cell.log_coefficients(params, projected)
    a, b = cell.linear_coefficients(params, projected)
    for value in (log_a, log_b, a, b):
        assert bool(jnp.all(jnp.isfinite(value)))
    assert bool(jnp.all((a >= 0) & (a <= 1) & (b >= 0)))
    np.testing.assert_allclose(jnp.exp(log_a), a, rtol=1e-5, atol=1e-30)
    np.testing.assert_allclose(jnp.exp(log_b), b, rtol=1e-5, atol=1e-30)
    grads = jax.grad(lambda p: sum(jnp.sum(v) for v in cell.log_coefficients(params, p)))(projected)
    assert bool(jnp.all(jnp.isfinite(grads)))


def test_g_and_log_g():
    x = jnp.array([-50.0, -2.0, -1e-7, 0.0, 1e-7, 2.0, 1e6])
    np.testing.assert_allclose(g(x), np.where(x >= 0, x + 0.5, sigmoid(np.asarray(x))), rtol=1e-6)
    np.testing.assert_allclose(log_g(x), np.log(np.asarray(g(x), np.float64)), rtol=1e-5)
    assert bool(jnp.all(g(x) > 0))
    assert bool(jnp.all(jnp.isfinite(jax.vmap(jax.grad(log_g))(x))))


def test_parameter_tree_and_pytorch_linear_initializer(key):
    init = jax.jit(lambda cell, key: cell.init(key, 16), static_argnums=0, compiler_options=FAST_COMPILE)
    params = init(MinGRU(HIDDEN), key)
    assert type(params) is MinGRUParams and params._fields == ("weight_ih", "bias_ih")
    assert params.weight_ih.shape == (2 * HIDDEN, 16) and params.bias_ih.shape == (2 * HIDDEN,)
    lstm_params = init(MinLSTM(HIDDEN), key)
    assert type(lstm_params) is MinLSTMParams and lstm_params.weight_ih.shape == (3 * HIDDEN, 16)
    bound = 1.0 / 16**0.5  # nn.Linear: U(±1/sqrt(in_features)), weight and bias
    for value in params:
        assert float(jnp.max(jnp.abs(value))) <= bound
        assert float(jnp.max(value)) > 0.7 * bound and float(jnp.min(value)) < -0.7 * bound
    orthogonal = init(MinGRU(HIDDEN, initializer="orthogonal"), key)
    assert not jnp.any(orthogonal.bias_ih)
    assert float(jnp.max(jnp.abs(orthogonal.weight_ih))) <= (6.0 / (16 + HIDDEN)) ** 0.5
    assert MinGRU(HIDDEN).initial_carry((2, 3)).shape == (2, 3, HIDDEN)
    assert not jnp.any(MinLSTM(HIDDEN).initial_carry(2))


# -- parallel equals sequential --------------------------------------------------------------------------------------
# One scan space per cell: the associative scan's compile time dominates (see the harness's parallel-scan preset),
# and the registry in test_time_loop.py checks the other pairings at TIME = 6.
@pytest.mark.parametrize("name, space", [("mingru", "log"), ("minlstm", "linear")])
def test_parallel_equals_sequential_at_4096_steps(name, space, key):
    """Outputs, final carries and gradients (params, inputs, initial carry), forward and reverse, one sequence
    full and one ending early, from a random initial carry with negative entries."""
    cell, params, xs, carry = setup(name, key, time=4096, scale=2.0, scan_space=space)
    lengths = jnp.array([4096, 1531])
    (value_p, outputs_p), grads_p = loss_and_grads(cell, params, xs, carry, lengths, "parallel")
    (value_s, outputs_s), grads_s = loss_and_grads(cell, params, xs, carry, lengths, "sequential")
    np.testing.assert_allclose(value_p, value_s, rtol=1e-5)
    assert_trees_close(outputs_p, outputs_s, atol=2e-5, rtol=2e-5)
    assert_close_relative_to_scale(grads_p, grads_s, rtol=1e-4)
    for ys, _ in outputs_p:
        np.testing.assert_array_equal(ys[1, 1531:], 0.0)  # exactly zero past the end, as sequentially


def test_masks_and_reverse_equal_per_sequence_runs_on_the_parallel_path(key):
    """Each sequence alone through a loop over `step` (reversed for `reverse`), against one masked parallel run
    with garbage in the padding. (Every cell x direction at TIME = 6 is also in test_time_loop.py's registry.)"""
    cell, params, xs, carry = setup("minlstm", key, time=40, batch=3)
    lengths = (40, 0, 23)
    garbage = jnp.where(jnp.arange(40)[None, :, None] < jnp.array(lengths)[:, None, None], xs, 1e6)
    for reverse in (False, True):
        ys, final = run(cell, params, garbage, carry, jnp.array(lengths), reverse=reverse, scan="parallel")
        for b, length in enumerate(lengths):
            sequence = xs[b : b + 1, :length]
            alone_final, alone_ys = python_loop(cell, params, jnp.flip(sequence, 1) if reverse else sequence,
                                                carry[b : b + 1])
            alone_ys = jnp.flip(alone_ys, 0) if reverse else alone_ys  # [length, 1, H]
            np.testing.assert_allclose(ys[b, :length], alone_ys[:, 0], atol=1e-5, rtol=1e-5)
            np.testing.assert_array_equal(ys[b, length:], 0.0)
            np.testing.assert_allclose(final[b], alone_final[0], atol=1e-5, rtol=1e-5)
        np.testing.assert_array_equal(final[1], carry[1])  # the empty sequence keeps its initial carry


@pytest.mark.parametrize("space", SPACES)
def test_any_initial_carry_even_negative_or_large(space, key):
    """h_0 is never logged: the log-space path is exact for carries of any sign and size."""
    cell, params, xs, _ = setup("mingru", key, time=50, scan_space=space)
    for fill in (0.0, -100.0, 1e4, -1e-20):
        carry = jnp.full((2, HIDDEN), fill).at[0, 0].set(-fill - 1.0)
        final_expected, ys_expected = python_loop(cell, params, xs, carry)
        ys, final = run(cell, params, xs, carry, scan="parallel")
        np.testing.assert_allclose(ys, jnp.swapaxes(ys_expected, 0, 1), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(final, final_expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", CELLS)
def test_saturated_gates_keep_the_log_space_finite(name, key):
    """Gate pre-activations of ±1e4 (every gate saturated, exp(-1e4) underflowing to 0) give finite outputs and
    gradients, equal to the sequential path's. (Only the gates are scaled: h̃ ~ 1e4 would make sin(h) in the loss
    amplify a 1-ulp difference of h into 1e-3.)"""
    cell, params, xs, carry = setup(name, key, time=64)
    gates = (cell.num_gates - 1) * HIDDEN
    params = params._replace(weight_ih=params.weight_ih.at[:gates].multiply(1e4),
                             bias_ih=params.bias_ih.at[:gates].multiply(1e4))
    lengths = jnp.array([64, 17])
    (_, outputs_p), grads_p = loss_and_grads(cell, params, xs, carry, lengths, "parallel")
    (_, outputs_s), grads_s = loss_and_grads(cell, params, xs, carry, lengths, "sequential")
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves((outputs_p, grads_p)))
    assert_close_relative_to_scale(outputs_p, outputs_s, rtol=1e-5)
    assert_close_relative_to_scale(grads_p, grads_s, rtol=1e-4)


def test_remat_and_unroll_are_ignored_on_the_parallel_path(key):
    cell, params, xs, carry = setup("minlstm", key, time=9)
    reference = run(cell, params, xs, carry, scan="parallel")
    assert_trees_close(jax.jit(lambda p, xs, h: unroll(cell, p, xs, carry=h, scan="parallel", remat=True, unroll=4),
                               compiler_options=FAST_COMPILE)(params, xs, carry), reference)


# -- layers, models and generation -----------------------------------------------------------------------------------
def test_make_cell_builds_the_minimal_cells_by_name():
    assert MINIMAL_MODES == ("mingru", "minlstm") and CELL_MODES[-2:] == MINIMAL_MODES
    assert make_cell("mingru", 7) == MinGRU(7)
    assert make_cell("minlstm", 7, "orthogonal") == MinLSTM(7, initializer="orthogonal")


def test_bidirectional_stack_parallel_equals_sequential(key):
    """Layers call `unroll` with scan="auto": a cell's `parallel_min_length` picks the path inside a stack."""
    xs = jax.random.normal(key, (3, 12, INPUT))
    lengths = jnp.array([12, 5, 0])

    def stack(min_length):
        return Stack((Bidirectional(MinGRU(HIDDEN, parallel_min_length=min_length)),
                      MinLSTM(HIDDEN, scan_space="linear", parallel_min_length=min_length)))

    params = stack(0).init(jax.random.key(1), INPUT)
    apply = jax.jit(lambda layer, params: layer.apply(params, xs, lengths=lengths), static_argnums=0,
                    compiler_options=FAST_COMPILE)
    parallel, sequential = apply(stack(0), params), apply(stack(10**9), params)
    assert_trees_close(parallel, sequential, atol=1e-5, rtol=1e-5)


def test_generation_step_by_step_matches_the_parallel_run(key):
    """Greedy generation through `step` (embedding -> MinGRU -> MinLSTM -> logits, fed its own tokens), then the
    generated sequence re-read at once on the parallel path gives the same logits at every step."""
    vocab, length = 11, 24
    cells = (MinGRU(HIDDEN, parallel_min_length=0), MinLSTM(HIDDEN, parallel_min_length=0))
    keys = jax.random.split(key, 4)
    embedding = jax.random.normal(keys[0], (vocab, INPUT))
    output = jax.random.normal(keys[1], (vocab, HIDDEN))
    params = (cells[0].init(keys[2], INPUT), cells[1].init(keys[3], HIDDEN))

    def generate(first_token):
        def step(state, _):
            carries, token = state
            x = embedding[token]
            new_carries = []
            for cell, cell_params, carry in zip(cells, params, carries):
                carry, x = cell.step(cell_params, carry, x)
                new_carries.append(carry)
            logits = output @ x
            return (tuple(new_carries), jnp.argmax(logits)), (token, logits)
        carries = tuple(cell.initial_carry() for cell in cells)
        _, (tokens, logits) = jax.lax.scan(step, (carries, first_token), None, length=length)
        return tokens, logits

    tokens, logits = jax.jit(generate, compiler_options=FAST_COMPILE)(jnp.int32(3))
    assert tokens.shape == (length,) and tokens[0] == 3
    # re-read unbatched [time, features], on the parallel path in each layer
    ys, _ = jax.jit(Stack(cells).apply, compiler_options=FAST_COMPILE)(params, embedding[tokens])
    np.testing.assert_allclose(ys @ output.T, logits, atol=1e-5, rtol=1e-5)


# -- bad input -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: MinGRU(4, scan_space="cumsum"), ValueError, "scan_space must be one of \\('log', 'linear'\\)"),
        (lambda: MinGRU(4, parallel_min_length=-1), ValueError, "parallel_min_length must be >= 0"),
        (lambda: MinLSTM(4, max_parallel_bytes=0), ValueError, "max_parallel_bytes must be >= 1"),
        (lambda: MinLSTM(4, max_parallel_bytes=1.5), TypeError, "max_parallel_bytes must be an int"),
        (lambda: MinGRU(0), ValueError, "hidden_size must be >= 1"),
        (lambda: MinGRU(4, initializer="xavier"), ValueError, "initializer must be one of"),
        (lambda: make_cell("mingru2", 4), ValueError, "mode must be one of .*'mingru', 'minlstm'"),
    ],
)
def test_invalid_configuration(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_bad_params_and_carries(key):
    cell = MinGRU(4)
    params = cell.init(key, 3)
    with pytest.raises(TypeError, match="MinGRU expects MinGRUParams, got MinLSTMParams"):
        cell.step(MinLSTM(4).init(key, 3), cell.initial_carry(2), jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="MinGRU\\(hidden_size=4\\) expects weight_ih of shape \\[8, input_size\\]"):
        cell.step(MinGRU(5).init(key, 3), cell.initial_carry(2), jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="expects bias_ih of shape \\(8,\\), got \\(3,\\)"):
        cell.step(params._replace(bias_ih=jnp.zeros(3)), cell.initial_carry(2), jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="carry must have shape \\(2, 4\\).*got \\(3, 4\\)"):
        unroll(cell, params, jnp.ones((2, 5, 3)), carry=jnp.zeros((3, 4)), scan="parallel")
    with pytest.raises(ValueError, match="xs has 5 features"):
        unroll(cell, params, jnp.ones((2, 5, 5)), scan="parallel")
