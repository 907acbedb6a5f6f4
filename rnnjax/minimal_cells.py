"""Minimal recurrent cells whose gates read only the input (Feng et al. 2024, "Were RNNs All We Needed?"):
`MinGRU` and `MinLSTM`.

Because no gate reads `h`, each step is an elementwise affine map of the carry,

    h_t = a_t * h_{t-1} + b_t,        a_t in (0, 1), b_t > 0, both functions of x_t only,

so a whole sequence is a prefix composition of affine maps: `unroll(..., scan="parallel")` computes it with
`jax.lax.associative_scan` in O(log T) depth instead of T sequential steps. The cells keep the classic cell contract
of `rnnjax.cells` (`init`, `initial_carry`, `step`, `project_inputs`/`recurrent_step`, `check_params`,
`check_carry`, `input_size`), so they drop into `Recurrent`, `Bidirectional`, `Stack` and step-by-step generation,
and add the *parallel protocol* the time loop looks for:

    scan_space: "log" | "linear"                 # how `scan_coefficients` represents (a, b)
    scan_coefficients(params, projected) -> (a, b)     # [..., H] each; (log a, log b) when scan_space == "log"
    parallel_min_length: int | None              # scan="auto" scans in parallel from this many steps (None: the
                                                 # backend's default, `time_loop.AUTO_PARALLEL_MIN_LENGTH`)
    max_parallel_bytes: int | None               # memory guard of the parallel path (None: unlimited)

The log-space coefficients are computed from the pre-activations, never by taking the log of a computed gate:
log σ(k) = -softplus(-k), log(1 - σ(k)) = -softplus(k), and log g(x) = log(relu(x) + 0.5) for x >= 0,
-softplus(-x) otherwise. Every log is therefore of a positive number (the `relu` guards the one branch a `where`
would otherwise evaluate on negative inputs), finite for any finite input, and its gradient is finite too.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from rnnjax import _checks
from rnnjax._ops import add_bias, dense
from rnnjax.cells import _Cell

Array = jax.Array

SCAN_SPACES = ("log", "linear")


class MinGRUParams(NamedTuple):
    """MinGRU parameters, the two input projections stacked z, h̃: `weight_ih` [2H, D], `bias_ih` [2H]."""

    weight_ih: Array
    bias_ih: Array


class MinLSTMParams(NamedTuple):
    """MinLSTM parameters, the three input projections stacked f, i, h̃: `weight_ih` [3H, D], `bias_ih` [3H]."""

    weight_ih: Array
    bias_ih: Array


def g(x: Array) -> Array:
    """The paper's positive activation for h̃: `x + 0.5` for x >= 0, `σ(x)` otherwise (continuous at 0)."""
    return jnp.where(x >= 0, jax.nn.relu(x) + 0.5, jax.nn.sigmoid(x))


def log_g(x: Array) -> Array:
    """`log g(x)` without forming `g`: `log(relu(x) + 0.5)` for x >= 0, `-softplus(-x)` otherwise. The `relu`
    keeps the unselected branch's log finite, so neither value nor gradient can be NaN."""
    return jnp.where(x >= 0, jnp.log(jax.nn.relu(x) + 0.5), -jax.nn.softplus(-x))


