"""Splits and windows: counts match the formula, inputs never reach the targets, valid/test look back only."""

import numpy as np
import pytest

from experiments.forecasting.windows import batch_indices, count_windows, gather_windows, split_ranges, window_starts


def test_ett_borders_match_informer():
    assert split_ranges("ett_hour", 17420) == ((0, 8640), (8640, 11520), (11520, 14400))
    assert split_ranges("ett_minute", 69680) == ((0, 34560), (34560, 46080), (46080, 57600))
    with pytest.raises(ValueError, match="needs at least 14400 rows"):
        split_ranges("ett_hour", 1000)


def test_ratio_split_matches_dataset_custom():
    ranges = split_ranges("ratio", 7588)
    assert ranges.train == (0, 5311) and ranges.test == (7588 - 1517, 7588) and ranges.valid == (5311, 6071)


@pytest.mark.parametrize("lookback, horizon", [(336, 96), (96, 720), (1, 1), (24, 168)])
def test_counts_match_the_formula_and_no_window_leaks(lookback, horizon):
    ranges = split_ranges("ett_hour", 17420)
    counts = {}
    for name, (begin, end) in ranges._asdict().items():
        starts = window_starts((begin, end), lookback, horizon, name)
        counts[name] = len(starts)
        assert len(starts) == end - horizon - max(begin, lookback) + 1 == count_windows((begin, end), lookback, horizon)
        assert np.all(np.diff(starts) == 1)
        input_last = starts + lookback - 1
        target_first, target_last = starts + lookback, starts + lookback + horizon - 1
        assert np.all(input_last < target_first)  # inputs end strictly before targets
        assert target_first.min() >= begin and target_last.max() == end - 1  # targets inside the split, all used
        assert starts.min() >= max(begin - lookback, 0)  # look back at most L rows into the previous split
        assert input_last.max() < end - horizon  # ... and never forward
    # Informer's loader: len(data) - seq_len - pred_len + 1 with data = values[border1:border2]
    assert counts["train"] == 8640 - lookback - horizon + 1
    assert counts["test"] == (2880 + lookback) - lookback - horizon + 1


def test_gather_windows_indexes():
    values = np.arange(20.0)[:, None] * np.array([[1.0, -1.0]])
    inputs, targets = gather_windows(values, np.array([0, 5]), 3, 2)
    assert inputs.shape == (2, 3, 2) and targets.shape == (2, 2, 2)
    np.testing.assert_array_equal(inputs[1, :, 0], [5, 6, 7])
    np.testing.assert_array_equal(targets[1, :, 0], [8, 9])


def test_too_long_lookback_or_horizon_names_the_split():
    with pytest.raises(ValueError, match=r"the valid split \(rows \[8640, 11520\), 2880 rows\).*horizon 4000"):
        window_starts((8640, 11520), 96, 4000, "valid")
    with pytest.raises(ValueError, match="the train split.*lookback 9000"):
        window_starts((0, 8640), 9000, 24, "train")
    with pytest.raises(ValueError, match="horizon must be >= 1"):
        window_starts((0, 100), 10, 0)


def test_batches_are_a_pure_function_of_seed_and_epoch():
    first = batch_indices(100, 32, seed=0, epoch=1)
    again = batch_indices(100, 32, seed=0, epoch=1)
    assert len(first) == 3 and all(len(b) == 32 for b in first)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], batch_indices(100, 32, seed=0, epoch=2)[0])
    assert len(np.unique(np.concatenate(first))) == 96
