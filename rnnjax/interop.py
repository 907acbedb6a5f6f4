"""Conversion between `RNN` params and PyTorch `state_dict`s of `nn.RNN`/`nn.LSTM`/`nn.GRU`.

Plain dicts of NumPy arrays with PyTorch's key names (`weight_ih_l0`, `bias_hh_l1_reverse`, ...); rnnjax never
imports torch. The layouts are identical (same names, shapes and gate order), so conversion is a copy.

    # in PyTorch
    state = {k: v.detach().numpy() for k, v in torch_lstm.state_dict().items()}
    # in rnnjax
    params = from_torch_state_dict(state, "lstm", num_layers=2, bidirectional=True)

`prefix` reads and writes one submodule of a larger model's state dict (`"lstm."`, `"module.rnn."`, as
`nn.Module.state_dict` names them); keys outside the prefix are ignored on reading. Whole task models convert
through their own methods (`rnnjax.models.LanguageModel.from_torch_state_dict`).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np

from rnnjax import _checks
from rnnjax.cells import GRUParams, LSTMParams, SimpleRNNParams
from rnnjax.layers import BidirectionalParams
from rnnjax.rnn import MODES

_PARAMS_TYPE = {"lstm": LSTMParams, "gru": GRUParams, "rnn_tanh": SimpleRNNParams, "rnn_relu": SimpleRNNParams}
_NUM_GATES = {LSTMParams: 4, GRUParams: 3, SimpleRNNParams: 1}
_FIELDS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
# A single layer's params are tuples too; passed bare, they would silently read as several layers.
_LAYER_TYPES = (BidirectionalParams, LSTMParams, GRUParams, SimpleRNNParams)


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch.Tensor, accepted without importing torch
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def from_torch_state_dict(
    state_dict: Mapping[str, Any], mode: str, num_layers: int = 1, bidirectional: bool = False, prefix: str = ""
) -> tuple:
    """`RNN(mode, ..., num_layers, bidirectional).init`-shaped params from a PyTorch state dict.

    Values may be NumPy arrays or anything `np.asarray` takes (torch tensors included). With `prefix` (e.g.
    `"lstm."`), only the keys that start with it are read, with it removed. Raises a ValueError naming the key for
    a missing or unexpected key (e.g. LSTM `proj_size`'s `weight_hr_l0`, unsupported) or a shape that does not fit
    `mode`'s gate count and the previous layer's output size.
    """
    _checks.check_choice("mode", mode, MODES)
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
    if prefix:
        state_dict = {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}
        if not state_dict:
            raise ValueError(f"state_dict has no key starting with prefix {prefix!r}")
    num_layers = _checks.check_positive_int("num_layers", num_layers)
    if not isinstance(bidirectional, bool):
        raise TypeError(f"bidirectional must be a bool, got {type(bidirectional).__name__}")
    params_type = _PARAMS_TYPE[mode]
    num_gates = _NUM_GATES[params_type]
    suffixes = ("", "_reverse") if bidirectional else ("",)
    expected_keys = [f"{f}_l{layer}{s}" for layer in range(num_layers) for s in suffixes for f in _FIELDS]
    missing = [key for key in expected_keys if key not in state_dict]
    unexpected = sorted(set(state_dict) - set(expected_keys))
    if missing or unexpected:
        raise ValueError(
            f"state_dict{f' under prefix {prefix!r}' if prefix else ''} does not match mode={mode!r}, "
            f"num_layers={num_layers}, bidirectional={bidirectional}: missing {missing}, unexpected {unexpected}"
        )
    hidden_size = _to_numpy(state_dict["weight_hh_l0"]).shape[-1]
    input_size = _to_numpy(state_dict["weight_ih_l0"]).shape[-1]
    layers = []
    for layer in range(num_layers):
        directions = []
        for suffix in suffixes:
            arrays = []
            for field in _FIELDS:
                key = f"{field}_l{layer}{suffix}"
                array = _to_numpy(state_dict[key])
                rows = num_gates * hidden_size
                expected = {
                    "weight_ih": (rows, input_size),
                    "weight_hh": (rows, hidden_size),
                    "bias_ih": (rows,),
                    "bias_hh": (rows,),
                }[field]
                if array.shape != expected:
                    raise ValueError(
                        f"state_dict[{prefix + key!r}] must have shape {expected} for mode={mode!r}, got {array.shape}"
                    )
                if not jnp.issubdtype(array.dtype, jnp.floating):  # NumPy alone calls bfloat16 non-floating
                    raise TypeError(f"state_dict[{prefix + key!r}] must be floating, got dtype {array.dtype}")
                arrays.append(jnp.asarray(array))
            directions.append(params_type(*arrays))
        layers.append(BidirectionalParams(*directions) if bidirectional else directions[0])
        input_size = hidden_size * len(suffixes)
    return tuple(layers)


def to_torch_state_dict(params: tuple, prefix: str = "") -> dict[str, np.ndarray]:
    """A PyTorch state dict (NumPy arrays, PyTorch's key names, each after `prefix`) from `RNN` params (or their
    gradients)."""
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
    if not isinstance(params, (tuple, list)) or not params or isinstance(params, _LAYER_TYPES):
        raise TypeError(
            "params must be a non-empty tuple with one entry per layer (as RNN.init returns), got "
            f"{type(params).__name__}"
        )
    state = {}
    for layer, layer_params in enumerate(params):
        if isinstance(layer_params, BidirectionalParams):
            directions = {"": layer_params.forward, "_reverse": layer_params.backward}
        else:
            directions = {"": layer_params}
        for suffix, cell_params in directions.items():
            if type(cell_params) not in _NUM_GATES:
                raise TypeError(
                    f"layer {layer}{suffix}: expected SimpleRNNParams, LSTMParams or GRUParams, got "
                    f"{type(cell_params).__name__}"
                )
            for field in _FIELDS:
                # a writable copy: torch.from_numpy warns on the read-only views of JAX arrays
                state[f"{prefix}{field}_l{layer}{suffix}"] = np.array(getattr(cell_params, field))
    return state