@dataclasses.dataclass(frozen=True)
class _MinimalCell(_Cell):
    """Shared machinery: input-only gates, an `[..., H]` carry, `h' = a * h + b`. Subclasses set `num_gates`,
    `params_type` and implement `scan_coefficients` and `linear_coefficients`."""

    scan_space: str = "log"
    parallel_min_length: int | None = None
    max_parallel_bytes: int | None = 2**32

    def __post_init__(self):
        super().__post_init__()
        _checks.check_choice("scan_space", self.scan_space, SCAN_SPACES)
        if self.parallel_min_length is not None:
            _checks.check_nonnegative_int("parallel_min_length", self.parallel_min_length)
        if self.max_parallel_bytes is not None:
            _checks.check_positive_int("max_parallel_bytes", self.max_parallel_bytes)

    # -- parameters ------------------------------------------------------------------------------------------------
    def init(self, key: Array, input_size: int, dtype=jnp.float32):
        """`"pytorch"`: PyTorch's `nn.Linear` default, weight and bias U(±1/sqrt(input_size)). `"orthogonal"`:
        the input half of rnnjax's orthogonal scheme (Glorot-uniform per gate, zero bias; there is no recurrent
        kernel to make orthogonal)."""
        input_size = _checks.check_positive_int("input_size", input_size)
        rows = self.num_gates * self.hidden_size
        weight_key, bias_key = jax.random.split(key)
        if self.initializer == "pytorch":
            bound = 1.0 / input_size**0.5
            weight = jax.random.uniform(weight_key, (rows, input_size), dtype, -bound, bound)
            bias = jax.random.uniform(bias_key, (rows,), dtype, -bound, bound)
        else:
            glorot = jax.nn.initializers.glorot_uniform(in_axis=-1, out_axis=-2, batch_axis=0)
            weight = glorot(weight_key, (self.num_gates, self.hidden_size, input_size), dtype).reshape(rows, -1)
            bias = jnp.zeros((rows,), dtype)
        return self.params_type(weight, bias)

    def check_params(self, params) -> None:
        """Raises a TypeError/ValueError unless `params` are this cell's parameters for `hidden_size`."""
        self._check_params_type(params)
        self._check_weight_ih(params.weight_ih)
        self._check_shape("bias_ih", params.bias_ih, (self.num_gates * self.hidden_size,))

    # -- computation -----------------------------------------------------------------------------------------------
    def project_inputs(self, params, xs: Array) -> Array:
        """`xs @ W^T + b`: `[..., D] -> [..., G*H]`, one GEMM for all steps: this is every weight the cell has."""
        xs = self._check_inputs(params, xs)
        return add_bias(dense(xs, params.weight_ih, self.matmul_dtype), params.bias_ih)

    def recurrent_step(self, params, carry: Array, projected_x: Array):
        """`h' = a * h + b` with `(a, b) = linear_coefficients(projected_x)`; the output is `h'`."""
        a, b = self.linear_coefficients(params, projected_x)
        h = a * carry + b
        return h, h

    def linear_coefficients(self, params, projected: Array) -> tuple[Array, Array]:
        raise NotImplementedError

    def log_coefficients(self, params, projected: Array) -> tuple[Array, Array]:
        raise NotImplementedError

    def scan_coefficients(self, params, projected: Array) -> tuple[Array, Array]:
        """`(a, b)` of `h' = a * h + b` for every step of `projected` `[..., G*H]`, as `(log a, log b)` when
        `scan_space == "log"`: what the time loop's parallel path composes."""
        if self.scan_space == "log":
            return self.log_coefficients(params, projected)
        return self.linear_coefficients(params, projected)


@dataclasses.dataclass(frozen=True)
class MinGRU(_MinimalCell):
    """minGRU (Feng et al. 2024, "Were RNNs All We Needed?", arXiv:2410.01201), gates from x only:

        z = σ(W_z x + b_z)          h̃ = g(W_h x + b_h),   g(v) = v + 0.5 if v >= 0 else σ(v)
        h' = (1 - z) * h + z * h̃    y = h'

    Shapes: x [..., D], carry h [..., H] (zeros by default, PyTorch-style); params `MinGRUParams` (`weight_ih`
    [2H, D] stacked z, h̃; `bias_ih` [2H]). Defaults: `initializer="pytorch"` (nn.Linear's U(±1/sqrt(D)));
    `scan_space="log"`, the paper's log-space scan; `parallel_min_length=None`: `scan="auto"` uses the backend's
    threshold (never on CPU, where the parallel path measured 2.3x slower at T = 4096; 256 on accelerators), an
    int sets it (0: always);
    `max_parallel_bytes=2**32` (4 GiB of `time_loop.parallel_memory_bytes`'s estimate).

    Parallel path and the initial carry: `unroll` composes the affine maps h -> a h + b with an associative
    scan into h_t = A_t * h_0 + B_t. In log space the scan carries (log A, log B) with the combine
    `(la1, lb1) ∘ (la2, lb2) = (la1 + la2, logaddexp(la2 + lb1, lb2))`; B_t > 0 always (every b > 0), while h_0
    is any real (zeros, or a negative carry from a previous window), so it is never logged: it enters linearly
    as `exp(log A_t) * h_0`. This is exact for arbitrary carries, and because the scan composes maps pairwise
    it never forms the paper's `logcumsumexp(log b - cumsum(log a))`, whose terms grow like T and lose float32
    precision at T in the thousands. `scan_space="linear"` scans (A, B) directly, `(a1 a2, a2 b1 + b2)`: as
    stable here (0 < a < 1, so products only shrink) and cheaper (no exp/log per combine).

    >>> import jax, jax.numpy as jnp
    >>> from rnnjax import unroll
    >>> cell = MinGRU(hidden_size=8)
    >>> params = cell.init(jax.random.key(0), input_size=4)
    >>> xs = jax.random.normal(jax.random.key(1), (2, 300, 4))
    >>> ys, h = unroll(cell, params, xs, scan="parallel")
    >>> ys_seq, h_seq = unroll(cell, params, xs, scan="sequential")
    >>> ys.shape, bool(jnp.allclose(ys, ys_seq, atol=1e-5))
    ((2, 300, 8), True)
    >>> h, y = cell.step(params, h, xs[:, 0])   # generation: one step at a time
    """

    num_gates: ClassVar[int] = 2
    params_type: ClassVar[type] = MinGRUParams

    def linear_coefficients(self, params: MinGRUParams, projected: Array) -> tuple[Array, Array]:
        """`(1 - z, z * g(h̃_pre))`, with `1 - z` as `σ(-k)` (exact where `1 - σ(k)` would round to 0)."""
        k, pre = jnp.split(projected, 2, axis=-1)
        return jax.nn.sigmoid(-k), jax.nn.sigmoid(k) * g(pre)

    def log_coefficients(self, params: MinGRUParams, projected: Array) -> tuple[Array, Array]:
        """`(log(1 - z), log z + log g(h̃_pre))` = `(-softplus(k), -softplus(-k) + log_g(pre))`."""
        k, pre = jnp.split(projected, 2, axis=-1)
        return -jax.nn.softplus(k), -jax.nn.softplus(-k) + log_g(pre)


