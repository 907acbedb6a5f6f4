"""Reversible instance normalisation (RevIN, Kim et al., ICLR 2022), inside a forecaster, per window and per
series, with a learnable affine map:

    x̂ = γ (x - μ) / σ + β,   μ, σ over the look-back's time axis,  σ = sqrt(var + eps)
    ŷ = (y' - β) / (γ + eps) · σ + μ     on the model's output y'

It removes each window's level and scale, so a model trained on one regime forecasts another (ETT's test months are
warmer than its training months); the statistics come from the look-back only, never the targets.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class RevINParams(NamedTuple):
    """RevIN's affine map, one `weight` (γ) and `bias` (β) per series `[C]`."""

    weight: jax.Array
    bias: jax.Array


class RevINStats(NamedTuple):
    """One window's statistics, `mean` and `std` `[batch, 1, C]`, kept to undo the normalisation."""

    mean: jax.Array
    std: jax.Array


def revin_init(num_series: int, dtype=jnp.float32) -> RevINParams:
    """γ = 1, β = 0: RevIN starts as plain instance normalisation."""
    return RevINParams(jnp.ones((num_series,), dtype), jnp.zeros((num_series,), dtype))


def revin_normalize(params: RevINParams, xs: jax.Array, eps: float = 1e-5) -> tuple[jax.Array, RevINStats]:
    """`xs` `[batch, time, C]` -> `(x̂ [batch, time, C], stats)`; see the module docstring for the equations."""
    mean = jnp.mean(xs, axis=1, keepdims=True)
    std = jnp.sqrt(jnp.var(xs, axis=1, keepdims=True) + eps)
    normalized = (xs - mean) / std
    return normalized * params.weight[None, None, :] + params.bias[None, None, :], RevINStats(mean, std)


def revin_denormalize(params: RevINParams, stats: RevINStats, ys: jax.Array, eps: float = 1e-5) -> jax.Array:
    """`ys` `[batch, horizon, C]` in the normalised space -> the original scale of the window."""
    ys = (ys - params.bias[None, None, :]) / (params.weight[None, None, :] + eps * eps)
    return ys * stats.std + stats.mean
