"""`unroll`'s "native" path: a classic cell's whole layer with both loops in C++ (`rnnjax.native`).

`native_unroll(cell, params, xs, carry, valid, reverse, time_major)` returns what `unroll` returns for the layer,
`(ys, final_carry)`, with `ys` in the layout of `xs` (`[batch, time, H]`, or `[time, batch, H]` when
`time_major`) and zero where `valid` `[time, batch]` is False, for the cells that declare a `fused_recurrence`
kernel, float32 params and carry, and GEMM operands in float32 or bfloat16 (`cell.matmul_dtype`). It is a
`jax.custom_vjp` around two FFI calls and the layer's large GEMMs:

- forward: the LSTM's C++ loop reads `xs` and `W_ih` and computes each step's `x_t W_ih^T + h W_hh^T + b` in one
  register block, so the input projection `[time, batch, 4H]` is never written; for the GRU and the Elman RNN,
  `P = xs @ W_ih^T` is one XLA GEMM over all steps, in the layout of `xs` (no transpose comes before it), and the
  loop adds the folded bias to `P`. The loop writes `ys` in the layout of `xs` and, under differentiation only,
  what the backward pass reads;
- backward: the reverse loop reads the cotangent of `ys`, carries `(dh, dc)` and writes each step's gate
  gradients, all in the layout of `xs`, as are the residuals it reads. The gate gradients `[time*batch, G*H]`
  then share their rows with `xs` and `h_prev`, so `dW_ih = dgates^T xs` and `dW_hh = dgates^T h_prev` are
  single 2-D GEMMs with no transpose before them, one FFI call on a register-blocked kernel for float32 (2-20%
  faster than XLA's dot here; the 3-D `tbg,tbh->gh` contraction of the time-major arrays had made XLA transpose
  the gate gradients first, which cost as much as the GEMM; benchmarks/NOTES.md), the biases' gradients are
  column sums, and the input gradient `dgates @ W_ih` is formed only when something reads it (XLA
  drops it otherwise);
- bfloat16 operands on a CPU with AMX (`rnnjax.native.uses_amx()`): the loops' per-step GEMMs run on the tiles,
  and `dW_hh`, `dW_ih` are one more FFI call on the tiles (`_weight_gradient`), since XLA's CPU dot runs these
  row-contracting GEMMs in float32.

Under `vmap` the calls run once per mapped element (`vmap_method="sequential"`); forward-mode differentiation
needs `backward="autodiff"`, as on the fused path.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnnjax import native
from rnnjax._fused import _sum_over_steps
from rnnjax._ops import dense
from rnnjax.cells import LSTMState

KERNELS = ("rnn", "lstm", "gru")
MATMUL_DTYPES = (None, "bfloat16")


def supports_native(cell, params, projected_dtype, carry, *, time: int, batch_size: int) -> bool:
    """True when `native_unroll` takes this call: the extension is enabled and loaded, the cell's class declares a
    kernel, every param, the projection and the carry are float32, GEMM operands float32 or bfloat16, and there is
    at least one step and one sequence (an empty loop stays on XLA)."""
    if getattr(type(cell), "fused_recurrence", None) not in KERNELS or time < 1 or batch_size < 1:
        return False
    matmul_dtype = getattr(cell, "matmul_dtype", None)
    if (None if matmul_dtype is None else jnp.dtype(matmul_dtype).name) not in MATMUL_DTYPES:
        return False
    leaves = jax.tree.leaves(carry) + jax.tree.leaves(params)
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


class _Layer(NamedTuple):
    """What a call is, beyond its arrays: the kernel, the direction, bfloat16 GEMM operands, `xs`' layout, and for
    the Elman RNN its activation."""

    kernel: str
    reverse: bool
    bf16: bool
    batch_major: bool
    relu: bool = False

    def attributes(self) -> dict:
        attributes = dict(reverse=self.reverse, bf16=self.bf16, batch_major=self.batch_major)
        return attributes | ({"relu": self.relu} if self.kernel == "rnn" else {})


def _projection(layer, xs, weight_ih):
    """`xs @ W_ih^T` in the layout of `xs`: the GRU's and Elman RNN's loops read it (the LSTM's computes it)."""
    return dense(xs, weight_ih, "bfloat16" if layer.bf16 else None)


def _layer_forward(layer, weight_ih, bias, weight_hh, bias_hn, xs, carry, valid, training=True):
    leading = xs.shape[:2]
    batch = leading[0] if layer.batch_major else leading[1]
    hidden = weight_hh.shape[1]
    steps = _saved((*leading, hidden), training)  # residuals, in the layout of xs
    attributes = dict(layer.attributes(), training=training)
    if layer.kernel == "lstm":
        ys, h, c, h_prev, c_prev, activations, tanh_c = _call(
            "rnnjax_lstm_forward",
            [(*leading, hidden), (batch, hidden), (batch, hidden), steps, steps,
             _saved((*leading, 4 * hidden), training), steps],
            xs.astype(jnp.float32), weight_ih, bias, weight_hh, carry[0], carry[1], valid, **attributes)
        final, saved = (h, c), (activations, c_prev, tanh_c)
    elif layer.kernel == "gru":
        ys, h, h_prev, activations = _call(
            "rnnjax_gru_forward",
            [(*leading, hidden), (batch, hidden), steps, _saved((*leading, 4 * hidden), training)],
            _projection(layer, xs, weight_ih), bias, weight_hh, bias_hn, carry[0], valid, **attributes)
        final, saved = (h,), (activations,)
    else:
        ys, h, h_prev, h_new = _call("rnnjax_rnn_forward", [(*leading, hidden), (batch, hidden), steps, steps],
                                     _projection(layer, xs, weight_ih), bias, weight_hh, carry[0], valid,
                                     **attributes)
        final, saved = (h,), (h_new,)
    return (ys, final), (weight_ih, weight_hh, xs, valid, h_prev, saved)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _layer(layer, weight_ih, bias, weight_hh, bias_hn, xs, carry, valid):
    return _layer_forward(layer, weight_ih, bias, weight_hh, bias_hn, xs, carry, valid, training=False)[0]


def _layer_backward(layer, residuals, cotangents):
    weight_ih, weight_hh, xs, valid, h_prev, saved = residuals
    dys, dfinal = cotangents
    hidden = weight_hh.shape[1]
    batch = dys.shape[0] if layer.batch_major else dys.shape[1]
    rows = (*xs.shape[:2], weight_hh.shape[0])  # the gate gradients, in the layout of xs
    attributes = layer.attributes()
    dbias_hn = None
    if layer.kernel == "lstm":
        activations, c_prev, tanh_c = saved
        dprojected, dh0, dc0 = _call("rnnjax_lstm_backward", [rows, (batch, hidden), (batch, hidden)], weight_hh,
                                     activations, c_prev, tanh_c, valid, dys, dfinal[0], dfinal[1], **attributes)
        drecurrent, dcarry = dprojected, (dh0, dc0)
    elif layer.kernel == "gru":
        dprojected, drecurrent, dh0 = _call("rnnjax_gru_backward", [rows, rows, (batch, hidden)], weight_hh, h_prev,
                                            saved[0], valid, dys, dfinal[0], **attributes)
        dbias_hn, dcarry = jnp.sum(drecurrent[..., 2 * hidden:], axis=(0, 1)), (dh0,)
    else:
        dprojected, dh0 = _call("rnnjax_rnn_backward", [rows, (batch, hidden)], weight_hh, saved[0], valid, dys,
                                dfinal[0], **attributes)
        drecurrent, dcarry = dprojected, (dh0,)
    steps = xs.shape[0] * xs.shape[1]
    dprojected = dprojected.reshape(steps, dprojected.shape[-1])
    # dW_ih and the input gradient as autodiff of the projection gives them (its rounding under bfloat16, as on the
    # fused path), over [time*batch, .] rows: 2-D GEMMs.
    _, project_pullback = jax.vjp(lambda weight, rows: _projection(layer, rows, weight), weight_ih,
                                  xs.reshape(steps, xs.shape[-1]))
    dweight_ih, dxs = project_pullback(dprojected)
    amx = layer.bf16 and native.uses_amx()
    if amx or not layer.bf16:  # (the pullback's dW_ih then goes unread, and XLA drops its dot)
        # bf16: the same bf16 operands and float32 sums on AMX tiles (XLA runs these transposed-LHS GEMMs in
        # float32); float32: a register-blocked FMA kernel, 2-20% faster than XLA's dot here. One call
        # where dW_hh and dW_ih share their gate gradients (LSTM, Elman RNN).
        target = "rnnjax_weight_gradient" if amx else "rnnjax_weight_gradient_f32"
        h_rows, x_rows = h_prev.reshape(steps, hidden), xs.reshape(steps, xs.shape[-1]).astype(jnp.float32)
        if layer.kernel == "gru":
            none = jnp.zeros((steps, 0), jnp.float32)
            dweight_hh = _weight_gradient(drecurrent.reshape(steps, drecurrent.shape[-1]), h_rows, none, target)[0]
            dweight_ih = _weight_gradient(dprojected, x_rows, none, target)[0]
        else:
            dweight_hh, dweight_ih = _weight_gradient(dprojected, h_rows, x_rows, target)
        if amx:  # autodiff of the bf16 projection returns dW_ih in bfloat16 (the fused path's and the GPU kernels')
            dweight_ih = dweight_ih.astype(jnp.bfloat16).astype(jnp.float32)
        dweight_ih = dweight_ih.astype(weight_ih.dtype)
    else:
        # The gate gradients and h_prev share their rows (the layout of xs), so this is one [rows]^T [rows] GEMM.
        dweight_hh = _sum_over_steps(drecurrent, h_prev, "bfloat16" if layer.bf16 else None)
    return dweight_ih, jnp.sum(dprojected, axis=0), dweight_hh, dbias_hn, dxs.reshape(xs.shape), dcarry, None


_layer.defvjp(lambda *args: _layer_forward(*args), _layer_backward)


def _weight_gradient(dgates, inputs_1, inputs_2, target="rnnjax_weight_gradient"):
    """`(dgates^T inputs_1, dgates^T inputs_2)`: `[rows, G]^T [rows, K] -> [G, K]`, float32 sums, the gate
    gradients read and packed once for both. `target` "rnnjax_weight_gradient": bfloat16 operands on AMX tiles;
    "rnnjax_weight_gradient_f32": float32 operands on the FMA kernel."""
    shapes = [(dgates.shape[1], inputs_1.shape[1]), (dgates.shape[1], inputs_2.shape[1])]
    return _call(target, shapes, dgates, inputs_1, inputs_2)


def native_unroll(cell, params, xs, carry, valid, reverse: bool, time_major: bool):
    """`(ys, final_carry)` of `cell` over raw inputs `xs` `[batch, time, D]` (`[time, batch, D]` when `time_major`)
    from `carry`, masked by `valid` `[time, batch]` (None: every step valid); see the module docstring."""
    time, batch = xs.shape[:2] if time_major else xs.shape[1::-1]
    valid = jnp.ones((time, batch), bool) if valid is None else valid.astype(bool)
    if valid.shape != (time, batch):  # the C++ loop reads valid[t, b] for every step and sequence
        raise ValueError(f"valid must be [time, batch] = {(time, batch)} like the inputs' steps and sequences, got "
                         f"{tuple(valid.shape)}")
    kernel = type(cell).fused_recurrence
    if kernel not in KERNELS:
        raise TypeError(f"{type(cell).__name__} declares no native kernel (one of {KERNELS})")
    layer = _Layer(kernel, reverse, cell.matmul_dtype is not None, not time_major,
                   getattr(cell, "activation", None) == "relu")
    bias_hn = params.bias_hh[2 * cell.hidden_size:] if kernel == "gru" else None
    state = (carry.h, carry.c) if kernel == "lstm" else (carry,)
    ys, final = _layer(layer, params.weight_ih, cell._folded_bias(params), params.weight_hh, bias_hn, xs, state, valid)
    return ys, (LSTMState(*final) if kernel == "lstm" else final[0])
