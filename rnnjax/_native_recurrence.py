"""`unroll`'s "native" path: the recurrence of `rnnjax._fused` with both loops in C++ (`rnnjax.native`).

`native_recurrence(cell, params, projected, carry, valid, reverse)` returns what `rnnjax._fused.scan_recurrence`
returns, `(final_carry, ys)` with `ys` `[time, batch, H]` zero where `valid` `[time, batch]` is False, for the
cells that declare a `fused_recurrence` kernel, float32 params and carry, and GEMM operands in float32 or
bfloat16 (`cell.matmul_dtype`). Each is a `jax.custom_vjp` around two FFI calls:

- forward: `projected` `[time, batch, G*H]` (the input GEMM, done by XLA for all steps at once), `W_hh` and the
  carry in; `ys`, the final carry and, under differentiation only, what the backward pass reads (the activations,
  the previous carries) out;
- backward: the reverse loop carries `(dh, dc)` and emits each step's gate gradients, the cotangent of
  `projected`; XLA then forms `dW_hh` as one `[G*H, time*batch] @ [time*batch, H]` GEMM, and `dW_ih`, the biases
  and the input gradient from the projection's own transpose (skipped when nothing needs the input gradient),
  exactly as on the fused path.

Under `vmap` the calls run once per mapped element (`vmap_method="sequential"`); forward-mode differentiation
needs `backward="autodiff"`, as on the fused path.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from rnnjax import native
from rnnjax._fused import _sum_over_steps
from rnnjax.cells import LSTMState

KERNELS = ("rnn", "lstm", "gru")
MATMUL_DTYPES = (None, "bfloat16")


def supports_native(cell, params, projected_dtype, carry, *, time: int, batch_size: int) -> bool:
    """True when `native_recurrence` takes this call: the extension is enabled and loaded, the cell's class
    declares a kernel, params, projection and carry are float32, GEMM operands float32 or bfloat16, and there is at
    least one step and one sequence (an empty loop stays on XLA)."""
    if getattr(type(cell), "fused_recurrence", None) not in KERNELS or time < 1 or batch_size < 1:
        return False
    matmul_dtype = getattr(cell, "matmul_dtype", None)
    if (None if matmul_dtype is None else jnp.dtype(matmul_dtype).name) not in MATMUL_DTYPES:
        return False
    leaves = jax.tree.leaves(carry) + [params.weight_hh, params.bias_hh]
    if jnp.dtype(projected_dtype) != jnp.float32 or any(leaf.dtype != jnp.float32 for leaf in leaves):
        return False
    return jax.default_backend() == "cpu" and native.is_enabled()


def _call(target, shapes, *args, **attributes):
    if not native.is_available():  # registers the FFI targets on first use
        raise RuntimeError(f"rnnjax's native CPU recurrence is unavailable: {native.unavailable_reason()}")
    shapes = [jax.ShapeDtypeStruct(shape, jnp.float32) for shape in shapes]
    return jax.ffi.ffi_call(target, shapes, vmap_method="sequential")(*args, **attributes)


def _saved(shape, training):
    return shape if training else (0,)  # inference writes no residuals


# -- LSTM ---------------------------------------------------------------------------------------------------------
def _lstm_forward(reverse, bf16, weight_hh, projected, h0, c0, valid, training=True):
    time, batch, gates = projected.shape
    hidden = gates // 4
    sequence = _saved((time, batch, hidden), training)
    ys, h, c, h_prev, c_prev, activations, tanh_c = _call(
        "rnnjax_lstm_forward",
        [(time, batch, hidden), (batch, hidden), (batch, hidden), sequence, sequence,
         _saved((time, batch, gates), training), sequence],
        projected, weight_hh, h0, c0, valid, reverse=reverse, training=training, bf16=bf16)
    return (h, c, ys), (weight_hh, valid, h_prev, c_prev, activations, tanh_c)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _lstm(reverse, bf16, weight_hh, projected, h0, c0, valid):
    return _lstm_forward(reverse, bf16, weight_hh, projected, h0, c0, valid, training=False)[0]


def _lstm_backward(reverse, bf16, residuals, cotangents):
    weight_hh, valid, h_prev, c_prev, activations, tanh_c = residuals
    dh, dc, dys = cotangents
    dgates, dh0, dc0 = _call("rnnjax_lstm_backward", [activations.shape, dh.shape, dc.shape], weight_hh,
                             activations, c_prev, tanh_c, valid, dys, dh, dc, reverse=reverse, bf16=bf16)
    return _sum_over_steps(dgates, h_prev, "bfloat16" if bf16 else None), dgates, dh0, dc0, None


_lstm.defvjp(lambda *args: _lstm_forward(*args), _lstm_backward)


# -- GRU ----------------------------------------------------------------------------------------------------------
def _gru_forward(reverse, bf16, weight_hh, bias_hn, projected, h0, valid, training=True):
    time, batch, gates = projected.shape
    hidden = gates // 3
    ys, h, h_prev, saved = _call(
        "rnnjax_gru_forward",
        [(time, batch, hidden), (batch, hidden), _saved((time, batch, hidden), training),
         _saved((time, batch, 4 * hidden), training)],
        projected, weight_hh, bias_hn, h0, valid, reverse=reverse, training=training, bf16=bf16)
    return (h, ys), (weight_hh, valid, h_prev, saved)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _gru(reverse, bf16, weight_hh, bias_hn, projected, h0, valid):
    return _gru_forward(reverse, bf16, weight_hh, bias_hn, projected, h0, valid, training=False)[0]


def _gru_backward(reverse, bf16, residuals, cotangents):
    weight_hh, valid, h_prev, saved = residuals
    dh, dys = cotangents
    time, batch, hidden = dys.shape
    dprojected, drecurrent, dh0 = _call("rnnjax_gru_backward", [(time, batch, 3 * hidden)] * 2 + [dh.shape],
                                        weight_hh, h_prev, saved, valid, dys, dh, reverse=reverse, bf16=bf16)
    dbias_hn = jnp.sum(drecurrent[..., 2 * hidden:], axis=(0, 1))
    return (_sum_over_steps(drecurrent, h_prev, "bfloat16" if bf16 else None), dbias_hn, dprojected, dh0, None)


_gru.defvjp(lambda *args: _gru_forward(*args), _gru_backward)


# -- SimpleRNN ----------------------------------------------------------------------------------------------------
def _rnn_forward(relu, reverse, bf16, weight_hh, projected, h0, valid, training=True):
    time, batch, hidden = projected.shape
    sequence = _saved((time, batch, hidden), training)
    ys, h, h_prev, h_new = _call("rnnjax_rnn_forward", [(time, batch, hidden), (batch, hidden), sequence, sequence],
                                 projected, weight_hh, h0, valid, reverse=reverse, training=training, bf16=bf16,
                                 relu=relu)
    return (h, ys), (weight_hh, valid, h_prev, h_new)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _rnn(relu, reverse, bf16, weight_hh, projected, h0, valid):
    return _rnn_forward(relu, reverse, bf16, weight_hh, projected, h0, valid, training=False)[0]


def _rnn_backward(relu, reverse, bf16, residuals, cotangents):
    weight_hh, valid, h_prev, h_new = residuals
    dh, dys = cotangents
    dpre, dh0 = _call("rnnjax_rnn_backward", [dys.shape, dh.shape], weight_hh, h_new, valid, dys, dh,
                      reverse=reverse, bf16=bf16, relu=relu)
    return _sum_over_steps(dpre, h_prev, "bfloat16" if bf16 else None), dpre, dh0, None


_rnn.defvjp(lambda *args: _rnn_forward(*args), _rnn_backward)


def native_recurrence(cell, params, projected, carry, valid, reverse: bool):
    """`(final_carry, ys)` of `cell` over `projected` `[time, batch, G*H]` from `carry` (module docstring)."""
    time, batch = projected.shape[:2]
    valid = jnp.ones((time, batch), bool) if valid is None else valid.astype(bool)
    if valid.shape != (time, batch):  # the C++ loop reads valid[t, b] for every step and sequence
        raise ValueError(f"valid must be [time, batch] = {(time, batch)} like projected's leading axes, got "
                         f"{tuple(valid.shape)}")
    bf16 = cell.matmul_dtype is not None
    kernel = type(cell).fused_recurrence
    if kernel == "lstm":
        h, c, ys = _lstm(reverse, bf16, params.weight_hh, projected, carry.h, carry.c, valid)
        return LSTMState(h=h, c=c), ys
    if kernel == "gru":
        bias_hn = params.bias_hh[2 * cell.hidden_size:]
        return _gru(reverse, bf16, params.weight_hh, bias_hn, projected, carry, valid)
    if kernel == "rnn":
        return _rnn(cell.activation == "relu", reverse, bf16, params.weight_hh, projected, carry, valid)
    raise TypeError(f"{type(cell).__name__} declares no native kernel (one of {KERNELS})")
