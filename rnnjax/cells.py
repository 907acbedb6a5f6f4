"""Recurrent cells as pure functions over named pytrees.

The contract, stated once: a cell is an immutable, hashable spec (usable as a static argument to `jit`) with

    init(key, input_size) -> params              # a NamedTuple with PyTorch's names, shapes and gate order
    initial_carry(batch_shape, dtype) -> carry   # zeros; LSTM's carry is LSTMState(h, c)
    step(params, carry, x) -> (carry, y)         # one time step, carry first: a `lax.scan` body as it stands

and, for speed, the step split in two:

    project_inputs(params, xs) -> projected      # x @ W_ih^T + biases, for all time steps in one GEMM
    recurrent_step(params, carry, projected_x) -> (carry, y)   # only h @ W_hh^T inside the time loop

so `step(p, carry, x) == recurrent_step(p, carry, project_inputs(p, x))`. Every function accepts any number of
leading batch dimensions: `x` is `[..., input_size]`, `h` and `c` are `[..., hidden_size]`.

Arithmetic is done in float32 at least (`promote(float32, params, inputs)`): bfloat16 inputs and parameters are
accepted, the projection accumulates in float32, and the carry stays float32. `matmul_dtype="bfloat16"` (opt-in,
every cell) rounds the operands of every GEMM (input projection, recurrent product, and their gradients) to
bfloat16 while accumulating in float32 and keeping parameters, carries and gate arithmetic in float32: about
3 significant digits per product, for the bf16 GEMM rate of accelerators and AVX512-BF16/AMX CPUs
(benchmarks/NOTES.md measures speed and drift).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from rnnjax import _checks
from rnnjax._ops import add_bias, check_matmul_dtype, dense
from rnnjax.initializers import INITIALIZERS
from rnnjax.initializers import initialize

Array = jax.Array


class SimpleRNNParams(NamedTuple):
    """Elman RNN parameters: `weight_ih` [H, D], `weight_hh` [H, H], `bias_ih` [H], `bias_hh` [H]."""

    weight_ih: Array
    weight_hh: Array
    bias_ih: Array
    bias_hh: Array


class LSTMParams(NamedTuple):
    """LSTM parameters, gates stacked in PyTorch's order i, f, g, o: `weight_ih` [4H, D], `weight_hh` [4H, H],
    `bias_ih` [4H], `bias_hh` [4H]."""

    weight_ih: Array
    weight_hh: Array
    bias_ih: Array
    bias_hh: Array


class GRUParams(NamedTuple):
    """GRU parameters, gates stacked in PyTorch's order r, z, n: `weight_ih` [3H, D], `weight_hh` [3H, H],
    `bias_ih` [3H], `bias_hh` [3H] (its n slice `b_hn` sits inside the reset gate's product)."""

    weight_ih: Array
    weight_hh: Array
    bias_ih: Array
    bias_hh: Array


class LSTMState(NamedTuple):
    """LSTM carry: hidden state `h` and cell state `c`, each [..., H]. Named, so `(h, c)` vs `(c, h)` (PyTorch vs
    Flax) cannot be confused."""

    h: Array
    c: Array


@dataclasses.dataclass(frozen=True)
class _Cell:
    """The contract's shared machinery (fields, name, carry, input checks, `step`); subclasses set `num_gates` and
    `params_type` and implement `init`, `check_params`, `project_inputs` and `recurrent_step`.

    `fused_recurrence` is the capability that opts a cell into the hand-written forward/backward pass of
    `rnnjax._fused` (one of its `KERNELS`: "rnn", "lstm", "gru"): a claim that `recurrent_step` computes exactly
    that kernel's recurrence on this cell's params. It is not inherited: a subclass that changes the step (an LSTM
    with layer norm, say) runs on the plain `lax.scan` with autodiff unless it declares the capability itself, and
    then it must pass the fused-vs-autodiff tests. `unroll_path` reports which path a call takes.
    """

    hidden_size: int
    initializer: str = "pytorch"
    matmul_dtype: str | None = None

    num_gates: ClassVar[int]
    params_type: ClassVar[type]
    fused_recurrence: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "fused_recurrence" not in cls.__dict__:  # declared per class, never inherited (see the docstring)
            cls.fused_recurrence = None

    def __post_init__(self):
        _checks.check_positive_int("hidden_size", self.hidden_size)
        _checks.check_choice("initializer", self.initializer, INITIALIZERS)
        check_matmul_dtype(self.matmul_dtype)

    @property
    def name(self) -> str:
        return f"rnnjax.{type(self).__name__}"

    def input_size(self, params) -> int:
        """The feature size `params` expect, after checking `params` belong to this cell."""
        self.check_params(params)
        return params.weight_ih.shape[1]

    def _check_params_type(self, params) -> None:
        if not isinstance(params, self.params_type):
            raise TypeError(
                f"{type(self).__name__} expects {self.params_type.__name__}, got {type(params).__name__}"
            )

    def _check_shape(self, field: str, value, shape: tuple[int, ...]) -> None:
        if tuple(value.shape) != shape:
            raise ValueError(
                f"{type(self).__name__}(hidden_size={self.hidden_size}) expects {field} of shape {shape}, "
                f"got {tuple(value.shape)}"
            )

    def _check_weight_ih(self, weight_ih) -> None:
        rows = self.num_gates * self.hidden_size
        if weight_ih.ndim != 2 or weight_ih.shape[0] != rows:
            raise ValueError(
                f"{type(self).__name__}(hidden_size={self.hidden_size}) expects weight_ih of shape "
                f"[{rows}, input_size], got {tuple(weight_ih.shape)}"
            )

    # -- carry -----------------------------------------------------------------------------------------------------
    def initial_carry(self, batch_shape: int | tuple[int, ...] = (), dtype=jnp.float32):
        """Zeros of shape `[*batch_shape, hidden_size]` (an `LSTMState(h, c)` of two for the LSTM)."""
        batch_shape = (batch_shape,) if isinstance(batch_shape, int) else tuple(batch_shape)
        return jnp.zeros(batch_shape + (self.hidden_size,), dtype)

    def check_carry(self, carry: Any, batch_shape: tuple[int, ...]):
        """Returns `carry` if it is shaped like `initial_carry(batch_shape)` and floating, else raises."""
        expected_shape = tuple(batch_shape) + (self.hidden_size,)
        _checks.check_floating_array("carry", carry)
        if tuple(carry.shape) != expected_shape:
            raise ValueError(
                f"{type(self).__name__} carry must have shape {expected_shape} ([*batch, hidden_size]), "
                f"got {tuple(carry.shape)}"
            )
        return jnp.asarray(carry)

    # -- computation -----------------------------------------------------------------------------------------------
    def _check_inputs(self, params, xs) -> Array:
        xs = _checks.check_floating_array("inputs", xs)
        input_size = self.input_size(params)
        if xs.ndim < 1 or xs.shape[-1] != input_size:
            raise ValueError(
                f"{type(self).__name__} params expect inputs with {input_size} features in the last axis, "
                f"got shape {tuple(xs.shape)}"
            )
        return xs

    def step(self, params, carry, x: Array):
        """One time step on raw input `x` `[..., D]`: `(carry, y)`, carry first (a `lax.scan` body)."""
        with jax.named_scope(self.name):
            x = self._check_inputs(params, x)
            carry = self.check_carry(carry, x.shape[:-1])
            return self.recurrent_step(params, carry, self.project_inputs(params, x))

    def recurrent_step(self, params, carry, projected_x: Array):
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class _ClassicCell(_Cell):
    """The cells with a recurrent weight: `weight_ih` [G*H, D], `weight_hh` [G*H, H], `bias_ih`, `bias_hh` [G*H],
    initialised by `rnnjax.initializers`."""

    def init(self, key: Array, input_size: int, dtype=jnp.float32):
        """Parameters for inputs of `input_size` features, in PyTorch's layout (see the class docstring)."""
        input_size = _checks.check_positive_int("input_size", input_size)
        weights = initialize(self.initializer, key, self.num_gates, input_size, self.hidden_size, dtype)
        return self.params_type(*weights)

    def check_params(self, params) -> None:
        """Raises a TypeError/ValueError unless `params` are this cell's parameters for `hidden_size`."""
        self._check_params_type(params)
        self._check_weight_ih(params.weight_ih)
        gates_h = self.num_gates * self.hidden_size
        self._check_shape("weight_hh", params.weight_hh, (gates_h, self.hidden_size))
        self._check_shape("bias_ih", params.bias_ih, (gates_h,))
        self._check_shape("bias_hh", params.bias_hh, (gates_h,))

    def _folded_bias(self, params) -> Array:
        # Every bias that adds linearly joins the input projection, so the loop adds none.
        return params.bias_ih + params.bias_hh

    def project_inputs(self, params, xs: Array) -> Array:
        """`xs @ W_ih^T` plus every bias that adds linearly: `[..., D] -> [..., G*H]`, one GEMM for all steps."""
        xs = self._check_inputs(params, xs)
        return add_bias(dense(xs, params.weight_ih, self.matmul_dtype), self._folded_bias(params))


@dataclasses.dataclass(frozen=True)
class SimpleRNN(_ClassicCell):
    """Elman RNN (Elman 1990), PyTorch's `nn.RNN`:

        h' = act(W_ih x + b_ih + W_hh h + b_hh),   act = tanh (default) or relu

    Shapes: x [..., D], h [..., H]; params `SimpleRNNParams` (`weight_ih` [H, D], `weight_hh` [H, H]). Defaults:
    `initializer="pytorch"` (U(±1/sqrt(H)), PyTorch) or `"orthogonal"` (Saxe et al. 2014).

    >>> import jax, jax.numpy as jnp
    >>> cell = SimpleRNN(hidden_size=3, activation="relu")
    >>> params = cell.init(jax.random.key(0), input_size=2)
    >>> h, y = cell.step(params, cell.initial_carry((5,)), jnp.ones((5, 2)))
    >>> h.shape, bool((y >= 0).all())
    ((5, 3), True)
    """

    activation: str = "tanh"

    num_gates: ClassVar[int] = 1
    params_type: ClassVar[type] = SimpleRNNParams
    fused_recurrence: ClassVar[str | None] = "rnn"
    ACTIVATIONS: ClassVar[tuple[str, ...]] = ("tanh", "relu")

    def __post_init__(self):
        super().__post_init__()
        _checks.check_choice("activation", self.activation, self.ACTIVATIONS)

    def recurrent_step(self, params: SimpleRNNParams, carry: Array, projected_x: Array):
        """`h' = act(projected_x + W_hh h)`, with `projected_x = project_inputs(params, x)`."""
        pre = projected_x + dense(carry, params.weight_hh, self.matmul_dtype)
        h = jnp.tanh(pre) if self.activation == "tanh" else jax.nn.relu(pre)
        return h, h


@dataclasses.dataclass(frozen=True)
class LSTM(_ClassicCell):
    """Long short-term memory (Hochreiter & Schmidhuber 1997; forget gate: Gers et al. 2000), PyTorch's `nn.LSTM`:

        i = σ(W_ii x + b_ii + W_hi h + b_hi)        f = σ(W_if x + b_if + W_hf h + b_hf)
        g = tanh(W_ig x + b_ig + W_hg h + b_hg)     o = σ(W_io x + b_io + W_ho h + b_ho)
        c' = f * c + i * g                          h' = o * tanh(c')

    Shapes: x [..., D]; carry `LSTMState(h, c)`, each [..., H]; output y = h'. Params `LSTMParams` with gates
    stacked i, f, g, o (`weight_ih` [4H, D], `weight_hh` [4H, H]). Defaults: `initializer="pytorch"`
    (U(±1/sqrt(H)), PyTorch); `forget_bias=None` keeps the initializer's biases, a number sets the forget gate's
    effective bias `b_if + b_hf` to it (1.0: Jozefowicz et al. 2015) by writing it into `bias_ih` and zeroing
    the f slice of `bias_hh`.

    >>> import jax, jax.numpy as jnp
    >>> cell = LSTM(hidden_size=8)
    >>> params = cell.init(jax.random.key(0), input_size=4)
    >>> params.weight_ih.shape, params.weight_hh.shape
    ((32, 4), (32, 8))
    >>> carry, y = cell.step(params, cell.initial_carry((2,)), jnp.ones((2, 4)))
    >>> y.shape, carry.c.shape
    ((2, 8), (2, 8))
    """

    forget_bias: float | None = None

    num_gates: ClassVar[int] = 4
    params_type: ClassVar[type] = LSTMParams
    fused_recurrence: ClassVar[str | None] = "lstm"

    def __post_init__(self):
        super().__post_init__()
        if self.forget_bias is not None:
            _checks.check_finite_float("forget_bias", self.forget_bias)

    def init(self, key: Array, input_size: int, dtype=jnp.float32) -> LSTMParams:
        params = super().init(key, input_size, dtype)
        if self.forget_bias is None:
            return params
        forget = slice(self.hidden_size, 2 * self.hidden_size)
        return params._replace(
            bias_ih=params.bias_ih.at[forget].set(self.forget_bias),
            bias_hh=params.bias_hh.at[forget].set(0.0),
        )

    def initial_carry(self, batch_shape: int | tuple[int, ...] = (), dtype=jnp.float32) -> LSTMState:
        zeros = super().initial_carry(batch_shape, dtype)
        return LSTMState(h=zeros, c=zeros)

    def check_carry(self, carry: Any, batch_shape: tuple[int, ...]) -> LSTMState:
        if not isinstance(carry, tuple) or len(carry) != 2:
            raise TypeError(f"LSTM carry must be LSTMState(h, c), got {type(carry).__name__}")
        h, c = carry
        return LSTMState(h=super().check_carry(h, batch_shape), c=super().check_carry(c, batch_shape))

    def recurrent_step(self, params: LSTMParams, carry: LSTMState, projected_x: Array):
        """One step given `projected_x = project_inputs(params, x)` `[..., 4H]`."""
        gates = projected_x + dense(carry.h, params.weight_hh, self.matmul_dtype)
        i, f, g, o = jnp.split(gates, 4, axis=-1)
        c = jax.nn.sigmoid(f) * carry.c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return LSTMState(h=h, c=c), h


@dataclasses.dataclass(frozen=True)
class GRU(_ClassicCell):
    """Gated recurrent unit (Cho et al. 2014), PyTorch's `nn.GRU`, with `b_hn` inside the reset product:

        r = σ(W_ir x + b_ir + W_hr h + b_hr)
        z = σ(W_iz x + b_iz + W_hz h + b_hz)
        n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
        h' = (1 - z) * n + z * h

    Shapes: x [..., D], h [..., H]; params `GRUParams` with gates stacked r, z, n (`weight_ih` [3H, D],
    `weight_hh` [3H, H]). Defaults: `initializer="pytorch"` (U(±1/sqrt(H)), PyTorch) or `"orthogonal"`.

    >>> import jax, jax.numpy as jnp
    >>> cell = GRU(hidden_size=8, initializer="orthogonal")
    >>> params = cell.init(jax.random.key(0), input_size=4)
    >>> h, y = cell.step(params, cell.initial_carry(), jnp.ones(4))
    >>> h.shape
    (8,)
    """

    num_gates: ClassVar[int] = 3
    params_type: ClassVar[type] = GRUParams
    fused_recurrence: ClassVar[str | None] = "gru"

    def _folded_bias(self, params: GRUParams) -> Array:
        # b_hr and b_hz add linearly and join the projection; b_hn is multiplied by r and must stay in the step.
        hidden = self.hidden_size
        return params.bias_ih + jnp.asarray(params.bias_hh).at[2 * hidden :].set(0.0)

    def recurrent_step(self, params: GRUParams, carry: Array, projected_x: Array):
        """One step given `projected_x = project_inputs(params, x)` `[..., 3H]`."""
        hidden = self.hidden_size
        recurrent = dense(carry, params.weight_hh, self.matmul_dtype)
        x_r, x_z, x_n = jnp.split(projected_x, 3, axis=-1)
        h_r, h_z, h_n = jnp.split(recurrent, 3, axis=-1)
        r = jax.nn.sigmoid(x_r + h_r)
        z = jax.nn.sigmoid(x_z + h_z)
        n = jnp.tanh(x_n + r * add_bias(h_n, params.bias_hh[2 * hidden :]))
        h = n + z * (carry - n)
        return h, h
