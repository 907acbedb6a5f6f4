"""Dataset-level normalisation for forecasting (`fit_scaler`, `scale`, `unscale`): z-normalisation with the mean
and standard deviation of the **training rows only**, per feature, as the Informer/Autoformer/DLinear protocol
does; metrics are then reported on the normalised scale. NumPy, float64, applied once to the whole series.

    z = (x - mean_train) / std_train          x = z * std_train + mean_train

The instance level (RevIN, inside the model) is `rnnjax.models.revin`.
"""

from __future__ import annotations

from typing import NamedTuple

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
