"""Tests of `rnnjax.rnn`: `RNN` (PyTorch's `nn.RNN/LSTM/GRU` shapes over `Stack`/`Bidirectional`), `make_cell`
and `MODES`.

Shapes are checked for every mode x num_layers x direction with `jax.eval_shape` (nothing is compiled), and so
are `carry=initial_carry()` against `carry=None` and time-major against batch-first, numerically. As in
`test_layers.py`, calls run under `jit` with `FAST_COMPILE` and parameters are NumPy draws shaped by
`jax.eval_shape(model.init)`, because XLA's compile time dominates (parity with PyTorch's numbers is in
`test_torch_parity.py`)."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import FAST_COMPILE, random_like, assert_trees_close, assert_trees_equal

from rnnjax import (
    GRU,
    LSTM,
    MODES,
    RNN,
    Bidirectional,
    BidirectionalCarry,
    BidirectionalParams,
    GRUParams,
    LSTMParams,
    LSTMState,
    Recurrent,
    SimpleRNN,
    SimpleRNNParams,
    Stack,
    make_cell,
)

BATCH, TIME, INPUT_SIZE, HIDDEN = 3, 5, 3, 4
LENGTHS = (2, TIME, 0)  # unsorted, with a length-0 sequence
TOLERANCE = dict(atol=1e-6, rtol=1e-6)
NUM_GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}
PARAMS_TYPE = {"lstm": LSTMParams, "gru": GRUParams, "rnn_tanh": SimpleRNNParams, "rnn_relu": SimpleRNNParams}

CONFIGS = list(itertools.product(MODES, (1, 2), (False, True)))
CONFIG_IDS = [f"{mode}-l{layers}-{'bi' if bi else 'uni'}" for mode, layers, bi in CONFIGS]
# Further numerical checks on two configurations: the LSTM's pair carry with two bidirectional layers, a two-layer
# GRU.
NUMERIC_CONFIGS = [("lstm", 2, True), ("gru", 2, False)]
NUMERIC_IDS = [f"{mode}-l{layers}-{'bi' if bi else 'uni'}" for mode, layers, bi in NUMERIC_CONFIGS]


@functools.partial(jax.jit, static_argnums=0, static_argnames="time_major", compiler_options=FAST_COMPILE)
def run(model, params, xs, carry=None, lengths=None, key=None, time_major=False):
    """`model.apply` under `jit`, the spec (an `RNN` or a layer) static."""
    return model.apply(params, xs, carry=carry, lengths=lengths, key=key, time_major=time_major)


@functools.cache
def init(model):
    """Parameters with `model.init`'s tree, shapes and dtypes, drawn with NumPy from U(-0.5, 0.5)."""
    shapes = jax.eval_shape(model.init, jax.random.key(0))
    rng = np.random.default_rng(0)
    return jax.tree.map(lambda leaf: rng.uniform(-0.5, 0.5, leaf.shape).astype(leaf.dtype), shapes)


def random_inputs(seed: int = 1, shape=(BATCH, TIME, INPUT_SIZE)) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def model_of(mode, num_layers, bidirectional, **kwargs) -> RNN:
    return RNN(mode, INPUT_SIZE, HIDDEN, num_layers=num_layers, bidirectional=bidirectional, **kwargs)


def h_of(state):
    """The hidden state `h_n` of a final state (`LSTMState.h` for the LSTM)."""
    return state.h if isinstance(state, LSTMState) else state


def shape_struct(*shape):
    return jax.ShapeDtypeStruct(shape, jnp.float32)


# -- shapes for every configuration ------------------------------------------------------------------------------------


def assert_state_shape(state, mode, shape):
    if mode == "lstm":
        assert isinstance(state, LSTMState)
        assert state.h.shape == state.c.shape == shape
    else:
        assert not isinstance(state, tuple)
        assert state.shape == shape


