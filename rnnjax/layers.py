"""Sequence layers built from cells: `Recurrent` (one cell over time), `Bidirectional`, and `Stack` (layers in
series with dropout between them). They compose: a `Stack` of `Bidirectional` layers is a PyTorch
`bidirectional=True, num_layers=N` RNN.

The layer contract, shared by all three (so any of them can sit inside a `Stack`):

    init(key, input_size, dtype=float32) -> params
    initial_carry(batch_shape=(), dtype=float32) -> carry
    output_size: int                                   # features of each output step
    apply(params, xs, *, carry=None, lengths=None, time_major=False, key=None) -> (ys, final_carry)

`xs` is `[batch, time, features]` (`[time, batch, features]` with `time_major=True`) or unbatched
`[time, features]`; `lengths` follows `unroll`'s packed-sequence semantics; `key` switches dropout on.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnnjax import _checks
from rnnjax.time_loop import unroll as _unroll


def _is_cell(value: Any) -> bool:
    return hasattr(value, "recurrent_step") and hasattr(value, "project_inputs")


def _as_layer(value: Any, *, reverse: bool = False):
    """A cell becomes a `Recurrent` layer; a layer passes through."""
    if _is_cell(value):
        return Recurrent(value, reverse=reverse)
    if not all(hasattr(value, attr) for attr in ("init", "apply", "initial_carry", "output_size")):
        raise TypeError(f"expected a cell (LSTM, GRU, SimpleRNN) or a sequence layer, got {type(value).__name__}")
    return value


def dropout(key: jax.Array, xs: jax.Array, dropout_rate: float) -> jax.Array:
    """Inverted dropout: zeroes each element with probability `dropout_rate` and scales the rest by
    `1 / (1 - dropout_rate)`, so the expectation is unchanged and evaluation needs no rescaling."""
    dropout_rate = _checks.check_rate("dropout_rate", dropout_rate)
    if dropout_rate == 0.0:
        return xs
    keep = jax.random.bernoulli(key, 1.0 - dropout_rate, xs.shape)
    return jnp.where(keep, xs / (1.0 - dropout_rate), jnp.zeros_like(xs))


@dataclasses.dataclass(frozen=True)
class Recurrent:
    """A cell run over time with `unroll`: the basic sequence layer.

    >>> import jax, jax.numpy as jnp
    >>> from rnnjax import GRU
    >>> layer = Recurrent(GRU(hidden_size=6), reverse=True)
    >>> params = layer.init(jax.random.key(0), input_size=3)
    >>> ys, h = layer.apply(params, jnp.ones((2, 4, 3)))
    >>> ys.shape, h.shape
    ((2, 4, 6), (2, 6))
    """

    cell: Any
    reverse: bool = False
    unroll: int = 1
    remat: bool = False

    def __post_init__(self):
        if not _is_cell(self.cell):
            raise TypeError(f"Recurrent expects a cell (LSTM, GRU, SimpleRNN), got {type(self.cell).__name__}")

    @property
    def output_size(self) -> int:
        return self.cell.hidden_size

    def init(self, key: jax.Array, input_size: int, dtype=jnp.float32):
        return self.cell.init(key, input_size, dtype)

    def initial_carry(self, batch_shape=(), dtype=jnp.float32):
        return self.cell.initial_carry(batch_shape, dtype)

    def apply(self, params, xs, *, carry=None, lengths=None, time_major=False, key=None):
        del key  # no randomness inside one recurrent layer
        return _unroll(
            self.cell,
            params,
            xs,
            carry=carry,
            lengths=lengths,
            reverse=self.reverse,
            time_major=time_major,
            unroll=self.unroll,
            remat=self.remat,
        )


class BidirectionalParams(NamedTuple):
    """Parameters of the two directions of a `Bidirectional` layer."""

    forward: Any
    backward: Any


class BidirectionalCarry(NamedTuple):
    """Carries of the two directions; the backward one is the state after reading `t = 0`."""

    forward: Any
    backward: Any


MERGES = ("concat", "sum", "mean", "mul")


@dataclasses.dataclass(frozen=True)
class Bidirectional:
    """Two layers over the same inputs, one reading forward in time and one backward, outputs merged per step.

    `Bidirectional(cell)` runs `cell` both ways (independent parameters); `Bidirectional(cell_a, cell_b)` uses
    two. With `lengths`, the backward direction starts at each sequence's last valid step (PyTorch's packed
    semantics), so padding never leaks into the backward state. `merge`: "concat" (PyTorch's, default; output
    size H_f + H_b), "sum", "mean", "mul" (Keras' `merge_mode`; both directions must share the hidden size).

    >>> import jax, jax.numpy as jnp
    >>> from rnnjax import LSTM
    >>> layer = Bidirectional(LSTM(hidden_size=5))
    >>> params = layer.init(jax.random.key(0), input_size=3)
    >>> ys, carry = layer.apply(params, jnp.ones((2, 4, 3)), lengths=jnp.array([4, 2]))
    >>> ys.shape, carry.backward.h.shape
    ((2, 4, 10), (2, 5))
    """

    forward: Any
    backward: Any = None
    merge: str = "concat"

    def __post_init__(self):
        forward = _as_layer(self.forward)
        if getattr(forward, "reverse", False):
            raise ValueError("the forward layer of Bidirectional must have reverse=False")
        backward = self.backward
        if backward is None:
            if not isinstance(forward, Recurrent):
                raise ValueError("Bidirectional(layer) without backward= needs a cell or a Recurrent forward layer")
            backward = dataclasses.replace(forward, reverse=True)  # same spec, its own parameters
        backward = _as_layer(backward, reverse=True)
        if not getattr(backward, "reverse", False):
            raise ValueError("the backward layer of Bidirectional must read in reverse (Recurrent(..., reverse=True))")
        _checks.check_choice("merge", self.merge, MERGES)
        if self.merge != "concat" and forward.output_size != backward.output_size:
            raise ValueError(
                f"merge={self.merge!r} needs equal output sizes, got forward {forward.output_size} and backward "
                f"{backward.output_size}"
            )
        object.__setattr__(self, "forward", forward)
        object.__setattr__(self, "backward", backward)

    @property
    def output_size(self) -> int:
        if self.merge == "concat":
            return self.forward.output_size + self.backward.output_size
        return self.forward.output_size

    def init(self, key: jax.Array, input_size: int, dtype=jnp.float32) -> BidirectionalParams:
        forward_key, backward_key = jax.random.split(key)
        return BidirectionalParams(
            self.forward.init(forward_key, input_size, dtype), self.backward.init(backward_key, input_size, dtype)
        )

    def initial_carry(self, batch_shape=(), dtype=jnp.float32) -> BidirectionalCarry:
        return BidirectionalCarry(
            self.forward.initial_carry(batch_shape, dtype), self.backward.initial_carry(batch_shape, dtype)
        )

    def apply(self, params, xs, *, carry=None, lengths=None, time_major=False, key=None):
        if not isinstance(params, BidirectionalParams):
            raise TypeError(f"Bidirectional expects BidirectionalParams, got {type(params).__name__}")
        if carry is None:
            carry = BidirectionalCarry(None, None)
        elif not isinstance(carry, tuple) or len(carry) != 2 or (
            type(carry) is not BidirectionalCarry and hasattr(carry, "_fields")  # e.g. an LSTMState by mistake
        ):
            raise TypeError(
                f"Bidirectional carry must be BidirectionalCarry(forward, backward), got {type(carry).__name__}"
            )
        forward_key, backward_key = (None, None) if key is None else jax.random.split(key)
        forward_ys, forward_carry = self.forward.apply(
            params.forward, xs, carry=carry[0], lengths=lengths, time_major=time_major, key=forward_key
        )
        backward_ys, backward_carry = self.backward.apply(
            params.backward, xs, carry=carry[1], lengths=lengths, time_major=time_major, key=backward_key
        )
        if self.merge == "concat":
            ys = jnp.concatenate([forward_ys, backward_ys], axis=-1)
        elif self.merge == "sum":
            ys = forward_ys + backward_ys
        elif self.merge == "mean":
            ys = (forward_ys + backward_ys) / 2
        else:
            ys = forward_ys * backward_ys
        return ys, BidirectionalCarry(forward_carry, backward_carry)


@dataclasses.dataclass(frozen=True)
class Stack:
    """Sequence layers in series, each reading the previous one's outputs, with dropout between layers.

    `dropout_rate` is the probability of dropping (PyTorch's `dropout`), applied to every layer's output except
    the last, and only when `apply` gets a `key` (training); without a key the stack is deterministic. Cells are
    accepted and wrapped in `Recurrent`. Params and carries are tuples with one entry per layer.

    >>> import jax, jax.numpy as jnp
    >>> from rnnjax import GRU, LSTM
    >>> stack = Stack((Bidirectional(LSTM(hidden_size=4)), GRU(hidden_size=6)), dropout_rate=0.1)
    >>> params = stack.init(jax.random.key(0), input_size=3)
    >>> ys, carries = stack.apply(params, jnp.ones((2, 5, 3)), key=jax.random.key(1))
    >>> ys.shape, len(carries), stack.output_size
    ((2, 5, 6), 2, 6)
    """

    layers: tuple
    dropout_rate: float = 0.0

    def __post_init__(self):
        layers = tuple(self.layers) if isinstance(self.layers, (list, tuple)) else None
        if not layers:
            raise ValueError(f"Stack needs a non-empty tuple of layers, got {self.layers!r}")
        object.__setattr__(self, "layers", tuple(_as_layer(layer) for layer in layers))
        _checks.check_rate("dropout_rate", self.dropout_rate)

    @property
    def output_size(self) -> int:
        return self.layers[-1].output_size

    def init(self, key: jax.Array, input_size: int, dtype=jnp.float32) -> tuple:
        params = []
        for layer, layer_key in zip(self.layers, jax.random.split(key, len(self.layers))):
            params.append(layer.init(layer_key, input_size, dtype))
            input_size = layer.output_size
        return tuple(params)

    def initial_carry(self, batch_shape=(), dtype=jnp.float32) -> tuple:
        return tuple(layer.initial_carry(batch_shape, dtype) for layer in self.layers)

    def _check_per_layer(self, what: str, value: Any) -> tuple:
        if not isinstance(value, (tuple, list)):
            raise TypeError(f"Stack expects {what} as a tuple with one entry per layer, got {type(value).__name__}")
        if len(value) != len(self.layers):
            raise ValueError(
                f"Stack of {len(self.layers)} layers expects {what} as a tuple of {len(self.layers)}, got "
                f"{type(value).__name__} of length {len(value)}"
            )
        return tuple(value)

    def apply(self, params, xs, *, carry=None, lengths=None, time_major=False, key=None):
        params = self._check_per_layer("params", params)
        carry = (None,) * len(self.layers) if carry is None else self._check_per_layer("carry", carry)
        layer_keys = (None,) * len(self.layers) if key is None else tuple(jax.random.split(key, 2 * len(self.layers)))
        final_carries = []
        ys = xs
        for index, (layer, layer_params, layer_carry) in enumerate(zip(self.layers, params, carry)):
            layer_key = None if key is None else layer_keys[2 * index]
            ys, final_carry = layer.apply(
                layer_params, ys, carry=layer_carry, lengths=lengths, time_major=time_major, key=layer_key
            )
            final_carries.append(final_carry)
            if key is not None and index < len(self.layers) - 1:
                ys = dropout(layer_keys[2 * index + 1], ys, self.dropout_rate)
        return ys, tuple(final_carries)
