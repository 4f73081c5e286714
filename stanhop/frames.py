"""A pandas DataFrame given from Python, as the CSV that every reader of stanhop takes.

Two layouts are accepted:

- wide: one row per timestamp (a DatetimeIndex, or the config's date column) and one column
  per series;
- long, as neuralforecast's: columns ``unique_id``, ``ds`` and ``y``, one row per series and
  timestamp; it is pivoted to wide, one column per ``unique_id``. Forecasts of a long frame
  are given back long (``to_long``), as neuralforecast gives its own.

Writing the frame to a file, and reading it back through :mod:`stanhop.csvio`, gives it the
same checks as a CSV (regular steps, numeric columns, empty cells) and leaves the run a copy
of its data that evaluate, forecast and plot find as for any CSV.
"""

from __future__ import annotations

import csv
import re
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from stanhop.errors import UserError, cited, known_as, listing, tell_once

LONG_COLUMNS = ("unique_id", "ds", "y")
MODEL_COLUMN = "STanHop"  # a long forecast's column, named after the model as neuralforecast names its own


def is_long(frame, name: str = "the DataFrame") -> bool:
    """Whether ``frame`` is a DataFrame in neuralforecast's long layout (unique_id, ds, y); a
    UserError for one with unique_id and ds but no y, which could be nothing else."""
    if not isinstance(frame, pd.DataFrame):
        return False
    if {"unique_id", "ds"} <= set(frame.columns) and "y" not in frame.columns:
        others = [str(c) for c in frame.columns if c not in LONG_COLUMNS]
        rename = f": frame.rename(columns={{{cited(others[0])}: 'y'}})" if len(others) == 1 else ""
        raise UserError(f"{name} has neuralforecast's long columns unique_id and ds but no y, the series' values; "
                        f"name the column of values y{rename}")
    return set(LONG_COLUMNS) <= set(frame.columns)


def to_long(table: pd.DataFrame, channels: list[str], ids: pd.DataFrame, *, levels: list[str] = (),
            prediction: str = "", keep: tuple[str, ...] = ()) -> pd.DataFrame:
    """A wide forecast ``table`` (per channel ``<channel><prediction>``, its interval bounds
    ``<channel>_lo<level>``/``_hi<level>`` for each label of ``levels`` ("80", "97.5"), and
    ``<channel>_true`` where present) in the long layout of ``ids``, the long frame it came
    from: unique_id (as that frame writes it), ds, the ``keep`` columns, y (the truth, where
    present), STanHop, STanHop-lo-80, STanHop-hi-80, …; series by series, as neuralforecast
    orders its forecasts. ``ds`` is the table's ``timestamp`` column, else its index."""
    given = pd.unique(ids["unique_id"])
    original = {**{str(u).strip(): u for u in given}, **{str(u): u for u in given}}  # (a run's channel a: ' a')
    ds = table["timestamp"].to_numpy() if "timestamp" in table.columns else table.index.to_numpy()
    parts = []
    for name in channels:
        part = {"unique_id": [original.get(name, name)] * len(table), "ds": ds,
                **{key: table[key].to_numpy() for key in keep}}
        if f"{name}_true" in table.columns:
            part["y"] = table[f"{name}_true"].to_numpy()
        part[MODEL_COLUMN] = table[f"{name}{prediction}"].to_numpy()
        for level in levels:
            for side in ("lo", "hi"):
                part[f"{MODEL_COLUMN}-{side}-{level}"] = table[f"{name}_{side}{level}"].to_numpy()
        parts.append(pd.DataFrame(part))
    return pd.concat(parts, ignore_index=True)


