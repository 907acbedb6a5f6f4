"""Forecast errors over many batches of windows: MSE and MAE overall and per horizon step.

    mse = mean over (windows, steps, channels) of (ŷ - y)²        mse_by_step[h] = the same mean at step h only
    mae = mean of |ŷ - y|                                         mae_by_step[h] likewise

Sums are accumulated in float64 on the host, so the result does not depend on how the windows were batched (beyond
float64 rounding) and the overall mean equals the mean of the per-step means (every step has the same count).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class ErrorSums(NamedTuple):
    """Running sums per horizon step: `squared` and `absolute` `[H]`, `count` (windows × channels per step)."""

    squared: np.ndarray
    absolute: np.ndarray
    count: int


def accumulate_errors(sums: ErrorSums | None, predictions, targets) -> ErrorSums:
    """Adds one batch of `predictions` and `targets` `[batch, H, C]` to `sums` (None starts from zero)."""
    predictions, targets = np.asarray(predictions, np.float64), np.asarray(targets, np.float64)
    if predictions.shape != targets.shape or predictions.ndim != 3:
        raise ValueError(f"predictions and targets must both be [batch, horizon, channels] of one shape, got "
                         f"{predictions.shape} and {targets.shape}")
    error = predictions - targets
    new = ErrorSums(np.sum(error**2, axis=(0, 2)), np.sum(np.abs(error), axis=(0, 2)),
                    error.shape[0] * error.shape[2])
    if sums is None:
        return new
    if sums.squared.shape != new.squared.shape:
        raise ValueError(f"horizon changed between batches: {sums.squared.shape[0]} then {new.squared.shape[0]}")
    return ErrorSums(sums.squared + new.squared, sums.absolute + new.absolute, sums.count + new.count)


def summarize_errors(sums: ErrorSums) -> dict:
    """`{"mse", "mae", "mse_by_step", "mae_by_step"}` as Python floats and lists."""
    if sums is None or sums.count == 0:
        raise ValueError("no windows were evaluated")
    mse_by_step, mae_by_step = sums.squared / sums.count, sums.absolute / sums.count
    return {"mse": float(mse_by_step.mean()), "mae": float(mae_by_step.mean()),
            "mse_by_step": mse_by_step.tolist(), "mae_by_step": mae_by_step.tolist()}
