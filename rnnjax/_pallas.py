"""Persistent recurrent kernels in Pallas for the LSTM and GRU, forward and backward, for `unroll`'s "pallas" path.

One `pallas_call` runs a whole layer: the time loop is inside the kernel, so a sequence costs one launch per pass
instead of the XLA scan's several kernels per step, and the gate arithmetic is fused with the recurrent product.
On a GPU it lowers through Pallas's Triton backend; on CPU it runs in interpret mode, which is how every test
checks it (`tests/test_pallas.py`, against autodiff of the plain `lax.scan`).

Layout. The input projection `x @ W_ih^T + biases` stays outside, one XLA GEMM over all steps (as on the fused
path). The kernel sees, in loop order (time reversed when `reverse`), padded to tile multiples:

    gx    [T, G, Bp, Hp]   projected inputs per gate (G = 4 LSTM i,f,g,o; 3 GRU r,z,n)
    w     [G, Hp, Hp]      W_hh^T per gate, in the GEMM operand dtype (float32, or bfloat16 with `matmul_dtype`)
    hs    [T+1, Bp, Hp]    the carried h after each step (hs[0] = h0), held past each sequence's end: the output,
                           the state the next step reads, and the backward pass's h_prev
    cs    [T+1, Bp, Hp]    the LSTM's carried c, the same way
    acts  [T, 4, Bp, Hp]   gate activations saved for the backward pass (LSTM i,f,g,o; GRU r,z,n,W_hn h + b_hn)

The grid is one program per `BLOCK_B` batch rows (parallel); each program loops over T, and inside a step over
`BLOCK_H`-wide column tiles of the hidden state and `BLOCK_H`-deep chunks of the contraction, so any H fits. The
state is read back from `hs`/`cs` each step (a block barrier between steps orders it); when the padded hidden size
is a single tile the recurrent weights are loaded once, before the time loop, and stay on chip for every step;
larger weights are re-read per step from L2 (an H200 holds every standard shape's W_hh there).

The backward kernel runs the loop the other way over the saved activations: per step it forms the gate gradients
(the cotangent of `gx`), writes them out, and propagates dh through W_hh and the hold-past-the-end masks; `dW_hh`
(and the GRU's `db_hn`) are one GEMM after it, as on the fused path.

Padding is exact: padded hidden units have zero weights, inputs and initial state, so their h and c stay 0 (LSTM:
c' = c/2, h' = tanh(0)/2; GRU: h' = h/2) and feed nothing; padded batch rows have length 0. Block sizes are fixed
guesses for an H200 (Triton needs every tile dimension >= 16 and a power of two), unmeasured until a GPU runs
`benchmarks/gpu_check.sh`.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from rnnjax.cells import LSTMState

KERNELS = {"lstm": 4, "gru": 3}  # kernel name -> gates
OPERAND_DTYPES = (None, "bfloat16")  # `cell.matmul_dtype` values the kernels take (None: float32 operands)
BLOCK_B = 16  # batch rows per program: the M of every tile product (Triton's minimum)
BLOCK_H = 64  # hidden columns per tile (N) and contraction chunk (K)
NUM_WARPS = 4


@dataclasses.dataclass(frozen=True)
class Config:
    """The static shape of one kernel call (hashable: a `custom_vjp` nondiff argument)."""

    kernel: str  # "lstm" | "gru"
    time: int
    batch: int  # padded, a multiple of block_b
    hidden: int  # padded: a power of two <= block_h, or a multiple of block_h
    block_b: int
    block_h: int
    reverse: bool
    operand_dtype: str  # "float32" | "bfloat16"
    interpret: bool

    @property
    def gates(self) -> int:
        return KERNELS[self.kernel]

    @property
    def tiles(self) -> int:
        return self.hidden // self.block_h


def padded_hidden(hidden: int, block_h: int = BLOCK_H) -> int:
    """The kernel's hidden size for `hidden`: the next power of two (at least 16) up to `block_h`, else the next
    multiple of `block_h`."""
    if hidden <= block_h:
        return max(16, 1 << (hidden - 1).bit_length())
    return -(-hidden // block_h) * block_h


def _barrier(config: Config) -> None:
    # Orders the state written by one step before the next step reads it (every thread of the program). Interpret
    # mode runs a program as one sequential computation, where there is nothing to order.
    if not config.interpret:
        pltriton.debug_barrier()


def _ds(index, size):
    start = index * size if isinstance(index, int) else pl.multiple_of(index * size, size)
    return pl.ds(start, size)


def _loop(count: int, body, init):
    """`body` over `range(count)`; a single iteration runs inline."""
    if count == 1:
        return body(0, init)
    return jax.lax.fori_loop(0, count, body, init)


def _time_index(config: Config, s):
    return config.time - 1 - s if config.reverse else s


def _dot(a, b, config: Config):
    return jnp.dot(a.astype(config.operand_dtype), b, preferred_element_type=jnp.float32)


def _dot_transposed(a, b, config: Config):
    """`a @ b.T`."""
    return jax.lax.dot_general(a.astype(config.operand_dtype), b, (((1,), (1,)), ((), ())),
                               preferred_element_type=jnp.float32)


# -- forward ------------------------------------------------------------------------------------------------------
def _forward_kernel(config: Config, save: bool, *refs):
    lstm = config.kernel == "lstm"
    if lstm:
        lengths_ref, gx_ref, w_ref, h0_ref, c0_ref, hs_ref, cs_ref, *acts = refs
    else:
        lengths_ref, gx_ref, w_ref, bhn_ref, h0_ref, hs_ref, *acts = refs
    acts_ref = acts[0] if save else None
    gates, bh, tiles = config.gates, config.block_h, config.tiles
    lengths = lengths_ref[...]

    def initial_tile(n, carry):
        cols = _ds(n, bh)
        hs_ref[0, :, cols] = h0_ref[:, cols]
        if lstm:
            cs_ref[0, :, cols] = c0_ref[:, cols]
        return carry

    _loop(tiles, initial_tile, 0)
    resident = [w_ref[g] for g in range(gates)] if tiles == 1 else None  # on chip for every step
    _barrier(config)

    def step(s, carry):
        valid = (_time_index(config, s) < lengths)[:, None]

        def column_tile(n, carry):
            cols = _ds(n, bh)

            def chunk(k, acc):
                rows = _ds(k, bh)
                h = hs_ref[s, :, rows]
                return tuple(a + _dot(h, resident[g] if resident else w_ref[g, rows, cols], config)
                             for g, a in enumerate(acc))

            zeros = jnp.zeros((config.block_b, bh), jnp.float32)
            acc = _loop(tiles, chunk, (zeros,) * gates)
            h_prev = hs_ref[s, :, cols]
            if lstm:
                i = jax.nn.sigmoid(gx_ref[s, 0, :, cols] + acc[0])
                f = jax.nn.sigmoid(gx_ref[s, 1, :, cols] + acc[1])
                g = jnp.tanh(gx_ref[s, 2, :, cols] + acc[2])
                o = jax.nn.sigmoid(gx_ref[s, 3, :, cols] + acc[3])
                c_prev = cs_ref[s, :, cols]
                c_new = f * c_prev + i * g
                h_new = o * jnp.tanh(c_new)
                cs_ref[s + 1, :, cols] = jnp.where(valid, c_new, c_prev)
                saved = (i, f, g, o)
            else:
                r = jax.nn.sigmoid(gx_ref[s, 0, :, cols] + acc[0])
                z = jax.nn.sigmoid(gx_ref[s, 1, :, cols] + acc[1])
                hn = acc[2] + bhn_ref[:, cols]
                n_gate = jnp.tanh(gx_ref[s, 2, :, cols] + r * hn)
                h_new = n_gate + z * (h_prev - n_gate)
                saved = (r, z, n_gate, hn)
            hs_ref[s + 1, :, cols] = jnp.where(valid, h_new, h_prev)
            if save:
                for index, value in enumerate(saved):
                    acts_ref[s, index, :, cols] = value
            return carry

        _loop(tiles, column_tile, 0)
        _barrier(config)
        return carry

    jax.lax.fori_loop(0, config.time, step, 0)


def _batch_spec(config: Config, shape: tuple, axis: int):
    """The BlockSpec of an array whose `axis` is the batch: `block_b` rows per program, everything else whole."""
    block = tuple(config.block_b if d == axis else size for d, size in enumerate(shape))
    return pl.BlockSpec(block, lambda b: tuple(b if d == axis else 0 for d in range(len(shape))))


def _whole_spec(shape: tuple):
    return pl.BlockSpec(shape, lambda b: (0,) * len(shape))


def _call(config: Config, kernel, name: str, inputs: list, in_axes: list, outputs: list):
    """`pallas_call` over batch blocks; `in_axes`/`outputs` give each array's batch axis (None: whole)."""
    def spec(shape, axis):
        return _whole_spec(shape) if axis is None else _batch_spec(config, shape, axis)

    in_specs = [spec(x.shape, axis) for x, axis in zip(inputs, in_axes, strict=True)]
    out_shape = [jax.ShapeDtypeStruct(shape, jnp.float32) for shape, _ in outputs]
    out_specs = [spec(shape, axis) for shape, axis in outputs]
    return pl.pallas_call(kernel, out_shape=out_shape, grid=(config.batch // config.block_b,), in_specs=in_specs,
                          out_specs=out_specs, interpret=config.interpret, name=name,
                          compiler_params=pltriton.CompilerParams(num_warps=NUM_WARPS, num_stages=1))(*inputs)


def _forward(config: Config, save: bool, gx, w, bhn, h0, c0, lengths):
    t, b, h = config.time, config.batch, config.hidden
    w = w.astype(config.operand_dtype)
    outputs = [((t + 1, b, h), 1)] + ([((t + 1, b, h), 1)] if config.kernel == "lstm" else [])
    if save:
        outputs.append(((t, 4, b, h), 2))
    if config.kernel == "lstm":
        inputs, axes = [lengths, gx, w, h0, c0], [0, 2, None, 0, 0]
    else:
        inputs, axes = [lengths, gx, w, bhn, h0], [0, 2, None, None, 0]
    kernel = functools.partial(_forward_kernel, config, save)
    return _call(config, kernel, f"rnnjax_{config.kernel}_forward", inputs, axes, outputs)


# -- backward -----------------------------------------------------------------------------------------------------
def _backward_kernel(config: Config, *refs):
    lstm = config.kernel == "lstm"
    if lstm:
        lengths_ref, w_ref, acts_ref, hs_ref, cs_ref, dhs_ref, dc_last_ref, dgx_ref, dh_ref, dc_ref = refs
    else:
        lengths_ref, w_ref, acts_ref, hs_ref, dhs_ref, dgx_ref, dh_ref = refs
    gates, bh, tiles, t_len = config.gates, config.block_h, config.tiles, config.time
    lengths = lengths_ref[...]
    # dh_ref[q % 2] holds the whole cotangent of hs[q] once step q is done (dc_ref the same for cs[q]).

    def initial_tile(n, carry):
        cols = _ds(n, bh)
        dh_ref[t_len % 2, :, cols] = dhs_ref[t_len, :, cols]
        if lstm:
            dc_ref[t_len % 2, :, cols] = dc_last_ref[:, cols]
        return carry

    _loop(tiles, initial_tile, 0)
    resident = [w_ref[g] for g in range(gates)] if tiles == 1 else None
    _barrier(config)

    def step(j, carry):
        s = t_len - 1 - j
        valid = (_time_index(config, s) < lengths)[:, None]
        read, write = jax.lax.rem(s + 1, 2), jax.lax.rem(s, 2)  # jnp's % does not lower to Triton

        def gate_tile(n, carry):  # the gate gradients of this column tile, and dh's part that skips W_hh
            cols = _ds(n, bh)
            dh = dh_ref[read, :, cols]
            if lstm:
                i, f, g, o = (acts_ref[s, index, :, cols] for index in range(4))
                dc = dc_ref[read, :, cols]
                tanh_c = jnp.tanh(cs_ref[s + 1, :, cols])  # c_new where valid; masked out elsewhere
                dc_total = dc + dh * o * (1.0 - tanh_c * tanh_c)
                dgates = (dc_total * g * i * (1.0 - i), dc_total * cs_ref[s, :, cols] * f * (1.0 - f),
                          dc_total * i * (1.0 - g * g), dh * tanh_c * o * (1.0 - o))
                dc_ref[write, :, cols] = jnp.where(valid, dc_total * f, dc)
                skip = jnp.where(valid, 0.0, dh)
            else:
                r, z, n_gate, hn = (acts_ref[s, index, :, cols] for index in range(4))
                dn = dh * (1.0 - z) * (1.0 - n_gate * n_gate)
                dz = dh * (hs_ref[s, :, cols] - n_gate) * z * (1.0 - z)
                dgates = (dn * hn * r * (1.0 - r), dz, dn)
                skip = jnp.where(valid, dh * z, dh)
            for index, value in enumerate(dgates):
                dgx_ref[s, index, :, cols] = jnp.where(valid, value, 0.0)
            dh_ref[write, :, cols] = skip + dhs_ref[s, :, cols]
            return carry

        _loop(tiles, gate_tile, 0)
        _barrier(config)

        def input_tile(k, carry):  # dh_prev[:, k-tile] += sum over gates and column tiles of dgates @ W_hh
            rows = _ds(k, bh)

            def chunk(n, acc):
                cols = _ds(n, bh)
                for g in range(gates):
                    dgate = dgx_ref[s, g, :, cols]
                    if not lstm and g == 2:
                        dgate = dgate * acts_ref[s, 0, :, cols]  # the n gate's product sits inside r *
                    acc = acc + _dot_transposed(dgate, resident[g] if resident else w_ref[g, rows, cols], config)
                return acc

            dh_ref[write, :, rows] = _loop(tiles, chunk, dh_ref[write, :, rows])
            return carry

        _loop(tiles, input_tile, 0)
        _barrier(config)
        return carry

    jax.lax.fori_loop(0, t_len, step, 0)


def _backward(config: Config, w, acts, hs, cs, dhs, dc_last, lengths):
    t, b, h = config.time, config.batch, config.hidden
    w = w.astype(config.operand_dtype)
    outputs = [((t, config.gates, b, h), 2), ((2, b, h), 1)]
    if config.kernel == "lstm":
        outputs.append(((2, b, h), 1))
        inputs, axes = [lengths, w, acts, hs, cs, dhs, dc_last], [0, None, 2, 1, 1, 1, 0]
    else:
        inputs, axes = [lengths, w, acts, hs, dhs], [0, None, 2, 1, 1]
    kernel = functools.partial(_backward_kernel, config)
    return _call(config, kernel, f"rnnjax_{config.kernel}_backward", inputs, axes, outputs)


def _weight_gradient(config: Config, dgx, acts, hs):
    """`dw[g] = sum_{s,b} hs[s]^T dgates_g[s]` `[G, Hp, Hp]`, one GEMM, operands in the operand dtype (the GRU's n
    gate multiplied by r first, as in the kernel)."""
    drecurrent = dgx
    if config.kernel == "gru":
        drecurrent = dgx.at[:, 2].multiply(acts[:, 0])
    op = config.operand_dtype
    return jnp.einsum("sbk,sgbn->gkn", hs[:-1].astype(op), drecurrent.astype(op),
                      preferred_element_type=jnp.float32), drecurrent


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _lstm(config, gx, w, h0, c0, lengths):
    hs, cs = _forward(config, False, gx, w, None, h0, c0, lengths)
    return hs, cs[-1]


def _lstm_fwd(config, gx, w, h0, c0, lengths):
    hs, cs, acts = _forward(config, True, gx, w, None, h0, c0, lengths)
    return (hs, cs[-1]), (w, acts, hs, cs, lengths)


def _lstm_bwd(config, residuals, cotangents):
    w, acts, hs, cs, lengths = residuals
    dhs, dc_last = cotangents
    dgx, dh, dc = _backward(config, w, acts, hs, cs, dhs, dc_last, lengths)
    dw, _ = _weight_gradient(config, dgx, acts, hs)
    return dgx, dw, dh[0], dc[0], None


_lstm.defvjp(_lstm_fwd, _lstm_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _gru(config, gx, w, bhn, h0, lengths):
    return _forward(config, False, gx, w, bhn, h0, None, lengths)[0]


def _gru_fwd(config, gx, w, bhn, h0, lengths):
    hs, acts = _forward(config, True, gx, w, bhn, h0, None, lengths)
    return hs, (w, acts, hs, lengths)


def _gru_bwd(config, residuals, dhs):
    w, acts, hs, lengths = residuals
    dgx, dh = _backward(config, w, acts, hs, None, dhs, None, lengths)
    dw, drecurrent = _weight_gradient(config, dgx, acts, hs)
    return dgx, dw, jnp.sum(drecurrent[:, 2], axis=(0, 1))[None], dh[0], None


_gru.defvjp(_gru_fwd, _gru_bwd)


# -- the entry point ----------------------------------------------------------------------------------------------
def _pad(x, shape):
    return jnp.pad(x, [(0, want - have) for have, want in zip(x.shape, shape, strict=True)])


def pallas_unroll(cell, params, xs, carry, lengths, reverse: bool, *, interpret: bool | None = None,
                  block_b: int = BLOCK_B, block_h: int = BLOCK_H):
    """`(final_carry, ys)` of `cell` (an `LSTM` or `GRU`: `fused_recurrence` "lstm"/"gru") over time-major `xs`
    `[time, batch, D]` from `carry`, with `unroll`'s semantics (`lengths` `[batch]` ints or None; `reverse`
    reverses each valid prefix in place); `ys` `[time, batch, H]`. `interpret`: None runs the Triton kernel on a
    GPU backend and interpret mode elsewhere."""
    kernel = getattr(type(cell), "fused_recurrence", None)
    if kernel not in KERNELS:
        raise ValueError(f"the Pallas kernels run LSTM and GRU cells, got {type(cell).__name__}")
    if cell.matmul_dtype not in OPERAND_DTYPES:
        raise ValueError(f"the Pallas kernels take matmul_dtype in {OPERAND_DTYPES}, got {cell.matmul_dtype!r}")
    if interpret is None:
        interpret = jax.default_backend() != "gpu"
    time, batch = xs.shape[:2]
    hidden, gates = cell.hidden_size, KERNELS[kernel]
    padded_b = -(-batch // block_b) * block_b
    config = Config(kernel=kernel, time=time, batch=padded_b, hidden=padded_hidden(hidden, block_h),
                    block_b=block_b, block_h=min(block_h, padded_hidden(hidden, block_h)), reverse=reverse,
                    operand_dtype=cell.matmul_dtype or "float32", interpret=interpret)
    hp = config.hidden
    if lengths is None:
        valid = None
        lengths = jnp.full((batch,), time, jnp.int32)
    else:
        lengths = jnp.clip(jnp.asarray(lengths).astype(jnp.int32), 0, time)
        valid = jnp.arange(time)[:, None] < lengths[None, :]  # [time, batch]
        xs = jnp.where(valid[:, :, None], xs, jnp.zeros_like(xs))  # padding reaches no arithmetic
    projected = cell.project_inputs(params, xs).astype(jnp.float32)  # [time, batch, G*H], one GEMM
    if reverse:
        projected = projected[::-1]  # loop order
    gx = _pad(jnp.transpose(projected.reshape(time, batch, gates, hidden), (0, 2, 1, 3)),
              (time, gates, padded_b, hp))
    w = _pad(jnp.transpose(params.weight_hh.astype(jnp.float32).reshape(gates, hidden, hidden), (0, 2, 1)),
             (gates, hp, hp))
    lengths_p = _pad(lengths, (padded_b,))
    h0 = _pad((carry.h if kernel == "lstm" else carry).astype(jnp.float32), (padded_b, hp))
    if kernel == "lstm":
        c0 = _pad(carry.c.astype(jnp.float32), (padded_b, hp))
        hs, c_last = _lstm(config, gx, w, h0, c0, lengths_p)
    else:
        bhn = _pad(params.bias_hh[2 * hidden:].astype(jnp.float32)[None], (1, hp))
        hs = _gru(config, gx, w, bhn, h0, lengths_p)
    hs = hs[:, :batch, :hidden]
    ys = hs[1:][::-1] if reverse else hs[1:]
    if valid is not None:
        ys = jnp.where(valid[:, :, None], ys, jnp.zeros_like(ys))
    if kernel == "lstm":
        return LSTMState(h=hs[-1], c=c_last[:batch, :hidden]), ys
    return hs[-1], ys