def to_wide(frame: pd.DataFrame, date_column: str, name: str = "the DataFrame",
            notify: Callable[[str], None] | None = None) -> pd.DataFrame:
    """``frame`` (wide or long) as a wide table whose first column, ``date_column``, holds the
    timestamps; empty cells are kept. Messages call the frame ``name`` (a long CSV's path);
    ``notify`` takes the notice of how a long frame is read (else told once on stderr)."""
    if not isinstance(frame, pd.DataFrame):
        raise UserError(f"the data must be a pandas DataFrame, got {type(frame).__name__}")
    check_names(frame, name)
    if is_long(frame, name):
        if pd.api.types.is_numeric_dtype(frame["ds"]) and not pd.api.types.is_bool_dtype(frame["ds"]):
            raise UserError(numbers_not_dates(name, "ds", frame["ds"]))
        repeated = frame.duplicated(["unique_id", "ds"])
        if repeated.any():
            first = frame[repeated].iloc[0]
            raise UserError(f"{name} has {int(repeated.sum())} repeated (unique_id, ds) pair(s), the first "
                            f"({first['unique_id']}, {first['ds']}); keep one row per series and timestamp")
        wide = frame.pivot(index="ds", columns="unique_id", values="y")
        if all(isinstance(c, str) and re.fullmatch(r"\s*-?\d+\s*", c) for c in wide.columns):  # ids 1, 2, 10 read as text
            wide = wide[sorted(wide.columns, key=int)]  # in the order of their numbers, not 1, 10, 2
        wide.columns = [str(c) for c in wide.columns]
        if alike := sorted({c for c in wide.columns if list(wide.columns).count(c) > 1}):
            raise UserError(f"{name} has several unique_id values that read {listing(cited(c) for c in alike)} as "
                            "text (as 1 and '1' do); series are named by text: give each its own id")
        if date_column in wide.columns:
            raise UserError(f"{name} has a series whose unique_id is '{date_column}', the name its timestamps take "
                            f"(data.date_column); rename that series")
        others = [str(c) for c in frame.columns if c not in LONG_COLUMNS]
        (notify or tell_once)(f"{name}, long (unique_id, ds, y), is read as {wide.shape[1]} series, one column each"
                              + (f"; its other column(s) {listing(others)} are not used (STanHop-Net forecasts the "
                                 f"series from their own past)" if others else ""))
        return wide.rename_axis(date_column).reset_index()
    if isinstance(frame.index, pd.DatetimeIndex):
        if date_column in frame.columns:
            raise UserError(f"the DataFrame has both a DatetimeIndex and a '{date_column}' column; keep one of them")
        return frame.rename_axis(date_column).reset_index()
    if date_column in frame.columns:
        return frame
    if frame.index.name == date_column and is_text(frame.index):  # read without parse_dates
        return frame.reset_index()  # its text is read as a CSV's dates are
    raise UserError(f"the DataFrame needs its timestamps as a DatetimeIndex or a '{date_column}' column "
                    f"(data.date_column), or neuralforecast's long columns unique_id, ds, y{index_hint(frame)}")


def numbers_not_dates(name, column: str, values: pd.Series) -> str:
    """The message for timestamps given as numbers (steps 0..n-1, years, or months), of a frame
    or a CSV file: for four-digit numbers (years?) the advice for years first, for six-digit ones
    that read yyyymm (200001: months?) the advice for months."""
    numbers = pd.to_numeric(values, errors="coerce")
    head = f"{name}: {column} holds numbers ({values.iloc[0]}, ...), not timestamps; the run's steps are of the calendar: "
    if values.astype("str").str.strip().str.fullmatch(r"[12]\d{3}(?:0[1-9]|1[0-2])").all():  # 200001: January 2000
        first = str(values.iloc[0]).strip()
        return (head + f"if they are months written yyyymm, write each as a date, {first[:4]}-{first[4:]}-01 for "
                f"{first} (pandas: pd.to_datetime(df['{column}'].astype(str), format='%Y%m')); if steps "
                "(neuralforecast's integer ds, freq=1), dates in their place, e.g. pd.date_range(start, periods=n, "
                "freq='MS')")
    if numbers.between(1000, 2999).all():  # years, most likely: annual data
        return (head + f"if they are years, write each as a date, 2000-01-01 for the year 2000 (pandas: "
                f"pd.to_datetime(df['{column}'].astype(str), format='%Y')); if steps (neuralforecast's integer ds, "
                "freq=1), dates in their place, e.g. pd.date_range(start, periods=n, freq='h')")
    return (head + f"put dates in '{column}', e.g. pd.date_range(start, periods=n, freq='h') in place of steps "
            "0..n-1 (neuralforecast's integer ds, freq=1), or 2000-01-01 for the year 2000")


def check_names(frame: pd.DataFrame, name: str = "the DataFrame") -> None:
    """A UserError for columns a series cannot be named by: levels (MultiIndex), or a name twice."""
    if isinstance(frame.columns, pd.MultiIndex):
        raise UserError(f"{name} has columns of several levels (a MultiIndex); give each one name, e.g. "
                        "frame.columns = ['_'.join(map(str, c)) for c in frame.columns]")
    names = [str(c) for c in frame.columns]
    if repeated := sorted({n for n in names if names.count(n) > 1}):
        raise UserError(f"{name} has the column(s) {listing(cited(n) for n in repeated)} more than once (as text); "
                        "give each column its own name")


