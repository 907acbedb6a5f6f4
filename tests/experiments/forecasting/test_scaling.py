"""Dataset z-scores fit on the training rows only and round-trip."""

import numpy as np
import pytest

from experiments.forecasting.scaling import fit_scaler, scale, unscale


def test_scaler_reads_only_training_rows():
    rng = np.random.default_rng(0)
    values = rng.normal(3.0, 2.0, (100, 3))
    stats = fit_scaler(values, (0, 60))
    np.testing.assert_allclose(stats.mean, values[:60].mean(0))
    np.testing.assert_allclose(stats.std, values[:60].std(0))
    changed = values.copy()
    changed[60:] += 1000.0  # validation/test rows never move the statistics
    np.testing.assert_array_equal(fit_scaler(changed, (0, 60)).mean, stats.mean)
    z = scale(stats, values)
    np.testing.assert_allclose(z[:60].mean(0), 0.0, atol=1e-12)
    np.testing.assert_allclose(unscale(stats, z), values, rtol=1e-12, atol=1e-12)


def test_constant_feature_and_bad_shapes():
    stats = fit_scaler(np.ones((10, 1)), (0, 10))
    assert stats.std[0] == 1.0
    with pytest.raises(ValueError, match="fit on 1 features"):
        scale(stats, np.ones((4, 2)))
    with pytest.raises(ValueError, match="train_rows"):
        fit_scaler(np.ones((10, 1)), (0, 11))