@pytest.mark.parametrize("mode, num_layers, bidirectional", CONFIGS, ids=CONFIG_IDS)
def test_shapes(mode, num_layers, bidirectional, key):
    model = model_of(mode, num_layers, bidirectional)
    directions = 2 if bidirectional else 1
    assert model.num_directions == directions
    assert model.output_size == directions * HIDDEN
    params = jax.eval_shape(model.init, key)
    assert isinstance(params, tuple) and len(params) == num_layers

    ys, h_n = jax.eval_shape(model.apply, params, shape_struct(BATCH, TIME, INPUT_SIZE))
    assert ys.shape == (BATCH, TIME, directions * HIDDEN)
    assert ys.dtype == jnp.float32
    assert_state_shape(h_n, mode, (num_layers * directions, BATCH, HIDDEN))

    ys, h_n = jax.eval_shape(model.apply, params, shape_struct(TIME, INPUT_SIZE))  # unbatched
    assert ys.shape == (TIME, directions * HIDDEN)
    assert_state_shape(h_n, mode, (num_layers * directions, HIDDEN))

    apply_time_major = functools.partial(model.apply, time_major=True)
    ys, h_n = jax.eval_shape(apply_time_major, params, shape_struct(TIME, BATCH, INPUT_SIZE))
    assert ys.shape == (TIME, BATCH, directions * HIDDEN)
    assert_state_shape(h_n, mode, (num_layers * directions, BATCH, HIDDEN))

    # h_0 is accepted in the shape h_n comes back in.
    ys, h_n = jax.eval_shape(model.apply, params, shape_struct(BATCH, TIME, INPUT_SIZE), carry=h_n)
    assert_state_shape(h_n, mode, (num_layers * directions, BATCH, HIDDEN))


@pytest.mark.parametrize("mode, num_layers, bidirectional", CONFIGS, ids=CONFIG_IDS)
def test_params_layout(mode, num_layers, bidirectional, key):
    params = jax.eval_shape(model_of(mode, num_layers, bidirectional).init, key)
    rows = NUM_GATES[mode] * HIDDEN
    for layer, layer_params in enumerate(params):
        if bidirectional:
            assert isinstance(layer_params, BidirectionalParams)
            directions = [layer_params.forward, layer_params.backward]
        else:
            directions = [layer_params]
        input_size = INPUT_SIZE if layer == 0 else HIDDEN * len(directions)
        for cell_params in directions:
            assert type(cell_params) is PARAMS_TYPE[mode]
            assert cell_params.weight_ih.shape == (rows, input_size)
            assert cell_params.weight_hh.shape == (rows, HIDDEN)
            assert cell_params.bias_ih.shape == cell_params.bias_hh.shape == (rows,)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_initial_carry(mode, bidirectional):
    model = model_of(mode, 2, bidirectional)
    rows = 2 * (2 if bidirectional else 1)
    assert_state_shape(model.initial_carry((BATCH,)), mode, (rows, BATCH, HIDDEN))
    assert_state_shape(model.initial_carry(BATCH), mode, (rows, BATCH, HIDDEN))
    assert_state_shape(model.initial_carry(), mode, (rows, HIDDEN))
    assert_state_shape(model.initial_carry((2, BATCH)), mode, (rows, 2, BATCH, HIDDEN))
    for leaf in jax.tree.leaves(model.initial_carry((BATCH,))):
        assert leaf.dtype == jnp.float32 and np.all(np.asarray(leaf) == 0.0)
    assert jax.tree.leaves(model.initial_carry(dtype=jnp.bfloat16))[0].dtype == jnp.bfloat16


# -- numbers -----------------------------------------------------------------------------------------------------------


@functools.cache
def outputs(config, with_lengths: bool):
    """`(ys, h_n)` of `model_of(*config)` over `random_inputs()`, carry=None."""
    model = model_of(*config)
    return run(model, init(model), random_inputs(), lengths=np.array(LENGTHS) if with_lengths else None)


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_initial_carry_equals_no_carry(config):
    model = model_of(*config)
    expected = outputs(config, True)
    actual = run(model, init(model), random_inputs(), carry=model.initial_carry((BATCH,)), lengths=np.array(LENGTHS))
    assert_trees_equal(actual, expected)


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_time_major_equals_transposed_batch_first(config):
    model = model_of(*config)
    ys, h_n = outputs(config, True)
    ys_tm, h_n_tm = run(model, init(model), np.swapaxes(random_inputs(), 0, 1), lengths=np.array(LENGTHS),
                        time_major=True)
    np.testing.assert_allclose(np.swapaxes(ys_tm, 0, 1), ys, **TOLERANCE)
    assert_trees_close(h_n_tm, h_n)  # h_n is [L*D, batch, H] either way, as in PyTorch


