"""The time loop, as a registry of properties every cell must satisfy: scan equals a Python loop over `step`,
masked batches equal per-sequence runs (forward and reverse), unroll/remat/jit/time-major/unbatched/vmap never change
results, gradients match central finite differences in float64, and bad input raises a clear error. The minimal
cells are registered twice: with the default `scan="auto"` at TIME = 6 they run sequentially, and with
`parallel_min_length=0` every property is checked on the parallel (associative-scan) path, in both scan spaces."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify
from jax.test_util import check_grads

from helpers import CLASSIC_PATH
from helpers import FAST_COMPILE, assert_trees_close, every_cell
from rnnjax import GRU, unroll
from rnnjax.minimal_cells import MinGRU
from rnnjax.time_loop import PARALLEL_ARRAYS_PER_STEP, parallel_memory_bytes, unroll_path

BATCH, TIME, INPUT, HIDDEN = 3, 6, 3, 4
LENGTHS = (6, 0, 4)  # full, empty, partial
CELLS = every_cell(HIDDEN)
EXPECTED_PATH = {name: "parallel" if "parallel" in name else "sequential" if "min" in name else CLASSIC_PATH
                 for name in CELLS}


def setup(name, key, dtype=jnp.float32):
    cell = CELLS[name]
    params_key, bias_key, xs_key, carry_key = jax.random.split(key, 4)
    params = cell.init(params_key, INPUT, dtype)
    biases = [field for field in params._fields if field.startswith("bias")]  # bias_ih (, bias_hh)
    params = params._replace(**{field: jax.random.normal(k, getattr(params, field).shape, dtype)
                                for field, k in zip(biases, jax.random.split(bias_key))})
    xs = jax.random.normal(xs_key, (BATCH, TIME, INPUT), dtype)
    leaves, treedef = jax.tree.flatten(cell.initial_carry((BATCH,), dtype))
    carry = jax.tree.unflatten(treedef, [0.5 * jax.random.normal(k, leaf.shape, dtype)
                                         for k, leaf in zip(jax.random.split(carry_key, len(leaves)), leaves)])
    return cell, params, xs, carry


def python_loop(cell, params, xs, carry, reverse=False):
    """The obvious reference: `step` called once per time step from Python."""
    ys = [None] * xs.shape[1]
    for t in (reversed(range(xs.shape[1])) if reverse else range(xs.shape[1])):
        carry, ys[t] = cell.step(params, carry, xs[:, t])
    return jnp.stack(ys, axis=1), carry


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("name", CELLS)
def test_scan_equals_python_loop_over_step(name, reverse, key):
    cell, params, xs, carry = setup(name, key)
    assert_trees_close(unroll(cell, params, xs, carry=carry, reverse=reverse),
                       python_loop(cell, params, xs, carry, reverse=reverse))


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("name", CELLS)
def test_masked_batch_equals_each_sequence_alone(name, reverse, key):
    cell, params, xs, carry = setup(name, key)
    ys, final = unroll(cell, params, xs, carry=carry, lengths=jnp.array(LENGTHS), reverse=reverse)
    for b, length in enumerate(LENGTHS):
        alone_carry = jax.tree.map(lambda leaf: leaf[b], carry)
        alone_ys, alone_final = unroll(cell, params, xs[b, :length], carry=alone_carry, reverse=reverse)
        np.testing.assert_allclose(ys[b, :length], alone_ys, atol=1e-6)
        np.testing.assert_array_equal(ys[b, length:], 0.0)  # exactly zero past the end
        assert_trees_close(jax.tree.map(lambda leaf: leaf[b], final), alone_final)
    # the empty sequence keeps its initial carry
    assert_trees_close(jax.tree.map(lambda leaf: leaf[1], final), jax.tree.map(lambda leaf: leaf[1], carry))


@pytest.mark.parametrize("name", CELLS)
def test_padding_values_never_leak(name, key):
    cell, params, xs, carry = setup(name, key)
    lengths = jnp.array(LENGTHS)
    garbage = jnp.where(jnp.arange(TIME)[None, :, None] < lengths[:, None, None], xs, 1e6)
    for reverse in (False, True):
        assert_trees_close(unroll(cell, params, xs, carry=carry, lengths=lengths, reverse=reverse),
                           unroll(cell, params, garbage, carry=carry, lengths=lengths, reverse=reverse))


def loss_and_grads(cell, params, xs, carry, **options):
    """`((loss, (ys, final_carry)), gradients)` in one jitted call, so outputs and gradients share a compile."""
    def loss(params, xs, carry):
        ys, final = unroll(cell, params, xs, carry=carry, **options)
        return jnp.sum(ys**2) + sum(jnp.sum(leaf) for leaf in jax.tree.leaves(final)), (ys, final)
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(params, xs, carry)


# The parallel path has no per-step body for `unroll` or `remat` to change (they are ignored there).
@pytest.mark.parametrize("name", [name for name in CELLS if EXPECTED_PATH[name] == "sequential"])
def test_unroll_factor_and_remat_never_change_results(name, key):
    cell, params, xs, carry = setup(name, key)
    lengths = jnp.array(LENGTHS)
    for reverse in (False, True):
        reference = loss_and_grads(cell, params, xs, carry, lengths=lengths, reverse=reverse)
        # unroll 4 does not divide TIME = 6: the remainder steps must be handled too
        for options in ({"unroll": 2}, {"unroll": 4}, {"remat": True, "unroll": 2}):
            assert_trees_close(loss_and_grads(cell, params, xs, carry, lengths=lengths, reverse=reverse, **options),
                               reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", CELLS)
def test_jit_equals_eager(name, key):
    cell, params, xs, carry = setup(name, key)
    lengths = jnp.array(LENGTHS)
    jitted = jax.jit(lambda params, xs, carry, lengths: unroll(cell, params, xs, carry=carry, lengths=lengths,
                                                               reverse=True))
    assert_trees_close(jitted(params, xs, carry, lengths),
                       unroll(cell, params, xs, carry=carry, lengths=lengths, reverse=True))


@pytest.mark.parametrize("name", CELLS)
def test_time_major_unbatched_and_vmap_agree(name, key):
    cell, params, xs, carry = setup(name, key)
    lengths = jnp.array(LENGTHS)
    ys, final = unroll(cell, params, xs, carry=carry, lengths=lengths)
    ys_tm, final_tm = unroll(cell, params, jnp.swapaxes(xs, 0, 1), carry=carry, lengths=lengths, time_major=True)
    np.testing.assert_allclose(jnp.swapaxes(ys_tm, 0, 1), ys, atol=1e-6)
    assert_trees_close(final_tm, final)
    ys_1, final_1 = unroll(cell, params, xs[2], carry=jax.tree.map(lambda leaf: leaf[2], carry), lengths=lengths[2])
    np.testing.assert_allclose(ys_1, ys[2], atol=1e-6)
    assert_trees_close(final_1, jax.tree.map(lambda leaf: leaf[2], final))
    vmapped = jax.vmap(lambda x, c, n: unroll(cell, params, x, carry=c, lengths=n))(xs, carry, lengths)
    assert_trees_close(vmapped, (ys, final))


@pytest.mark.parametrize("name", CELLS)
def test_carry_streams_across_windows(name, key):
    """Truncated BPTT's premise: two windows with the carry passed along equal one long run."""
    cell, params, xs, carry = setup(name, key)
    ys, final = unroll(cell, params, xs, carry=carry)
    ys_a, carry_a = unroll(cell, params, xs[:, :2], carry=carry)
    ys_b, carry_b = unroll(cell, params, xs[:, 2:], carry=carry_a)
    np.testing.assert_allclose(jnp.concatenate([ys_a, ys_b], axis=1), ys, atol=1e-6)
    assert_trees_close(carry_b, final)


