r"""Time series for forecasting: a registry of checksummed CSV files, a strict CSV reader, and the loader.

Contract. `load_series(name, data_dir=None, fill=None)` returns a `TimeSeries`: `values` float64 `[time, features]`,
the numeric `columns`, the `dates` (`datetime64[s]` `[time]`, or None), the `spec` it came from, and a
JSON-serialisable `record` for the run config. Every file is checked against the SHA-256 in `SERIES` before it is
parsed, whether it comes from `data_dir`, the download cache or the statsmodels package, so a run either uses exactly
the registered bytes or raises.

- `data_dir` given: the file is read from `data_dir/<file>` and never downloaded (the offline path; the repository's
  `../shared/data/ett`, `.../statsmodels` etc. hold copies).
- Otherwise: files with a URL are fetched once into `cache_dir()/series/<name>/` with `experiments.datafiles`
  (write to a temporary file, verify, rename); the classic series (`co2`, `sunspots`, `nile`, `elec_equip`) are read
  from the statsmodels package, which ships them (no download).

The CSV reader (`read_series_csv`) never guesses: a header row, one date column (optional), every other column must
be numeric. A non-numeric cell raises a ValueError naming the line, the column and the value; a missing cell (empty,
`NA`, `nan`) raises naming the line and the column unless an explicit `fill` is given: `"interpolate"` (linear in
the row index; the edges take the nearest value), `"ffill"` (last value carried forward; a leading gap takes the first
value) or `"zero"`. The registered `co2` series has 59 documented gaps and fills them by interpolation by default.

Series (`SERIES`): ETTh1/ETTh2/ETTm1/ETTm2 (Zhou et al. 2021; target `OT`), exchange_rate (Lai et al. 2018, in the
Autoformer CSV form), weather (Wu et al. 2021; no pinned URL, needs `data_dir`), illness (ILI, Wu et al. 2021), and
the statsmodels series. Each spec names its split protocol (`experiments.forecasting.windows.split_ranges`), its
target column, its seasonal period in steps (for the seasonal-naive baseline) and its sampling frequency (for
calendar features).

>>> import io
>>> columns, values, dates = read_series_csv(io.StringIO("date,load,OT\n2016-07-01 00:00:00,5.8,30.5\n"
...                                                      "2016-07-01 01:00:00,5.7,NA\n"), fill="ffill")
>>> columns, values.tolist(), str(dates[1])
(('load', 'OT'), [[5.8, 30.5], [5.7, 30.5]], '2016-07-01T01:00:00')
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import importlib.resources
import io
import math
import os
import pathlib

import numpy as np

from rnnjax import _checks
from experiments import datafiles

FILLS = ("interpolate", "ffill", "zero")
FREQUENCIES = ("15min", "10min", "h", "D", "W", "M", "Y")  # sampling intervals `calendar_features` knows
SPLITS = ("ett_hour", "ett_minute", "ratio")  # see experiments.forecasting.windows.split_ranges
_MISSING = {"", "na", "nan", "null", "none", "?"}


@dataclasses.dataclass(frozen=True)
class SeriesSpec:
    """A registered series: where its file comes from, how it is checked, split and read.

    `source` is `"file"` (the CSV from `data_dir` or downloaded from `url`; `url=None` means `data_dir` is required)
    or `"statsmodels"` (the CSV shipped inside the statsmodels package at `statsmodels/datasets/<name>/<file>`).
    `date_column` is None when the file has none (the index is then the time axis). `fill` is the default fill for
    series with documented gaps (None: a gap is an error).
    """

    name: str
    file: str
    sha256: str
    url: str | None
    split: str  # "ett_hour" | "ett_minute" | "ratio" (70/10/20, Autoformer/DLinear)
    target: str  # the univariate ("S") target column
    period: int  # seasonal period in steps: the seasonal-naive baseline repeats the value this many steps back
    frequency: str  # sampling interval, one of FREQUENCIES
    date_column: str | None
    citation: str
    source: str = "file"
    fill: str | None = None


@dataclasses.dataclass(frozen=True)
class TimeSeries:
    """A loaded series: `values` float64 `[time, features]` with `columns` names, `dates` `datetime64[s]` `[time]`
    (None without a date column), its `spec` and a JSON-serialisable `record` of what was loaded."""

    values: np.ndarray = dataclasses.field(repr=False)
    columns: tuple[str, ...]
    dates: np.ndarray | None = dataclasses.field(repr=False)
    spec: SeriesSpec = dataclasses.field(repr=False)
    record: dict = dataclasses.field(repr=False)

    def select(self, features: str, target: str | None = None) -> tuple[np.ndarray, tuple[str, ...]]:
        """The `[time, C]` values for a setting: `"S"` the target column only (C = 1), `"M"` every column with the
        target moved last (Informer's convention; for ETT `OT` is already last). Returns `(values, columns)`."""
        _checks.check_choice("features", features, ("S", "M"))
        target = self.spec.target if target is None else target
        if target not in self.columns:
            raise ValueError(f"target column {target!r} is not in the series {self.spec.name!r}; its numeric columns "
                             f"are {list(self.columns)}")
        index = self.columns.index(target)
        order = [index] if features == "S" else [i for i in range(len(self.columns)) if i != index] + [index]
        return self.values[:, order], tuple(self.columns[i] for i in order)


_INFORMER = "Zhou et al., Informer: Beyond Efficient Transformer for Long Sequence Time-Series Forecasting, AAAI 2021"
_AUTOFORMER = "Wu et al., Autoformer: Decomposition Transformers with Auto-Correlation, NeurIPS 2021"
_LSTNET = "Lai et al., Modeling Long- and Short-Term Temporal Patterns with Deep Neural Networks, SIGIR 2018"
_STATSMODELS = "Seabold & Perktold, statsmodels: Econometric and statistical modeling with python, SciPy 2010"
# Pinned commits: the URL keeps serving exactly the registered bytes (the sha256 is checked anyway).
_ETT_URL = "https://raw.githubusercontent.com/zhouhaoyi/ETDataset/1d16c8f4f943005d613b5bc962e9eeb06058cf07/ETT-small/"
_TSLIB_URL = ("https://raw.githubusercontent.com/junwoopark92/Self-Supervised-Contrastive-Forecsating/"
              "f394705adbf5217811276f5e59576c6e7ea7586c/dataset/")


def _ett(name: str, sha256: str, split: str, period: int, frequency: str) -> SeriesSpec:
    return SeriesSpec(name, f"{name}.csv", sha256, _ETT_URL + f"{name}.csv", split, "OT", period, frequency, "date",
                      _INFORMER)


def _statsmodels(name: str, sha256: str, target: str, period: int, frequency: str, date_column: str,
                 citation: str, fill: str | None = None) -> SeriesSpec:
    return SeriesSpec(name, f"{name}.csv", sha256, None, "ratio", target, period, frequency, date_column,
                      f"{citation}; via {_STATSMODELS}", source="statsmodels", fill=fill)


SERIES: dict[str, SeriesSpec] = {
    "ETTh1": _ett("ETTh1", "f18de3ad269cef59bb07b5438d79bb3042d3be49bdeecf01c1cd6d29695ee066", "ett_hour", 24, "h"),
    "ETTh2": _ett("ETTh2", "a3dc2c597b9218c7ce1cd55eb77b283fd459a1d09d753063f944967dd6b9218b", "ett_hour", 24, "h"),
    "ETTm1": _ett("ETTm1", "6ce1759b1a18e3328421d5d75fadcb316c449fcd7cec32820c8dafda71986c9e", "ett_minute", 96,
                  "15min"),
    "ETTm2": _ett("ETTm2", "db973ca252c6410a30d0469b13d696cf919648d0f3fd588c60f03fdbdbadd1fd", "ett_minute", 96,
                  "15min"),
    "exchange_rate": SeriesSpec(
        "exchange_rate", "exchange_rate.csv", "d55e7aa2641009814a18ba3279431b13f6d413b0eab195b9ff21988d8cf94e97",
        _TSLIB_URL + "exchange_rate/exchange_rate.csv", "ratio", "OT", 7, "D", "date", f"{_LSTNET}; {_AUTOFORMER}"),
    # The public copies of weather.csv disagree (SOURCES.md); without a pinned URL it is read from data_dir only.
    "weather": SeriesSpec("weather", "weather.csv", "34ee981d07313e51da2a50bb600072c8ae4a69cb4b0651f4cb93a069d7a2ba63",
                          None, "ratio", "OT", 144, "10min", "date", _AUTOFORMER),
    "illness": SeriesSpec(
        "illness", "national_illness.csv", "8594cecb98c6f2f9dc014eca11c4d5d1e38ad5ce6ed0592d4abe65b146fce395",
        _TSLIB_URL + "illness/national_illness.csv", "ratio", "OT", 52, "W", "date", _AUTOFORMER),
    "co2": _statsmodels("co2", "16695fa2786e53414e5a6b54767a3fdf5de99cfbc68617f69d1362d92776a92f", "co2", 52, "W",
                        "date", "Keeling & Whorf, Mauna Loa CO2, CDIAC 2004", fill="interpolate"),
    "sunspots": _statsmodels("sunspots", "f67889b1d9002cd5227f0e0ef54e35b419cdd85a31279adef6f73fb41e5c0a9b",
                             "SUNACTIVITY", 11, "Y", "YEAR", "NOAA National Geophysical Data Center"),
    "nile": _statsmodels("nile", "88e97bea7249e5832a85e41aec6ce4b8f7b1b14aae930c8363da7f193286b598", "volume", 1,
                         "Y", "year", "Cobb, Biometrika 65(2) 1978"),
    "elec_equip": _statsmodels("elec_equip", "fb0e86774484d2c9179374377041600ffd25ea0236aeaf7d293bf2df5ae86369",
                               "STS.M.I7.W.TOVT.NS0016.4.000", 12, "M", "DATE", "Eurostat"),
}
"""The known series by name. A plain dict: register your own `SeriesSpec` under a new name to load it the same way."""


def load_series(name: str, data_dir: str | os.PathLike | None = None, fill: str | None = None) -> TimeSeries:
    """Loads the registered series `name` (see the module docstring for where its bytes come from).

    `fill` overrides the spec's default fill (`"interpolate"`, `"ffill"`, `"zero"`; None keeps the default, and a
    gap in a series without one is an error naming the line and column). Raises ValueError for an unknown name, a
    wrong checksum or a bad CSV; FileNotFoundError for a file missing from `data_dir`.
    """
    if name not in SERIES:
        raise ValueError(f"unknown series {name!r}; known series: {', '.join(sorted(SERIES))}")
    spec = SERIES[name]
    file = datafiles.DataFile(spec.file, spec.url or "", spec.sha256)
    path = _locate(spec, file, data_dir)
    data = datafiles.verify_bytes(path.read_bytes(), file, str(path), f"{spec.file} of series {name!r}")
    fill = spec.fill if fill is None else fill
    # utf-8 with replacement: weather.csv's header carries U+FFFD as distributed, and only numbers are parsed.
    columns, values, dates = read_series_csv(io.StringIO(data.decode("utf-8", errors="replace"), newline=""),
                                             date_column=spec.date_column, fill=fill, source=str(path))
    record = {"name": name, "file": spec.file, "sha256": spec.sha256, "url": spec.url, "path": str(path),
              "rows": int(values.shape[0]), "columns": list(columns), "split": spec.split, "fill": fill,
              "citation": spec.citation}
    return TimeSeries(values, columns, dates, spec, record)


def read_series_csv(file, date_column: str | None = "date", fill: str | None = None,
                    source: str = "<csv>") -> tuple[tuple[str, ...], np.ndarray, np.ndarray | None]:
    """Parses a CSV with a header into `(columns, values [time, features] float64, dates [time] or None)`.

    `file` is a path or a text file object. `date_column` (None: no date column) is parsed into `datetime64[s]`
    (ISO dates with or without a time, `2016/1/1 0:00`, `19580329`, `Jan-1-1995`, or a bare year); every other
    column must hold numbers. Errors name `source`, the 1-based line in the file, the column and the value.
    """
    if fill is not None:
        _checks.check_choice("fill", fill, FILLS)
    if isinstance(file, (str, os.PathLike)):
        source = str(file)
        with open(file, newline="", encoding="utf-8", errors="replace") as handle:
            rows = list(csv.reader(handle))
    else:
        rows = list(csv.reader(file))
    if not rows:
        raise ValueError(f"{source}: the file is empty; expected a header row and data rows")
    header = [name.strip() for name in rows[0]]
    rows = [row for row in rows[1:] if row]  # a trailing blank line is not a row
    if not rows:
        raise ValueError(f"{source}: no data rows after the header")
    if date_column is not None and date_column not in header:
        raise ValueError(f"{source}: date column {date_column!r} not in the header {header}")
    numeric = [i for i, name in enumerate(header) if name != date_column]
    if not numeric:
        raise ValueError(f"{source}: no numeric columns besides the date column {date_column!r}")
    values = np.empty((len(rows), len(numeric)), np.float64)
    missing = np.zeros_like(values, dtype=bool)
    first_missing = None
    for row_index, row in enumerate(rows):
        line = row_index + 2  # 1-based, after the header
        if len(row) != len(header):
            raise ValueError(f"{source}: line {line} has {len(row)} fields, expected {len(header)} (the header's)")
        for out, column in enumerate(numeric):
            cell = row[column].strip()
            if cell.lower() in _MISSING:
                missing[row_index, out] = True
                values[row_index, out] = math.nan
                first_missing = first_missing or (line, header[column])
                continue
            try:
                values[row_index, out] = float(cell)
            except ValueError:
                raise ValueError(f"{source}: non-numeric value {cell!r} in column {header[column]!r} at line {line}; "
                                 f"every column except the date column must hold numbers") from None
            if not math.isfinite(values[row_index, out]):
                raise ValueError(f"{source}: non-finite value {cell!r} in column {header[column]!r} at line {line}")
    if first_missing is not None:
        if fill is None:
            line, column = first_missing
            raise ValueError(f"{source}: missing value in column {column!r} at line {line} ({int(missing.sum())} "
                             f"missing cells in all); pass fill='interpolate', 'ffill' or 'zero' to fill them "
                             f"explicitly")
        values = fill_missing(values, missing, fill, source, tuple(header[i] for i in numeric))
    dates = None
    if date_column is not None:
        column = header.index(date_column)
        dates = _parse_dates([row[column].strip() for row in rows], source, date_column)
    return tuple(header[i] for i in numeric), values, dates


def fill_missing(values: np.ndarray, missing: np.ndarray, fill: str, source: str = "<array>",
                 columns: tuple[str, ...] | None = None) -> np.ndarray:
    """`values` `[time, features]` with the cells where `missing` is True filled per column (see the module
    docstring for each `fill`). A column with no value at all cannot be filled and raises."""
    _checks.check_choice("fill", fill, FILLS)
    values = values.copy()
    index = np.arange(values.shape[0])
    for j in range(values.shape[1]):
        gaps = missing[:, j]
        if not gaps.any():
            continue
        known = ~gaps
        if not known.any():
            name = columns[j] if columns else str(j)
            raise ValueError(f"{source}: column {name!r} has no values at all, nothing to fill from")
        if fill == "zero":
            values[gaps, j] = 0.0
        elif fill == "interpolate":
            values[gaps, j] = np.interp(index[gaps], index[known], values[known, j])
        else:  # ffill: the last known index at or before each row; a leading gap takes the first value
            last = np.maximum.accumulate(np.where(known, index, -1))
            last = np.where(last < 0, np.argmax(known), last)
            values[:, j] = values[last, j]
    return values


_DATE_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d", "%Y/%m/%d %H:%M", "%Y/%m/%d", "%Y%m%d",
                 "%b-%d-%Y", "%Y")


