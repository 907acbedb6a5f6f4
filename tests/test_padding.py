"""Non-finite padding changes nothing: with NaN or ±inf in every step past each sequence's length, outputs, final
carries and the gradients of params, inputs and initial carry equal the per-sequence (unpadded) runs, and the
input gradient is exactly zero on the padding. Every cell, on every path (the fused custom VJP, plain autodiff, the
parallel associative scan), forward and reverse, through `unroll` and every layer type (`Recurrent`,
`Bidirectional`, `Stack`, `RNN`).

`unroll` is compared with each sequence run alone (one program for the padded batch, called with NaN and with inf
padding, and one per sequence length); the layers, which compose `unroll` calls, with their zero-padded batch,
bit for bit (one program each), so the file stays at a few dozen small compiles."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import CLASSIC_PATH
from helpers import FAST_COMPILE, assert_trees_close, every_cell, random_like
from rnnjax import RNN, Bidirectional, Recurrent, Stack, unroll, unroll_path

BATCH, TIME, INPUT, HIDDEN = 3, 5, 3, 4
LENGTHS = (5, 0, 2)  # full, empty, partial
CELLS = every_cell(HIDDEN)
# cell -> {backward: the path `unroll` takes}: the classic cells run the fused custom VJP or plain autodiff.
PATHS = {name: ({"auto": "parallel"} if "parallel" in name else {"auto": "sequential"} if "min" in name else
                {"auto": CLASSIC_PATH, "autodiff": "sequential"}) for name in CELLS}


def padded(xs, value):
    """`xs` `[batch, time, ...]` with `value` in every step at or past each sequence's length (for inf, its sign
    alternates along the features so both infinities appear)."""
    mask = (np.arange(xs.shape[1])[None, :] < np.array(LENGTHS)[:, None]).reshape(xs.shape[:2] + (1,) * (xs.ndim - 2))
    fill = np.full(xs.shape, value, np.float32)
    if np.isinf(value):
        fill = fill * np.where(np.arange(xs.shape[-1]) % 2, -1.0, 1.0).astype(np.float32)
    return np.where(mask, np.asarray(xs), fill)


def loss_of(outputs):
    """Additive over the batch, and sensitive to every output step and carry entry (sin(0) = 0 on the zeroed
    padding, but its cotangent cos(0) = 1 flows into the masked steps)."""
    ys, final = outputs
    return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(jnp.sin(2.0 * leaf)) for leaf in jax.tree.leaves(final))


def outputs_and_grads(apply, params, xs, carry):
    """`(apply(params, xs, carry), gradients of loss_of(...) wrt (params, xs, carry))`."""
    return apply(params, xs, carry), jax.grad(lambda *args: loss_of(apply(*args)), argnums=(0, 1, 2))(params, xs, carry)


def check_against_each_sequence(run, alone, params, xs, carry):
    """`run` on the NaN- and inf-padded batch (lengths `LENGTHS`) against `alone` on each sequence by itself (its
    valid prefix, a batch of one, no lengths): outputs, final carries, gradients (params summed over sequences)."""
    # Compared as NumPy arrays, fetched once: eager jnp ops on each leaf would compile a kernel per new shape.
    references = []
    for b, length in enumerate(LENGTHS):
        row = jax.tree.map(lambda leaf: leaf[b:b + 1], carry)
        references.append(jax.device_get(alone(params, xs[b:b + 1, :length], row)))
    param_grads = jax.tree.map(lambda *leaves: sum(leaves), *[grads[0] for _, grads in references])
    for value in (np.nan, np.inf):
        outputs = jax.device_get(run(params, padded(xs, value), carry, np.array(LENGTHS)))
        (ys, final), (d_params, d_xs, d_carry) = outputs
        for leaf in jax.tree.leaves(outputs):
            assert np.all(np.isfinite(leaf)), f"a non-finite value leaked out of the {value} padding"
        assert_trees_close(d_params, param_grads, atol=1e-5, rtol=1e-5)
        for b, (length, ((ys_b, final_b), (_, d_xs_b, d_carry_b))) in enumerate(zip(LENGTHS, references)):
            np.testing.assert_allclose(ys[b, :length], ys_b[0], atol=1e-6)
            np.testing.assert_array_equal(ys[b, length:], 0.0)  # exactly zero past the end
            np.testing.assert_allclose(d_xs[b, :length], d_xs_b[0], atol=1e-6)
            np.testing.assert_array_equal(d_xs[b, length:], 0.0)  # the padding gets exactly no gradient
            for tree, alone_tree in ((final, final_b), (d_carry, d_carry_b)):
                assert_trees_close(jax.tree.map(lambda leaf: leaf[b:b + 1], tree), alone_tree, atol=1e-6, rtol=1e-6)


def setup(cell, key, carry_shape=(BATCH,)):
    params_key, xs_key = jax.random.split(key)
    params = cell.init(params_key, INPUT)
    xs = jax.random.normal(xs_key, (BATCH, TIME, INPUT))
    return params, xs, random_like(cell.initial_carry(carry_shape), seed=1)


@pytest.mark.parametrize("name", CELLS)
def test_unroll_ignores_non_finite_padding_on_every_path(name, key):
    cell = CELLS[name]
    params, xs, carry = setup(cell, key)
    variants = [(backward, reverse) for backward in PATHS[name] for reverse in (False, True)]
    for backward, path in PATHS[name].items():
        assert unroll_path(cell, params, xs, backward=backward) == path

    def run(variants, params, xs, carry, lengths=None):  # one program per call shape for all variants: few compiles
        return [outputs_and_grads(lambda p, x, c, backward=backward, reverse=reverse: unroll(
            cell, p, x, carry=c, lengths=lengths, reverse=reverse, backward=backward), params, xs, carry)
            for backward, reverse in variants]

    padded_batch = jax.jit(functools.partial(run, variants), compiler_options=FAST_COMPILE)
    # Each sequence alone has no padding: one path per direction is the reference for all of them.
    alone = jax.jit(functools.partial(run, [("auto", False), ("auto", True)]), compiler_options=FAST_COMPILE)
    for index, (_, reverse) in enumerate(variants):
        check_against_each_sequence(lambda *args, index=index: padded_batch(*args)[index],
                                    lambda *args, reverse=reverse: alone(*args)[int(reverse)], params, xs, carry)


def check_against_zero_padding(run, params, xs, carry):
    """`run` on the NaN- and inf-padded batch equals `run` on the zero-padded one bit for bit (padded inputs are
    zeroed before any arithmetic, so nothing downstream can tell them apart), with every leaf finite and the padded
    inputs' gradient exactly zero. That the zero-padded batch equals each sequence alone is `unroll`'s property
    (above, and tests/test_time_loop.py, tests/test_layers.py); the layers compose `unroll` calls."""
    lengths = np.array(LENGTHS)
    reference = jax.device_get(run(params, padded(xs, 0.0), carry, lengths))
    for value in (np.nan, np.inf):
        outputs = jax.device_get(run(params, padded(xs, value), carry, lengths))
        for leaf in jax.tree.leaves(outputs):
            assert np.all(np.isfinite(leaf)), f"a non-finite value leaked out of the {value} padding"
        jax.tree.map(np.testing.assert_array_equal, outputs, reference)
        d_xs = outputs[1][1]
        for b, length in enumerate(LENGTHS):
            np.testing.assert_array_equal(d_xs[b, length:], 0.0)


@pytest.mark.parametrize("name", CELLS)
def test_every_layer_type_ignores_non_finite_padding(name, key):
    """One `Stack` holds every layer type: a `Bidirectional` (a forward and a reverse `Recurrent`: the fused path
    for the classic cells) under a `Recurrent` with `remat` (plain autodiff). A NaN leaking from the first layer's
    padded steps would reach the second layer's outputs, and every layer's parameters get a gradient."""
    cell = CELLS[name]
    stack = Stack((Bidirectional(cell), Recurrent(cell, remat=True)))
    params, xs, _ = setup(stack, key)
    carry = random_like(stack.initial_carry((BATCH,)), seed=1)
    jitted = jax.jit(lambda params, xs, carry, lengths: outputs_and_grads(
        lambda p, x, c: stack.apply(p, x, carry=c, lengths=lengths), params, xs, carry), compiler_options=FAST_COMPILE)
    check_against_zero_padding(jitted, params, xs, carry)


@pytest.mark.parametrize("mode", ["rnn_tanh", "rnn_relu", "lstm", "gru"])
def test_rnn_ignores_non_finite_padding(mode, key):
    model = RNN(mode, INPUT, HIDDEN, num_layers=2, bidirectional=True)
    params = model.init(key)
    xs = jax.random.normal(jax.random.fold_in(key, 1), (BATCH, TIME, INPUT))
    carry = random_like(model.initial_carry((BATCH,)), seed=2)  # h_0 [num_layers * 2, batch, hidden]
    jitted = jax.jit(lambda params, xs, carry, lengths: outputs_and_grads(
        lambda p, x, c: model.apply(p, x, carry=c, lengths=lengths), params, xs, carry), compiler_options=FAST_COMPILE)
    check_against_zero_padding(jitted, params, xs, carry)
