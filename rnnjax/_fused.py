"""The classic cells' recurrence with a hand-written backward pass (`jax.custom_vjp`), for `unroll`'s fast path.

`fused_unroll(cell, params, xs, ...)` is what `unroll` calls: on raw time-major inputs it computes the input GEMM
inside the loop when nothing differentiates the call (inference; Flax's layout, 1.2-1.6x faster on CPU), and under
differentiation projects every step in one GEMM and runs `scan_recurrence` below (benchmarks/NOTES.md).

`scan_recurrence(cell, params, projected, carry, valid, reverse)` computes exactly what the sequential
`lax.scan` over `cell.recurrent_step` computes (same equations, same packed-sequence masking) for the cells that
declare a `fused_recurrence` kernel (`SimpleRNN` "rnn", `LSTM` "lstm", `GRU` "gru"), but differentiates
differently:

- Autodiff of `lax.scan` accumulates `dW_hh` inside the reverse loop: one small `[H, B] @ [B, G*H]` GEMM and a
  read-modify-write of the `[G*H, H]` accumulator per step. Here the reverse loop only carries `(dh, dc)` and
  emits each step's gate gradients `[time, batch, G*H]`; `dW_hh` is then one `[G*H, time*batch] @ [time*batch,
  H]` GEMM after the loop (../shared/PERFORMANCE-NOTES.md, point 4: 1.05-1.30x on a training step).
- The gate gradients are also the cotangent of `projected`, so `dW_ih`, the biases and the input gradient come
  out of the input projection's own transpose as single large GEMMs, and JAX skips the input gradient when
  nothing asks for it.

With `cell.matmul_dtype` set (e.g. "bfloat16") every GEMM of both passes rounds its operands to that dtype and
accumulates in the carry's dtype, exactly as the cell's own `recurrent_step` does.

Shapes: `projected` `[time, batch, G*H]` (`cell.project_inputs` of time-major inputs), `carry` a `[batch, H]`
array (`LSTMState(h, c)` for the LSTM), `valid` bool `[time, batch]` or None. Returns `(final_carry, ys)`,
`ys` `[time, batch, H]`, zero where `valid` is False. Only float carries of the compute dtype are supported
(`supports_fused`); `unroll` falls back to autodiff of the plain scan otherwise.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from rnnjax._ops import add_bias
from rnnjax._ops import compute_dtype
from rnnjax._ops import dense
from rnnjax.cells import LSTMState

# The recurrences a cell can declare as its `fused_recurrence` capability (see `rnnjax.cells._Cell`), each the
# exact math of one classic cell's `recurrent_step` over params with `weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`.
KERNELS = ("rnn", "lstm", "gru")


def supports_fused(cell, params, projected_dtype, carry) -> bool:
    """True when `scan_recurrence` handles this call: the cell's class declares a `fused_recurrence` kernel (the
    capability is per class, never inherited, so a subclass that changes the step falls back to autodiff of the
    plain scan), and its params and carries share `projected_dtype`, a float32/float64 compute dtype."""
    kernel = getattr(type(cell), "fused_recurrence", None)
    if kernel is None:
        return False
    if kernel not in KERNELS:
        raise ValueError(f"{type(cell).__name__}.fused_recurrence must be None or one of {KERNELS}, got {kernel!r}")
    dtype = jnp.dtype(projected_dtype)
    leaves = jax.tree.leaves(carry) + [params.weight_hh, params.bias_hh]
    return all(leaf.dtype == dtype for leaf in leaves) and compute_dtype(dtype) == dtype


def _mask(valid, new, old):
    return new if valid is None else jnp.where(valid[:, None], new, old)


def _operand(x, matmul_dtype):
    """`x` rounded to the GEMM operand dtype (`cell.matmul_dtype`; None keeps it)."""
    return x if matmul_dtype is None else x.astype(matmul_dtype)


def _loop_weight(weight, matmul_dtype):
    """`weight^T` `[in, out]`, rounded to the operand dtype, made once before a loop: a transpose inside the loop
    body is redone every step (1.3x slower inference at (16,400,64,128); benchmarks/NOTES.md)."""
    return _operand(weight, matmul_dtype).T


def _matmul(x, weight_t, matmul_dtype):
    """`x @ weight_t` with `weight_t` from `_loop_weight`, accumulated in `x`'s dtype."""
    return jnp.matmul(_operand(x, matmul_dtype), weight_t, preferred_element_type=x.dtype)


