"""The time loop: a cell run over a sequence, on `jax.lax.scan` (sequential) or, for cells linear in their carry
(`MinGRU`, `MinLSTM`), on `jax.lax.associative_scan` (parallel, O(log T) depth).

`unroll(..., scan="auto")` picks the scan; `unroll_path` reports which path a call runs ("parallel", "fused": the
sequential scan with the hand-written backward pass of `rnnjax._fused`, or "sequential": autodiff of the plain
`lax.scan`), so benchmarks record it instead of re-deriving the rule.

A cell supports the parallel path when it has `scan_space` and `scan_coefficients(params, projected) -> (a, b)`
such that one step is `h' = a * h + b` elementwise on an array carry (`(log a, log b)` when `scan_space == "log"`,
which needs b > 0); `parallel_min_length` and `max_parallel_bytes` attributes tune `"auto"` and the memory guard.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax import _checks
from rnnjax import _gpu
from rnnjax._fused import fused_unroll
from rnnjax._fused import supports_fused
from rnnjax._native_recurrence import native_unroll
from rnnjax._native_recurrence import supports_native
from rnnjax._ops import compute_dtype

SCANS = ("auto", "sequential", "parallel")  # what `unroll(scan=...)` takes
BACKWARDS = ("auto", "custom", "autodiff")

# Arrays of [time, batch, hidden] at the parallel path's peak in a training step (jit of grad of a sum): the
# coefficients, the scan's levels (T/2 + T/4 + ... of each), the carries, the exp/logaddexp intermediates of the
# log space, and their cotangents. Measured with `compiled.memory_analysis()` on CPU (temp bytes / (T*B*H*4),
# MinGRU 27-28 log / 15-16 linear, MinLSTM 31-32 / 18, independent of T); an estimate, rounded up.
PARALLEL_ARRAYS_PER_STEP = {"log": 32, "linear": 18}

# `scan="auto"`'s threshold for cells whose `parallel_min_length` is None (their default), per backend. On CPU the
# parallel path was slower than the sequential one at every measured length (2.3x at T = 4096 on 2 cores, see
# `python -m benchmarks.run --preset parallel-scan`): the scan does several times the sequential work, which only
# pays with many cores.
# 256 elsewhere follows the paper's accelerator regime, unmeasured here: measure and set the cell's own threshold.
AUTO_PARALLEL_MIN_LENGTH = {"cpu": None, "default": 256}


def _check_lengths(lengths: Any, batch_size: int | None, time: int) -> jax.Array:
    """`lengths` as an int array `[batch]` (a scalar for unbatched input) with every entry in [0, time]: a
    ValueError now when concrete, a `checkify` check when traced (`_checks.check_value_range`)."""
    expected_shape = () if batch_size is None else (batch_size,)
    if not hasattr(lengths, "dtype"):
        lengths = np.asarray(lengths)
    if not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise TypeError(f"lengths must be an integer array, got dtype {lengths.dtype}")
    if tuple(lengths.shape) != expected_shape:
        what = "a scalar for unbatched inputs" if batch_size is None else f"shape ({batch_size},) = [batch]"
        raise ValueError(f"lengths must be {what}, got shape {tuple(lengths.shape)}")
    _checks.check_value_range("lengths", lengths, 0, time, what="the time axis")
    return jnp.asarray(lengths)


def parallel_memory_bytes(time: int, batch_size: int, hidden_size: int, dtype=jnp.float32,
                          scan_space: str = "log") -> int:
    """Estimated peak bytes of a training step on the parallel path: `time * batch * hidden * itemsize * k`
    with k = `PARALLEL_ARRAYS_PER_STEP[scan_space]` arrays of `[time, batch, hidden]` (32 log, 18 linear)."""
    _checks.check_choice("scan_space", scan_space, tuple(PARALLEL_ARRAYS_PER_STEP))
    k = PARALLEL_ARRAYS_PER_STEP[scan_space]
    return int(time) * int(batch_size) * int(hidden_size) * jnp.dtype(dtype).itemsize * k


def _supports_parallel(cell: Any) -> bool:
    """True when `cell` follows the parallel protocol (see the module docstring)."""
    return all(hasattr(cell, name) for name in ("scan_coefficients", "scan_space"))


def _choose_scan(cell, scan: str, time: int, batch_size: int, dtype) -> str:
    """"parallel" or "sequential"; raises for `scan="parallel"` on a cell without one or over the memory guard."""
    _checks.check_choice("scan", scan, SCANS)
    name = type(cell).__name__
    if scan == "sequential":
        return "sequential"
    if not _supports_parallel(cell):
        if scan == "parallel":
            raise ValueError(
                f"scan='parallel' needs a cell linear in its carry (MinGRU, MinLSTM: `scan_coefficients`); {name} "
                "reads its carry through its gates, so it only runs with scan='sequential' or 'auto'"
            )
        return "sequential"
    min_length = getattr(cell, "parallel_min_length", 0)
    if min_length is None:  # the backend's default
        min_length = AUTO_PARALLEL_MIN_LENGTH.get(jax.default_backend(), AUTO_PARALLEL_MIN_LENGTH["default"])
    if scan == "auto" and (min_length is None or time < min_length):
        return "sequential"
    limit = getattr(cell, "max_parallel_bytes", None)
    space = cell.scan_space
    estimate = parallel_memory_bytes(time, batch_size, cell.hidden_size, dtype, space)
    if limit is not None and estimate > limit:
        # "auto" falls back to the sequential scan, whose carry history is a few times smaller; "parallel" was
        # asked for explicitly, so it says why it cannot.
        if scan == "auto":
            return "sequential"
        raise ValueError(
            f"{name} parallel scan over time={time}, batch={batch_size}, hidden={cell.hidden_size} "
            f"({jnp.dtype(dtype).name}) needs an estimated {estimate:,} bytes ({estimate / 2**20:.1f} MiB: "
            f"~{PARALLEL_ARRAYS_PER_STEP[space]} arrays of [time, batch, hidden] in {space} space), over "
            f"max_parallel_bytes={limit:,} ({limit / 2**20:.1f} MiB); use scan='sequential', shorter windows, "
            "or raise max_parallel_bytes"
        )
    return "parallel" if time > 0 else "sequential"  # nothing to scan in an empty sequence


def unroll_path(cell, params, xs, *, scan: str = "auto", time_major: bool = False, carry=None, remat: bool = False,
                backward: str = "auto") -> str:
    """Which path `unroll(cell, params, xs, scan=..., time_major=..., carry=..., remat=..., backward=...)` runs:

    - "parallel": `lax.associative_scan` (cells linear in their carry);
    - "native": on CPU, the same cells and conditions as "fused" in float32, with the whole loop in C++
      (`rnnjax.native`: the extension built at install time, enabled, at least one step and one sequence);
    - "fused": the sequential scan with the hand-written forward/backward pass of `rnnjax._fused`, taken when the
      cell's class declares a `fused_recurrence` kernel, params and carry share one float32/float64 dtype,
      `remat` is off and `backward` is not "autodiff";
    - "sequential": `lax.scan` over `cell.recurrent_step`, differentiated by autodiff;
    - on an NVIDIA GPU, "cudnn" (LSTM, float32: `jax.experimental.rnn`) or "pallas" (LSTM/GRU kernels in Pallas,
      the GRU and bfloat16 GEMM operands) where `rnnjax._gpu.gpu_path` takes the call, before "fused".

    Pure Python on shapes and dtypes (`params`, `xs` and `carry` may be `jax.ShapeDtypeStruct`s), and the very
    function `unroll` consults, so the two cannot disagree; raises exactly what `unroll` raises for `scan`,
    `backward` and the memory guard.

    >>> import jax
    >>> from rnnjax import LSTM, MinGRU
    >>> xs = jax.ShapeDtypeStruct((4, 1024, 3), "float32")
    >>> params = jax.eval_shape(lambda: MinGRU(8).init(jax.random.key(0), 3))
    >>> cell = MinGRU(8, parallel_min_length=512)
    >>> unroll_path(cell, params, xs), unroll_path(cell, params, xs, scan="sequential")
    ('parallel', 'sequential')
    >>> import rnnjax
    >>> lstm_params = jax.eval_shape(lambda: LSTM(8).init(jax.random.key(0), 3))
    >>> unroll_path(LSTM(8), lstm_params, xs) == ("native" if rnnjax.native.is_enabled() else "fused")
    True
    >>> with rnnjax.native.flags(enabled=False):
    ...     unroll_path(LSTM(8), lstm_params, xs), unroll_path(LSTM(8), lstm_params, xs, backward="autodiff")
    ('fused', 'sequential')
    """
    if len(xs.shape) not in (2, 3):
        raise ValueError(f"xs must be rank 2 or 3, got shape {tuple(xs.shape)}")
    _checks.check_choice("backward", backward, BACKWARDS)
    if len(xs.shape) == 2:
        time, batch_size = xs.shape[0], 1
    else:
        time, batch_size = (xs.shape[:2] if time_major else xs.shape[1::-1])
    dtype = compute_dtype(xs.dtype, *(leaf.dtype for leaf in jax.tree.leaves(params)))
    if _choose_scan(cell, scan, time, batch_size, dtype) == "parallel":
        return "parallel"
    projected = jax.eval_shape(cell.project_inputs, params, jax.ShapeDtypeStruct(xs.shape, xs.dtype))
    if carry is None:
        carry = jax.eval_shape(lambda: cell.initial_carry((batch_size,), dtype))
    gpu = _gpu.gpu_path(_gpu.backend(), cell, params, xs.dtype, carry, time=time, batch_size=batch_size,
                        remat=remat, backward=backward)
    if gpu is not None:
        return gpu
    if backward != "autodiff" and not remat and supports_native(cell, params, projected.dtype, carry, time=time,
                                                                batch_size=batch_size):
        return "native"
    if backward != "autodiff" and not remat and supports_fused(cell, params, projected.dtype, carry):
        return "fused"
    if backward == "custom":
        raise ValueError(
            f"backward='custom' needs a cell that declares a fused_recurrence kernel (SimpleRNN, LSTM, GRU), with "
            f"params and carry in one float32/float64 dtype and remat=False; got {type(cell).__name__} "
            f"(fused_recurrence={getattr(type(cell), 'fused_recurrence', None)!r}), remat={remat}, projected "
            f"{projected.dtype}, carry {jax.tree.leaves(carry)[0].dtype}, params {jax.tree.leaves(params)[0].dtype}"
        )
    return "sequential"


def _linear_combine(earlier, later):
    """Affine maps h -> a h + b composed, `earlier` first: `(a1 a2, a2 b1 + b2)`."""
    (a1, b1), (a2, b2) = earlier, later
    return a1 * a2, a2 * b1 + b2


def _log_combine(earlier, later):
    """The same composition on `(log a, log b)` with b > 0: `(la1 + la2, logaddexp(la2 + lb1, lb2))`."""
    (la1, lb1), (la2, lb2) = earlier, later
    return la1 + la2, jnp.logaddexp(la2 + lb1, lb2)


def _parallel_unroll(cell, params, projected, carry, valid, reverse: bool):
    """All carries `[time, batch, H]` of `h_t = a_t h_{t-1} + b_t` (`h_{t+1}` when `reverse`) from `carry`."""
    first, second = cell.scan_coefficients(params, projected)
    log_space = cell.scan_space == "log"
    if valid is not None:
        # Padding is the identity map (a = 1, b = 0): the carry is held past each sequence's end, and a reverse
        # scan starts each sequence at its last valid step, as the sequential path's select does.
        keep = valid[:, :, None]
        first = jnp.where(keep, first, 0.0 if log_space else 1.0)
        second = jnp.where(keep, second, -jnp.inf if log_space else 0.0)
    # The prefix of maps from h_0 to h_t is h_t = A_t h_0 + B_t. h_0 may be any real (zeros, a negative carry),
    # so it is never logged: only A and B are, and h_0 enters linearly.
    a, b = jax.lax.associative_scan(_log_combine if log_space else _linear_combine, (first, second),
                                    reverse=reverse, axis=0)
    if log_space:
        a, b = jnp.exp(a), jnp.exp(b)
    return a * carry[None] + b


def unroll(
    cell,
    params,
    xs: jax.Array,
    *,
    carry=None,
    lengths=None,
    reverse: bool = False,
    time_major: bool = False,
    unroll: int = 1,
    remat: bool = False,
    scan: str = "auto",
    backward: str = "auto",
):
    """Runs `cell` over the time axis of `xs`: `(ys, final_carry)`.

    Args:
      cell: a cell spec (`SimpleRNN`, `LSTM`, `GRU`, `MinGRU`, `MinLSTM`, or anything with the cell contract).
      params: `cell.init(key, input_size)`.
      xs: `[batch, time, features]`, or `[time, batch, features]` with `time_major=True`, or unbatched
        `[time, features]`. Any floating dtype; bfloat16 is computed with float32 carries and accumulation.
      carry: initial carry shaped like `cell.initial_carry((batch,))` (`(,)` when unbatched); zeros if None.
      lengths: int `[batch]` (a scalar when unbatched), each in [0, time]. PyTorch packed-sequence semantics:
        outputs at `t >= length` are exactly zero and `final_carry` is the carry after each sequence's last valid
        step (the initial carry for length 0). Out-of-range lengths raise a ValueError when concrete; traced
        ones (under `jit`) are checked by `jax.experimental.checkify`, as the `rnnjax.train` steps run it (in a
        plain `jit` they act as clipped to [0, time]). Padded steps may hold anything, NaN and inf included: they
        are zeroed before any arithmetic, so they never reach outputs, carries or gradients (whose entries for
        padded inputs are exactly zero).
      reverse: run from the last valid step to the first. With `lengths`, each sequence's valid prefix is
        reversed in place (padding stays at the end), as PyTorch's bidirectional layers do on packed input;
        `final_carry` is then the carry after `t = 0`.
      time_major: `xs` (and `ys`) are `[time, batch, features]`.
      unroll: `lax.scan` unroll factor; changes speed and compile time, never results (sequential path only).
      remat: recompute each step in the backward pass (`jax.checkpoint`), storing only carries: memory
        O(time * batch * hidden) of carries instead of every gate activation, for long sequences (sequential
        path only; the parallel path's memory is `parallel_memory_bytes`).
      scan: "sequential" (`lax.scan`, every cell), "parallel" (`lax.associative_scan`, O(log T) depth, cells
        linear in their carry: `MinGRU`, `MinLSTM`; raises for others or over the cell's `max_parallel_bytes`),
        or "auto" (default): parallel when the cell supports it, `time >= cell.parallel_min_length` (when None,
        `AUTO_PARALLEL_MIN_LENGTH` of the backend: never on CPU, 256 on accelerators) and the memory estimate
        fits, else sequential. Both give the same results within float rounding, lengths and reverse included.
      backward: how the sequential scan is differentiated. "custom" (what "auto" picks for a cell that declares a
        `fused_recurrence` kernel — `SimpleRNN`, `LSTM`, `GRU` — when params and carry share the float32/float64
        compute dtype and `remat` is off): the hand-written backward pass of `rnnjax._fused`, one `dW_hh` GEMM
        after the loop instead of one per step (1.1-1.3x faster training steps on CPU, benchmarks/README.md); it
        is a `jax.custom_vjp`, so forward-mode (`jax.jvp`, `jax.hessian`) needs "autodiff": `jax.grad` of the
        plain `lax.scan`. Same values either way; gradients equal within float rounding. On this path a call
        nothing differentiates (inference) computes the input GEMM inside the loop, 1.2-1.6x faster on CPU, and
        a differentiated call projects all steps in one GEMM before the loop (`_fused.fused_unroll`).
        `unroll_path` reports the path: "parallel", "fused" or "sequential".

    Returns:
      `ys`: `[batch, time, hidden]` (`[time, batch, hidden]` if `time_major`, `[time, hidden]` unbatched), in the
      carry's dtype; `final_carry`: shaped like `carry`.

    >>> import jax, jax.numpy as jnp
    >>> from rnnjax import LSTM, unroll
    >>> cell = LSTM(hidden_size=8)
    >>> params = cell.init(jax.random.key(0), input_size=4)
    >>> xs = jnp.ones((2, 5, 4))
    >>> ys, carry = unroll(cell, params, xs, lengths=jnp.array([5, 3]))
    >>> ys.shape, carry.h.shape, bool((ys[1, 3:] == 0).all())
    ((2, 5, 8), (2, 8), True)
    """
    name = getattr(cell, "name", f"rnnjax.{type(cell).__name__}")
    with jax.named_scope(f"{name}.unroll"):
        xs = _checks.check_floating_array("xs", xs)
        if xs.ndim not in (2, 3):
            raise ValueError(
                "xs must be [batch, time, features] ([time, batch, features] if time_major) or unbatched "
                f"[time, features], got rank {xs.ndim} with shape {tuple(xs.shape)}"
            )
        input_size = cell.input_size(params)
        if xs.shape[-1] != input_size:
            raise ValueError(
                f"xs has {xs.shape[-1]} features (last axis of shape {tuple(xs.shape)}) but the params expect "
                f"input_size {input_size}"
            )
        if isinstance(unroll, bool) or not isinstance(unroll, int) or unroll < 1:
            raise ValueError(f"unroll must be an int >= 1, got {unroll!r}")
        _checks.check_choice("backward", backward, BACKWARDS)
        unbatched = xs.ndim == 2
        # The loop always runs time-major [time, batch, ...]: scan slices the leading axis.
        xs_time_major = xs[:, None] if unbatched else (xs if time_major else jnp.swapaxes(xs, 0, 1))
        time, batch_size = xs_time_major.shape[:2]

        dtype = compute_dtype(xs.dtype, *(leaf.dtype for leaf in jax.tree.leaves(params)))
        if carry is None:
            carry = cell.initial_carry((batch_size,), dtype)
        else:
            carry = cell.check_carry(carry, () if unbatched else (batch_size,))
            if unbatched:
                carry = jax.tree.map(lambda leaf: leaf[None], carry)
        carry_dtypes = jax.tree.map(lambda leaf: leaf.dtype, carry)

        path = unroll_path(cell, params, xs, scan=scan, time_major=time_major, carry=carry, remat=remat,
                           backward=backward)

        if lengths is None:
            valid = None
        else:
            lengths = _check_lengths(lengths, None if unbatched else batch_size, time)
            lengths = jnp.reshape(lengths, (batch_size,))
            # A reverse scan starts at t = time - 1; holding the carry while t >= length makes its first real
            # update at t = length - 1, which reverses each valid prefix in place without gathering.
            valid = jnp.arange(time)[:, None] < lengths[None, :]
            # Padded steps are zeroed before any arithmetic: their outputs and carries are masked anyway, but a
            # NaN/inf there would reach every gradient as 0 * NaN (the masked step's cotangent is zero, its
            # Jacobian is not finite). One select over the inputs, on every path (parallel, fused, sequential).
            xs_time_major = jnp.where(valid[:, :, None], xs_time_major, jnp.zeros((), xs_time_major.dtype))

        if path == "parallel":
            # `remat` and `unroll` do not apply: the scan has no per-step body, and recomputing it whole in the
            # backward pass left the compiled peak unchanged (the backward needs the scan's levels either way).
            with jax.named_scope("parallel"):
                projected = cell.project_inputs(params, xs_time_major)  # one GEMM over all steps
                hs = _parallel_unroll(cell, params, projected, carry, valid, reverse).astype(carry.dtype)
            final_carry = hs[0] if reverse else hs[-1]
            ys = hs if valid is None else jnp.where(valid[:, :, None], hs, jnp.zeros_like(hs))
        elif path == "native":
            # The C++ loop reads and writes the caller's layout: no transpose of the inputs or outputs.
            layer_time_major = time_major or unbatched
            layer_xs = xs_time_major
            if not layer_time_major:
                layer_xs = xs if valid is None else jnp.where(valid.T[:, :, None], xs, jnp.zeros((), xs.dtype))
            ys, final_carry = native_unroll(cell, params, layer_xs, carry, valid, reverse, layer_time_major)
            if not layer_time_major:
                return ys, final_carry
        elif path == "fused":
            final_carry, ys = fused_unroll(cell, params, xs_time_major, carry, valid, reverse, unroll)
        elif path in _gpu.PATHS:
            final_carry, ys = _gpu.gpu_unroll(path, cell, params, xs_time_major, carry, lengths, reverse)
        else:
            def step(carry, inputs):
                projected_x, valid = inputs
                new_carry, y = cell.recurrent_step(params, carry, projected_x)
                new_carry = jax.tree.map(lambda leaf, dt: leaf.astype(dt), new_carry, carry_dtypes)
                if valid is not None:
                    # Past a sequence's end the carry is held and the output is zero (packed-sequence semantics).
                    # A select per step is cheaper than gathering the last valid carry from the full history.
                    keep = valid[:, None]
                    new_carry = jax.tree.map(lambda new, old: jnp.where(keep, new, old), new_carry, carry)
                    y = jnp.where(keep, y, jnp.zeros_like(y))
                return new_carry, y.astype(jax.tree.leaves(carry_dtypes)[0])

            if remat:
                step = jax.checkpoint(step)
            projected = cell.project_inputs(params, xs_time_major)  # one GEMM over all steps
            final_carry, ys = jax.lax.scan(step, carry, (projected, valid), reverse=reverse, unroll=unroll)

        if unbatched:
            return ys[:, 0], jax.tree.map(lambda leaf: leaf[0], final_carry)
        return (ys if time_major else jnp.swapaxes(ys, 0, 1)), final_carry