@pytest.mark.parametrize("config", NUMERIC_CONFIGS, ids=NUMERIC_IDS)
def test_unbatched_equals_batched(config):
    model = model_of(*config)
    ys, h_n = outputs(config, True)
    b = 0  # a padded sequence
    ys_b, h_n_b = run(model, init(model), random_inputs()[b], lengths=np.array(LENGTHS[b]))
    np.testing.assert_allclose(ys_b, ys[b], **TOLERANCE)
    assert_trees_close(h_n_b, jax.tree.map(lambda leaf: leaf[:, b], h_n))


def test_h_n_is_layer_major_and_matches_the_stack():
    """h_n[layer * 2 + direction] is that layer's and direction's final state, as `model.stack` returns it."""
    config = ("lstm", 2, True)
    model = model_of(*config)
    ys, h_n = outputs(config, True)
    _, carries = run(model.stack, init(model), random_inputs(), lengths=np.array(LENGTHS))
    assert len(carries) == 2 and all(isinstance(carry, BidirectionalCarry) for carry in carries)
    for layer in (0, 1):
        for direction, state in enumerate(carries[layer]):
            assert_trees_close(jax.tree.map(lambda leaf: leaf[2 * layer + direction], h_n), state)
    # Independently of the stack: the last layer's backward state is its output at t = 0 and the forward state
    # its output at the last valid step (the initial zeros for a length-0 sequence).
    h_n = np.asarray(h_n.h)
    for b, length in enumerate(LENGTHS):
        if length == 0:
            assert np.all(h_n[:, b] == 0.0) and np.all(np.asarray(ys[b]) == 0.0)
            continue
        np.testing.assert_allclose(h_n[-1, b], ys[b, 0, HIDDEN:], **TOLERANCE)
        np.testing.assert_allclose(h_n[-2, b], ys[b, length - 1, :HIDDEN], **TOLERANCE)


def test_h_0_is_split_layer_major():
    """h_0[layer * 2 + direction] starts that layer's and direction's recurrence."""
    config = ("lstm", 2, True)
    model = model_of(*config)
    h_0 = random_like(model.initial_carry((BATCH,)), seed=2)
    ys, h_n = run(model, init(model), random_inputs(), carry=h_0, lengths=np.array(LENGTHS))
    stack_carry = tuple(
        BidirectionalCarry(*(LSTMState(h_0.h[2 * layer + direction], h_0.c[2 * layer + direction])
                             for direction in (0, 1)))
        for layer in (0, 1)
    )
    stack_ys, carries = run(model.stack, init(model), random_inputs(), carry=stack_carry, lengths=np.array(LENGTHS))
    np.testing.assert_allclose(ys, stack_ys, **TOLERANCE)
    assert not np.allclose(ys, outputs(config, True)[0])  # h_0 matters
    # A length-0 sequence returns h_0 untouched.
    b = LENGTHS.index(0)
    assert_trees_equal(jax.tree.map(lambda leaf: leaf[:, b], h_n), jax.tree.map(lambda leaf: leaf[:, b], h_0))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("with_lengths", [False, True], ids=["equal", "varlen"])
def test_unidirectional_h_n_is_the_last_valid_output(mode, with_lengths):
    config = (mode, 1, False)
    ys, h_n = outputs(config, with_lengths)
    h_n = np.asarray(h_of(h_n))
    assert h_n.shape == (1, BATCH, HIDDEN)
    if not with_lengths:
        np.testing.assert_allclose(h_n[0], ys[:, -1], **TOLERANCE)
        return
    for b, length in enumerate(LENGTHS):
        if length == 0:
            assert np.all(h_n[0, b] == 0.0)
        else:
            np.testing.assert_allclose(h_n[0, b], ys[b, length - 1], **TOLERANCE)
            assert np.all(np.asarray(ys[b, length:]) == 0.0)


