"""`RNN`: PyTorch's `nn.RNN`/`nn.LSTM`/`nn.GRU` in one shape, built from `Stack`, `Bidirectional` and the cells."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rnnjax import _checks
from rnnjax._ops import check_matmul_dtype
from rnnjax.cells import GRU, LSTM, LSTMState, SimpleRNN
from rnnjax.initializers import INITIALIZERS
from rnnjax.layers import Bidirectional, BidirectionalCarry, Recurrent, Stack
from rnnjax.minimal_cells import MinGRU, MinLSTM

MODES = ("lstm", "gru", "rnn_tanh", "rnn_relu")  # PyTorch's: what `RNN` and the state-dict interop take
MINIMAL_MODES = ("mingru", "minlstm")  # Feng et al. 2024's minimal cells (no PyTorch counterpart)
CELL_MODES = MODES + MINIMAL_MODES


def make_cell(mode: str, hidden_size: int, initializer: str = "pytorch", matmul_dtype: str | None = None):
    """The cell for a mode name: PyTorch's "lstm", "gru", "rnn_tanh", "rnn_relu", or "mingru", "minlstm".
    `matmul_dtype="bfloat16"` opts into bf16 GEMM operands with float32 accumulation (rnnjax.cells docstring)."""
    _checks.check_choice("mode", mode, CELL_MODES)
    options = {"initializer": initializer, "matmul_dtype": matmul_dtype}
    if mode == "mingru":
        return MinGRU(hidden_size, **options)
    if mode == "minlstm":
        return MinLSTM(hidden_size, **options)
    if mode == "lstm":
        return LSTM(hidden_size, **options)
    if mode == "gru":
        return GRU(hidden_size, **options)
    return SimpleRNN(hidden_size, **options, activation=mode.removeprefix("rnn_"))


@dataclasses.dataclass(frozen=True)
class RNN:
    """A multi-layer, optionally bidirectional RNN shaped like PyTorch's `nn.RNN`/`nn.LSTM`/`nn.GRU`
    (`batch_first=True` by default; `time_major=True` in `apply` is `batch_first=False`).

    `apply(params, xs, carry=None, lengths=None, key=None)` takes `xs` `[batch, time, input_size]` (or unbatched
    `[time, input_size]`) and returns `ys` `[batch, time, D*hidden_size]` (D = 2 if bidirectional) with the
    final states shaped like PyTorch's `h_n` `[num_layers*D, batch, hidden_size]`, ordered layer-major
    (index `layer * D + direction`); the LSTM returns `LSTMState(h=h_n, c=c_n)`. `carry` takes the same shapes
    (PyTorch's `h_0` / `(h_0, c_0)`). `dropout_rate` drops outputs of every layer but the last when a `key` is
    given, as PyTorch's `dropout` does in training mode. `matmul_dtype="bfloat16"` opts into bf16 GEMM operands
    with float32 accumulation, parameters and carries (off by default; see rnnjax.cells). Params: a tuple with
    one entry per layer (cell params, or `BidirectionalParams`), convertible with `from_torch_state_dict` /
    `to_torch_state_dict`.

    >>> import jax, jax.numpy as jnp
    >>> model = RNN("lstm", input_size=3, hidden_size=4, num_layers=2, bidirectional=True)
    >>> params = model.init(jax.random.key(0))
    >>> ys, (h_n, c_n) = model.apply(params, jnp.ones((2, 7, 3)), lengths=jnp.array([7, 5]))
    >>> ys.shape, h_n.shape, c_n.shape
    ((2, 7, 8), (4, 2, 4), (4, 2, 4))
    """

    mode: str
    input_size: int
    hidden_size: int
    num_layers: int = 1
    bidirectional: bool = False
    dropout_rate: float = 0.0
    initializer: str = "pytorch"
    unroll: int = 1
    remat: bool = False
    matmul_dtype: str | None = None

    def __post_init__(self):
        _checks.check_choice("mode", self.mode, MODES)
        _checks.check_positive_int("input_size", self.input_size)
        _checks.check_positive_int("hidden_size", self.hidden_size)
        _checks.check_positive_int("num_layers", self.num_layers)
        if not isinstance(self.bidirectional, bool):
            raise TypeError(f"bidirectional must be a bool, got {type(self.bidirectional).__name__}")
        _checks.check_rate("dropout_rate", self.dropout_rate)
        _checks.check_choice("initializer", self.initializer, INITIALIZERS)
        check_matmul_dtype(self.matmul_dtype)

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def output_size(self) -> int:
        return self.num_directions * self.hidden_size

    @property
    def cell(self):
        return make_cell(self.mode, self.hidden_size, self.initializer, self.matmul_dtype)

    @property
    def stack(self) -> Stack:
        layer = Recurrent(self.cell, unroll=self.unroll, remat=self.remat)
        if self.bidirectional:
            layer = Bidirectional(layer)
        return Stack((layer,) * self.num_layers, dropout_rate=self.dropout_rate)

    def init(self, key: jax.Array, dtype=jnp.float32) -> tuple:
        return self.stack.init(key, self.input_size, dtype)

    def initial_carry(self, batch_shape=(), dtype=jnp.float32):
        """Zeros shaped like PyTorch's `h_0` `[num_layers*D, *batch_shape, hidden_size]` (`LSTMState` for LSTM)."""
        batch_shape = (batch_shape,) if isinstance(batch_shape, int) else tuple(batch_shape)
        zeros = jnp.zeros((self.num_layers * self.num_directions,) + batch_shape + (self.hidden_size,), dtype)
        return LSTMState(zeros, zeros) if self.mode == "lstm" else zeros

    def _split_carry(self, carry, batch_shape: tuple[int, ...]) -> tuple:
        """PyTorch-shaped `h_0` -> one carry per stacked layer."""
        expected = (self.num_layers * self.num_directions,) + batch_shape + (self.hidden_size,)
        if self.mode == "lstm":
            if not isinstance(carry, tuple) or len(carry) != 2:
                raise TypeError(f"LSTM carry must be LSTMState(h_0, c_0), got {type(carry).__name__}")
            carry = LSTMState(*carry)
        for name, leaf in zip(("h_0", "c_0"), jax.tree.leaves(carry)):
            _checks.check_floating_array(name, leaf)
            if tuple(leaf.shape) != expected:
                raise ValueError(
                    f"{name} must have shape {expected} ([num_layers*num_directions, *batch, hidden_size]), "
                    f"got {tuple(leaf.shape)}"
                )
        per_direction = [jax.tree.map(lambda leaf, k=k: leaf[k], carry) for k in range(expected[0])]
        if not self.bidirectional:
            return tuple(per_direction)
        return tuple(
            BidirectionalCarry(per_direction[2 * layer], per_direction[2 * layer + 1])
            for layer in range(self.num_layers)
        )

    def _merge_carries(self, carries: tuple):
        """One final carry per stacked layer -> PyTorch-shaped `h_n` (and `c_n`)."""
        per_direction = [direction for layer in carries for direction in (layer if self.bidirectional else (layer,))]
        return jax.tree.map(lambda *leaves: jnp.stack(leaves), *per_direction)

    def apply(self, params, xs, *, carry=None, lengths=None, time_major=False, key=None):
        """`(ys, h_n)` (`(ys, LSTMState(h_n, c_n))` for LSTM); see the class docstring for shapes."""
        xs = _checks.check_floating_array("xs", xs)
        if xs.ndim not in (2, 3):
            raise ValueError(
                f"xs must be [batch, time, input_size] or unbatched [time, input_size], got shape {tuple(xs.shape)}"
            )
        if xs.shape[-1] != self.input_size:
            raise ValueError(f"xs must have input_size={self.input_size} features, got shape {tuple(xs.shape)}")
        batch_shape = () if xs.ndim == 2 else (xs.shape[1] if time_major else xs.shape[0],)
        stack_carry = None if carry is None else self._split_carry(carry, batch_shape)
        with jax.named_scope(f"rnnjax.RNN.{self.mode}"):
            ys, carries = self.stack.apply(
                params, xs, carry=stack_carry, lengths=lengths, time_major=time_major, key=key
            )
        return ys, self._merge_carries(carries)
