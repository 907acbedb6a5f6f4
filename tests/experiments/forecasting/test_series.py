"""Series registry and CSV reader: checksums, strict parsing, explicit fills, the settings' column selection."""

import hashlib
import io
import pathlib
import re
import shutil

import numpy as np
import pytest

from experiments.forecasting import series as series_module
from experiments.forecasting.series import SERIES, fill_missing, load_series, read_series_csv

ETT_DIR = pathlib.Path(__file__).resolve().parents[4] / "shared" / "data" / "ett"  # next to the checkout


def _csv(text: str):
    return io.StringIO(text)


def test_reads_dates_and_numeric_columns():
    columns, values, dates = read_series_csv(_csv("date,a,b\n2016-07-01 00:00:00,1,2.5\n2016-07-01 01:00:00,3,4\n"))
    assert columns == ("a", "b")
    np.testing.assert_array_equal(values, [[1, 2.5], [3, 4]])
    assert dates.dtype == np.dtype("datetime64[s]") and str(dates[1]) == "2016-07-01T01:00:00"


def test_missing_value_names_line_and_column():
    text = "date,a,b\n2016-01-01,1,2\n2016-01-02,,3\n2016-01-03,4,NA\n"
    with pytest.raises(ValueError, match=r"missing value in column 'a' at line 3 \(2 missing cells.*fill="):
        read_series_csv(_csv(text))


@pytest.mark.parametrize("fill, expected", [("interpolate", [1.0, 2.5, 4.0, 4.0]), ("ffill", [1.0, 1.0, 4.0, 4.0]),
                                            ("zero", [1.0, 0.0, 4.0, 0.0])])
def test_explicit_fills(fill, expected):
    text = "a\n1\nNA\n4\nnan\n"  # a blank line is no row, so gaps are spelled out
    _, values, dates = read_series_csv(_csv(text), date_column=None, fill=fill)
    assert dates is None
    np.testing.assert_allclose(values[:, 0], expected)


def test_ffill_leading_gap_takes_first_value():
    values = np.array([[np.nan], [2.0], [np.nan]])
    np.testing.assert_array_equal(fill_missing(values, np.isnan(values), "ffill")[:, 0], [2.0, 2.0, 2.0])


def test_non_numeric_column_is_a_clear_error():
    with pytest.raises(ValueError, match=r"non-numeric value 'north' in column 'region' at line 2"):
        read_series_csv(_csv("date,region,y\n2020-01-01,north,1\n"))


def test_ragged_rows_bad_dates_and_unknown_fill_are_errors():
    with pytest.raises(ValueError, match="line 3 has 2 fields, expected 3"):
        read_series_csv(_csv("date,a,b\n2020-01-01,1,2\n2020-01-02,1\n"))
    with pytest.raises(ValueError, match="at line 3 does not match"):
        read_series_csv(_csv("date,a\n2020-01-01,1\nyesterday,2\n"))
    with pytest.raises(ValueError, match="date column 'time' not in the header"):
        read_series_csv(_csv("date,a\n2020-01-01,1\n"), date_column="time")
    with pytest.raises(ValueError, match="fill must be one of"):
        read_series_csv(_csv("a\n1\n"), date_column=None, fill="mean")


def test_unknown_series_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="unknown series 'ETTh9'; known series:"):
        load_series("ETTh9")
    with pytest.raises(FileNotFoundError, match="ETTh1.csv"):
        load_series("ETTh1", tmp_path)
    with pytest.raises(FileNotFoundError, match="no pinned download URL"):
        load_series("weather")


def test_checksum_is_verified_for_local_files(tmp_path):
    (tmp_path / "ETTh1.csv").write_text("date,OT\n2016-07-01 00:00:00,1\n")
    actual = hashlib.sha256(b"date,OT\n2016-07-01 00:00:00,1\n").hexdigest()
    message = f"{tmp_path / 'ETTh1.csv'} has sha256 {actual}, expected {SERIES['ETTh1'].sha256} (ETTh1.csv of series"
    with pytest.raises(ValueError, match=re.escape(message)):
        load_series("ETTh1", tmp_path)


def test_statsmodels_series_need_no_download():
    pytest.importorskip("statsmodels")
    co2 = load_series("co2")
    assert co2.values.shape == (2284, 1) and np.isfinite(co2.values).all()  # 59 documented gaps interpolated
    assert co2.record["fill"] == "interpolate"
    with pytest.raises(ValueError, match="missing value in column 'co2' at line"):  # the raw file has gaps
        read_series_csv(io.StringIO(pathlib.Path(co2.record["path"]).read_text()), date_column="date")


@pytest.mark.skipif(not (ETT_DIR / "ETTh1.csv").exists(), reason="shared ETT copy not present")
def test_etth1_from_data_dir_and_settings(tmp_path):
    shutil.copy(ETT_DIR / "ETTh1.csv", tmp_path / "ETTh1.csv")
    etth1 = load_series("ETTh1", tmp_path)
    assert etth1.values.shape == (17420, 7) and etth1.columns[-1] == "OT"
    univariate, columns = etth1.select("S")
    assert univariate.shape == (17420, 1) and columns == ("OT",)
    multivariate, columns = etth1.select("M", target="HUFL")
    assert columns[-1] == "HUFL" and multivariate.shape == (17420, 7)
    np.testing.assert_array_equal(multivariate[:, -1], etth1.values[:, 0])
    with pytest.raises(ValueError, match="target column 'oil'"):
        etth1.select("S", target="oil")


def test_every_spec_is_consistent():
    for name, spec in SERIES.items():
        assert spec.name == name and len(spec.sha256) == 64
        assert spec.split in series_module.SPLITS and spec.frequency in series_module.FREQUENCIES
        assert spec.period >= 1
