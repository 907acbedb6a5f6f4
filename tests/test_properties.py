"""Property tests (hypothesis) over cells, shapes, lengths (0 and T included), input dtypes and directions: a masked
batch equals its sequences run one by one, `jit` equals eager, and the fused backward pass equals autodiff.

The examples are drawn from small sets of shapes (so compiled programs are reused across examples), derandomized
(the same examples every run) and bounded (`max_examples`), with no example database written: the file takes
seconds, not minutes."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from helpers import CLASSIC_PATH
from helpers import FAST_COMPILE, assert_trees_close, every_cell, random_like
from rnnjax import unroll, unroll_path

INPUT, HIDDEN = 3, 4
CELLS = every_cell(HIDDEN)
FUSED = [name for name in CELLS if "min" not in name]
DTYPES = {"float32": (jnp.float32, 1e-5), "bfloat16": (jnp.bfloat16, 1e-2)}  # input dtype, tolerance
BOUNDED = settings(max_examples=4, deadline=None, derandomize=True, database=None)
# Drawn examples are few, so each property also runs these: the cells and paths the draws might miss, with lengths
# 0 and T side by side (cell, batch, time, lengths, dtype, reverse, seed).
EDGES = [("lstm", 3, 4, (4, 0, 2), "float32", True, 1), ("minlstm", 2, 4, (0, 4), "bfloat16", False, 2),
         ("mingru_parallel", 3, 4, (4, 1, 0), "float32", True, 3),
         ("minlstm_parallel", 2, 4, (2, 4), "float32", False, 4)]


@st.composite
def cases(draw, cells=tuple(CELLS)):
    """(cell name, batch, time, lengths [batch] in [0, time] with both ends likely, dtype name, reverse, seed)."""
    batch = draw(st.sampled_from([1, 2, 3]))
    time = draw(st.sampled_from([1, 4]))
    lengths = draw(st.lists(st.sampled_from([0, time, *range(1, time)]), min_size=batch, max_size=batch))
    return (draw(st.sampled_from(cells)), batch, time, tuple(lengths), draw(st.sampled_from(sorted(DTYPES))),
            draw(st.booleans()), draw(st.integers(0, 2**16)))


def setup(name, batch, time, dtype, seed):
    cell = CELLS[name]
    keys = jax.random.split(jax.random.key(seed), 2)
    params = cell.init(keys[0], INPUT)
    xs = jax.random.normal(keys[1], (batch, time, INPUT)).astype(DTYPES[dtype][0])
    return cell, params, xs, random_like(cell.initial_carry((batch,)), seed)


def loss(ys, final):
    return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(jnp.cos(leaf)) for leaf in jax.tree.leaves(final))


# Jitted entry points, keyed by their static options, so every example with the same shapes reuses one program.
_UNROLLS = {}


def jitted_unroll(cell, reverse, backward="auto"):
    key = (cell, reverse, backward)
    if key not in _UNROLLS:
        def run(params, xs, carry, lengths):
            def apply(params, xs, carry):
                return unroll(cell, params, xs, carry=carry, lengths=lengths, reverse=reverse, backward=backward)
            return apply(params, xs, carry), jax.grad(lambda *args: loss(*apply(*args)), argnums=(0, 1, 2))(
                params, xs, carry)
        _UNROLLS[key] = jax.jit(run, compiler_options=FAST_COMPILE)
    return _UNROLLS[key]


@BOUNDED
@given(cases())
@example(EDGES[0])
@example(EDGES[1])
@example(EDGES[2])
@example(EDGES[3])
def test_a_masked_batch_equals_its_sequences_one_by_one(case):
    name, batch, time, lengths, dtype, reverse, seed = case
    cell, params, xs, carry = setup(name, batch, time, dtype, seed)
    run = jitted_unroll(cell, reverse)
    # NumPy from here on (float32 for bfloat16 gradients): eager jnp ops would compile a kernel per new shape.
    as_numpy = functools.partial(jax.tree.map, lambda leaf: np.asarray(leaf, np.float32))
    (ys, final), (d_params, d_xs, d_carry) = as_numpy(run(params, xs, carry, np.array(lengths)))
    tolerance = DTYPES[dtype][1]
    summed = None
    for b, length in enumerate(lengths):
        row = jax.tree.map(lambda leaf: leaf[b:b + 1], carry)
        (ys_b, final_b), (d_params_b, d_xs_b, d_carry_b) = as_numpy(run(params, xs[b:b + 1, :length], row, None))
        np.testing.assert_allclose(ys[b, :length], ys_b[0], atol=tolerance, rtol=tolerance)
        np.testing.assert_array_equal(ys[b, length:], 0.0)
        assert_trees_close(jax.tree.map(lambda leaf: leaf[b:b + 1], final), final_b, atol=tolerance, rtol=tolerance)
        np.testing.assert_allclose(d_xs[b, :length], d_xs_b[0], atol=tolerance, rtol=tolerance)
        np.testing.assert_array_equal(d_xs[b, length:], 0.0)
        assert_trees_close(jax.tree.map(lambda leaf: leaf[b:b + 1], d_carry), d_carry_b, atol=tolerance,
                           rtol=tolerance)
        summed = d_params_b if summed is None else jax.tree.map(np.add, summed, d_params_b)
    assert_trees_close(d_params, summed, atol=10 * tolerance, rtol=10 * tolerance)


@settings(BOUNDED, max_examples=3)  # each eager call runs op by op: the slowest property per example
@given(cases(), st.booleans())
@example(EDGES[0], True)
@example(EDGES[3], False)
def test_jit_equals_eager(case, time_major):
    name, batch, time, lengths, dtype, reverse, seed = case
    cell, params, xs, carry = setup(name, batch, time, dtype, seed)
    if time_major:
        xs = jnp.swapaxes(xs, 0, 1)
    eager = unroll(cell, params, xs, carry=carry, lengths=np.array(lengths), reverse=reverse, time_major=time_major)
    jitted = jax.jit(lambda p, x, c, n: unroll(cell, p, x, carry=c, lengths=n, reverse=reverse, time_major=time_major),
                     compiler_options=FAST_COMPILE)(params, xs, carry, np.array(lengths))
    tolerance = DTYPES[dtype][1]
    assert_trees_close(jitted, eager, atol=tolerance, rtol=tolerance)


@BOUNDED
@given(cases(cells=tuple(FUSED)))
@example(EDGES[0])
def test_the_fused_backward_pass_equals_autodiff(case):
    name, batch, time, lengths, dtype, reverse, seed = case
    cell, params, xs, carry = setup(name, batch, time, dtype, seed)
    assert unroll_path(cell, params, xs) == CLASSIC_PATH
    assert unroll_path(cell, params, xs, backward="autodiff") == "sequential"
    fused = jax.device_get(jitted_unroll(cell, reverse, "custom")(params, xs, carry, np.array(lengths)))
    autodiff = jax.device_get(jitted_unroll(cell, reverse, "autodiff")(params, xs, carry, np.array(lengths)))
    tolerance = DTYPES[dtype][1]
    assert_trees_close(fused, autodiff, atol=tolerance, rtol=tolerance)
