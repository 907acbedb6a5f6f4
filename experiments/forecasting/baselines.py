"""Forecasting baselines every results table shows, on the same windows as the models.

All take `inputs` `[batch, L, C]` (the look-back) and return `[batch, H, C]`; each series (channel) is forecast
from its own past only.

- `repeat_last`:     ŷ_{t+h} = x_t                          (the random-walk forecast)
- `seasonal_naive`:  ŷ_{t+h} = x_{t+h-p·ceil(h/p)}            (the last observed season, repeated; p = period)
- `linear_forecast`: ŷ = W x + b, one `W` [H, L] and `b` [H] shared by every channel, fit by least squares on the
  training windows (`fit_linear`). This is the closed-form optimum of the DLinear family's function class: DLinear
  (Zeng et al., AAAI 2023) decomposes x into a moving-average trend and a remainder and maps each with a linear
  layer, which is still one linear map of x; DLinear trains it with Adam, this solves for it. With
  `subtract_last=True` the last look-back value is subtracted from inputs and targets and added back (NLinear).

    fit:  minimise Σ_windows Σ_channels ||W x + b - y||² + ridge ||W||²
          via the normal equations [X 1]^T [X 1] [W b]^T = [X 1]^T Y, accumulated in float64 over chunks

On long look-backs of smooth series the unpenalised system is badly conditioned (neighbouring inputs are nearly
collinear), so the plain least-squares map extrapolates noisily at long horizons; the experiment picks `ridge` on the
validation windows (`normal_equations` once, `solve_linear` per penalty), as DLinear's early stopping regularises.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from rnnjax import _checks


def _check_inputs(inputs) -> np.ndarray:
    inputs = np.asarray(inputs)
    if inputs.ndim != 3:
        raise ValueError(f"inputs must be [batch, lookback, channels], got shape {inputs.shape}")
    return inputs


def repeat_last(inputs: np.ndarray, horizon: int) -> np.ndarray:
    """The last look-back value of each channel, repeated `horizon` times: `[B, L, C] -> [B, H, C]`."""
    inputs = _check_inputs(inputs)
    horizon = _checks.check_positive_int("horizon", horizon)
    return np.repeat(inputs[:, -1:, :], horizon, axis=1)


def seasonal_naive(inputs: np.ndarray, horizon: int, period: int) -> np.ndarray:
    """The last `period` look-back steps repeated forward: `ŷ_{t+h} = x_{t+h-p·ceil(h/p)}`. Needs `period <= L`."""
    inputs = _check_inputs(inputs)
    horizon = _checks.check_positive_int("horizon", horizon)
    period = _checks.check_positive_int("period", period)
    lookback = inputs.shape[1]
    if period > lookback:
        raise ValueError(f"seasonal_naive needs period <= lookback, got period {period} and lookback {lookback}")
    steps = np.arange(1, horizon + 1)
    source = lookback - 1 + steps - period * np.ceil(steps / period).astype(np.int64)
    return inputs[:, source, :]


class LinearParams(NamedTuple):
    """A linear forecaster: `weight` [H, L], `bias` [H], shared by all channels; `subtract_last` (NLinear)."""

    weight: np.ndarray
    bias: np.ndarray
    subtract_last: bool


def _design(inputs: np.ndarray, subtract_last: bool) -> tuple[np.ndarray, np.ndarray]:
    """`[B, L, C]` -> rows `[B*C, L]` (one per window and channel) and the per-row offset `[B*C, 1]`."""
    rows = np.transpose(inputs, (0, 2, 1)).reshape(-1, inputs.shape[1]).astype(np.float64)
    offset = rows[:, -1:] if subtract_last else np.zeros((rows.shape[0], 1))
    return rows - offset, offset


class NormalEquations(NamedTuple):
    """`gram = [X 1]^T [X 1]` `[L+1, L+1]` and `cross = [X 1]^T Y` `[L+1, H]`, float64, summed over windows and
    channels: everything least squares needs, so several ridge penalties cost one pass over the data."""

    gram: np.ndarray
    cross: np.ndarray
    subtract_last: bool


def normal_equations(batches, subtract_last: bool = False) -> NormalEquations:
    """Accumulates `NormalEquations` over an iterable of `(inputs [B, L, C], targets [B, H, C])` chunks (or one
    tuple)."""
    if isinstance(batches, tuple) and len(batches) == 2 and hasattr(batches[0], "shape"):
        batches = [batches]
    gram, cross = None, None
    for inputs, targets in batches:
        inputs, targets = _check_inputs(inputs), _check_inputs(targets)
        if inputs.shape[0] != targets.shape[0] or inputs.shape[2] != targets.shape[2]:
            raise ValueError(f"inputs [B, L, C] and targets [B, H, C] must share B and C, got {inputs.shape} and "
                             f"{targets.shape}")
        rows, offset = _design(inputs, subtract_last)
        design = np.concatenate([rows, np.ones((rows.shape[0], 1))], axis=1)
        outputs = np.transpose(targets, (0, 2, 1)).reshape(-1, targets.shape[1]).astype(np.float64) - offset
        gram = design.T @ design if gram is None else gram + design.T @ design
        cross = design.T @ outputs if cross is None else cross + design.T @ outputs
    if gram is None:
        raise ValueError("fit_linear got no batches")
    return NormalEquations(gram, cross, bool(subtract_last))


def solve_linear(equations: NormalEquations, ridge: float = 0.0) -> LinearParams:
    """The least-squares `LinearParams` for `equations` with penalty `ridge` >= 0 on the weight (not the bias)."""
    ridge = _checks.check_finite_float("ridge", ridge)
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    gram, cross = equations.gram, equations.cross
    # With subtract_last the last input column is identically 0: solve without it and give it weight 0 (it
    # changes no forecast), so the system stays non-singular.
    keep = np.ones(gram.shape[0], bool)
    if equations.subtract_last:
        keep[-2] = False
    penalty = np.full(gram.shape[0], ridge)
    penalty[-1] = 0.0  # the bias is not shrunk
    system = gram[np.ix_(keep, keep)] + np.diag(penalty[keep])
    solution = np.zeros_like(cross)
    try:
        solution[keep] = np.linalg.solve(system, cross[keep])
    except np.linalg.LinAlgError:  # rank-deficient data (e.g. a constant series): the minimum-norm solution
        solution[keep] = np.linalg.lstsq(system, cross[keep], rcond=None)[0]
    return LinearParams(weight=solution[:-1].T, bias=solution[-1], subtract_last=equations.subtract_last)


def fit_linear(batches, ridge: float = 0.0, subtract_last: bool = False) -> LinearParams:
    """Least-squares `LinearParams` from an iterable of `(inputs [B, L, C], targets [B, H, C])` chunks (or one
    tuple): `solve_linear(normal_equations(batches, subtract_last), ridge)`; see the module docstring."""
    return solve_linear(normal_equations(batches, subtract_last), ridge)


def linear_forecast(params: LinearParams, inputs: np.ndarray) -> np.ndarray:
    """`[B, L, C] -> [B, H, C]` with the fitted map: `ŷ = W x + b` per channel (plus the last value for NLinear)."""
    inputs = _check_inputs(inputs)
    if inputs.shape[1] != params.weight.shape[1]:
        raise ValueError(f"the linear forecaster was fit for lookback {params.weight.shape[1]}, got inputs with "
                         f"{inputs.shape[1]} steps")
    rows, offset = _design(inputs, params.subtract_last)
    outputs = rows @ params.weight.T + params.bias[None, :] + offset  # [B*C, H]
    batch, _, channels = inputs.shape
    return np.transpose(outputs.reshape(batch, channels, -1), (0, 2, 1))