@pytest.mark.parametrize("name", CELLS)
def test_bfloat16_inputs(name, key):
    cell, params, xs, carry = setup(name, key)
    ys, final = unroll(cell, params, xs.astype(jnp.bfloat16), lengths=jnp.array(LENGTHS))
    assert ys.dtype == jnp.float32 and all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(final))
    reference, _ = unroll(cell, params, xs, lengths=jnp.array(LENGTHS))
    np.testing.assert_allclose(ys, reference, atol=5e-2)
    grads = jax.grad(lambda p: jnp.sum(unroll(cell, p, xs.astype(jnp.bfloat16))[0]))(params)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("name", CELLS)
def test_gradients_match_finite_differences_in_float64(name, reverse, key):
    with jax.enable_x64(True):
        cell, params, xs, carry = setup(name, key, jnp.float64)
        lengths = jnp.array(LENGTHS)

        def loss(params, xs, carry):
            ys, final = unroll(cell, params, xs, carry=carry, lengths=lengths, reverse=reverse)
            assert ys.dtype == jnp.float64
            return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(leaf**2) for leaf in jax.tree.leaves(final))

        check_grads(loss, (params, xs, carry), order=1, modes=["rev"], eps=1e-6, atol=1e-6, rtol=1e-6)


def test_lengths_may_be_traced(key):
    cell, params, xs, carry = setup("gru", key)
    traced = jax.jit(lambda lengths: unroll(cell, params, xs, lengths=lengths)[0])(jnp.array(LENGTHS))
    np.testing.assert_allclose(traced, unroll(cell, params, xs, lengths=jnp.array(LENGTHS))[0], atol=1e-6)


