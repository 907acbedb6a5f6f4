"""Baselines: the linear model equals NumPy's least squares; naive forecasts index the right steps."""

import numpy as np
import pytest

from experiments.forecasting import baselines


def test_linear_matches_numpy_least_squares():
    rng = np.random.default_rng(0)
    inputs, targets = rng.normal(size=(50, 6, 2)), rng.normal(size=(50, 3, 2))
    params = baselines.fit_linear([(inputs[:20], targets[:20]), (inputs[20:], targets[20:])])  # chunked
    rows = np.concatenate([np.transpose(inputs, (0, 2, 1)).reshape(-1, 6), np.ones((100, 1))], axis=1)
    outputs = np.transpose(targets, (0, 2, 1)).reshape(-1, 3)
    expected = np.linalg.lstsq(rows, outputs, rcond=None)[0]
    np.testing.assert_allclose(params.weight, expected[:-1].T, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(params.bias, expected[-1], rtol=1e-8, atol=1e-10)
    predictions = baselines.linear_forecast(params, inputs)
    np.testing.assert_allclose(np.transpose(predictions, (0, 2, 1)).reshape(-1, 3), rows @ expected, atol=1e-10)


def test_linear_recovers_an_exact_map_and_nlinear():
    rng = np.random.default_rng(1)
    weight = rng.normal(size=(2, 5))
    inputs = rng.normal(size=(40, 5, 1))
    targets = np.einsum("hl,blc->bhc", weight, inputs) + 0.5
    params = baselines.fit_linear((inputs, targets))
    np.testing.assert_allclose(baselines.linear_forecast(params, inputs), targets, atol=1e-9)
    shifted = baselines.fit_linear((inputs + 10.0, targets + 10.0), subtract_last=True)  # singular system: ok
    assert np.isfinite(shifted.weight).all()
    ridge = baselines.fit_linear((inputs, targets), ridge=1e3)
    assert np.abs(ridge.weight).sum() < np.abs(params.weight).sum()
    with pytest.raises(ValueError, match="fit for lookback 5"):
        baselines.linear_forecast(params, inputs[:, :4])


def test_naive_forecasts():
    inputs = np.arange(10.0)[None, :, None]
    np.testing.assert_array_equal(baselines.repeat_last(inputs, 3)[0, :, 0], [9, 9, 9])
    np.testing.assert_array_equal(baselines.seasonal_naive(inputs, 5, 3)[0, :, 0], [7, 8, 9, 7, 8])
    np.testing.assert_array_equal(baselines.seasonal_naive(inputs, 2, 1)[0, :, 0], [9, 9])
    with pytest.raises(ValueError, match="period <= lookback"):
        baselines.seasonal_naive(inputs, 2, 11)
    with pytest.raises(ValueError, match=r"\[batch, lookback, channels\]"):
        baselines.repeat_last(np.zeros(4), 2)