def test_activation_of_the_elman_modes():
    """rnn_relu outputs are >= 0 with some exact zeros; rnn_tanh outputs are in (-1, 1) with negatives."""
    relu_ys, _ = outputs(("rnn_relu", 1, False), False)
    tanh_ys, _ = outputs(("rnn_tanh", 1, False), False)
    relu_ys, tanh_ys = np.asarray(relu_ys), np.asarray(tanh_ys)
    assert relu_ys.min() == 0.0 and relu_ys.max() > 0.0
    assert tanh_ys.min() < 0.0 and np.abs(tanh_ys).max() < 1.0


def test_dropout_only_between_layers_and_deterministic_per_key():
    two_layers = model_of("gru", 2, False, dropout_rate=0.5)
    one_layer = model_of("gru", 1, False, dropout_rate=0.5)
    xs = random_inputs()

    evaluation = run(two_layers, init(two_layers), xs)
    train_a = run(two_layers, init(two_layers), xs, key=jax.random.key(1))
    assert np.abs(np.asarray(train_a[0]) - np.asarray(evaluation[0])).max() > 1e-3
    assert_trees_equal(run(two_layers, init(two_layers), xs, key=jax.random.key(1)), train_a)
    train_b = run(two_layers, init(two_layers), xs, key=jax.random.key(2))
    assert np.abs(np.asarray(train_b[0]) - np.asarray(train_a[0])).max() > 1e-3
    # The first layer's final state is computed before any dropout.
    np.testing.assert_array_equal(train_a[1][0], evaluation[1][0])
    # Without a key, the dropout rate changes nothing (same parameter draws, dropout_rate 0).
    assert_trees_equal(init(two_layers), init(model_of("gru", 2, False)))
    assert_trees_equal(evaluation, outputs(("gru", 2, False), False))
    assert_trees_equal(run(one_layer, init(one_layer), xs, key=jax.random.key(1)),
                       run(one_layer, init(one_layer), xs))


# -- specs ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode, cell_type, activation", [
    ("lstm", LSTM, None), ("gru", GRU, None), ("rnn_tanh", SimpleRNN, "tanh"), ("rnn_relu", SimpleRNN, "relu"),
])
def test_make_cell(mode, cell_type, activation):
    cell = make_cell(mode, 7)
    assert type(cell) is cell_type
    assert cell.hidden_size == 7 and cell.initializer == "pytorch"
    if activation is not None:
        assert cell.activation == activation
    assert make_cell(mode, 7, "orthogonal").initializer == "orthogonal"
    assert model_of(mode, 1, False, initializer="orthogonal").cell == make_cell(mode, HIDDEN, "orthogonal")


def test_modes():
    assert MODES == ("lstm", "gru", "rnn_tanh", "rnn_relu")


def test_stack_of_the_model():
    model = RNN("lstm", INPUT_SIZE, HIDDEN, num_layers=3, bidirectional=True, dropout_rate=0.25, unroll=2,
                remat=True)
    layer = Bidirectional(Recurrent(LSTM(HIDDEN), unroll=2, remat=True))
    assert model.stack == Stack((layer, layer, layer), dropout_rate=0.25)
    assert model_of("gru", 2, False).stack == Stack((GRU(HIDDEN), GRU(HIDDEN)))


def test_models_are_hashable_and_compare_by_value():
    a, b = model_of("lstm", 2, True), model_of("lstm", 2, True)
    assert a == b and hash(a) == hash(b)
    assert a != model_of("lstm", 2, False) and a != model_of("gru", 2, True)
    assert len({a, b, model_of("lstm", 1, True)}) == 2


# -- bad input -------------------------------------------------------------------------------------------------------


def test_unknown_mode():
    with pytest.raises(ValueError, match=r"mode must be one of \('lstm', 'gru', 'rnn_tanh', 'rnn_relu'\), got 'LSTM2'"):
        RNN("LSTM2", INPUT_SIZE, HIDDEN)


def test_make_cell_unknown_mode():
    with pytest.raises(ValueError, match="mode must be one of .*got 'rnn'"):
        make_cell("rnn", HIDDEN)


def test_num_layers_zero():
    with pytest.raises(ValueError, match="num_layers must be >= 1, got 0"):
        RNN("gru", INPUT_SIZE, HIDDEN, num_layers=0)


