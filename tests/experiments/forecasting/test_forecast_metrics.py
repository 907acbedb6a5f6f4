"""Forecast errors: batching does not change the result; per-step means average to the overall mean."""

import numpy as np
import pytest

from experiments.forecasting.metrics import accumulate_errors, summarize_errors


def test_batched_equals_whole_and_by_step():
    rng = np.random.default_rng(0)
    predictions, targets = rng.normal(size=(10, 4, 3)), rng.normal(size=(10, 4, 3))
    whole = summarize_errors(accumulate_errors(None, predictions, targets))
    sums = None
    for begin in range(0, 10, 3):
        sums = accumulate_errors(sums, predictions[begin:begin + 3], targets[begin:begin + 3])
    batched = summarize_errors(sums)
    assert whole["mse"] == pytest.approx(np.mean((predictions - targets) ** 2))
    assert whole["mae"] == pytest.approx(np.mean(np.abs(predictions - targets)))
    np.testing.assert_allclose(batched["mse_by_step"], np.mean((predictions - targets) ** 2, axis=(0, 2)))
    assert batched["mse"] == pytest.approx(whole["mse"])


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="one shape"):
        accumulate_errors(None, np.zeros((2, 3, 1)), np.zeros((2, 4, 1)))
