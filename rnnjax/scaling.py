"""Normalisation for forecasting, at two levels.

Dataset level (`fit_scaler`, `scale`, `unscale`): z-normalisation with the mean and standard deviation of the
**training rows only**, per feature, as the Informer/Autoformer/DLinear protocol does; metrics are then reported
on the normalised scale. NumPy, float64, applied once to the whole series.

    z = (x - mean_train) / std_train          x = z * std_train + mean_train

Instance level (`revin_normalize`, `revin_denormalize`): reversible instance normalisation (RevIN, Kim et al.,
ICLR 2022), inside the model, per window and per series, with a learnable affine map:

    x̂ = γ (x - μ) / σ + β,   μ, σ over the look-back's time axis,  σ = sqrt(var + eps)
    ŷ = (y' - β) / (γ + eps) · σ + μ     on the model's output y'

It removes each window's level and scale, so a model trained on one regime forecasts another (ETT's test months are
warmer than its training months); the statistics come from the look-back only, never the targets.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class ScalerStats(NamedTuple):
    """Per-feature `mean` and `std` `[features]` of the training rows."""

    mean: np.ndarray
    std: np.ndarray


def fit_scaler(values: np.ndarray, train_rows: tuple[int, int]) -> ScalerStats:
    """Statistics of `values[begin:end]` `[T, F]` for `train_rows = (begin, end)`: the only rows it reads.

    A constant feature (std 0) gets std 1 (sklearn's `StandardScaler` convention), so it maps to 0 instead of NaN.
    """
    values = np.asarray(values)
    if values.ndim != 2:
        raise ValueError(f"values must be [time, features], got shape {values.shape}")
    begin, end = train_rows
    if not 0 <= begin < end <= values.shape[0]:
        raise ValueError(f"train_rows must satisfy 0 <= begin < end <= {values.shape[0]}, got {train_rows}")
    train = values[begin:end].astype(np.float64)
    std = train.std(axis=0)
    return ScalerStats(mean=train.mean(axis=0), std=np.where(std > 0, std, 1.0))


def _check_features(stats: ScalerStats, values) -> None:
    if np.shape(values)[-1] != stats.mean.shape[0]:
        raise ValueError(f"the scaler was fit on {stats.mean.shape[0]} features, got values with "
                         f"{np.shape(values)[-1]} in the last axis (shape {np.shape(values)})")


def scale(stats: ScalerStats, values: np.ndarray) -> np.ndarray:
    """`(values - mean) / std` over the last (feature) axis; any leading shape."""
    _check_features(stats, values)
    return (np.asarray(values) - stats.mean) / stats.std


def unscale(stats: ScalerStats, values: np.ndarray) -> np.ndarray:
    """The inverse of `scale`: `values * std + mean`."""
    _check_features(stats, values)
    return np.asarray(values) * stats.std + stats.mean


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