# -- bad input -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "change, error, match",
    [
        (dict(xs=jnp.ones((TIME,))), ValueError, "got rank 1 with shape \\(6,\\)"),
        (dict(xs=jnp.ones((2, BATCH, TIME, INPUT))), ValueError, "got rank 4"),
        (dict(xs=jnp.ones((BATCH, TIME, 5))), ValueError, "xs has 5 features.*expect input_size 3"),
        (dict(xs=jnp.ones((BATCH, TIME, INPUT), jnp.int32)), TypeError, "floating dtype.*int32"),
        (dict(xs=[[[1.0] * INPUT] * TIME] * BATCH), TypeError, "xs must be an array, got list"),
        (dict(lengths=jnp.array([1, 2])), ValueError, "lengths must be shape \\(3,\\) = \\[batch\\], got shape \\(2,"),
        (dict(lengths=jnp.array([[1, 2, 3]])), ValueError, "got shape \\(1, 3\\)"),
        (dict(lengths=jnp.array([1.0, 2.0, 3.0])), TypeError, "lengths must be an integer array, got dtype float32"),
        (dict(lengths=jnp.array([1, 7, 3])), ValueError, "lengths must lie in \\[0, 6\\].*max 7"),
        (dict(lengths=np.array([1, -1, 3])), ValueError, "lengths must lie in \\[0, 6\\].*min -1"),
        (dict(carry=jnp.zeros((BATCH + 1, HIDDEN))), ValueError, "carry must have shape \\(3, 4\\).*got \\(4, 4\\)"),
        (dict(carry=jnp.zeros((BATCH, HIDDEN), jnp.int32)), TypeError, "carry must have a floating dtype"),
        (dict(unroll=0), ValueError, "unroll must be an int >= 1, got 0"),
        (dict(unroll=True), ValueError, "unroll must be an int >= 1, got True"),
    ],
)
def test_bad_input_raises_clear_errors(change, error, match, key):
    cell, params, xs, _ = setup("gru", key)
    arguments = dict(xs=xs) | change
    xs = arguments.pop("xs")
    with pytest.raises(error, match=match):
        unroll(cell, params, xs, **arguments)


def test_unbatched_lengths_must_be_a_scalar(key):
    cell, params, xs, _ = setup("lstm", key)
    with pytest.raises(ValueError, match="lengths must be a scalar for unbatched inputs, got shape \\(1,\\)"):
        unroll(cell, params, xs[0], lengths=jnp.array([3]))


@pytest.mark.parametrize("name", ["lstm", "mingru_parallel"])  # the fused and the parallel path
def test_traced_lengths_out_of_range_fail_a_checkify_check(name, key):
    """Under `jit` the lengths are not known at trace time: checkify (as the `rnnjax.train` steps run it) checks
    them on the device; before, a length past T silently acted as T."""
    cell, params, xs, _ = setup(name, key)
    run = jax.jit(checkify.checkify(lambda lengths: unroll(cell, params, xs, lengths=lengths)),
                  compiler_options=FAST_COMPILE)
    assert run(jnp.array(LENGTHS))[0].get() is None
    for lengths, value, index in (([6, 7, 1], 7, 1), ([6, 0, -2], -2, 2)):
        assert run(jnp.array(lengths))[0].get() == (f"lengths must lie in [0, 6] (the time axis), got {value} at "
                                                    f"flat index {index} of shape (3,) (`check` failed)")
    vmapped = jax.jit(checkify.checkify(jax.vmap(lambda x, n: unroll(cell, params, x, lengths=n))),
                      compiler_options=FAST_COMPILE)
    assert "got 9" in vmapped(xs, jnp.array([1, 9, 2]))[0].get()


def test_bad_input_is_reported_at_trace_time_under_jit(key):
    cell, params, xs, _ = setup("lstm", key)
    with pytest.raises(ValueError, match="xs has 5 features"):
        jax.jit(lambda xs: unroll(cell, params, xs))(jnp.ones((BATCH, TIME, 5)))
    with pytest.raises(TypeError, match="LSTM carry must be LSTMState"):
        jax.jit(lambda xs: unroll(cell, params, xs, carry=jnp.zeros((BATCH, HIDDEN))))(xs)


