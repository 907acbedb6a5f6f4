"""The time loop: a cell run over a sequence on `jax.lax.scan`."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax import _checks
from rnnjax.cells import compute_dtype


def _check_lengths(lengths: Any, batch_size: int | None, time: int) -> jax.Array:
    """`lengths` as an int array `[batch]` (a scalar for unbatched input), range-checked when concrete."""
    expected_shape = () if batch_size is None else (batch_size,)
    if not hasattr(lengths, "dtype"):
        lengths = np.asarray(lengths)
    if not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise TypeError(f"lengths must be an integer array, got dtype {lengths.dtype}")
    if tuple(lengths.shape) != expected_shape:
        what = "a scalar for unbatched inputs" if batch_size is None else f"shape ({batch_size},) = [batch]"
        raise ValueError(f"lengths must be {what}, got shape {tuple(lengths.shape)}")
    if _checks.is_concrete(lengths):
        values = np.asarray(lengths)
        if values.size and (values.min() < 0 or values.max() > time):
            raise ValueError(f"lengths must lie in [0, {time}] (the time axis), got min {values.min()} "
                             f"and max {values.max()}")
    return jnp.asarray(lengths)


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
):
    """Runs `cell` over the time axis of `xs`: `(ys, final_carry)`.

    Args:
      cell: a cell spec (`SimpleRNN`, `LSTM`, `GRU`, or anything with the cell contract).
      params: `cell.init(key, input_size)`.
      xs: `[batch, time, features]`, or `[time, batch, features]` with `time_major=True`, or unbatched
        `[time, features]`. Any floating dtype; bfloat16 is computed with float32 carries and accumulation.
      carry: initial carry shaped like `cell.initial_carry((batch,))` (`(,)` when unbatched); zeros if None.
      lengths: int `[batch]` (a scalar when unbatched), each in [0, time]. PyTorch packed-sequence semantics:
        outputs at `t >= length` are exactly zero and `final_carry` is the carry after each sequence's last valid
        step (the initial carry for length 0). Concrete lengths out of range raise; under `jit` they cannot be
        checked and are effectively clipped to [0, time].
      reverse: run from the last valid step to the first. With `lengths`, each sequence's valid prefix is
        reversed in place (padding stays at the end), as PyTorch's bidirectional layers do on packed input;
        `final_carry` is then the carry after `t = 0`.
      time_major: `xs` (and `ys`) are `[time, batch, features]`.
      unroll: `lax.scan` unroll factor; changes speed and compile time, never results.
      remat: recompute each step in the backward pass (`jax.checkpoint`), storing only carries: memory
        O(time * batch * hidden) of carries instead of every gate activation, for long sequences.

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
        unbatched = xs.ndim == 2
        # The loop always runs time-major [time, batch, ...]: scan slices the leading axis.
        xs_time_major = xs[:, None] if unbatched else (xs if time_major else jnp.swapaxes(xs, 0, 1))
        time, batch_size = xs_time_major.shape[:2]

        dtype = compute_dtype(xs.dtype, params.weight_hh.dtype)
        if carry is None:
            carry = cell.initial_carry((batch_size,), dtype)
        else:
            carry = cell.check_carry(carry, () if unbatched else (batch_size,))
            if unbatched:
                carry = jax.tree.map(lambda leaf: leaf[None], carry)
        carry_dtypes = jax.tree.map(lambda leaf: leaf.dtype, carry)

        projected = cell.project_inputs(params, xs_time_major)  # one GEMM over all steps: [time, batch, G*H]

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

        if lengths is None:
            valid = None
        else:
            lengths = _check_lengths(lengths, None if unbatched else batch_size, time)
            lengths = jnp.reshape(lengths, (batch_size,))
            # A reverse scan starts at t = time - 1; holding the carry while t >= length makes its first real
            # update at t = length - 1, which reverses each valid prefix in place without gathering.
            valid = jnp.arange(time)[:, None] < lengths[None, :]

        if remat:
            step = jax.checkpoint(step)
        final_carry, ys = jax.lax.scan(step, carry, (projected, valid), reverse=reverse, unroll=unroll)

        if unbatched:
            return ys[:, 0], jax.tree.map(lambda leaf: leaf[0], final_carry)
        return (ys if time_major else jnp.swapaxes(ys, 0, 1)), final_carry