def is_text(index: pd.Index) -> bool:
    """Whether ``index`` holds text (object or pandas' string dtype), as read_csv gives dates it did not parse."""
    return not isinstance(index, pd.MultiIndex) and (index.dtype == object or pd.api.types.is_string_dtype(index.dtype))


def index_hint(frame: pd.DataFrame) -> str:
    """What the frame's index seems to be, and the pandas call that makes it usable."""
    index = frame.index
    if isinstance(index, pd.PeriodIndex):
        return "; its index is a PeriodIndex: frame.to_timestamp() makes it a DatetimeIndex"
    names = [n for n in (index.names if isinstance(index, pd.MultiIndex) else [index.name]) if n is not None]
    if set(LONG_COLUMNS) <= {*map(str, names), *map(str, frame.columns)}:
        return f"; unique_id or ds is in its index ({', '.join(map(str, names))}): frame.reset_index() makes them columns"
    if is_text(index):
        return "; its index holds text: frame.index = pd.to_datetime(frame.index) reads it as dates"
    return ""


def filled_long(frame: pd.DataFrame, fill: str, freq: str, name: str = "the DataFrame",
                last_rows: int | None = None, *, keep_empty: bool = False) -> pd.DataFrame:
    """A long ``frame`` whose series' empty values, the timestamps some series lack, and those
    of the step ``freq`` that all lack, are filled by ``fill`` ("ffill" or "interpolate"), as a
    wide CSV's are (csvio.fill_missing, with its notice; ``last_rows``: a forecast's in_len, to
    tell of a series with no value in them); ``keep_empty``: given those rows, but NaN. Timestamps
    off that step are left as they are, for the forecast's checks to name."""
    from stanhop.csvio import fill_missing, on_calendar

    wide = to_wide(frame, "ds", name).set_index("ds")
    wide.index = pd.DatetimeIndex(wide.index)
    grid = on_calendar(wide.index, freq)
    if grid is not None:
        wide = wide.reindex(grid)
    ids = {str(uid): uid for uid in pd.unique(frame["unique_id"])}  # given back as the frame wrote them
    back = (wide if keep_empty else fill_missing(wide, fill, name, last_rows)).rename_axis("ds").reset_index()
    back = back.melt(id_vars="ds", var_name="unique_id", value_name="y")
    return back.assign(unique_id=back["unique_id"].map(ids))[list(LONG_COLUMNS)]


def write_frame(frame: pd.DataFrame, path: str | Path, date_column: str, fill: str | None = None,
                name: str = "the DataFrame", *, keep_empty: bool = False) -> Path:
    """Write ``frame`` (wide or long) as a wide comma-separated CSV (pandas' ISO dates, floats that
    read back exactly); without a ``fill`` (data.fill) an empty (NaN) cell is refused, naming its
    time, unless ``keep_empty`` (for a reader that counts them). Messages call the frame ``name``."""
    long = is_long(frame)
    wide = to_wide(frame, date_column, name)
    numbers = wide.drop(columns=[date_column]).select_dtypes("number")
    empty = numbers.isna().to_numpy()  # (rows, numeric columns)
    if fill is None and not keep_empty and empty.any():
        row, col = (int(v[0]) for v in empty.nonzero())
        what = "missing value(s) (empty, or a timestamp the series lacks), the first for series" if long \
            else "empty (NaN) cell(s), the first in column"
        raise UserError(f"{name} has {int(empty.sum())} {what} '{numbers.columns[col]}' at {wide[date_column].iloc[row]}; "
                        f"fill them (CLI: --fill ffill|interpolate; Python: data.fill='ffill' or 'interpolate'), or, "
                        f"where series start or end at other dates, keep the dates they share")
    path = Path(path)
    with path.open("w", encoding="utf-8", newline="") as f:
        if long:  # the ids in quotes: read back as written, spaces and all (other names are stripped)
            csv.writer(f, quoting=csv.QUOTE_ALL, lineterminator="\n").writerow(wide.columns)
        wide.to_csv(f, index=False, header=not long)
    return path


@contextmanager
def as_wide_csv(frame: pd.DataFrame, date_column: str, name: str, fill: str | None = None, *,
                keep_empty: bool = False):
    """``frame`` (a long file's rows) written by ``write_frame`` as a wide CSV in a temporary
    folder, for the CSV readers; within the block, messages call that file ``name``."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.csv"
        with known_as(str(path), name):
            write_frame(frame, path, date_column, fill, name, keep_empty=keep_empty)
            yield path
