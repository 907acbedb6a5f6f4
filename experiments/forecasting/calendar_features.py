"""Calendar covariates for forecasting: Informer's `timeF` encoding, each feature scaled to [-0.5, 0.5].

    minute of hour  m / 59 - 0.5      hour of day   h / 23 - 0.5      day of week  d / 6 - 0.5 (Monday = 0)
    day of month    (d - 1) / 30 - 0.5     day of year (d - 1) / 365 - 0.5     week of year (w - 1) / 52 - 0.5
    month of year   (m - 1) / 11 - 0.5

Which features a frequency gets follows Informer's `time_features` (`15min`/`10min`: all of minute, hour, day of
week, day of month, day of year; `h`: hour, day of week, day of month, day of year; `D`: day of week, month, year;
`W`: day of month, week of year; `M`: month of year). Yearly data has no calendar feature and raises.

Calendar values are known in advance for every future step, so feeding the targets' dates to a decoder does not leak
the future.

>>> import numpy as np
>>> dates = np.array(["2016-07-01T00:00", "2016-07-01T23:00"], dtype="datetime64[s]")
>>> calendar_features(dates, "h")[:, 0].tolist()   # hour of day
[-0.5, 0.5]
"""

from __future__ import annotations

import numpy as np

from rnnjax import _checks

_BY_FREQUENCY = {
    "15min": ("minute", "hour", "day_of_week", "day_of_month", "day_of_year"),
    "10min": ("minute", "hour", "day_of_week", "day_of_month", "day_of_year"),
    "h": ("hour", "day_of_week", "day_of_month", "day_of_year"),
    "D": ("day_of_week", "day_of_month", "day_of_year"),
    "W": ("day_of_month", "week_of_year"),
    "M": ("month",),
}


def feature_names(frequency: str) -> tuple[str, ...]:
    """The calendar features `calendar_features` returns for `frequency`, in column order."""
    if frequency == "Y":
        raise ValueError("yearly series have no calendar features; run without covariates")
    _checks.check_choice("frequency", frequency, tuple(_BY_FREQUENCY))
    return _BY_FREQUENCY[frequency]


def calendar_features(dates: np.ndarray, frequency: str) -> np.ndarray:
    """`dates` `datetime64` `[time]` -> float32 `[time, K]` in [-0.5, 0.5], columns `feature_names(frequency)`."""
    names = feature_names(frequency)
    if dates is None:
        raise ValueError("calendar features need dates; this series has no date column")
    dates = np.asarray(dates)
    if not np.issubdtype(dates.dtype, np.datetime64):
        raise TypeError(f"dates must be a datetime64 array, got dtype {dates.dtype}")
    day = dates.astype("datetime64[D]")
    day_index = day.astype(np.int64)
    month_start = dates.astype("datetime64[M]")
    year_start = dates.astype("datetime64[Y]")
    raw = {
        "minute": ((dates.astype("datetime64[m]") - dates.astype("datetime64[h]")).astype(np.int64), 59),
        "hour": ((dates.astype("datetime64[h]") - day).astype(np.int64), 23),
        "day_of_week": ((day_index + 3) % 7, 6),  # 1970-01-01 was a Thursday (3 with Monday = 0)
        "day_of_month": ((day - month_start.astype("datetime64[D]")).astype(np.int64), 30),
        "day_of_year": ((day - year_start.astype("datetime64[D]")).astype(np.int64), 365),
        "week_of_year": ((day - year_start.astype("datetime64[D]")).astype(np.int64) // 7, 52),
        "month": (month_start.astype(np.int64) % 12, 11),
    }
    columns = [raw[name][0] / raw[name][1] - 0.5 for name in names]
    return np.stack(columns, axis=-1).astype(np.float32)
