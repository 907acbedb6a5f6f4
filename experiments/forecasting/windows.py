"""Train/valid/test splits and sliding forecasting windows that never leak the future.

A window starting at row `s` reads the look-back `inputs = values[s : s + L]` and predicts
`targets = values[s + L : s + L + H]`: its inputs end strictly before its targets. A window belongs to the split
that holds **all of its targets**; its inputs may look back into the previous split (a validation window's first
inputs are the last training rows, as in Informer's loader) but never forward. For a split of rows `[begin, end)`:

    starts = max(begin - L, 0), ..., end - L - H           count = end - H - max(begin, L) + 1

(for the training split, `begin = 0`: `count = end - L - H + 1`; for the others, `begin >= L`:
`count = end - begin - H + 1`). These are exactly the windows of Informer/Autoformer/DLinear's `Dataset_ETT_hour`
and `Dataset_Custom` (`len(data) - seq_len - pred_len + 1` over `data = values[begin - L : end]`).

Split protocols (`split_ranges`):

- `ett_hour`: 12/4/4 months of 30 days: train `[0, 8640)`, valid `[8640, 11520)`, test `[11520, 14400)` (hours);
  the last ~4 months of the 20-month ETT files are unused, as in the papers.
- `ett_minute`: the same months at 15 minutes: `[0, 34560)`, `[34560, 46080)`, `[46080, 57600)`.
- `ratio`: Autoformer/DLinear's `Dataset_Custom`: `train = int(0.7 n)`, `test = int(0.2 n)`, valid the rest.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from rnnjax import _checks

SPLIT_NAMES = ("train", "valid", "test")


class SplitRanges(NamedTuple):
    """Row ranges `(begin, end)` holding each split's own rows (its targets)."""

    train: tuple[int, int]
    valid: tuple[int, int]
    test: tuple[int, int]


def split_ranges(protocol: str, num_rows: int) -> SplitRanges:
    """The rows of each split under `protocol` ("ett_hour" | "ett_minute" | "ratio") for a series of `num_rows`."""
    _checks.check_choice("protocol", protocol, ("ett_hour", "ett_minute", "ratio"))
    num_rows = _checks.check_positive_int("num_rows", num_rows)
    if protocol == "ratio":
        num_train, num_test = int(num_rows * 0.7), int(num_rows * 0.2)
        borders = (0, num_train, num_rows - num_test, num_rows)
    else:
        month = 30 * 24 * (4 if protocol == "ett_minute" else 1)  # 30-day months, as in Informer's loader
        borders = (0, 12 * month, 16 * month, 20 * month)
        if num_rows < borders[-1]:
            raise ValueError(f"protocol {protocol!r} needs at least {borders[-1]} rows (20 months), got {num_rows}")
    return SplitRanges(*((borders[i], borders[i + 1]) for i in range(3)))


def count_windows(split: tuple[int, int], lookback: int, horizon: int) -> int:
    """How many windows have all targets in `split = (begin, end)`: `end - H - max(begin, L) + 1` (or 0)."""
    begin, end = split
    return max(end - horizon - max(begin, lookback) + 1, 0)


def window_starts(split: tuple[int, int], lookback: int, horizon: int, name: str = "split") -> np.ndarray:
    """The first input row `s` of every window of `split = (begin, end)`, int64 `[num_windows]`, in time order.

    Raises a ValueError naming the split when it holds no complete window (look-back + horizon longer than the
    rows available), rather than returning an empty set that would surface later as a NaN metric.
    """
    lookback = _checks.check_positive_int("lookback", lookback)
    horizon = _checks.check_positive_int("horizon", horizon)
    begin, end = split
    count = count_windows(split, lookback, horizon)
    if count < 1:
        available = end - begin
        raise ValueError(
            f"the {name} split (rows [{begin}, {end}), {available} rows) holds no window of lookback {lookback} + "
            f"horizon {horizon}: the horizon must fit inside the split (horizon {horizon} <= {available}) and the "
            f"look-back inside the rows before its targets (lookback {lookback} <= {end - horizon})"
        )
    first = max(begin - lookback, 0)
    return np.arange(first, first + count, dtype=np.int64)


def gather_windows(values: np.ndarray, starts: np.ndarray, lookback: int, horizon: int) -> tuple[np.ndarray, ...]:
    """`(inputs [N, L, F], targets [N, H, F])` for the windows beginning at `starts` `[N]` of `values` `[T, F]`."""
    starts = np.asarray(starts)
    inputs = values[starts[:, None] + np.arange(lookback)[None, :]]
    targets = values[starts[:, None] + lookback + np.arange(horizon)[None, :]]
    return inputs, targets


def batch_indices(num: int, batch_size: int, seed: int, epoch: int, shuffle: bool = True,
                  drop_last: bool = True) -> list[np.ndarray]:
    """Index batches over `num` windows: a permutation that is a pure function of `(seed, epoch)` (so a resumed
    run sees the same batches), cut into `batch_size` pieces; `drop_last` keeps every batch the same shape (one
    compiled step)."""
    batch_size = _checks.check_positive_int("batch_size", batch_size)
    order = np.random.default_rng([seed, epoch]).permutation(num) if shuffle else np.arange(num)
    stop = (num // batch_size) * batch_size if drop_last else num
    return [order[i:i + batch_size] for i in range(0, stop, batch_size)]