@dataclasses.dataclass(frozen=True)
class MinLSTM(_MinimalCell):
    """minLSTM (Feng et al. 2024, "Were RNNs All We Needed?", arXiv:2410.01201), gates from x only and
    normalised so the carry is just h (no cell state, no output gate):

        f = σ(W_f x + b_f)    i = σ(W_i x + b_i)    h̃ = g(W_h x + b_h)
        f' = f / (f + i)      i' = i / (f + i)
        h' = f' * h + i' * h̃   y = h'

    Shapes: x [..., D], carry h [..., H] (zeros by default); params `MinLSTMParams` (`weight_ih` [3H, D] stacked
    f, i, h̃; `bias_ih` [3H]). Defaults, the scan spaces and the handling of an arbitrary initial carry: as
    `MinGRU`. f' and i' are computed as `σ(log f - log i)` and `σ(log i - log f)` (in log space
    `-softplus(log i - log f)`, ...), so both gates underflowing never divides 0 by 0.

    >>> import jax, jax.numpy as jnp
    >>> cell = MinLSTM(hidden_size=8)
    >>> params = cell.init(jax.random.key(0), input_size=4)
    >>> h, y = cell.step(params, cell.initial_carry((2,)), jnp.ones((2, 4)))
    >>> params.weight_ih.shape, h.shape
    ((24, 4), (2, 8))
    """

    num_gates: ClassVar[int] = 3
    params_type: ClassVar[type] = MinLSTMParams

    @staticmethod
    def _log_gates(projected: Array) -> tuple[Array, Array, Array]:
        k_f, k_i, pre = jnp.split(projected, 3, axis=-1)
        return -jax.nn.softplus(-k_f), -jax.nn.softplus(-k_i), pre

    def linear_coefficients(self, params: MinLSTMParams, projected: Array) -> tuple[Array, Array]:
        """`(f', i' * g(h̃_pre))`."""
        log_f, log_i, pre = self._log_gates(projected)
        return jax.nn.sigmoid(log_f - log_i), jax.nn.sigmoid(log_i - log_f) * g(pre)

    def log_coefficients(self, params: MinLSTMParams, projected: Array) -> tuple[Array, Array]:
        """`(log f', log i' + log g(h̃_pre))` with `log f' = log σ(log f - log i) = -softplus(log i - log f)`:
        only the difference of the two logs is formed, exact even when both are -1e4 (where subtracting
        `logaddexp(log f, log i)` would lose float32's digits to the magnitude)."""
        log_f, log_i, pre = self._log_gates(projected)
        return -jax.nn.softplus(log_i - log_f), -jax.nn.softplus(log_f - log_i) + log_g(pre)