# -- paths: fused, sequential (lax.scan) or parallel (associative scan) ------------------------------------------------
@pytest.mark.parametrize("name", CELLS)
def test_each_cell_runs_its_expected_path(name, key):
    cell, params, xs, _ = setup(name, key)
    assert unroll_path(cell, params, xs) == EXPECTED_PATH[name]
    sequential = CLASSIC_PATH if EXPECTED_PATH[name] == CLASSIC_PATH else "sequential"
    assert unroll_path(cell, params, xs, scan="sequential") == sequential
    assert unroll_path(cell, params, xs, scan="sequential", backward="autodiff") == "sequential"
    shapes = jax.eval_shape(lambda: (params, xs))  # shapes and dtypes are enough, nothing is computed
    assert unroll_path(cell, *shapes) == EXPECTED_PATH[name]


def test_auto_mode_switches_at_the_cells_parallel_min_length(key):
    _, params, xs, _ = setup("mingru", key)
    assert unroll_path(MinGRU(HIDDEN, parallel_min_length=TIME), params, xs) == "parallel"
    assert unroll_path(MinGRU(HIDDEN, parallel_min_length=TIME + 1), params, xs) == "sequential"
    assert unroll_path(MinGRU(HIDDEN, parallel_min_length=10**9), params, xs, scan="parallel") == "parallel"
    # the default (None) defers to the backend: never on CPU, where the parallel path measured slower
    long_min_xs = jax.ShapeDtypeStruct((BATCH, 4096, INPUT), jnp.float32)
    expected = "sequential" if jax.default_backend() == "cpu" else "parallel"
    assert unroll_path(MinGRU(HIDDEN), params, long_min_xs) == expected
    long_xs = jax.ShapeDtypeStruct((BATCH, 10**6, INPUT), jnp.float32)
    _, gru_params, _, _ = setup("gru", key)
    assert unroll_path(GRU(HIDDEN), gru_params, long_xs) == CLASSIC_PATH  # not linear in its carry: never parallel
    # time-major and unbatched shapes count the time axis, not the batch
    assert unroll_path(MinGRU(HIDDEN, parallel_min_length=TIME), params, jnp.swapaxes(xs, 0, 1),
                       time_major=True) == "parallel"
    assert unroll_path(MinGRU(HIDDEN, parallel_min_length=TIME), params, xs[0]) == "parallel"
    assert unroll_path(MinGRU(HIDDEN, parallel_min_length=0), params, xs[:, :0]) == "sequential"  # empty


def test_parallel_memory_guard(key):
    _, params, xs, _ = setup("mingru", key)
    estimate = parallel_memory_bytes(TIME, BATCH, HIDDEN, jnp.float32, "log")
    assert estimate == TIME * BATCH * HIDDEN * 4 * PARALLEL_ARRAYS_PER_STEP["log"] == 9216
    assert parallel_memory_bytes(TIME, BATCH, HIDDEN, jnp.float32, "linear") < estimate
    guarded = MinGRU(HIDDEN, parallel_min_length=0, max_parallel_bytes=estimate - 1)
    with pytest.raises(ValueError, match=r"MinGRU parallel scan over time=6, batch=3, hidden=4 \(float32\) needs an "
                                         r"estimated 9,216 bytes .*over max_parallel_bytes=9,215.*scan='sequential'"):
        unroll(guarded, params, xs, scan="parallel")
    # "auto" falls back to the sequential path instead of raising, and says so
    assert unroll_path(guarded, params, xs) == "sequential"
    assert_trees_close(unroll(guarded, params, xs), unroll(MinGRU(HIDDEN), params, xs, scan="sequential"))
    fits = MinGRU(HIDDEN, max_parallel_bytes=estimate)
    assert unroll_path(fits, params, xs, scan="parallel") == "parallel"
    assert unroll_path(MinGRU(HIDDEN, max_parallel_bytes=None), params, xs, scan="parallel") == "parallel"


@pytest.mark.parametrize(
    "name, mode, match",
    [
        ("gru", "parallel", "scan='parallel' needs a cell linear in its carry.*GRU reads its carry"),
        ("lstm", "parallel", "LSTM reads its carry"),
        ("mingru", "fast", "scan must be one of \\('auto', 'sequential', 'parallel'\\), got 'fast'"),
    ],
)
def test_bad_mode_raises(name, mode, match, key):
    cell, params, xs, _ = setup(name, key)
    with pytest.raises(ValueError, match=match):
        unroll(cell, params, xs, scan=mode)
