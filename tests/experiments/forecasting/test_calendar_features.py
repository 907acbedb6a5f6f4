"""Calendar covariates: Informer's timeF values and the frequency table."""

import numpy as np
import pytest

from experiments.forecasting.calendar_features import calendar_features, feature_names


def test_hourly_features():
    dates = np.array(["2016-07-04T13:00", "2016-12-31T23:00"], dtype="datetime64[s]")  # a Monday; Dec 31 (leap)
    features = calendar_features(dates, "h")
    assert feature_names("h") == ("hour", "day_of_week", "day_of_month", "day_of_year")
    np.testing.assert_allclose(features[0], [13 / 23 - 0.5, -0.5, 3 / 30 - 0.5, 185 / 365 - 0.5], rtol=1e-6)
    np.testing.assert_allclose(features[1, :2], [0.5, 5 / 6 - 0.5], rtol=1e-6)
    assert features.dtype == np.float32 and np.all(np.abs(features) <= 0.5 + 1e-6)


def test_minute_monthly_and_errors():
    dates = np.array(["2016-07-01T00:45"], dtype="datetime64[s]")
    assert calendar_features(dates, "15min")[0, 0] == pytest.approx(45 / 59 - 0.5)
    assert calendar_features(np.array(["2016-12-01"], dtype="datetime64[s]"), "M")[0, 0] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="yearly series have no calendar features"):
        calendar_features(dates, "Y")
    with pytest.raises(TypeError, match="datetime64"):
        calendar_features(np.array([1.0]), "h")
