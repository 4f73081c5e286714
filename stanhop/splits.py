"""Train/validation/test splits by row counts from the start of a series, and their windows.

A split is three numbers ``a/b/c``:

- whole numbers are months of 30 days, turned into rows by the data's time step: hourly
  data gives 720 rows a month, so ``14/5/5`` is 10080/3600/3600 rows and the benchmark's
  ``12/4/4`` is 8640/2880/2880 rows; the rest of the file is unused. Part borders are
  ``floor(months so far * 30 days / step)``.
- numbers below 1 are fractions of the file: part borders are ``floor(n * (sum so far))``,
  computed exactly from the decimal text, so ``0.7/0.1/0.2`` of 1001 rows gives 700/100/201
  rows (the last part takes the rounding) and fractions that sum below 1 leave the end unused.

A window starting at row t has input rows [t, t + in_len) and target rows
[t + in_len, t + in_len + out_len). Train windows lie wholly in the train rows. Validation
and test windows have their targets wholly in their part and their inputs start in_len rows
before its border, so the first test target is the first test row:

    windows(train) = rows - in_len - out_len + 1,   windows(val | test) = rows - out_len + 1.

This module needs pandas (for the time step), not torch, so ``stanhop data describe`` starts quickly.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass
from fractions import Fraction

import pandas as pd
from pandas.tseries.frequencies import to_offset

from stanhop import csvio, datasets
from stanhop.errors import UserError, cited

PARTS = ("train", "val", "test")
MONTH = pd.Timedelta(days=30)


@dataclass(frozen=True)
class SplitSpec:
    """A parsed split: three exact numbers, months or fractions."""

    text: str
    values: tuple[Fraction, Fraction, Fraction]
    months: bool  # True: months of 30 days; False: fractions of the rows


def parse_split(text: str) -> SplitSpec:
    """``"14/5/5"`` (months) or ``"0.7/0.1/0.2"`` (fractions) as a SplitSpec."""
    hint = "give three months such as 14/5/5 or 12/4/4, or three fractions such as 0.7/0.1/0.2"
    pieces = str(text).strip().split("/")
    try:
        values = tuple(Fraction(p.strip()) for p in pieces)
    except (ValueError, ZeroDivisionError):
        raise UserError(f"cannot read the split '{text}'; {hint}") from None
    if len(values) != 3 or any(v <= 0 for v in values):
        raise UserError(f"the split '{text}' needs three positive numbers; {hint}")
    if all(v.denominator == 1 for v in values):
        return SplitSpec(str(text), values, months=True)
    if all(v < 1 for v in values):
        if sum(values) > 1:
            raise UserError(f"the fractions of the split '{text}' add up to {float(sum(values)):g}, more than 1")
        return SplitSpec(str(text), values, months=False)
    raise UserError(f"the split '{text}' mixes months and fractions; {hint}")


def rows_per_month(freq: str) -> Fraction:
    """Rows in 30 days at the time step ``freq`` (720 for ``"h"``)."""
    try:
        offset = to_offset(freq)
        # a week anchored on a weekday (W-SUN, pandas' weekly step) is still 7 days long
        step = pd.Timedelta(weeks=offset.n) if isinstance(offset, pd.offsets.Week) and offset.weekday is not None \
            else pd.to_timedelta(offset)
    except (ValueError, TypeError):
        raise UserError(f"a split in months needs a fixed time step, but the data's is '{freq}'; use fractions such as 0.7/0.1/0.2") from None
    return Fraction(MONTH.value, step.value)


def split_borders(n_rows: int, split: str, freq: str, in_len: int, out_len: int) -> dict[str, tuple[int, int]]:
    """Row ranges ``{part: (start, end)}`` (end exclusive) of train, val and test.

    Raises UserError when the split needs more rows than the data has, or leaves a part too
    short for one window.
    """
    _check_lengths(in_len, out_len)
    spec = parse_split(split)
    cumulative = [sum(spec.values[: i + 1]) for i in range(3)]
    if spec.months:
        per_month = rows_per_month(freq)
        ends = [math.floor(c * per_month) for c in cumulative]
        if ends[-1] > n_rows:
            raise UserError(
                f"the split {spec.text} needs {ends[-1]} rows ({sum(spec.values)} months of 30 days at step '{freq}') "
                f"but the data has {n_rows}; use fewer months or fractions such as 0.7/0.1/0.2 (--split; Python: data.split)"
            )
    else:
        ends = [math.floor(n_rows * c) for c in cumulative]
    borders = dict(zip(PARTS, zip([0, *ends[:2]], ends)))
    for part, count in window_counts(borders, in_len, out_len).items():
        if count < 1:
            start, end = borders[part]
            need = in_len + out_len if part == "train" else out_len
            raise UserError(
                f"the split {spec.text} leaves the {part} part {end - start} rows of {n_rows}, too short for one window "
                f"(needs {need} with in_len {in_len}, out_len {out_len}); use a longer file, another split or shorter windows"
            )
    return borders


UNUSED_NOTICE_SHARE = 0.1  # a months split that leaves more of a CSV unused than this is pointed out


def unused_rows_notice(n_rows: int, used: int, split: str, source: str) -> str | None:
    """A sentence for the user when a split uses only the first ``used`` rows (the test part's
    end) and leaves over 10% of the rows of their CSV (months, or fractions adding up to less
    than 1); None otherwise, and for a registered data set, whose benchmark splits leave rows
    unused on purpose."""
    unused = n_rows - used
    if unused <= UNUSED_NOTICE_SHARE * n_rows:
        return None
    if not datasets.looks_like_path(source) and datasets.lookup(source) is not None:
        return None
    spec = parse_split(split)
    if spec.months:
        return (f"the split {split} (months of 30 days) uses the first {used} of the {n_rows} rows of "
                f"{source}; the last {unused} are unused: a split in fractions such as 0.7/0.1/0.2 uses them all")
    return (f"the split {split} uses the first {used} of the {n_rows} rows of {source} (its fractions add up to "
            f"{float(sum(spec.values)):g}); the last {unused} are unused: fractions adding up to 1 use them all")


def window_range(part: str, borders: dict[str, tuple[int, int]], in_len: int, out_len: int) -> tuple[int, int]:
    """``(first, count)``: the first window's input starts at row ``first``; ``count`` windows."""
    start, end = borders[part]
    first = start if part == "train" else start - in_len
    return first, max(0, end - first - in_len - out_len + 1)


