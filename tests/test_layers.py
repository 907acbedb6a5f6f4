"""Tests of `rnnjax.layers`: `Recurrent`, `Bidirectional`, `Stack` and `dropout`.

References are built from `rnnjax.unroll` and from running each sequence alone (no `lengths`), so masking,
reversal, merging and stacking are each checked against something simpler than the code under test.

Speed: XLA's compile time per `lax.scan` dominates this file, so calls go through `run` / `run_unroll` (the
whole call under `jit`, the spec static, compiled with `FAST_COMPILE`), parameters are NumPy draws shaped by
`jax.eval_shape(layer.init)` (no random-number kernels to compile), results are cached per spec, and test-side
arithmetic is NumPy. Eager `apply` is exercised by the `jit` tests (which compare against it, with default
compiler options) and by the bad-input tests, whose checks need concrete values."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import FAST_COMPILE, random_like, assert_trees_close, assert_trees_equal

from rnnjax import (
    GRU,
    LSTM,
    MERGES,
    Bidirectional,
    BidirectionalCarry,
    BidirectionalParams,
    LSTMState,
    Recurrent,
    SimpleRNN,
    Stack,
    dropout,
    unroll,
)

BATCH, TIME, INPUT_SIZE = 4, 5, 3
# Unsorted, with a full-length, a length-0 and a length-1 sequence.
LENGTHS = (TIME, 3, 0, 1)
TOLERANCE = dict(atol=1e-6, rtol=1e-6)

CELLS = [LSTM(hidden_size=5), GRU(hidden_size=4), SimpleRNN(hidden_size=3, activation="relu")]
CELL_IDS = ["lstm", "gru", "rnn_relu"]


@functools.partial(jax.jit, static_argnums=0, static_argnames="time_major", compiler_options=FAST_COMPILE)
def run(layer, params, xs, carry=None, lengths=None, key=None, time_major=False):
    """`layer.apply` under `jit`, the layer spec static."""
    return layer.apply(params, xs, carry=carry, lengths=lengths, key=key, time_major=time_major)


run_unroll = jax.jit(unroll, static_argnums=0, static_argnames="reverse", compiler_options=FAST_COMPILE)


@functools.cache
def init(layer, input_size: int = INPUT_SIZE, seed: int = 0):
    """Parameters with `layer.init`'s tree, shapes and dtypes, drawn from U(-0.5, 0.5) with NumPy (non-zero
    biases); cached per spec (specs are hashable)."""
    shapes = jax.eval_shape(lambda key: layer.init(key, input_size), jax.random.key(0))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda leaf: rng.uniform(-0.5, 0.5, leaf.shape).astype(leaf.dtype), shapes)


def random_inputs(seed: int = 1, shape=(BATCH, TIME, INPUT_SIZE)) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def take(tree, index):
    """Row `index` of every leaf (one sequence of a batched carry)."""
    return jax.tree.map(lambda leaf: leaf[index], tree)


def max_difference(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in
               zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# -- Bidirectional ---------------------------------------------------------------------------------------------------


@functools.cache
def bidirectional_outputs(cell, merge: str):
    """`Bidirectional(cell, merge=merge)` over `random_inputs()`, params from `init(Bidirectional(cell))`."""
    return run(Bidirectional(cell, merge=merge), init(Bidirectional(cell)), random_inputs())


@functools.cache
def reference_unrolls(cell):
    """`(forward_ys, forward_carry), (backward_ys, backward_carry)`: each direction run with `unroll` itself."""
    params = init(Bidirectional(cell))
    xs = random_inputs()
    return run_unroll(cell, params.forward, xs), run_unroll(cell, params.backward, xs, reverse=True)


@pytest.mark.parametrize("cell", CELLS, ids=CELL_IDS)
def test_bidirectional_concat_equals_forward_and_reverse_unrolls(cell):
    params = init(Bidirectional(cell))
    assert isinstance(params, BidirectionalParams)
    assert not np.allclose(params.forward.weight_ih, params.backward.weight_ih)
    (forward_ys, forward_carry), (backward_ys, backward_carry) = reference_unrolls(cell)
    assert not np.allclose(forward_ys, backward_ys)

    ys, carry = bidirectional_outputs(cell, "concat")

    expected = np.concatenate([forward_ys, backward_ys], axis=-1)
    assert ys.shape == expected.shape == (BATCH, TIME, 2 * cell.hidden_size)
    np.testing.assert_allclose(ys, expected, **TOLERANCE)
    assert isinstance(carry, BidirectionalCarry)
    assert_trees_close(carry.forward, forward_carry)
    assert_trees_close(carry.backward, backward_carry)


@pytest.mark.parametrize("merge", [merge for merge in MERGES if merge != "concat"])
def test_bidirectional_merge_modes(merge):
    cell = CELLS[0]
    (forward_ys, forward_carry), (backward_ys, backward_carry) = reference_unrolls(cell)
    forward_ys, backward_ys = np.asarray(forward_ys), np.asarray(backward_ys)

    ys, carry = bidirectional_outputs(cell, merge)

    expected = {"sum": forward_ys + backward_ys, "mean": (forward_ys + backward_ys) / 2,
                "mul": forward_ys * backward_ys}[merge]
    assert ys.shape == (BATCH, TIME, cell.hidden_size) == (BATCH, TIME, Bidirectional(cell, merge=merge).output_size)
    np.testing.assert_allclose(ys, expected, **TOLERANCE)
    assert_trees_close(carry, BidirectionalCarry(forward_carry, backward_carry))


def test_bidirectional_output_size():
    assert MERGES == ("concat", "sum", "mean", "mul")
    assert Bidirectional(LSTM(5)).output_size == 10
    assert Bidirectional(LSTM(5), GRU(3)).output_size == 8
    for merge in ("sum", "mean", "mul"):
        assert Bidirectional(LSTM(5), GRU(5), merge=merge).output_size == 5


def test_bidirectional_backward_reads_the_reversed_sequence():
    """The backward direction is the forward recurrence over the time-flipped sequence, flipped back."""
    cell = CELLS[1]
    hidden = cell.hidden_size
    params = init(Bidirectional(cell))
    ys, carry = bidirectional_outputs(cell, "concat")
    flipped_ys, flipped_carry = run_unroll(cell, params.backward, np.flip(random_inputs(), axis=1).copy())
    np.testing.assert_allclose(ys[..., hidden:], np.flip(np.asarray(flipped_ys), axis=1), **TOLERANCE)
    np.testing.assert_allclose(carry.backward, flipped_carry, **TOLERANCE)
    # The backward state after reading t = 0 is its output at t = 0; the forward one, its output at t = T - 1.
    np.testing.assert_allclose(carry.backward, ys[:, 0, hidden:], **TOLERANCE)
    np.testing.assert_allclose(carry.forward, ys[:, -1, :hidden], **TOLERANCE)


def test_bidirectional_with_lengths_equals_each_sequence_alone():
    cell = CELLS[0]  # the LSTM: its carry is a pair. The GRU and SimpleRNN meet lengths in later tests.
    layer = Bidirectional(cell)
    params = init(layer)
    xs = random_inputs()
    initial = random_like(layer.initial_carry((BATCH,)), seed=2)
    hidden = cell.hidden_size

    ys, carry = run(layer, params, xs, carry=initial, lengths=np.array(LENGTHS))
    assert ys.shape == (BATCH, TIME, 2 * hidden)

    for b, length in enumerate(LENGTHS):
        assert np.all(np.asarray(ys[b, length:]) == 0.0), f"padded outputs of sequence {b} are not zero"
        if length == 0:  # nothing read: the initial carry, untouched, in both directions
            assert_trees_equal(take(carry, b), take(initial, b))
            continue
        # The whole layer on the valid prefix alone: its backward half is the prefix read in reverse.
        alone_ys, alone_carry = run(layer, params, xs[b, :length], carry=take(initial, b))
        np.testing.assert_allclose(ys[b, :length, hidden:], alone_ys[:, hidden:], **TOLERANCE)
        assert_trees_close(take(carry.backward, b), alone_carry.backward)
        np.testing.assert_allclose(ys[b, :length, :hidden], alone_ys[:, :hidden], **TOLERANCE)
        assert_trees_close(take(carry.forward, b), alone_carry.forward)


def test_bidirectional_padding_does_not_leak_into_the_backward_direction():
    """Changing padded inputs changes nothing: neither outputs nor the backward state."""
    layer = Bidirectional(CELLS[0])
    params = init(layer)
    xs = random_inputs()
    lengths = np.array(LENGTHS)
    padded = np.arange(TIME)[None, :, None] >= lengths[:, None, None]
    garbage = np.where(padded, 100.0 * random_inputs(seed=7), xs).astype(np.float32)
    assert not np.allclose(garbage, xs)
    assert_trees_equal(run(layer, params, garbage, lengths=lengths), run(layer, params, xs, lengths=lengths))


def test_bidirectional_with_two_cells_and_explicit_layers():
    forward, backward = LSTM(4), GRU(3)
    layer = Bidirectional(Recurrent(forward), Recurrent(backward, reverse=True))
    assert layer == Bidirectional(forward, backward)
    assert layer.forward == Recurrent(forward) and layer.backward == Recurrent(backward, reverse=True)
    params = jax.eval_shape(lambda key: layer.init(key, INPUT_SIZE), jax.random.key(0))
    assert params.forward.weight_ih.shape == (16, INPUT_SIZE)
    assert params.backward.weight_ih.shape == (9, INPUT_SIZE)
    ys, carry = jax.eval_shape(layer.apply, params, jax.ShapeDtypeStruct((BATCH, TIME, INPUT_SIZE), jnp.float32))
    assert ys.shape == (BATCH, TIME, 7)
    assert isinstance(carry.forward, LSTMState) and carry.backward.shape == (BATCH, 3)


def test_bidirectional_of_a_cell_reuses_the_spec_in_reverse():
    layer = Bidirectional(GRU(3, initializer="orthogonal"))
    assert layer.forward == Recurrent(GRU(3, initializer="orthogonal"))
    assert layer.backward == Recurrent(GRU(3, initializer="orthogonal"), reverse=True)
    remat = Bidirectional(Recurrent(GRU(3), unroll=2, remat=True))
    assert remat.backward == Recurrent(GRU(3), reverse=True, unroll=2, remat=True)


# -- Stack -----------------------------------------------------------------------------------------------------------


def test_stack_equals_recurrent_layers_chained_by_hand():
    first, second = LSTM(5), GRU(4)
    stack = Stack((first, second))
    assert stack.output_size == 4
    params = init(stack)
    assert params[1].weight_ih.shape == (12, 5)  # the second layer reads the first one's 5 features
    xs = random_inputs()
    lengths = np.array(LENGTHS)
    initial = random_like(stack.initial_carry((BATCH,)), seed=3)

    ys, carries = run(stack, params, xs, carry=initial, lengths=lengths)

    ys_1, carry_1 = run(Recurrent(first), params[0], xs, carry=initial[0], lengths=lengths)
    ys_2, carry_2 = run(Recurrent(second), params[1], ys_1, carry=initial[1], lengths=lengths)
    np.testing.assert_allclose(ys, ys_2, **TOLERANCE)
    assert isinstance(carries, tuple) and len(carries) == 2
    assert_trees_close(carries[0], carry_1)
    assert_trees_close(carries[1], carry_2)


def test_stack_accepts_a_list_of_layers():
    stack = Stack([LSTM(4), GRU(3)])
    assert isinstance(stack.layers, tuple)
    assert stack == Stack((Recurrent(LSTM(4)), Recurrent(GRU(3))))
    assert hash(stack) == hash(Stack((Recurrent(LSTM(4)), Recurrent(GRU(3)))))


def test_stack_init_gives_each_layer_and_direction_its_own_weights(key):
    """The real initializer (not the NumPy stand-in used elsewhere): one key per layer and per direction."""
    stack = Stack((Bidirectional(GRU(4)), Bidirectional(GRU(4))))
    params = jax.jit(stack.init, static_argnums=1, compiler_options=FAST_COMPILE)(key, 8)  # 8 = 2 * 4: same shapes
    weights = [np.asarray(params[layer][direction].weight_ih) for layer in (0, 1) for direction in (0, 1)]
    for i in range(4):
        assert weights[i].shape == (12, 8)
        assert 0 < np.abs(weights[i]).max() <= 0.5  # PyTorch's U(-1/sqrt(H), 1/sqrt(H)), H = 4
        for j in range(i):
            assert not np.allclose(weights[i], weights[j]), (i, j)


def make_dropout_stack(dropout_rate: float) -> Stack:
    return Stack((Bidirectional(LSTM(4)), GRU(5), SimpleRNN(3)), dropout_rate=dropout_rate)


def test_stack_dropout_is_off_without_key():
    stack = make_dropout_stack(0.5)
    params = init(stack)
    xs = random_inputs()
    first = run(stack, params, xs)
    assert_trees_equal(run(stack, params, xs), first)
    assert_trees_equal(run(make_dropout_stack(0.0), params, xs), first)


def test_stack_dropout_with_key():
    stack = make_dropout_stack(0.5)
    params = init(stack)
    xs = random_inputs()
    evaluation = run(stack, params, xs)
    train_1 = run(stack, params, xs, key=jax.random.key(10))
    train_1_again = run(stack, params, xs, key=jax.random.key(10))
    train_2 = run(stack, params, xs, key=jax.random.key(11))

    assert max_difference(train_1[0], evaluation[0]) > 1e-3
    assert_trees_equal(train_1_again, train_1)
    assert max_difference(train_1[0], train_2[0]) > 1e-3
    # Dropout acts between layers: the first layer's state is untouched, the later ones see dropped inputs.
    assert_trees_equal(train_1[1][0], evaluation[1][0])
    assert max_difference(train_1[1][1], evaluation[1][1]) > 1e-3
    assert max_difference(train_1[1][2], evaluation[1][2]) > 1e-3


def test_stack_with_key_and_zero_dropout_rate_is_deterministic():
    stack = make_dropout_stack(0.0)
    params = init(stack)
    xs = random_inputs()
    assert_trees_equal(run(stack, params, xs, key=jax.random.key(10)), run(stack, params, xs))


def test_stack_does_not_drop_the_last_layer_output():
    stack = Stack((Bidirectional(GRU(3)),), dropout_rate=0.5)
    params = init(stack)
    xs = random_inputs()
    assert_trees_equal(run(stack, params, xs, key=jax.random.key(10)), run(stack, params, xs))


# -- dropout ---------------------------------------------------------------------------------------------------------

jit_dropout = jax.jit(dropout, static_argnums=2, compiler_options=FAST_COMPILE)
LARGE = 100_000


def test_dropout_rate_zero_is_identity(key):
    xs = jnp.asarray(random_inputs())
    np.testing.assert_array_equal(dropout(key, xs, 0.0), xs)
    np.testing.assert_array_equal(jit_dropout(key, xs, 0.0), xs)


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_dropout_keep_fraction_and_scaling(rate, key):
    dropped = np.asarray(jit_dropout(key, np.ones((LARGE,), np.float32), rate))
    kept = dropped != 0.0
    # 100,000 Bernoulli draws: the standard error of the kept fraction is <= 0.0016.
    assert abs(kept.mean() - (1.0 - rate)) < 0.01
    np.testing.assert_allclose(dropped[kept], 1.0 / (1.0 - rate), rtol=1e-6)


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_dropout_preserves_the_mean(rate, key):
    xs = (2.0 + np.random.default_rng(3).standard_normal(LARGE)).astype(np.float32)
    dropped = np.asarray(jit_dropout(key, xs, rate))
    assert dropped.mean() == pytest.approx(xs.mean(), abs=0.05)
    # Kept elements keep their value, scaled; the others are exactly zero.
    kept = dropped != 0.0
    assert 0 < kept.sum() < kept.size
    np.testing.assert_allclose(dropped[kept], xs[kept] / (1.0 - rate), rtol=1e-6)


@pytest.mark.parametrize("rate", [-0.5, 1.0, 1.5])
def test_dropout_function_rejects_rates_outside_0_1(rate, key):
    with pytest.raises(ValueError, match=r"dropout_rate must be in \[0, 1\)"):
        dropout(key, np.ones((4,), np.float32), rate)


def test_dropout_depends_on_the_key():
    xs = np.ones((LARGE,), np.float32)
    a = jit_dropout(jax.random.key(1), xs, 0.5)
    b = jit_dropout(jax.random.key(2), xs, 0.5)
    np.testing.assert_array_equal(jit_dropout(jax.random.key(1), xs, 0.5), a)
    assert not np.array_equal(a, b)


# -- Stack of Bidirectional layers with variable lengths ---------------------------------------------------------------


def test_bidirectional_stack_with_lengths_equals_each_sequence_alone():
    stack = Stack((Bidirectional(LSTM(4)), Bidirectional(GRU(3))))
    params = init(stack)
    xs = random_inputs()
    initial = random_like(stack.initial_carry((BATCH,)), seed=4)

    ys, carries = run(stack, params, xs, carry=initial, lengths=np.array(LENGTHS))
    assert ys.shape == (BATCH, TIME, 6)

    for b, length in enumerate(LENGTHS):
        assert np.all(np.asarray(ys[b, length:]) == 0.0)
        if length == 0:
            assert_trees_equal(take(carries, b), take(initial, b))
            continue
        alone_ys, alone_carries = run(stack, params, xs[b, :length], carry=take(initial, b))
        np.testing.assert_allclose(ys[b, :length], alone_ys, **TOLERANCE)
        assert_trees_close(take(carries, b), alone_carries)


# -- unbatched and time-major inputs, vmap -----------------------------------------------------------------------------

LAYERS = [
    Recurrent(LSTM(4), reverse=True),
    Stack((Bidirectional(GRU(3), merge="mean"), SimpleRNN(4)), dropout_rate=0.3),
]
LAYER_IDS = ["recurrent_lstm_reverse", "stack"]


@functools.cache
def batched_outputs(layer):
    """`layer` over `random_inputs()` with `LENGTHS` and a non-zero initial carry: `(ys, carry), initial`."""
    initial = random_like(layer.initial_carry((BATCH,)), seed=5)
    return run(layer, init(layer), random_inputs(), carry=initial, lengths=np.array(LENGTHS)), initial


@pytest.mark.parametrize("layer", LAYERS, ids=LAYER_IDS)
def test_time_major_equals_batch_major(layer):
    (ys, carry), initial = batched_outputs(layer)
    ys_tm, carry_tm = run(layer, init(layer), np.swapaxes(random_inputs(), 0, 1), carry=initial,
                          lengths=np.array(LENGTHS), time_major=True)
    assert ys_tm.shape == (TIME, BATCH, layer.output_size)
    np.testing.assert_allclose(np.swapaxes(ys_tm, 0, 1), ys, **TOLERANCE)
    assert_trees_close(carry_tm, carry)


@pytest.mark.parametrize("layer", LAYERS, ids=LAYER_IDS)
def test_unbatched_equals_batched(layer):
    (ys, carry), initial = batched_outputs(layer)
    xs = random_inputs()
    for b in (0, 1):  # a full-length and a padded sequence
        ys_b, carry_b = run(layer, init(layer), xs[b], carry=take(initial, b), lengths=np.array(LENGTHS[b]))
        assert ys_b.shape == (TIME, layer.output_size)
        np.testing.assert_allclose(ys_b, ys[b], **TOLERANCE)
        assert_trees_close(carry_b, take(carry, b))


@pytest.mark.parametrize("layer", LAYERS, ids=LAYER_IDS)
def test_vmap_over_unbatched_inputs_equals_batched(layer):
    (ys, carry), initial = batched_outputs(layer)
    params = init(layer)
    vmapped = jax.jit(jax.vmap(lambda xs, carry, length: layer.apply(params, xs, carry=carry, lengths=length)),
                      compiler_options=FAST_COMPILE)
    assert_trees_close(vmapped(random_inputs(), initial, np.array(LENGTHS)), (ys, carry))


def test_initial_carry_shapes():
    stack = Stack((Bidirectional(LSTM(4)), GRU(3)))
    carry = stack.initial_carry()
    assert carry[0].forward.h.shape == carry[0].backward.c.shape == (4,)
    assert carry[1].shape == (3,)
    batched = stack.initial_carry((2,))
    assert batched[0].backward.h.shape == (2, 4) and batched[1].shape == (2, 3)
    assert all(np.all(np.asarray(leaf) == 0.0) for leaf in jax.tree.leaves(batched))


# -- jit and grad ------------------------------------------------------------------------------------------------------


def test_layer_specs_are_hashable_and_compare_by_value():
    a = Stack((Bidirectional(LSTM(4)), GRU(3)), dropout_rate=0.25)
    b = Stack((Bidirectional(Recurrent(LSTM(4))), Recurrent(GRU(3))), dropout_rate=0.25)
    assert a == b and hash(a) == hash(b)
    assert a != Stack((Bidirectional(LSTM(4)), GRU(3)), dropout_rate=0.5)
    assert a != Stack((Bidirectional(LSTM(4), merge="sum"), GRU(3)), dropout_rate=0.25)
    assert a != Stack((Bidirectional(LSTM(5)), GRU(3)), dropout_rate=0.25)
    assert Recurrent(GRU(3)) != Recurrent(GRU(3), reverse=True)
    assert hash(Bidirectional(GRU(3))) == hash(Bidirectional(GRU(3), GRU(3)))
    assert len({a, b, Recurrent(GRU(3)), Recurrent(GRU(3))}) == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.dropout_rate = 0.5


def test_jit_with_static_layer_spec():
    traces = []

    def apply(layer, params, xs, carry, lengths):
        traces.append(layer)
        return layer.apply(params, xs, carry=carry, lengths=lengths)

    jitted = jax.jit(apply, static_argnums=0, compiler_options=FAST_COMPILE)
    layer = LAYERS[1]
    expected, initial = batched_outputs(layer)
    args = (init(layer), random_inputs(), initial, np.array(LENGTHS))
    assert_trees_close(jitted(layer, *args), expected)
    # An equal spec built anew hits the compilation cache: no retrace.
    same_layer = Stack((Bidirectional(GRU(3), merge="mean"), SimpleRNN(4)), dropout_rate=0.3)
    assert same_layer == layer and same_layer is not layer
    traced = len(traces)
    assert_trees_close(jitted(same_layer, *args), expected)
    assert len(traces) == traced


def test_jit_of_a_closure_with_traced_lengths_equals_eager():
    layer = Recurrent(GRU(3), reverse=True)
    params = init(layer)
    xs = jnp.asarray(random_inputs())
    lengths = jnp.array(LENGTHS)
    jitted = jax.jit(lambda params, xs, lengths: layer.apply(params, xs, lengths=lengths))  # default options
    assert_trees_close(jitted(params, xs, lengths), layer.apply(params, xs, lengths=lengths))


def test_grad_is_finite_and_padding_gets_no_gradient():
    stack = Stack((Bidirectional(LSTM(4)), GRU(3)), dropout_rate=0.3)
    params = init(stack)
    lengths = np.array(LENGTHS)

    @functools.partial(jax.jit, compiler_options=FAST_COMPILE)
    def grad(params, xs):
        def loss(params, xs):
            ys, carries = stack.apply(params, xs, lengths=lengths, key=jax.random.key(4))
            return jnp.sum(ys**2) + sum(jnp.sum(leaf) for leaf in jax.tree.leaves(carries))

        return jax.grad(loss, argnums=(0, 1))(params, xs)

    grad_params, grad_xs = grad(params, random_inputs())
    grad_xs = np.asarray(grad_xs)
    assert jax.tree.structure(grad_params) == jax.tree.structure(params)
    for leaf in jax.tree.leaves(grad_params) + [grad_xs]:
        assert np.all(np.isfinite(leaf))
    for leaf in jax.tree.leaves(grad_params):
        assert np.any(np.asarray(leaf) != 0.0)
    for b, length in enumerate(LENGTHS):
        assert np.all(grad_xs[b, length:] == 0.0), f"padding of sequence {b} gets a gradient"
        if length:
            assert np.all(np.any(grad_xs[b, :length] != 0.0, axis=-1)), f"a valid step of sequence {b} gets none"


# -- golden parameter trees --------------------------------------------------------------------------------------------


def parameter_tree(params) -> list:
    return [
        (jax.tree_util.keystr(path), tuple(leaf.shape), str(leaf.dtype))
        for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
    ]


def test_golden_parameter_tree_bidirectional_lstm_stack(key):
    stack = Stack((Bidirectional(LSTM(6)), Bidirectional(LSTM(6))))
    params = jax.eval_shape(lambda key: stack.init(key, 4), key)  # the tree `init` returns, without computing it
    assert parameter_tree(params) == [
        ("[0].forward.weight_ih", (24, 4), "float32"),
        ("[0].forward.weight_hh", (24, 6), "float32"),
        ("[0].forward.bias_ih", (24,), "float32"),
        ("[0].forward.bias_hh", (24,), "float32"),
        ("[0].backward.weight_ih", (24, 4), "float32"),
        ("[0].backward.weight_hh", (24, 6), "float32"),
        ("[0].backward.bias_ih", (24,), "float32"),
        ("[0].backward.bias_hh", (24,), "float32"),
        ("[1].forward.weight_ih", (24, 12), "float32"),
        ("[1].forward.weight_hh", (24, 6), "float32"),
        ("[1].forward.bias_ih", (24,), "float32"),
        ("[1].forward.bias_hh", (24,), "float32"),
        ("[1].backward.weight_ih", (24, 12), "float32"),
        ("[1].backward.weight_hh", (24, 6), "float32"),
        ("[1].backward.bias_ih", (24,), "float32"),
        ("[1].backward.bias_hh", (24,), "float32"),
    ]


def test_golden_parameter_tree_gru_simple_rnn_stack(key):
    params = jax.eval_shape(lambda key: Stack((GRU(6), SimpleRNN(5))).init(key, 4), key)
    assert parameter_tree(params) == [
        ("[0].weight_ih", (18, 4), "float32"),
        ("[0].weight_hh", (18, 6), "float32"),
        ("[0].bias_ih", (18,), "float32"),
        ("[0].bias_hh", (18,), "float32"),
        ("[1].weight_ih", (5, 6), "float32"),
        ("[1].weight_hh", (5, 5), "float32"),
        ("[1].bias_ih", (5,), "float32"),
        ("[1].bias_hh", (5,), "float32"),
    ]


def test_init_dtype_reaches_every_parameter(key):
    stack = Stack((Bidirectional(LSTM(4)), GRU(3)))
    params = jax.eval_shape(lambda key: stack.init(key, INPUT_SIZE, jnp.bfloat16), key)
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.bfloat16)}


# -- bad input ---------------------------------------------------------------------------------------------------------


def test_unknown_merge():
    with pytest.raises(ValueError, match=r"merge must be one of \('concat', 'sum', 'mean', 'mul'\), got 'max'"):
        Bidirectional(LSTM(4), merge="max")


def test_merge_sum_needs_equal_hidden_sizes():
    with pytest.raises(ValueError, match="merge='sum' needs equal output sizes, got forward 4 and backward 3"):
        Bidirectional(LSTM(4), GRU(3), merge="sum")


def test_bidirectional_forward_layer_must_not_be_reversed():
    with pytest.raises(ValueError, match="forward layer of Bidirectional must have reverse=False"):
        Bidirectional(Recurrent(LSTM(4), reverse=True))


def test_bidirectional_backward_layer_must_be_reversed():
    with pytest.raises(ValueError, match="backward layer of Bidirectional must read in reverse"):
        Bidirectional(LSTM(4), Recurrent(LSTM(4)))


@pytest.mark.parametrize("layers", [(), []], ids=["tuple", "list"])
def test_stack_with_no_layers(layers):
    with pytest.raises(ValueError, match="Stack needs a non-empty tuple of layers"):
        Stack(layers)


def test_stack_with_a_non_layer():
    with pytest.raises(TypeError, match="expected a cell .* or a sequence layer, got int"):
        Stack((LSTM(4), 3))


@pytest.mark.parametrize("rate", [1.0, -0.1])
def test_dropout_rate_out_of_range(rate):
    with pytest.raises(ValueError, match=r"dropout_rate must be in \[0, 1\)"):
        Stack((LSTM(4), GRU(3)), dropout_rate=rate)


def test_dropout_rate_as_string():
    with pytest.raises(TypeError, match="dropout_rate must be a float in .*got str '0.5'"):
        Stack((LSTM(4), GRU(3)), dropout_rate="0.5")


def test_recurrent_of_a_non_cell():
    with pytest.raises(TypeError, match="Recurrent expects a cell .*got str"):
        Recurrent("lstm")


def test_bidirectional_with_wrong_params_type():
    layer = Bidirectional(LSTM(4))
    params = init(layer)
    with pytest.raises(TypeError, match="Bidirectional expects BidirectionalParams, got LSTMParams"):
        layer.apply(params.forward, random_inputs())


def test_bidirectional_with_wrong_carry_type():
    layer = Bidirectional(GRU(3))
    params = init(layer)
    with pytest.raises(TypeError, match="Bidirectional carry must be BidirectionalCarry"):
        layer.apply(params, random_inputs(), carry=np.zeros((BATCH, 3), np.float32))


def test_stack_params_of_wrong_length():
    stack = Stack((LSTM(4), GRU(3)))
    params = init(stack)
    with pytest.raises(ValueError, match="Stack of 2 layers expects params as a tuple of 2, got tuple of length 1"):
        stack.apply(params[:1], random_inputs())


def test_stack_params_not_a_tuple():
    stack = Stack((LSTM(4), GRU(3)))
    params = init(stack)
    with pytest.raises(TypeError, match="expects params as a tuple with one entry per layer, got dict"):
        stack.apply(dict(enumerate(params)), random_inputs())


def test_stack_carry_of_wrong_length():
    stack = Stack((LSTM(4), GRU(3)))
    params = init(stack)
    carry = stack.initial_carry((BATCH,)) + (np.zeros((BATCH, 3), np.float32),)
    with pytest.raises(ValueError, match="Stack of 2 layers expects carry as a tuple of 2, got tuple of length 3"):
        stack.apply(params, random_inputs(), carry=carry)


@pytest.mark.parametrize("layer", [Recurrent(LSTM(4)), Bidirectional(GRU(3)), Stack((GRU(3),))],
                         ids=["recurrent", "bidirectional", "stack"])
def test_rank_4_inputs(layer):
    params = init(layer)
    with pytest.raises(ValueError, match=r"got rank 4 with shape \(2, 4, 5, 3\)"):
        layer.apply(params, np.zeros((2, BATCH, TIME, INPUT_SIZE), np.float32))


@pytest.mark.parametrize("layer", [Recurrent(LSTM(4)), Bidirectional(GRU(3)), Stack((GRU(3), LSTM(2)))],
                         ids=["recurrent", "bidirectional", "stack"])
def test_feature_size_mismatch(layer):
    params = init(layer)
    with pytest.raises(ValueError, match="xs has 5 features .* but the params expect input_size 3"):
        layer.apply(params, np.zeros((BATCH, TIME, 5), np.float32))


def test_integer_inputs():
    layer = Recurrent(GRU(3))
    params = init(layer)
    with pytest.raises(TypeError, match="xs must have a floating dtype"):
        layer.apply(params, np.zeros((BATCH, TIME, INPUT_SIZE), np.int32))


def test_lengths_out_of_range():
    layer = Bidirectional(GRU(3))
    params = init(layer)
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, 5\]"):
        layer.apply(params, random_inputs(), lengths=np.array([TIME + 1, 1, 1, 1]))
