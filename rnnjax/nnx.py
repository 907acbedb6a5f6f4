"""rnnjax for Flax NNX: every core cell and the PyTorch-shaped `RNN` as `flax.nnx.Module`s.

The modules hold their parameters as `nnx.Param`s under PyTorch's names (`weight_ih`, `weight_hh`, `bias_ih`,
`bias_hh` for a cell; `weight_ih_l0`, `bias_hh_l1_reverse`, ... for `RNN`, exactly the keys of
`torch.nn.LSTM.state_dict()`), and call the functional API (`rnnjax.unroll`, `rnnjax.RNN.apply`) on them, so
outputs and gradients are the functional ones, fast paths included. A Flax user drops one into an `nnx.Module`
and trains it with `nnx.Optimizer`:

>>> import jax, jax.numpy as jnp, optax
>>> from flax import nnx
>>> from rnnjax import nnx as rnn_nnx
>>> lstm = rnn_nnx.LSTM(input_size=3, hidden_size=4, rngs=nnx.Rngs(0))
>>> ys, carry = lstm(jnp.ones((2, 5, 3)), lengths=jnp.array([5, 2]))
>>> ys.shape, carry.h.shape, lstm.weight_hh[...].shape
((2, 5, 4), (2, 4), (16, 4))
>>> optimizer = nnx.Optimizer(lstm, optax.adam(1e-2), wrt=nnx.Param)
>>> grads = nnx.grad(lambda m: jnp.mean(m(jnp.ones((2, 5, 3)))[0] ** 2))(lstm)
>>> _ = optimizer.update(lstm, grads)  # the parameters move in place

Import it explicitly (`from rnnjax import nnx`); `import rnnjax` does not load Flax.
"""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx

from rnnjax import cells
from rnnjax import minimal_cells
from rnnjax.interop import from_torch_state_dict, to_torch_state_dict
from rnnjax.rnn import RNN as _RNN
from rnnjax.time_loop import unroll


class _CellModule(nnx.Module):
    """One cell run over a sequence: `module(xs, carry=None, lengths=None, reverse=False, ...) -> (ys, carry)`,
    `xs` `[batch, time, input_size]` (any `rnnjax.unroll` keyword passes through)."""

    cell_type: type

    def __init__(self, input_size: int, hidden_size: int, *, rngs: nnx.Rngs, **cell_options: Any):
        self.cell = self.cell_type(hidden_size, **cell_options)  # an immutable spec: static, not a parameter
        params = self.cell.init(rngs.params(), input_size)
        for field, value in params._asdict().items():
            setattr(self, field, nnx.Param(value))

    @property
    def params(self):
        """The cell's params NamedTuple, read from the module's `nnx.Param`s."""
        return self.cell.params_type(*(getattr(self, field)[...] for field in self.cell.params_type._fields))

    def initial_carry(self, batch_size: int):
        return self.cell.initial_carry((batch_size,))

    def __call__(self, xs: jax.Array, **unroll_options: Any):
        return unroll(self.cell, self.params, xs, **unroll_options)


class SimpleRNN(_CellModule):
    """`rnnjax.SimpleRNN` as a module (`activation="tanh"|"relu"`, `initializer`, `matmul_dtype` options)."""

    cell_type = cells.SimpleRNN


class LSTM(_CellModule):
    """`rnnjax.LSTM` as a module (`forget_bias`, `initializer`, `matmul_dtype` options)."""

    cell_type = cells.LSTM


class GRU(_CellModule):
    """`rnnjax.GRU` as a module (`initializer`, `matmul_dtype` options)."""

    cell_type = cells.GRU


class MinGRU(_CellModule):
    """`rnnjax.MinGRU` as a module (`scan_space`, `parallel_min_length`, ... options)."""

    cell_type = minimal_cells.MinGRU


class MinLSTM(_CellModule):
    """`rnnjax.MinLSTM` as a module (`scan_space`, `parallel_min_length`, ... options)."""

    cell_type = minimal_cells.MinLSTM


class RNN(nnx.Module):
    """`rnnjax.RNN` (PyTorch's `nn.RNN/LSTM/GRU` shape) as a module, its parameters the `nnx.Param`s
    `weight_ih_l0`, `weight_hh_l0`, `bias_ih_l0`, `bias_hh_l0`, ... (`_reverse` for the backward direction).

    `module(xs, carry=None, lengths=None, key=None) -> (ys [batch, time, D*H], h_n)`, as `rnnjax.RNN.apply`;
    `key` turns on the between-layer dropout (`dropout_rate`). `state_dict()` gives PyTorch's state dict.
    """

    def __init__(self, mode: str, input_size: int, hidden_size: int, num_layers: int = 1,
                 bidirectional: bool = False, dropout_rate: float = 0.0, *, rngs: nnx.Rngs, **options: Any):
        self.spec = _RNN(mode, input_size, hidden_size, num_layers=num_layers, bidirectional=bidirectional,
                         dropout_rate=dropout_rate, **options)
        for name, value in to_torch_state_dict(self.spec.init(rngs.params())).items():
            setattr(self, name, nnx.Param(jax.numpy.asarray(value)))

    def state_dict(self) -> dict:
        """`{PyTorch key: array}` of the current parameters."""
        return {name: value[...] for name, value in vars(self).items() if isinstance(value, nnx.Param)}

    @property
    def params(self) -> tuple:
        return from_torch_state_dict(self.state_dict(), self.spec.mode, self.spec.num_layers,
                                     self.spec.bidirectional)

    def __call__(self, xs: jax.Array, carry=None, lengths=None, key: jax.Array | None = None, **options: Any):
        return self.spec.apply(self.params, xs, carry=carry, lengths=lengths, key=key, **options)
