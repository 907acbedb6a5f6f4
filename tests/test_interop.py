"""Tests of `rnnjax.interop`: `to_torch_state_dict` / `from_torch_state_dict`.

The key names and order are checked against a literal list (no torch needed) and, when torch is importable,
against `torch.nn.RNN/LSTM/GRU(...).state_dict()` itself."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import FAST_COMPILE, assert_trees_close

from rnnjax import (
    MODES,
    RNN,
    BidirectionalParams,
    GRUParams,
    LSTMParams,
    SimpleRNNParams,
    from_torch_state_dict,
    to_torch_state_dict,
)

INPUT_SIZE, HIDDEN = 3, 4
NUM_GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


LSTM_L2_BI_KEYS = [
    "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0",
    "weight_ih_l0_reverse", "weight_hh_l0_reverse", "bias_ih_l0_reverse", "bias_hh_l0_reverse",
    "weight_ih_l1", "weight_hh_l1", "bias_ih_l1", "bias_hh_l1",
    "weight_ih_l1_reverse", "weight_hh_l1_reverse", "bias_ih_l1_reverse", "bias_hh_l1_reverse",
]


def model_params(mode: str, bidirectional: bool, num_layers: int = 2, real: bool = False) -> tuple:
    """Params with `RNN.init`'s tree, shapes and dtypes: computed by it when `real`, else NumPy draws shaped by
    `jax.eval_shape(model.init)` (compiling the initializer's random-number kernels costs ~1.5 s a model)."""
    model = RNN(mode, INPUT_SIZE, HIDDEN, num_layers=num_layers, bidirectional=bidirectional)
    if real:
        return jax.jit(model.init, compiler_options=FAST_COMPILE)(jax.random.key(0))
    rng = np.random.default_rng(0)
    shapes = jax.eval_shape(model.init, jax.random.key(0))
    return jax.tree.map(lambda leaf: jnp.asarray(rng.uniform(-1, 1, leaf.shape).astype(leaf.dtype)), shapes)


def numpy_state_dict(mode: str, bidirectional: bool, num_layers: int = 2, seed: int = 0) -> dict:
    """A state dict with PyTorch's keys and shapes and random float32 values, built with NumPy only."""
    rng = np.random.default_rng(seed)
    rows = NUM_GATES[mode] * HIDDEN
    directions = 2 if bidirectional else 1
    state = {}
    for layer in range(num_layers):
        for suffix in ("", "_reverse")[:directions]:
            input_size = INPUT_SIZE if layer == 0 else directions * HIDDEN
            for name, shape in (("weight_ih", (rows, input_size)), ("weight_hh", (rows, HIDDEN)),
                                ("bias_ih", (rows,)), ("bias_hh", (rows,))):
                state[f"{name}_l{layer}{suffix}"] = rng.uniform(-1, 1, shape).astype(np.float32)
    return state


# -- round trips -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode, bidirectional, real", [(mode, bi, False) for mode in MODES for bi in (False, True)]
                         + [("lstm", True, True)], ids=[f"{mode}-{bi}" for mode in MODES for bi in ("uni", "bi")]
                         + ["lstm-bi-real_init"])