def test_hidden_size_zero():
    with pytest.raises(ValueError, match="hidden_size must be >= 1, got 0"):
        RNN("gru", INPUT_SIZE, 0)


def test_hidden_size_bool():
    with pytest.raises(TypeError, match="hidden_size must be an int, got bool True"):
        RNN("gru", INPUT_SIZE, True)


def test_input_size_float():
    with pytest.raises(TypeError, match="input_size must be an int, got float 3.0"):
        RNN("gru", 3.0, HIDDEN)


def test_bidirectional_not_a_bool():
    with pytest.raises(TypeError, match="bidirectional must be a bool, got str"):
        RNN("gru", INPUT_SIZE, HIDDEN, bidirectional="yes")


@pytest.mark.parametrize("rate", [1.0, -0.5])
def test_dropout_rate_out_of_range(rate):
    with pytest.raises(ValueError, match=r"dropout_rate must be in \[0, 1\)"):
        RNN("gru", INPUT_SIZE, HIDDEN, num_layers=2, dropout_rate=rate)


def test_wrong_h_0_shape():
    model = model_of("gru", 2, True)
    with pytest.raises(ValueError, match=r"h_0 must have shape \(4, 3, 4\) .*got \(2, 3, 4\)"):
        model.apply(init(model), random_inputs(), carry=np.zeros((2, BATCH, HIDDEN), np.float32))


def test_unbatched_h_0_for_batched_inputs():
    model = model_of("gru", 1, False)
    with pytest.raises(ValueError, match=r"h_0 must have shape \(1, 3, 4\) .*got \(1, 4\)"):
        model.apply(init(model), random_inputs(), carry=model.initial_carry())


def test_wrong_c_0_shape():
    model = model_of("lstm", 1, False)
    h_0 = np.zeros((1, BATCH, HIDDEN), np.float32)
    with pytest.raises(ValueError, match=r"c_0 must have shape \(1, 3, 4\) .*got \(1, 3, 5\)"):
        model.apply(init(model), random_inputs(), carry=(h_0, np.zeros((1, BATCH, 5), np.float32)))


def test_lstm_carry_not_a_pair():
    model = model_of("lstm", 1, False)
    with pytest.raises(TypeError, match=r"LSTM carry must be LSTMState\(h_0, c_0\), got ndarray"):
        model.apply(init(model), random_inputs(), carry=np.zeros((1, BATCH, HIDDEN), np.float32))


def test_gru_carry_as_a_pair():
    model = model_of("gru", 1, False)
    with pytest.raises(TypeError, match="carry must be an array, got LSTMState"):
        model.apply(init(model), random_inputs(), carry=model_of("lstm", 1, False).initial_carry((BATCH,)))


def test_integer_h_0():
    model = model_of("gru", 1, False)
    with pytest.raises(TypeError, match="h_0 must have a floating dtype"):
        model.apply(init(model), random_inputs(), carry=np.zeros((1, BATCH, HIDDEN), np.int32))


def test_integer_xs():
    model = model_of("gru", 1, False)
    with pytest.raises(TypeError, match="xs must have a floating dtype .*got int32"):
        model.apply(init(model), np.zeros((BATCH, TIME, INPUT_SIZE), np.int32))


def test_xs_feature_size_mismatch():
    model = model_of("gru", 1, False)
    with pytest.raises(ValueError, match=r"xs must have input_size=3 features, got shape \(3, 5, 4\)"):
        model.apply(init(model), np.zeros((BATCH, TIME, INPUT_SIZE + 1), np.float32))


def test_xs_rank_4():
    model = model_of("gru", 1, False)
    with pytest.raises(ValueError, match=r"xs must be \[batch, time, input_size\] .*got shape \(2, 3, 5, 3\)"):
        model.apply(init(model), np.zeros((2, BATCH, TIME, INPUT_SIZE), np.float32))


def test_params_of_another_depth():
    model = model_of("gru", 2, False)
    with pytest.raises(ValueError, match="Stack of 2 layers expects params as a tuple of 2, got tuple of length 1"):
        model.apply(init(model_of("gru", 1, False)), random_inputs())
