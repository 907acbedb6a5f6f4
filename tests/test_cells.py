"""Cells: parameter layout, initializers, the step equations against an independent NumPy reference, batch dims,
dtypes, and bad input."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnjax import GRU, LSTM, GRUParams, LSTMParams, LSTMState, SimpleRNN, SimpleRNNParams

HIDDEN, INPUT = 5, 3
CELLS = {
    "rnn_tanh": SimpleRNN(HIDDEN),
    "rnn_relu": SimpleRNN(HIDDEN, activation="relu"),
    "lstm": LSTM(HIDDEN),
    "gru": GRU(HIDDEN),
    "lstm_orthogonal": LSTM(HIDDEN, initializer="orthogonal", forget_bias=1.0),
    "gru_orthogonal": GRU(HIDDEN, initializer="orthogonal"),
}


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_step(cell, params, carry, x, operand=lambda value: value):
    """The PyTorch equations written out in NumPy, independent of rnnjax's code path; `operand` maps every GEMM
    operand (x, h, the weights) before its product, and nothing else."""
    p = {name: np.asarray(value, np.float64) for name, value in params._asdict().items()}
    p["weight_ih"], p["weight_hh"] = operand(p["weight_ih"]), operand(p["weight_hh"])
    x = operand(np.asarray(x, np.float64))
    if isinstance(cell, LSTM):
        h, c = (np.asarray(v, np.float64) for v in carry)
        gates = x @ p["weight_ih"].T + p["bias_ih"] + operand(h) @ p["weight_hh"].T + p["bias_hh"]
        i, f, g, o = np.split(gates, 4, axis=-1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        return (h, c), h
    h = np.asarray(carry, np.float64)
    if isinstance(cell, GRU):
        w_ir, w_iz, w_in = np.split(p["weight_ih"], 3)
        w_hr, w_hz, w_hn = np.split(p["weight_hh"], 3)
        b_ir, b_iz, b_in = np.split(p["bias_ih"], 3)
        b_hr, b_hz, b_hn = np.split(p["bias_hh"], 3)
        r = sigmoid(x @ w_ir.T + b_ir + operand(h) @ w_hr.T + b_hr)
        z = sigmoid(x @ w_iz.T + b_iz + operand(h) @ w_hz.T + b_hz)
        n = np.tanh(x @ w_in.T + b_in + r * (operand(h) @ w_hn.T + b_hn))
        h = (1 - z) * n + z * h
        return h, h
    pre = x @ p["weight_ih"].T + p["bias_ih"] + operand(h) @ p["weight_hh"].T + p["bias_hh"]
    h = np.tanh(pre) if cell.activation == "tanh" else np.maximum(pre, 0)
    return h, h


def random_carry(cell, key, batch_shape):
    carry = cell.initial_carry(batch_shape)
    leaves, treedef = jax.tree.flatten(carry)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(treedef, [jax.random.normal(k, leaf.shape) for k, leaf in zip(keys, leaves)])


def with_random_biases(params, key):
    """Non-zero, distinct biases: a zero bias hides a misplaced one."""
    key_ih, key_hh = jax.random.split(key)
    return params._replace(
        bias_ih=jax.random.normal(key_ih, params.bias_ih.shape), bias_hh=jax.random.normal(key_hh, params.bias_hh.shape)
    )


@pytest.mark.parametrize("name", CELLS)
def test_step_matches_numpy_equations(name, key):
    cell = CELLS[name]
    params_key, bias_key, carry_key, x_key = jax.random.split(key, 4)
    params = with_random_biases(cell.init(params_key, INPUT), bias_key)
    carry = random_carry(cell, carry_key, (4,))
    x = jax.random.normal(x_key, (4, INPUT))
    new_carry, y = cell.step(params, carry, x)
    expected_carry, expected_y = numpy_step(cell, params, carry, x)
    np.testing.assert_allclose(y, expected_y, atol=1e-6, rtol=1e-6)
    for got, expected in zip(jax.tree.leaves(new_carry), jax.tree.leaves(expected_carry)):
        np.testing.assert_allclose(got, expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", CELLS)
def test_any_leading_batch_dims(name, key):
    cell = CELLS[name]
    params = with_random_biases(cell.init(key, INPUT), jax.random.key(1))
    x = jax.random.normal(jax.random.key(2), (2, 3, INPUT))
    carry = random_carry(cell, jax.random.key(3), (2, 3))
    carry_3d, y_3d = cell.step(params, carry, x)
    flat_carry = jax.tree.map(lambda leaf: leaf.reshape(6, HIDDEN), carry)
    carry_2d, y_2d = cell.step(params, flat_carry, x.reshape(6, INPUT))
    np.testing.assert_allclose(y_3d.reshape(6, HIDDEN), y_2d, atol=1e-6)
    # and unbatched: one example alone
    carry_1d, y_1d = cell.step(params, jax.tree.map(lambda leaf: leaf[1, 2], carry), x[1, 2])
    np.testing.assert_allclose(y_1d, y_3d[1, 2], atol=1e-6)
    for a, b in zip(jax.tree.leaves(carry_1d), jax.tree.leaves(carry_3d)):
        np.testing.assert_allclose(a, b[1, 2], atol=1e-6)


@pytest.mark.parametrize("name", CELLS)
def test_project_inputs_over_all_steps_equals_per_step(name, key):
    cell = CELLS[name]
    params = with_random_biases(cell.init(key, INPUT), jax.random.key(1))
    xs = jax.random.normal(jax.random.key(2), (7, 2, INPUT))
    all_at_once = cell.project_inputs(params, xs)
    assert all_at_once.shape == (7, 2, cell.num_gates * HIDDEN)
    for t in range(7):
        np.testing.assert_allclose(all_at_once[t], cell.project_inputs(params, xs[t]), atol=1e-6)


def test_parameter_tree_snapshot(key):
    """Names, shapes and dtypes of each cell's params: a layout change must fail loudly."""
    snapshot = {
        name: [(jax.tree_util.keystr(path), leaf.shape, str(leaf.dtype))
               for path, leaf in jax.tree_util.tree_flatten_with_path(cell.init(key, INPUT))[0]]
        for name, cell in CELLS.items()
    }
    def rows(gates):
        return [(".weight_ih", (gates * 5, 3), "float32"), (".weight_hh", (gates * 5, 5), "float32"),
                (".bias_ih", (gates * 5,), "float32"), (".bias_hh", (gates * 5,), "float32")]
    assert snapshot == {"rnn_tanh": rows(1), "rnn_relu": rows(1), "lstm": rows(4), "gru": rows(3),
                        "lstm_orthogonal": rows(4), "gru_orthogonal": rows(3)}
    assert type(CELLS["lstm"].init(key, INPUT)) is LSTMParams
    assert type(CELLS["gru"].init(key, INPUT)) is GRUParams
    assert type(CELLS["rnn_tanh"].init(key, INPUT)) is SimpleRNNParams