def _parse_dates(cells: list[str], source: str, column: str) -> np.ndarray:
    """One format for the whole column (the first that parses the first cell), so a malformed cell is an error."""
    for date_format in _DATE_FORMATS:
        try:
            datetime.datetime.strptime(cells[0], date_format)
        except ValueError:
            continue
        break
    else:
        raise ValueError(f"{source}: cannot parse {cells[0]!r} in date column {column!r} at line 2; known formats: "
                         f"{list(_DATE_FORMATS)}")
    parsed = []
    for row_index, cell in enumerate(cells):
        try:
            parsed.append(datetime.datetime.strptime(cell, date_format))
        except ValueError:
            raise ValueError(f"{source}: date {cell!r} in column {column!r} at line {row_index + 2} does not match "
                             f"the column's format {date_format!r}") from None
    return np.array(parsed, dtype="datetime64[s]")


def _locate(spec: SeriesSpec, file: datafiles.DataFile, data_dir: str | os.PathLike | None) -> pathlib.Path:
    """Where the bytes of `spec` are read from (verified by the caller): `data_dir/<file>`, the statsmodels
    package, or the download cache (`file` fetched into `cache_dir()/series/<name>/`)."""
    if data_dir is not None:
        path = pathlib.Path(data_dir) / spec.file
        if not path.is_file():
            raise FileNotFoundError(f"series {spec.name!r}: {path} not found; data_dir must hold {spec.file}")
        return path
    if spec.source == "statsmodels":
        try:
            resource = importlib.resources.files("statsmodels.datasets") / spec.name / spec.file
        except ModuleNotFoundError:
            raise FileNotFoundError(f"series {spec.name!r} ships with statsmodels, which is not installed: "
                                    f"`pip install statsmodels`, or pass data_dir holding {spec.file}") from None
        with importlib.resources.as_file(resource) as path:
            return pathlib.Path(path)
    return datafiles.fetch(file, f"series/{spec.name}")  # a spec without a URL: FileNotFoundError, use data_dir