def _matmul_transposed(dgates, weight, matmul_dtype):
    """`dgates @ weight`: the recurrent product's input gradient, accumulated in `dgates`' dtype."""
    return jnp.matmul(_operand(dgates, matmul_dtype), weight, preferred_element_type=dgates.dtype)


def _sum_over_steps(dgates, inputs, matmul_dtype):
    """`sum_t dgates_t^T inputs_t`: `[time, batch, G] x [time, batch, H] -> [G, H]` (or any two arrays whose
    leading axes list the same rows in the same order) as one GEMM over `[time*batch, .]` rows: the 3-D
    `tbg,tbh->gh` contraction made XLA transpose both operands first (benchmarks/NOTES.md)."""
    rows = dgates.shape[0] * dgates.shape[1]  # may be 0 (an empty sequence): widths are spelled out, not -1
    dtype = dgates.dtype
    dgates = _operand(dgates, matmul_dtype).reshape(rows, dgates.shape[-1])
    inputs = _operand(inputs, matmul_dtype).reshape(rows, inputs.shape[-1])
    return jnp.matmul(dgates.T, inputs, preferred_element_type=dtype)


# -- SimpleRNN ----------------------------------------------------------------------------------------------------
def _rnn_forward(activation, reverse, unroll, matmul_dtype, weight_hh, projected, h0, valid):
    weight_t = _loop_weight(weight_hh, matmul_dtype)

    def step(h, inputs):
        projected_x, valid_t = inputs
        new_h = projected_x + _matmul(h, weight_t, matmul_dtype)
        new_h = jnp.tanh(new_h) if activation == "tanh" else jax.nn.relu(new_h)
        held = _mask(valid_t, new_h, h)
        return held, (_mask(valid_t, new_h, jnp.zeros_like(new_h)), h, new_h)

    h, (ys, h_prev, h_new) = jax.lax.scan(step, h0, (projected, valid), reverse=reverse, unroll=unroll)
    return (h, ys), (weight_hh, valid, h_prev, h_new)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def _rnn(activation, reverse, unroll, matmul_dtype, weight_hh, projected, h0, valid):
    return _rnn_forward(activation, reverse, unroll, matmul_dtype, weight_hh, projected, h0, valid)[0]


def _rnn_backward(activation, reverse, unroll, matmul_dtype, residuals, cotangents):
    weight_hh, valid, h_prev, h_new = residuals
    weight = _operand(weight_hh, matmul_dtype)
    dh_final, dys = cotangents

    def step(dh, inputs):
        dy, h_new_t, valid_t = inputs
        dh_total = dh + dy
        derivative = 1.0 - h_new_t**2 if activation == "tanh" else (h_new_t > 0).astype(h_new_t.dtype)
        dpre = _mask(valid_t, dh_total * derivative, jnp.zeros_like(dh))
        dh_prev = _matmul_transposed(dpre, weight, matmul_dtype) + _mask(valid_t, jnp.zeros_like(dh), dh)
        return dh_prev, dpre

    dh0, dpre = jax.lax.scan(step, dh_final, (dys, h_new, valid), reverse=not reverse, unroll=unroll)
    return _sum_over_steps(dpre, h_prev, matmul_dtype), dpre, dh0, None


_rnn.defvjp(lambda *args: _rnn_forward(*args), _rnn_backward)


# -- LSTM ---------------------------------------------------------------------------------------------------------
def _lstm_forward(reverse, unroll, matmul_dtype, weight_hh, projected, h0, c0, valid):
    weight_t = _loop_weight(weight_hh, matmul_dtype)

    def step(carry, inputs):
        h, c = carry
        projected_x, valid_t = inputs
        gates = projected_x + _matmul(h, weight_t, matmul_dtype)
        i, f, g, o = jnp.split(gates, 4, axis=-1)
        i, f, g, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
        new_c = f * c + i * g
        tanh_c = jnp.tanh(new_c)
        new_h = o * tanh_c
        carry = (_mask(valid_t, new_h, h), _mask(valid_t, new_c, c))
        return carry, (_mask(valid_t, new_h, jnp.zeros_like(new_h)), h, c, jnp.concatenate([i, f, g, o], -1), tanh_c)

    (h, c), (ys, h_prev, c_prev, activations, tanh_c) = jax.lax.scan(step, (h0, c0), (projected, valid),
                                                                     reverse=reverse, unroll=unroll)
    return (h, c, ys), (weight_hh, valid, h_prev, c_prev, activations, tanh_c)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _lstm(reverse, unroll, matmul_dtype, weight_hh, projected, h0, c0, valid):
    return _lstm_forward(reverse, unroll, matmul_dtype, weight_hh, projected, h0, c0, valid)[0]