@pytest.mark.parametrize("cell", [SimpleRNN(16), LSTM(16), GRU(16)], ids=["rnn", "lstm", "gru"])
def test_pytorch_initializer_is_uniform_within_one_over_sqrt_hidden(cell, key):
    params = cell.init(key, 8)
    bound = 1.0 / 4.0
    for name, value in params._asdict().items():
        assert float(jnp.max(jnp.abs(value))) <= bound, name
        # spread over the whole interval, not a constant or a narrower distribution
        assert float(jnp.max(value)) > 0.8 * bound and float(jnp.min(value)) < -0.8 * bound, name
    assert float(jnp.max(jnp.abs(params.bias_ih - params.bias_hh))) > 0


@pytest.mark.parametrize("cell", [SimpleRNN(6, initializer="orthogonal"), LSTM(6, initializer="orthogonal"),
                                  GRU(6, initializer="orthogonal")], ids=["rnn", "lstm", "gru"])
def test_orthogonal_initializer(cell, key):
    params = cell.init(key, 10)
    for block in jnp.split(params.weight_hh, cell.num_gates):
        np.testing.assert_allclose(block.T @ block, jnp.eye(6), atol=1e-5)
    glorot_limit = (6.0 / (10 + 6)) ** 0.5
    assert float(jnp.max(jnp.abs(params.weight_ih))) <= glorot_limit
    assert float(jnp.max(jnp.abs(params.weight_ih))) > 0.8 * glorot_limit
    assert not jnp.any(params.bias_ih) and not jnp.any(params.bias_hh)


@pytest.mark.parametrize("initializer", ["pytorch", "orthogonal"])
def test_forget_bias_sets_the_effective_forget_gate_bias(initializer, key):
    plain = LSTM(4, initializer=initializer).init(key, 3)
    params = LSTM(4, initializer=initializer, forget_bias=1.0).init(key, 3)
    effective = params.bias_ih + params.bias_hh
    np.testing.assert_array_equal(effective[4:8], jnp.ones(4))
    for gate in (slice(0, 4), slice(8, 16)):  # i, then g and o: untouched
        np.testing.assert_array_equal(params.bias_ih[gate], plain.bias_ih[gate])
        np.testing.assert_array_equal(params.bias_hh[gate], plain.bias_hh[gate])
    np.testing.assert_array_equal(params.weight_hh, plain.weight_hh)


@pytest.mark.parametrize("name", CELLS)
def test_specs_are_hashable_static_jit_arguments(name, key):
    cell = CELLS[name]
    assert hash(cell) == hash(type(cell)(**cell.__dict__)) and cell == type(cell)(**cell.__dict__)
    params = cell.init(key, INPUT)
    step = jax.jit(lambda cell, params, carry, x: cell.step(params, carry, x), static_argnums=0)
    carry = random_carry(cell, jax.random.key(1), (2,))
    x = jax.random.normal(jax.random.key(2), (2, INPUT))
    jit_carry, jit_y = step(cell, params, carry, x)
    eager_carry, eager_y = cell.step(params, carry, x)
    np.testing.assert_allclose(jit_y, eager_y, atol=1e-6)
    with pytest.raises(AttributeError):
        cell.hidden_size = 3  # frozen