def window_counts(borders: dict[str, tuple[int, int]], in_len: int, out_len: int) -> dict[str, int]:
    return {part: window_range(part, borders, in_len, out_len)[1] for part in borders}


def describe(
    name_or_path: str | os.PathLike,
    split: str = "14/5/5",
    in_len: int = 168,
    out_len: int = 24,
    date_column: str = "date",
    columns: list[str] | None = None,
    fill: str | None = None,
) -> dict:
    """Rows, channels, time step, date range, empty cells (before any fill) and the split.

    ``split`` maps each part to ``{start, end, rows, windows}`` (rows, end exclusive); None, with
    ``split_problem`` saying why, where the split does not fit the data (too few rows for its
    months, a part too short for a window): the rest describes the file all the same.
    """
    _check_lengths(in_len, out_len)
    parse_split(split)  # a mistake in the split itself is an error
    raw = csvio.read_series(name_or_path, date_column, columns, insert_missing_dates=fill is not None,
                            keep_infinite=fill is not None)
    missing = csvio.count_missing(raw)
    frame = raw if fill is None else csvio.fill_missing(raw, fill, name_or_path)  # empty cells are counted, not refused
    freq = csvio.infer_freq(frame.index)
    try:
        borders = split_borders(len(frame), split, freq, in_len, out_len)
    except UserError as err:
        borders, problem = None, str(err)
    else:
        counts, problem = window_counts(borders, in_len, out_len), None
    info = datasets.lookup(os.fspath(name_or_path)) if not datasets.looks_like_path(os.fspath(name_or_path)) else None
    return {
        "name": info.name if info else os.fspath(name_or_path),
        "rows": len(frame),
        "columns": list(frame.columns),
        "freq": freq,
        "start": str(frame.index[0]),
        "end": str(frame.index[-1]),
        "missing": sum(missing.values()),
        "missing_by_column": missing,
        "split_spec": str(split),
        "in_len": in_len,
        "out_len": out_len,
        "split": None if borders is None else {
            part: {"start": start, "end": end, "rows": end - start, "windows": counts[part]}
            for part, (start, end) in borders.items()
        },
        **({} if problem is None else {"split_problem": problem}),
    }


def _check_lengths(in_len: int, out_len: int) -> None:
    for name, value in (("in_len", in_len), ("out_len", out_len)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
            raise UserError(f"{name} must be a positive whole number, got {cited(value)}")