def _lstm_backward(reverse, unroll, matmul_dtype, residuals, cotangents):
    weight_hh, valid, h_prev, c_prev, activations, tanh_c = residuals
    weight = _operand(weight_hh, matmul_dtype)
    dh_final, dc_final, dys = cotangents

    def step(carry, inputs):
        dh, dc = carry
        dy, c_prev_t, activations_t, tanh_c_t, valid_t = inputs
        i, f, g, o = jnp.split(activations_t, 4, axis=-1)
        dh_total = dh + dy
        dc_total = dc + dh_total * o * (1.0 - tanh_c_t**2)
        dgates = jnp.concatenate([
            dc_total * g * i * (1.0 - i),
            dc_total * c_prev_t * f * (1.0 - f),
            dc_total * i * (1.0 - g**2),
            dh_total * tanh_c_t * o * (1.0 - o),
        ], axis=-1)
        dgates = _mask(valid_t, dgates, jnp.zeros_like(dgates))
        dh_prev = _matmul_transposed(dgates, weight, matmul_dtype) + _mask(valid_t, jnp.zeros_like(dh), dh)
        dc_prev = _mask(valid_t, dc_total * f, dc)
        return (dh_prev, dc_prev), dgates

    (dh0, dc0), dgates = jax.lax.scan(step, (dh_final, dc_final), (dys, c_prev, activations, tanh_c, valid),
                                      reverse=not reverse, unroll=unroll)
    return _sum_over_steps(dgates, h_prev, matmul_dtype), dgates, dh0, dc0, None


_lstm.defvjp(lambda *args: _lstm_forward(*args), _lstm_backward)


# -- GRU ----------------------------------------------------------------------------------------------------------
def _gru_forward(reverse, unroll, matmul_dtype, weight_hh, bias_hn, projected, h0, valid):
    weight_t = _loop_weight(weight_hh, matmul_dtype)

    def step(h, inputs):
        projected_x, valid_t = inputs
        x_r, x_z, x_n = jnp.split(projected_x, 3, axis=-1)
        h_r, h_z, h_n = jnp.split(_matmul(h, weight_t, matmul_dtype), 3, axis=-1)
        r = jax.nn.sigmoid(x_r + h_r)
        z = jax.nn.sigmoid(x_z + h_z)
        h_n = h_n + bias_hn[None]  # explicit broadcast: the library runs under rank-promotion=raise
        n = jnp.tanh(x_n + r * h_n)
        new_h = n + z * (h - n)
        return _mask(valid_t, new_h, h), (_mask(valid_t, new_h, jnp.zeros_like(new_h)), h,
                                          jnp.concatenate([r, z, n, h_n], -1))

    h, (ys, h_prev, saved) = jax.lax.scan(step, h0, (projected, valid), reverse=reverse, unroll=unroll)
    return (h, ys), (weight_hh, valid, h_prev, saved)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _gru(reverse, unroll, matmul_dtype, weight_hh, bias_hn, projected, h0, valid):
    return _gru_forward(reverse, unroll, matmul_dtype, weight_hh, bias_hn, projected, h0, valid)[0]


def _gru_backward(reverse, unroll, matmul_dtype, residuals, cotangents):
    weight_hh, valid, h_prev, saved = residuals
    weight = _operand(weight_hh, matmul_dtype)
    dh_final, dys = cotangents

    def step(dh, inputs):
        dy, h_prev_t, saved_t, valid_t = inputs
        r, z, n, h_n = jnp.split(saved_t, 4, axis=-1)
        dh_total = dh + dy
        dn_pre = dh_total * (1.0 - z) * (1.0 - n**2)
        dz_pre = dh_total * (h_prev_t - n) * z * (1.0 - z)
        dr_pre = dn_pre * h_n * r * (1.0 - r)
        dprojected = jnp.concatenate([dr_pre, dz_pre, dn_pre], axis=-1)
        drecurrent = jnp.concatenate([dr_pre, dz_pre, dn_pre * r], axis=-1)
        dprojected = _mask(valid_t, dprojected, jnp.zeros_like(dprojected))
        drecurrent = _mask(valid_t, drecurrent, jnp.zeros_like(drecurrent))
        dh_prev = _matmul_transposed(drecurrent, weight, matmul_dtype) + _mask(valid_t, dh_total * z, dh)
        return dh_prev, (dprojected, drecurrent)

    dh0, (dprojected, drecurrent) = jax.lax.scan(step, dh_final, (dys, h_prev, saved, valid), reverse=not reverse,
                                                 unroll=unroll)
    hidden = weight_hh.shape[1]
    dbias_hn = jnp.sum(drecurrent[..., 2 * hidden:], axis=(0, 1))
    return _sum_over_steps(drecurrent, h_prev, matmul_dtype), dbias_hn, dprojected, dh0, None