def test_initial_carry_shapes_and_dtypes():
    carry = LSTM(4).initial_carry((2, 3))
    assert isinstance(carry, LSTMState) and carry.h.shape == (2, 3, 4) and carry.c.shape == (2, 3, 4)
    assert GRU(4).initial_carry(5).shape == (5, 4)
    assert SimpleRNN(4).initial_carry().shape == (4,)
    assert GRU(4).initial_carry((2,), jnp.bfloat16).dtype == jnp.bfloat16
    assert not jnp.any(LSTM(4).initial_carry(2).c)


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn_tanh"])
def test_bfloat16_inputs_and_params_keep_a_float32_carry(name, key):
    cell = CELLS[name]
    params = cell.init(key, INPUT)
    x = jax.random.normal(jax.random.key(1), (2, INPUT))
    reference_carry, reference_y = cell.step(params, cell.initial_carry(2), x)
    bf16_params = jax.tree.map(lambda leaf: leaf.astype(jnp.bfloat16), params)
    for p in (params, bf16_params):
        carry, y = cell.step(p, cell.initial_carry(2), x.astype(jnp.bfloat16))
        assert y.dtype == jnp.float32
        assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(carry))
        np.testing.assert_allclose(y, reference_y, atol=3e-2)


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
def test_bfloat16_matmuls_round_only_the_gemm_operands(name, key):
    """matmul_dtype="bfloat16": the step equals the float32 equations evaluated on bf16-rounded x, h and weights
    (products accumulated in float32), and the carry, output and parameters stay float32."""
    cell = CELLS[name]
    bf16_cell = dataclasses.replace(cell, matmul_dtype="bfloat16")
    params = with_random_biases(cell.init(key, INPUT), jax.random.key(2))
    carry = random_carry(cell, jax.random.key(3), (4,))
    x = jax.random.normal(jax.random.key(1), (4, INPUT))
    new_carry, y = bf16_cell.step(params, carry, x)
    assert y.dtype == jnp.float32 and all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(new_carry))

    def rounded(value):
        return np.asarray(jnp.asarray(value, jnp.float32).astype(jnp.bfloat16).astype(jnp.float32), np.float64)

    expected_y = numpy_step(cell, params, carry, x, operand=rounded)[1]
    np.testing.assert_allclose(y, expected_y, atol=1e-5, rtol=1e-5)
    assert not np.allclose(y, numpy_step(cell, params, carry, x)[1], atol=1e-6)  # the rounding did happen


# -- bad input -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: SimpleRNN(4, activation="sigmoid"), ValueError, "activation must be one of"),
        (lambda: LSTM(4, initializer="xavier"), ValueError, "initializer must be one of"),
        (lambda: GRU(0), ValueError, "hidden_size must be >= 1, got 0"),
        (lambda: GRU(-3), ValueError, "hidden_size must be >= 1"),
        (lambda: GRU(2.5), TypeError, "hidden_size must be an int, got float"),
        (lambda: LSTM(True), TypeError, "hidden_size must be an int, got bool"),
        (lambda: LSTM(4, forget_bias=float("nan")), ValueError, "forget_bias must be finite"),
        (lambda: LSTM(4, forget_bias="1"), TypeError, "forget_bias must be a float"),
        (lambda: LSTM(4).init(jax.random.key(0), 0), ValueError, "input_size must be >= 1"),
        (lambda: GRU(4, matmul_dtype="int8"), ValueError, "matmul_dtype must be one of"),
    ],
)
def test_invalid_configuration(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_step_rejects_bad_inputs(key):
    cell = LSTM(4)
    params = cell.init(key, 3)
    carry = cell.initial_carry(2)
    with pytest.raises(TypeError, match="floating dtype.*int32"):
        cell.step(params, carry, jnp.ones((2, 3), jnp.int32))
    with pytest.raises(ValueError, match="expect inputs with 3 features.*got shape \\(2, 5\\)"):
        cell.step(params, carry, jnp.ones((2, 5)))
    with pytest.raises(ValueError, match="carry must have shape \\(2, 4\\).*got \\(3, 4\\)"):
        cell.step(params, cell.initial_carry(3), jnp.ones((2, 3)))
    with pytest.raises(TypeError, match="LSTM carry must be LSTMState"):
        cell.step(params, jnp.zeros((2, 4)), jnp.ones((2, 3)))
    with pytest.raises(TypeError, match="LSTM expects LSTMParams, got GRUParams"):
        cell.step(GRU(4).init(key, 3), carry, jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="hidden_size=4.*weight_ih of shape \\[16, input_size\\], got \\(20, 3\\)"):
        cell.step(LSTM(5).init(key, 3), carry, jnp.ones((2, 3)))