def test_round_trip_from_init(mode, bidirectional, real):
    params = model_params(mode, bidirectional, real=real)
    state = to_torch_state_dict(params)
    assert all(type(value) is np.ndarray and value.dtype == np.float32 for value in state.values())
    back = from_torch_state_dict(state, mode, num_layers=2, bidirectional=bidirectional)
    assert jax.tree.structure(back) == jax.tree.structure(params)
    for path_leaf, leaf in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(back)):
        path, original = path_leaf
        assert isinstance(leaf, jax.Array) and leaf.dtype == original.dtype, jax.tree_util.keystr(path)
        np.testing.assert_array_equal(leaf, original, err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_round_trip_from_state_dict(mode, bidirectional):
    state = numpy_state_dict(mode, bidirectional)
    params = from_torch_state_dict(state, mode, num_layers=2, bidirectional=bidirectional)
    layer_type = BidirectionalParams if bidirectional else {"lstm": LSTMParams, "gru": GRUParams}.get(
        mode, SimpleRNNParams)
    assert len(params) == 2 and all(type(layer) is layer_type for layer in params)
    back = to_torch_state_dict(params)
    assert list(back) == list(state)
    for name, value in state.items():
        np.testing.assert_array_equal(back[name], value, err_msg=name)


def test_state_dict_places_each_array():
    """The direction and layer of every array: forward is `_l{k}`, backward `_l{k}_reverse`."""
    state = numpy_state_dict("gru", True)
    params = from_torch_state_dict(state, "gru", num_layers=2, bidirectional=True)
    np.testing.assert_array_equal(params[0].forward.weight_ih, state["weight_ih_l0"])
    np.testing.assert_array_equal(params[0].backward.bias_hh, state["bias_hh_l0_reverse"])
    np.testing.assert_array_equal(params[1].forward.weight_hh, state["weight_hh_l1"])
    np.testing.assert_array_equal(params[1].backward.weight_ih, state["weight_ih_l1_reverse"])
    assert params[1].backward.weight_ih.shape == (3 * HIDDEN, 2 * HIDDEN)


def test_key_names_literal():
    assert list(to_torch_state_dict(model_params("lstm", True))) == LSTM_L2_BI_KEYS
    assert list(to_torch_state_dict(model_params("rnn_tanh", False, num_layers=1))) == [
        "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0",
    ]


# -- against torch ---------------------------------------------------------------------------------------------------


def torch_module(mode: str, bidirectional: bool, num_layers: int = 2):
    torch = pytest.importorskip("torch")
    common = dict(num_layers=num_layers, bidirectional=bidirectional, batch_first=True)
    if mode == "lstm":
        return torch.nn.LSTM(INPUT_SIZE, HIDDEN, **common)
    if mode == "gru":
        return torch.nn.GRU(INPUT_SIZE, HIDDEN, **common)
    return torch.nn.RNN(INPUT_SIZE, HIDDEN, nonlinearity=mode.removeprefix("rnn_"), **common)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_keys_and_shapes_equal_torch(mode, bidirectional):
    torch = pytest.importorskip("torch")
    module = torch_module(mode, bidirectional)
    torch_state = module.state_dict()
    state = to_torch_state_dict(model_params(mode, bidirectional))
    assert list(state) == list(torch_state)  # names and order
    for name, value in state.items():
        assert value.shape == tuple(torch_state[name].shape), name
    # And torch takes it as it stands.
    module.load_state_dict({name: torch.tensor(value) for name, value in state.items()}, strict=True)
    np.testing.assert_array_equal(module.weight_hh_l1.detach().numpy(), state["weight_hh_l1"])


def test_literal_keys_equal_torch():
    torch_keys = list(torch_module("lstm", True).state_dict())
    assert torch_keys == LSTM_L2_BI_KEYS


def test_from_torch_tensors_that_require_grad():
    torch = pytest.importorskip("torch")
    module = torch_module("lstm", True)
    parameters = dict(module.named_parameters())
    assert all(tensor.requires_grad for tensor in parameters.values())
    params = from_torch_state_dict(parameters, "lstm", num_layers=2, bidirectional=True)
    assert params[1].backward.weight_ih.dtype == jnp.float32
    for name, value in to_torch_state_dict(params).items():
        np.testing.assert_array_equal(value, parameters[name].detach().numpy(), err_msg=name)
    # The tensors are left as they were (detached copies were read).
    assert all(tensor.requires_grad for tensor in parameters.values())
    assert isinstance(parameters["weight_ih_l0"], torch.nn.Parameter)


def test_from_torch_state_dict_tensors():
    module = torch_module("gru", False)
    params = from_torch_state_dict(module.state_dict(), "gru", num_layers=2)
    np.testing.assert_array_equal(params[1].bias_hh, module.bias_hh_l1.detach().numpy())


# -- regressions -----------------------------------------------------------------------------------------------------


def test_round_trip_bfloat16():
    """NumPy alone calls ml_dtypes' bfloat16 non-floating; the dtype check must not reject it."""
    params = jax.tree.map(lambda leaf: leaf.astype(jnp.bfloat16), model_params("gru", True))
    assert jax.tree.leaves(params)[0].dtype == jnp.bfloat16  # what RNN.init(key, dtype=jnp.bfloat16) gives
    state = to_torch_state_dict(params)
    back = from_torch_state_dict(state, "gru", num_layers=2, bidirectional=True)
    for original, leaf in zip(jax.tree.leaves(params), jax.tree.leaves(back)):
        assert leaf.dtype == jnp.bfloat16
        np.testing.assert_array_equal(np.asarray(leaf, np.float32), np.asarray(original, np.float32))


def test_to_torch_state_dict_rejects_a_bare_layer():
    """A bare BidirectionalParams is a tuple too: it must not read as two unidirectional layers."""
    layer = from_torch_state_dict(numpy_state_dict("lstm", True, num_layers=1), "lstm", bidirectional=True)[0]
    with pytest.raises(TypeError, match="one entry per layer.*got BidirectionalParams"):
        to_torch_state_dict(layer)
    with pytest.raises(TypeError, match="got LSTMParams"):
        to_torch_state_dict(layer.forward)


def test_from_torch_state_dict_rejects_a_non_bool_bidirectional():
    with pytest.raises(TypeError, match="bidirectional must be a bool, got str"):
        from_torch_state_dict(numpy_state_dict("lstm", True, num_layers=1), "lstm", bidirectional="yes")


# -- bad input -------------------------------------------------------------------------------------------------------


def test_missing_key():
    state = numpy_state_dict("lstm", True)
    del state["bias_hh_l1_reverse"]
    with pytest.raises(ValueError, match=r"missing \['bias_hh_l1_reverse'\], unexpected \[\]"):
        from_torch_state_dict(state, "lstm", num_layers=2, bidirectional=True)


def test_unexpected_projection_key():
    state = numpy_state_dict("lstm", False, num_layers=1)
    state["weight_hr_l0"] = np.zeros((2, HIDDEN), np.float32)  # nn.LSTM(proj_size=2), unsupported
    with pytest.raises(ValueError, match=r"missing \[\], unexpected \['weight_hr_l0'\]"):
        from_torch_state_dict(state, "lstm", num_layers=1)


def test_more_layers_than_declared():
    with pytest.raises(ValueError, match=r"num_layers=1, .*unexpected \['bias_hh_l1', 'bias_ih_l1', "):
        from_torch_state_dict(numpy_state_dict("gru", False, num_layers=2), "gru", num_layers=1)


def test_unidirectional_state_dict_declared_bidirectional():
    with pytest.raises(ValueError, match=r"bidirectional=True: missing \['weight_ih_l0_reverse', "):
        from_torch_state_dict(numpy_state_dict("gru", False), "gru", num_layers=2, bidirectional=True)


def test_gru_weights_as_lstm():
    state = numpy_state_dict("gru", False)
    with pytest.raises(ValueError, match=r"state_dict\['weight_ih_l0'\] must have shape \(16, 3\) for "
                                         r"mode='lstm', got \(12, 3\)"):
        from_torch_state_dict(state, "lstm", num_layers=2)


def test_lstm_weights_as_rnn_tanh():
    state = numpy_state_dict("lstm", False)
    with pytest.raises(ValueError, match=r"must have shape \(4, 3\) for mode='rnn_tanh', got \(16, 3\)"):
        from_torch_state_dict(state, "rnn_tanh", num_layers=2)


def test_wrong_second_layer_input_size():
    state = numpy_state_dict("gru", False)
    state["weight_ih_l1"] = np.zeros((3 * HIDDEN, INPUT_SIZE), np.float32)
    with pytest.raises(ValueError, match=r"state_dict\['weight_ih_l1'\] must have shape \(12, 4\)"):
        from_torch_state_dict(state, "gru", num_layers=2)


def test_integer_dtype():
    state = numpy_state_dict("gru", False)
    state["bias_ih_l0"] = state["bias_ih_l0"].astype(np.int32)
    with pytest.raises(TypeError, match=r"state_dict\['bias_ih_l0'\] must be floating, got dtype int32"):
        from_torch_state_dict(state, "gru", num_layers=2)


def test_unknown_mode():
    with pytest.raises(ValueError, match=r"mode must be one of \('lstm', 'gru', 'rnn_tanh', 'rnn_relu'\), got 'LSTM'"):
        from_torch_state_dict(numpy_state_dict("lstm", False), "LSTM", num_layers=2)


def test_num_layers_zero():
    with pytest.raises(ValueError, match="num_layers must be >= 1, got 0"):
        from_torch_state_dict(numpy_state_dict("lstm", False), "lstm", num_layers=0)


@pytest.mark.parametrize("params", [{}, (), None, LSTM_L2_BI_KEYS[0]], ids=["dict", "empty", "none", "str"])
def test_to_torch_state_dict_not_a_tuple(params):
    with pytest.raises(TypeError, match="params must be a non-empty tuple with one entry per layer"):
        to_torch_state_dict(params)


def test_to_torch_state_dict_wrong_layer_type():
    with pytest.raises(TypeError, match="layer 0: expected SimpleRNNParams, LSTMParams or GRUParams, got dict"):
        to_torch_state_dict(({"weight_ih": np.zeros((4, 3))},))


def test_to_torch_state_dict_bare_cell_params():
    params = from_torch_state_dict(numpy_state_dict("gru", False, num_layers=1), "gru")
    with pytest.raises(TypeError, match="one entry per layer \\(as RNN.init returns\\), got GRUParams"):
        to_torch_state_dict(params[0])  # the layer itself, not the tuple of layers


def test_to_torch_state_dict_wrong_direction_type():
    forward = from_torch_state_dict(numpy_state_dict("gru", False, num_layers=1), "gru")[0]
    with pytest.raises(TypeError, match="layer 1_reverse: expected SimpleRNNParams, LSTMParams or GRUParams, "
                                        "got tuple"):
        to_torch_state_dict((forward, BidirectionalParams(forward, tuple(forward))))


# -- prefixes: one submodule of a larger model's state dict -----------------------------------------------------------
def test_prefix_round_trip_ignores_other_submodules(key):
    params = RNN("gru", input_size=3, hidden_size=4, num_layers=2, bidirectional=True).init(key)
    state = to_torch_state_dict(params, prefix="module.rnn.")
    assert all(name.startswith("module.rnn.") for name in state)
    state["module.embedding.weight"] = np.zeros((5, 3), np.float32)  # another submodule: not read
    restored = from_torch_state_dict(state, "gru", num_layers=2, bidirectional=True, prefix="module.rnn.")
    assert_trees_close(restored, params, atol=0, rtol=0)


def test_prefix_that_matches_nothing_is_named():
    state = to_torch_state_dict(RNN("lstm", 2, 3).init(jax.random.key(0)), prefix="lstm.")
    with pytest.raises(ValueError, match="no key starting with prefix 'rnn.'"):
        from_torch_state_dict(state, "lstm", prefix="rnn.")
    with pytest.raises(ValueError, match="under prefix 'lstm.' does not match mode='lstm', num_layers=2"):
        from_torch_state_dict(state, "lstm", num_layers=2, prefix="lstm.")
    with pytest.raises(ValueError, match=r"state_dict\['lstm.weight_ih_l0'\] must have shape \(9, 2\) for mode='gru'"):
        from_torch_state_dict(state, "gru", prefix="lstm.")