_gru.defvjp(lambda *args: _gru_forward(*args), _gru_backward)


def scan_recurrence(cell, params, projected, carry, valid, reverse: bool, unroll: int = 1):
    """`(final_carry, ys)` of `cell` over `projected` `[time, batch, G*H]` from `carry`, with the hand-written
    backward pass (module docstring). Same results as a `lax.scan` over `cell.recurrent_step` with
    packed-sequence masking by `valid` `[time, batch]` (None: every step valid); `unroll` is the `lax.scan` unroll
    factor of both loops."""
    kernel = getattr(type(cell), "fused_recurrence", None)
    if kernel == "lstm":
        h, c, ys = _lstm(reverse, unroll, cell.matmul_dtype, params.weight_hh, projected, carry.h, carry.c, valid)
        return LSTMState(h=h, c=c), ys
    if kernel == "gru":
        bias_hn = params.bias_hh[2 * cell.hidden_size:]
        return _gru(reverse, unroll, cell.matmul_dtype, params.weight_hh, bias_hn, projected, carry, valid)
    if kernel == "rnn":
        return _rnn(cell.activation, reverse, unroll, cell.matmul_dtype, params.weight_hh, projected, carry, valid)
    raise TypeError(f"{type(cell).__name__} declares no fused_recurrence kernel (one of {KERNELS})")


# -- input projection: inside the loop for inference, one GEMM for training ----------------------------------------
def _project(cell, params, bias, xs):
    """`xs @ W_ih^T + bias`, rounded and accumulated like the cell's own `project_inputs`."""
    return add_bias(dense(xs, params.weight_ih, cell.matmul_dtype), bias)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _projected_recurrence(cell, reverse, unroll, params, bias, xs, carry, valid):
    # The primal runs only when nothing differentiates it (inference): the input GEMM stays inside the loop, so the
    # gate fusion reads the dense outputs of two dots instead of a slice of a precomputed [time, batch, G*H]
    # projection (1.3-1.6x faster inference, benchmarks/NOTES.md; Flax's layout).
    # Transposed once here; inside the step `.T` gives the [out, in] layout back, and the cell's own `x @ W^T`
    # cancels it, so no transpose runs per step (see `_loop_weight`).
    weights_t = jax.lax.optimization_barrier((params.weight_ih.T, params.weight_hh.T))

    def step(carry, inputs):
        x, valid_t = inputs
        loop_params = params._replace(weight_ih=weights_t[0].T, weight_hh=weights_t[1].T)
        new_carry, y = cell.recurrent_step(loop_params, carry, _project(cell, loop_params, bias, x))
        if valid_t is not None:
            new_carry = jax.tree.map(lambda new, old: _mask(valid_t, new, old), new_carry, carry)
            y = _mask(valid_t, y, jnp.zeros_like(y))
        return new_carry, y

    return jax.lax.scan(step, carry, (xs, valid), reverse=reverse, unroll=unroll)


def _projected_recurrence_forward(cell, reverse, unroll, params, bias, xs, carry, valid):
    # Under differentiation: one projection GEMM for all steps, then the hand-written recurrence; its VJP (a pytree
    # of arrays) is the residual, and the projection's transpose gives dW_ih, the bias and input gradients as single
    # GEMMs (XLA drops the input gradient when nothing uses it).
    def run(params, bias, xs, carry):
        return scan_recurrence(cell, params, _project(cell, params, bias, xs), carry, valid, reverse, unroll)

    return jax.vjp(run, params, bias, xs, carry)


def _projected_recurrence_backward(cell, reverse, unroll, pullback, cotangents):
    return (*pullback(cotangents), None)


_projected_recurrence.defvjp(_projected_recurrence_forward, _projected_recurrence_backward)


def fused_unroll(cell, params, xs, carry, valid, reverse: bool, unroll: int = 1):
    """`(final_carry, ys)` of `cell` over time-major raw inputs `xs` `[time, batch, D]`: the same results as
    `scan_recurrence(cell, params, cell.project_inputs(params, xs), ...)` within float rounding (the bias is added
    in a different order), with the input projection inside the loop when nothing differentiates the call and one
    GEMM before the loop (plus the hand-written backward pass) when something does."""
    return _projected_recurrence(cell, reverse, unroll, params, cell._folded_bias(params), xs, carry, valid)
