"""The LSTM on cuDNN through `jax.experimental.rnn`, for `unroll`'s "cudnn" path (NVIDIA GPUs, float32).

cuDNN's LSTM has PyTorch's equations, gate order (i, f, g, o) and two biases, so `LSTMParams` pack into its one flat
weight vector as they stand (`pack_lstm_weights`; the layout is `jax.experimental.rnn`'s module docstring: every
pseudo-layer's `W_ih`, `W_hh` row-major, then every pseudo-layer's `b_ih`, `b_hh`, a bidirectional layer being two
pseudo-layers, forward first). `unroll` runs one layer in one direction per call, so `cudnn_unroll` packs one
pseudo-layer; the packing itself takes any number (stacked, bidirectional), as its round-trip test does.

What `cudnn_unroll` adds around `jax.experimental.rnn.lstm`, so that it computes exactly what the XLA scan does:

- `lengths` become cuDNN's `seq_lengths` (int32, right-padded: every rnnjax batch is); padded inputs are zeroed
  first, so NaN or inf in the padding reaches no arithmetic and no gradient, and outputs past each length are
  zeroed after (cuDNN fills them with 0 too, but nothing here depends on it).
- A length of 0 keeps the initial carry: cuDNN is given length 1 for it (not every cuDNN version accepts 0, and
  `lstm_ref` reads the carry at `length - 1`) and its row is replaced by the initial carry after.
- `reverse` (cuDNN only reverses inside a bidirectional layer) reverses each valid prefix in place before and after
  a forward run: the same results as the XLA path's reverse scan, padding kept at the end.
- Under `vmap` the cuDNN calls run once per mapped element (`jax.custom_batching.sequential_vmap`): cuDNN's
  primitives have no batching rule, and rnnjax's own experiments vmap over seeds.

jax#15183 reported NaN gradients and bidirectional mismatches between `lstm` and `lstm_ref`; both were fixed
upstream (the backward pass now starts from a zeroed weight gradient, and `lstm_ref` reverses with the padding
kept at the end). The installed JAX carries the fixes; `tests/test_cudnn.py` checks the packing and this wrapper
against `lstm_ref` on CPU (where cuDNN has no lowering) and `benchmarks/gpu_check.py` checks cuDNN itself against
PyTorch on a GPU. cuDNN's matmul precision follows JAX's (`jax_default_matmul_precision`: TF32 by default,
"highest" for full float32).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.experimental import rnn as jax_rnn

from rnnjax.cells import LSTMParams
from rnnjax.cells import LSTMState

IMPLEMENTATIONS = ("auto", "cudnn", "reference")  # "auto": cuDNN on a GPU, `lstm_ref` elsewhere


def pack_lstm_weights(layers: Sequence[LSTMParams]) -> jax.Array:
    """cuDNN's flat float32 weight vector of the pseudo-layers `layers` (for a bidirectional stack: layer 0 forward,
    layer 0 reverse, layer 1 forward, ...): all `(W_ih, W_hh)` pairs, then all `(b_ih, b_hh)` pairs."""
    weights = [w.reshape(-1) for p in layers for w in (p.weight_ih, p.weight_hh)]
    biases = [b.reshape(-1) for p in layers for b in (p.bias_ih, p.bias_hh)]
    return jnp.concatenate(weights + biases).astype(jnp.float32)


def unpack_lstm_weights(weights: jax.Array, input_size: int, hidden_size: int, num_layers: int = 1,
                        bidirectional: bool = False) -> list[LSTMParams]:
    """The inverse of `pack_lstm_weights`, through `jax.experimental.rnn.unpack_lstm_weights`."""
    w_ih, w_hh, b_ih, b_hh = jax_rnn.unpack_lstm_weights(weights, input_size, hidden_size, num_layers,
                                                         bidirectional)
    return [LSTMParams(w_ih[i], w_hh[i], b_ih[i], b_hh[i]) for i in range(len(w_ih))]


def num_weights(input_size: int, hidden_size: int, num_layers: int = 1, bidirectional: bool = False) -> int:
    """The length of the packed vector (`jax.experimental.rnn.get_num_params_in_lstm`)."""
    return jax_rnn.get_num_params_in_lstm(input_size, hidden_size, num_layers, bidirectional)


def reverse_valid(x: jax.Array, lengths: jax.Array) -> jax.Array:
    """`x` `[batch, time, ...]` with each row's first `lengths[b]` steps reversed in place, padding kept at the end
    (its own inverse)."""
    time = x.shape[1]
    steps = jnp.arange(time)[None, :]
    index = jnp.where(steps < lengths[:, None], lengths[:, None] - 1 - steps, steps)
    index = index.reshape(index.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, index, axis=1)


# -- the kernel call, with a hand-written VJP so both passes can be looped under vmap -------------------------------
def _reference_forward(input_size, hidden_size, x, h0, c0, w, seq_lengths):
    w_ih, w_hh, b_ih, b_hh = jax_rnn.unpack_lstm_weights(w, input_size, hidden_size, 1, False)
    return jax_rnn.lstm_ref(x, h0, c0, w_ih, w_hh, b_ih, b_hh, seq_lengths, input_size, hidden_size, 1, 0.0, False)


@functools.cache
def _lstm(implementation: str, input_size: int, hidden_size: int):
    """`lstm(x, h0, c0, w, seq_lengths) -> (y, h_n, c_n)`, one layer, one direction, batch-major, with a VJP whose
    forward and backward passes are each looped over a vmapped axis (`sequential_vmap`)."""
    if implementation == "cudnn":
        def fwd(x, h0, c0, w, seq_lengths):
            return jax_rnn.lstm_fwd(x, h0, c0, w, seq_lengths, input_size=input_size, hidden_size=hidden_size,
                                    num_layers=1, dropout=0.0, bidirectional=False, precision=None)

        def bwd(residuals, cotangents):
            return jax_rnn.lstm_bwd(input_size, hidden_size, 1, 0.0, False, None, residuals, tuple(cotangents))[:4]
    else:
        forward = functools.partial(_reference_forward, input_size, hidden_size)

        def fwd(x, h0, c0, w, seq_lengths):
            return forward(x, h0, c0, w, seq_lengths), (x, h0, c0, w, seq_lengths)

        def bwd(residuals, cotangents):
            *inputs, seq_lengths = residuals
            return jax.vjp(lambda *a: forward(*a, seq_lengths), *inputs)[1](tuple(cotangents))

    fwd_looped = jax.custom_batching.sequential_vmap(fwd)
    bwd_looped = jax.custom_batching.sequential_vmap(bwd)

    @jax.custom_vjp
    def lstm(x, h0, c0, w, seq_lengths):
        return fwd_looped(x, h0, c0, w, seq_lengths)[0]

    def lstm_bwd(residuals, cotangents):
        return (*bwd_looped(residuals, cotangents), None)  # seq_lengths: integers, no cotangent

    lstm.defvjp(fwd_looped, lstm_bwd)
    return lstm


def cudnn_unroll(params: LSTMParams, xs: jax.Array, carry: LSTMState, lengths, reverse: bool,
                 implementation: str = "auto"):
    """`(final_carry, ys)` of one LSTM layer over time-major `xs` `[time, batch, D]` from `carry`, with rnnjax's
    packed-sequence semantics (`lengths` `[batch]` ints or None; `reverse` reverses each valid prefix); `ys`
    `[time, batch, H]`. `implementation`: "cudnn" (`jax.experimental.rnn.lstm`, GPU only), "reference" (its
    `lstm_ref`, a `lax.scan`: the same wrapper on CPU, for tests), or "auto" (cuDNN on a GPU backend)."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
    if implementation == "auto":
        implementation = "cudnn" if jax.default_backend() == "gpu" else "reference"
    time, batch = xs.shape[:2]
    x = jnp.swapaxes(xs, 0, 1).astype(jnp.float32)  # cuDNN's layout here is batch-major
    if lengths is None:
        lengths = jnp.full((batch,), time, jnp.int32)
        valid = None
    else:
        lengths = jnp.clip(jnp.asarray(lengths).astype(jnp.int32), 0, time)
        valid = jnp.arange(time)[None, :] < lengths[:, None]  # [batch, time]
        x = jnp.where(valid[:, :, None], x, jnp.zeros_like(x))  # padding reaches no arithmetic, whatever it holds
    if reverse:
        x = reverse_valid(x, lengths)
    w = pack_lstm_weights([params])
    lstm = _lstm(implementation, x.shape[-1], params.weight_hh.shape[1])
    y, h_n, c_n = lstm(x, carry.h[None].astype(jnp.float32), carry.c[None].astype(jnp.float32), w,
                       jnp.maximum(lengths, 1))
    if reverse:
        y = reverse_valid(y, lengths)
    if valid is not None:
        y = jnp.where(valid[:, :, None], y, jnp.zeros_like(y))
    started = (lengths > 0)[:, None]
    final = LSTMState(h=jnp.where(started, h_n[0], carry.h), c=jnp.where(started, c_n[0], carry.c))
    return final, jnp.swapaxes(y, 0, 1)
