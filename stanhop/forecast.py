"""Forecasting with a trained run: one forecast past the end of a series, or a backtest.

Both take a DataFrame in original units (a DatetimeIndex, or the run's date column) that
holds every channel the run was trained on; columns are matched by name, so their order
does not matter, and extra columns are ignored with a notice. The run's own scaler maps
the input to the model's units and the forecast back:

    z = (x - mean) / scale,   ŷ = model(z[-in_len:]) * scale + mean.

A horizon longer than the run's ``out_len`` is forecast recursively: the forecast is
appended to the input and the model forecasts again from the last ``in_len`` rows, until
the horizon is covered (its steps past ``out_len`` come from forecasts, so their errors
compound; a backtest with the same horizon measures them). A shorter horizon is the first
steps of one forecast.

A backtest slides the input window over the series, its windows placed from the end as
neuralforecast's ``cross_validation`` places them: the last window's horizon ends on the last
row, and each earlier one starts ``stride`` rows before the next (``n_windows``: only the last
n of them). It compares each forecast with the rows that follow it:

    MSE = mean over windows, steps, channels of (ŷ_z - y_z)²   (scaled; × scale² per channel
    for original units), MAE likewise with |ŷ_z - y_z|,

the same sums :mod:`stanhop.evaluation` accumulates, so a backtest with stride 1 over a
split's rows equals ``stanhop evaluate`` on that split. Windows go through the model in
batches and the long table is produced batch by batch, so memory stays bounded.
"""

from __future__ import annotations

import importlib.util
import numbers
import os
import stat
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

from stanhop.errors import (
    UserError, cited, clipped, command, counted, likely_name, listing, log_line, notice_to_stderr, one_job, redrawn_bars,
    writable_folder,
)
from stanhop.frames import is_long
from stanhop.runs import atomic_file, naming, write_json

Notify = Callable[[str], None]
FORMATS = ("csv", "parquet")
METRIC_KEYS = ("mse", "mae", "mse_original_units", "mae_original_units")


# ---------------------------------------------------------------- input


def channels_of(run, names: Iterable[Any], source: str, notify: Notify | None = None, *, long: bool = False) -> None:
    """Raise UserError naming the run's channels missing from ``names``; tell of extra ones
    (``long``: the series of a long frame, named as such)."""
    require_channels(names, run.data.columns, run.data.date_column, source, notify, long=long)


def require_channels(names: Iterable[Any], channels: list[str], date_column: str, source: str,
                     notify: Notify | None = None, *, long: bool = False) -> None:
    """Raise UserError naming the ``channels`` (a run's) missing from the column ``names`` of
    ``source`` (the unique_ids of a long one); tell of extra ones."""
    names = [str(n) for n in names if str(n) != date_column]
    missing = [c for c in channels if c not in names]
    what = "series (unique_id)" if long else "channel(s)"
    if missing:
        spaced = [cited(n) for n in names if n != n.strip() and n.strip() in missing]
        raise UserError(
            f"{source} lacks the {what} {listing(missing)} the run was trained on "
            f"(it needs {listing(channels)}; it has {listing(names) or 'none'})"
            + (f"; its {listing(spaced)} differ by the spaces around them, which a name in quotes keeps: remove them"
               if spaced else "")
        )
    extra = [n for n in names if n not in channels]
    if extra:
        (notify or notice_to_stderr)(f"ignoring {'series' if long else 'column(s)'} {listing(extra)} of {source}: the "
                                     "run was not trained on them")


def check_csv_header(path: str | os.PathLike, channels: list[str], date_column: str, notify: Notify | None = None,
                     named_by: str | None = None) -> None:
    """A CSV read with a run's settings (evaluate --data, a memory CSV): its header must hold
    the date column and the run's channels. Checked from the header alone, before any work.
    ``named_by``: the option that names another date column, told where it is missing."""
    from stanhop.csvio import header_of
    from stanhop.frames import LONG_COLUMNS

    names = header_of(path)
    if date_column not in names and set(LONG_COLUMNS) <= set(names):
        raise UserError(f"{path} is in long format, one row per series and timestamp (neuralforecast's unique_id, "
                        f"ds, y); here one column per series is needed: pivot it, e.g. with pandas "
                        f"df.pivot(index='ds', columns='unique_id', values='y').rename_axis('{date_column}')")
    if date_column not in names:
        shown = ", ".join(names[:10])[:200]
        likely = likely_name(date_column, names)
        column = f"its timestamp column{f' ({cited(likely)}?)' if likely else ''}"
        raise UserError(f"{path} has no date column '{date_column}' (columns: {shown}); "
                        + (f"name {column} with {named_by}" if named_by else
                           f"rename {column} to '{date_column}', as in the data the run was trained on"))
    require_file_channels(path, names, channels, date_column, notify)


def require_file_channels(path: str | os.PathLike, names: list[str], channels: list[str], date_column: str,
                          notify: Notify | None = None) -> None:
    """require_channels for a CSV file's header ``names``; a file in long format (its series
    named in a column, not the header) gets the pandas call that pivots it instead."""
    from stanhop.csvio import refuse_long_format

    if any(c not in names for c in channels):
        refuse_long_format(path, date_column)
    require_channels(names, channels, date_column, str(path), notify)


def align(run, frame: pd.DataFrame, *, source: str = "the input", notify: Notify | None = None,
          last_rows: int | None = None) -> pd.DataFrame:
    """``frame`` as the run's channels in the run's order: float64, DatetimeIndex of the run's frequency.

    Accepts a DatetimeIndex, the run's date column, or a long frame as neuralforecast's
    (unique_id, ds, y: one series per unique_id). NaNs are kept (the caller decides which
    rows must be complete). With ``last_rows`` (only that many rows at the end will be used),
    rows before a gap in time that leaves that many after it are dropped (``after_last_gap``).
    """
    from stanhop.frames import check_names, index_hint, is_text, to_wide

    if not isinstance(frame, pd.DataFrame):
        raise UserError(f"{source} must be a pandas DataFrame, got {type(frame).__name__}")
    date = run.data.date_column
    check_names(frame, source)
    long = is_long(frame, source)
    if long:  # its ids kept exactly (' a' and 'a' are two series); a run trained before they were knows ' a' as a
        frame = to_wide(frame, date, source, notify)
        known = set(run.data.columns)
        frame = frame.rename(columns=lambda c: c.strip() if c not in known and c.strip() in known else c)
    else:  # channels are named as text (0 -> '0'), without spaces around them, as a CSV's header is read (a
        frame = frame.set_axis([str(c).strip() for c in frame.columns], axis=1)  # frame's ' a ' is the run's a)
    if date not in frame.columns and frame.index.name == date and is_text(frame.index):
        frame = frame.reset_index()  # read without parse_dates: its text is read as a date column's
    if date in frame.columns:
        try:
            index = pd.DatetimeIndex(pd.to_datetime(frame[date]), name=date)
        except (ValueError, TypeError) as err:
            raise UserError(f"cannot read the dates in column '{date}' of {source} ({str(err).splitlines()[0]})") from None
        frame = frame.drop(columns=[date]).set_axis(index, axis=0)
    elif not isinstance(frame.index, pd.DatetimeIndex):
        raise UserError(f"{source} needs a DatetimeIndex or a '{date}' column with the timestamps{index_hint(frame)}")
    tell_other_zone(run, frame.index, source, notify)
    channels_of(run, frame.columns, source, notify, long=long)
    try:
        out = frame[list(run.data.columns)].astype("float64")
    except (ValueError, TypeError) as err:
        raise UserError(f"{source} has a channel that is not numeric ({_first_text(frame, run.data.columns, err)})") from None
    if last_rows is None:
        check_dates(run, out.index, source, long=long)
        return out
    out = after_last_gap(out, run.data.freq, last_rows, source, notify,
                         keep_them=f"fill the gap: {gap_filling(run.data.freq, long, ', ')}")
    tail = out.index[-max(last_rows, 2):]  # the rows that will be used (two at least, to see the step): only their timestamps matter
    check_dates(run, tail, source, first_position=len(out) - len(tail), long=long)
    return out


def gap_filling(freq: str, long: bool, separator: str = "; ", infinite: bool = False) -> str:
    """How a frame's missing timestamps (of the step ``freq``) are inserted and filled, in the
    CLI and in Python, for a wide frame or a long one (unique_id, ds, y); ``infinite``: some of
    its values are infinite, which pandas' interpolate leaves as they are."""
    if long:
        python = f"stanhop.frames.filled_long(frame, 'ffill', '{freq}')"  # (it fills infinite values too)
    else:
        python = f"e.g. frame.asfreq('{freq}').interpolate()"
        if infinite:
            python = f"frame.replace([np.inf, -np.inf], np.nan) first, then {python}"
    return f"CLI --fill ffill|interpolate{separator}Python {python}"


def _first_text(frame: pd.DataFrame, channels: list[str], err: Exception) -> str:
    """Where the first value that is not a number sits among ``channels`` of ``frame``:
    "'abc' in column 'OT' at position 12 (2016-07-01 12:00:00)", else pandas' own words."""
    for name in channels:
        column = frame[name]
        bad = (pd.to_numeric(column, errors="coerce").isna() & column.notna()).to_numpy()
        if bad.any():
            row = int(np.argmax(bad))
            return f"{cited(column.iloc[row])} in column '{clipped(name)}' at position {row} ({frame.index[row]})"
    return str(err).splitlines()[0]


def aligned_truth(run, truth: pd.DataFrame, source: str, last_rows: int | None = None) -> pd.DataFrame:
    """A frame before its fill (a backtest's or a plot's truth) as :func:`align` gives the frame
    itself (its notices are the frame's, not told again), NaN wherever it holds no finite value."""
    truth = align(run, truth, source=source, notify=lambda _: None, last_rows=last_rows)
    return truth.where(np.isfinite(truth))


def after_last_gap(frame: pd.DataFrame, freq: str, rows: int, source: str, notify: Notify | None = None, *,
                   keep_them: str = "") -> pd.DataFrame:
    """``frame`` from the row after its last gap in time (timestamps of the run's step ``freq``
    missing between two rows), with a notice, where that leaves at least ``rows`` rows; else
    ``frame`` as it is (its checks then name what is wrong), also when timestamps repeat, go
    back, or lie off that step (not a gap). ``keep_them``: how to keep the rows before the gap
    instead, the notice's last words."""
    from stanhop.csvio import on_calendar

    index = frame.index
    if len(index) <= rows or not (index.is_monotonic_increasing and index.is_unique) or index.hasnans:
        return frame
    grid = on_calendar(index, freq)  # the run's steps from the first row on
    if grid is None:
        return frame
    breaks = np.flatnonzero(np.diff(grid.get_indexer(index)) != 1)
    if not len(breaks) or len(index) - (int(breaks[-1]) + 1) < rows:
        return frame
    start = int(breaks[-1]) + 1
    (notify or notice_to_stderr)(
        f"{source} skips time steps before {index[start]} (at the step '{freq}'); the forecast reads only the last "
        f"{rows} rows, so the {counted(start, 'row')} before the last gap {'is' if start == 1 else 'are'} left out"
        + (f" (to keep them, {keep_them})" if keep_them else ""))
    return frame.iloc[start:]


def tell_other_zone(run, index: pd.DatetimeIndex, source: str, notify: Notify | None = None) -> None:
    """A notice where ``index`` has a time zone and the run's timestamps had none, or the other
    way round (the run's are recorded since its scaler.json has "timezone"): a likely mistake,
    whose forecast is dated as ``source`` is."""
    zone = run.data.timezone
    if zone is None or (zone == "") == (index.tz is None):
        return
    given = "have no time zone" if index.tz is None else f"are in {index.tz}"
    trained = "had none" if zone == "" else f"were in {zone}"
    (notify or notice_to_stderr)(f"{source}: its timestamps {given}, and those the run was trained on {trained}; "
                                 f"the forecast is dated as {source} is (pandas: tz_localize / tz_convert to match)")


def check_dates(run, index: pd.DatetimeIndex, source: str, first_position: int = 0, long: bool = False) -> None:
    """Increasing, unique, regular timestamps at the run's frequency; ``index`` holds the rows
    of ``source`` from position ``first_position`` on (its messages count from the first row).
    ``long``: the timestamps of a long frame, pivoted: messages name times, not positions."""
    from stanhop.csvio import infer_freq

    if index.hasnans:
        raise UserError(f"{source} has a row without a timestamp")
    if not index.is_monotonic_increasing or not index.is_unique:
        raise UserError(f"the timestamps of {source} must be increasing and unique; sort the rows and drop repeated dates")
    if len(index) < 2:
        raise UserError(f"{source} has {len(index)} row(s); a forecast needs at least {run.config.model.in_len}")
    freq = step_of(index)
    if freq is None:  # (a file's gaps were named, by line, when it was read)
        refuse_missing_steps(index, run.data.freq, source, None if long else first_position)
        infer_freq(index, frame_name=source, first_position=None if long else first_position)  # rows off the step
        infer_freq(index)  # where those found nothing to name: the plain error
    refuse_other_step(run, freq, source)


def refuse_missing_steps(index: pd.DatetimeIndex, freq: str, source: str, first_position: int | None = 0) -> None:
    """A UserError naming the timestamps of the run's step ``freq`` missing between the first
    and last of ``index``, where its rows all lie on that step (calendar months, days across a
    change of clocks); nothing otherwise. ``first_position``: the position of index's first row
    in the frame, for the message; None for a long frame's (pivoted: positions mean nothing)."""
    from stanhop.csvio import on_calendar

    grid = on_calendar(index, freq)
    if grid is None or len(grid) == len(index):
        return
    gone = grid.difference(index)
    where = ""
    if first_position is not None:
        row = first_position + int(index.searchsorted(gone[0])) - 1  # the last row before the first gap
        where = f", between positions {row} and {row + 1}"
    raise UserError(f"{source}: {counted(len(gone), 'timestamp')} missing at the step '{freq}' (the first "
                    f"{gone[0]}{where}); insert and fill them ({gap_filling(freq, first_position is None)}), "
                    "or give rows without gaps")


def same_freq(a: str, b: str) -> bool:
    try:
        return to_offset(a) == to_offset(b)
    except ValueError:
        return a == b


def check_complete(values: pd.DataFrame, what: str, freq: str, long: bool = False) -> None:
    """UserError naming the first missing or infinite cell of ``values`` (rows of a run's step
    ``freq``), in the words of a long frame's series where ``long``."""
    bad = ~np.isfinite(values.to_numpy())
    if not bad.any():
        return
    row, col = (int(v[0]) for v in np.nonzero(bad))
    where = (f"the first of series '{values.columns[col]}' at {values.index[row]} (every series needs a value at each "
             f"of their timestamps)" if long else f"the first in column '{values.columns[col]}' at {values.index[row]}")
    infinite = bool(np.isinf(values.to_numpy()).any())
    raise UserError(f"{what} have {int(bad.sum())} missing or infinite value(s), {where}; fill them "
                    f"({gap_filling(freq, long, infinite=infinite)}) or fix the data")


def read_input(run, path: str | os.PathLike, *, date_column: str | None = None, fill: str | None = None,
               notify: Notify | None = None, last_rows: int | None = None, keep_empty: bool = False) -> pd.DataFrame:
    """A CSV file as :func:`align` returns it: only the run's channels are read (extra ones noticed).
    ``keep_empty``: with a ``fill``, the missing timestamps inserted but no cell filled (NaN).

    ``last_rows``: only that many rows at the end will be used (a forecast's in_len), so a file
    whose gaps in time all lie before them is read from after its last gap (``after_last_gap``)
    rather than refused, and its empty or infinite cells before them are no matter; without it
    (a backtest uses every row), any gap is refused unless ``fill`` inserts and fills the
    missing rows.
    """
    from stanhop.csvio import fill_missing, header_of, read_series, refuse_gaps

    date_column = date_column or run.data.date_column
    header = header_of(path)
    if date_column in header:  # else the reader below says so, and how to name it (--date-column)
        require_file_channels(path, header, list(run.data.columns), date_column, notify)
    tail = last_rows is not None and fill is None
    frame = read_series(path, date_column, list(run.data.columns), insert_missing_dates=fill is not None, keep_gaps=tail,
                        keep_infinite=fill is not None or last_rows is not None)  # filled, or checked in the last rows
    if tail:
        frame = after_last_gap(frame, run.data.freq, last_rows, str(path), notify,
                               keep_them="--fill inserts and fills the missing rows")
        first = max(len(frame) - max(last_rows, 2), 0)  # (two rows at least, to see the step)
        refuse_other_step(run, step_of(frame.index[first:]), str(path))  # all rows off the run's step: resample, not remove one
        refuse_off_calendar(frame.index, first, run.data.freq, path)
        try:  # a gap among the last rows, which the forecast reads: the usual error, naming it by its lines
            refuse_gaps(frame.iloc[first:], path, first_row=first)
        except UserError as gap:
            raise UserError(f"{gap} (a forecast reads the last {last_rows} rows: gaps before them would be left out)") from None
        check_dates(run, frame.index[first:], str(path), first_position=first)
    else:
        frame = fill_missing(frame, fill, path, last_rows) if fill and not keep_empty else frame
        check_dates(run, frame.index, str(path))
    return frame[list(run.data.columns)]


def step_of(index: pd.DatetimeIndex) -> str | None:
    """The one regular step of ``index`` (csvio.infer_freq), or None where it has none."""
    from stanhop.csvio import infer_freq

    try:
        return infer_freq(index)
    except UserError:
        return None


def refuse_other_step(run, freq: str | None, source: str) -> None:
    """A UserError where ``source``'s regular step ``freq`` is not the run's (weekly on Mondays
    for a run of Sundays, 15-minute rows for a daily run); nothing for None (no one step: the
    checks that follow name the rows)."""
    if freq is not None and not same_freq(freq, run.data.freq):
        raise UserError(f"{source} has time step '{freq}' but the run was trained on '{run.data.freq}' data; resample it "
                        f"to '{run.data.freq}'")


def refuse_off_calendar(index: pd.DatetimeIndex, first: int, freq: str, path) -> None:
    """A UserError naming the first of ``index[first:]`` (a file's rows, untrimmed) that is not
    on the run's calendar of step ``freq`` counted from ``index[first]``: a Saturday in business
    days, 10:30 in hourly data. It is told as a row to remove, not as timestamps missing."""
    from stanhop.csvio import FIRST_ROW_LINE, calendar

    rows = index[first:]
    if len(rows) < 2 or not (rows.is_monotonic_increasing and rows.is_unique) or (grid := calendar(rows, freq)) is None:
        return
    off = np.flatnonzero(~rows.isin(grid))
    if len(off):
        at = first + int(off[0])
        raise UserError(f"{path}: line {at + FIRST_ROW_LINE} ({index[at]}) is not on the run's step '{freq}' (counted "
                        f"from line {first + FIRST_ROW_LINE}); remove that row, or give rows at the run's step")


OWN_PARTS = ("all", "through_test", "val", "test")


OWN_SOURCE = "the run's own data"  # what messages call it where no input is given


def own_data(run, part: str = "all", *, remedy: str = "give a CSV with --input (Python: pass a DataFrame)") -> pd.DataFrame:
    """The run's own series, if its file is on this machine: ``all`` of it (a forecast past its
    end), ``through_test`` (up to the end of the run's test split), or ``val`` / ``test`` (that
    split and the in_len rows before it: the windows ``stanhop evaluate`` scores), filled by the
    run's data.fill.

    Never downloads: a registered data set must already be in $STANHOP_DATA_DIR or the cache.
    ``remedy`` ends the error when the file is not here.
    """
    return own_data_and_truth(run, part, remedy=remedy)[0]


def own_data_and_truth(run, part: str = "all", *, remedy: str = "give a CSV with --input (Python: pass a DataFrame)",
                       ) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """:func:`own_data`, and the same rows as read (NaN where the run's fill made a value up: a
    backtest's or a calibration's truth), or None where the fill made none up; one read of the file."""
    from stanhop import datasets
    from stanhop.csvio import load_observed

    if part not in OWN_PARTS:
        raise ValueError(f"part must be one of {OWN_PARTS}, got {cited(part)}")
    name = str(run.config.data.name)
    datasets.check_run_file(name, remedy)
    if datasets.looks_like_path(name):
        path = Path(name).expanduser()
    else:
        info = datasets.lookup(name)
        path = datasets.local_copy(info.name) if info is not None else None
    if path is None:
        fetch = f" (`{command('data', 'describe', info.name)}` downloads it)" if info is not None else ""
        raise UserError(f"the run's data '{name}' is not on this machine{fetch}; {remedy}")
    frame, observed = load_observed(path, run.data.date_column, list(run.data.columns), run.config.data.fill)
    zone = run.data.timezone
    if zone and frame.index.tz is not None and str(frame.index.tz) != zone:  # a DataFrame's zone: its CSV kept offsets
        frame.index = frame.index.tz_convert(zone)
    check_own_rows(run, frame)
    rows = slice(None)
    if part != "all":
        start, end = run.data.borders.get("test" if part == "through_test" else part, [len(frame), len(frame)])
        rows = slice(max(start - run.config.model.in_len, 0) if part in ("val", "test") else 0, end)
    return frame.iloc[rows], None if observed is None else frame.iloc[rows].where(observed[rows])


def check_own_rows(run, frame: pd.DataFrame) -> None:
    """Refuse the run's own data when its rows through the test split are not those the run was
    trained on (scaler.json's fingerprint; runs saved before it have none): another training
    wrote the folder since ``run`` was loaded, or the file was edited."""
    from stanhop.runs import SCALER, read_json
    from stanhop.workflow import rows_fingerprint

    if run.data.fingerprint is None or rows_fingerprint(frame, run.data.borders) == run.data.fingerprint:
        return
    try:
        retrained = read_json(run.path / SCALER).get("fingerprint") != run.data.fingerprint
    except (UserError, AttributeError):  # being written anew
        retrained = True
    if retrained:
        raise UserError(f"the run's data changed since the run was loaded (retrained into the same folder, {run.path}?): "
                        f"load the run again (stanhop.load_run)")
    raise UserError(f"the run's data {run.config.data.name} changed since the run was trained (rows up to the end of its "
                    f"test split differ: edited or replaced?): put the file back, or train again on it")


# ---------------------------------------------------------------- forecast


def scaler_of(run):
    from stanhop.scaling import Scaler

    return Scaler.from_dict({"mean": run.data.mean, "scale": run.data.scale})


def predict(run, inputs: np.ndarray) -> np.ndarray:
    """Scaled float32 inputs (b, in_len, c) -> scaled float32 forecasts (b, out_len, c)."""
    import torch

    with torch.no_grad():
        return run.model(torch.from_numpy(inputs)).float().numpy()


def rollout(run, inputs: np.ndarray, horizon: int, *, progress: bool = False) -> np.ndarray:
    """Scaled float32 inputs (b, in_len, c) -> scaled forecasts (b, horizon, c): one forecast
    of out_len steps, then, while steps are missing, another from the last in_len steps of
    the input followed by the forecasts so far. ``progress``: from SHOWN_PASSES passes on, a
    bar on a terminal, else a line at each tenth of them (a log file)."""
    from tqdm.auto import tqdm

    in_len, out_len = run.config.model.in_len, run.config.model.out_len
    passes, started = passes_of(horizon, out_len), time.perf_counter()
    shown = progress and passes >= SHOWN_PASSES
    bars = shown and redrawn_bars()
    parts: list[np.ndarray] = []  # each (b, out_len, c)
    window = inputs
    for done in tqdm(range(1, passes + 1), desc="forecast", unit="pass", leave=False, disable=not bars):
        parts.append(predict(run, window))
        window = np.concatenate([window, parts[-1]], axis=1)[:, -in_len:]
        if shown and not bars and done % -(-passes // 10) == 0:
            log_line(f"forecast: {done:,} of {passes:,} passes ({done / passes:.0%}), {time.perf_counter() - started:.0f} s")
    return np.concatenate(parts, axis=1)[:, :horizon]


def tell_if_far(run, frame: pd.DataFrame, source: str, notify: Notify | None = None) -> None:
    """A notice when ``frame``'s channels lie far from the run's training data (other units?):
    the model's forecasts of such inputs mean little (stanhop.scaling.far_from_training)."""
    from stanhop.scaling import INPUT_FAR_MEAN, INPUT_FAR_SPREAD, far_from_training

    if far := far_from_training(frame, scaler_of(run), INPUT_FAR_MEAN, INPUT_FAR_SPREAD):
        (notify or notice_to_stderr)(f"{source}: {far}; forecasts of data so far from what the run learned are "
                                     "unreliable (other units?)")


def scaled(run, frame: pd.DataFrame) -> np.ndarray:
    """``frame``'s values in the model's units, as the training data module scales: (rows, c) float32."""
    return scaler_of(run).transform(frame.to_numpy()).astype(np.float32)


def window_forecasts(run, z: np.ndarray, starts: np.ndarray, horizon: int, batch_size: int, *, desc: str,
                     progress: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The ``horizon``-step forecasts of the windows of the scaled series ``z`` (n, c) that start at
    ``starts``, ``batch_size`` at a time: (the batch's starts (b,), its target rows (b, horizon),
    its forecasts (b, horizon, c)), with a progress bar named ``desc`` when ``progress``."""
    from tqdm.auto import tqdm

    in_len = run.config.model.in_len
    bars = progress and redrawn_bars()
    if progress and not bars:  # a log file: a line per pass, not a bar
        log_line(f"{desc}: {counted(len(starts), 'window')}, {horizon} steps ahead")
    for first in tqdm(range(0, len(starts), batch_size), desc=desc, unit="batch", leave=False, disable=not bars):
        batch = starts[first : first + batch_size]  # (b,)
        rows = batch[:, None] + in_len + np.arange(horizon)  # (b, horizon)
        yield batch, rows, rollout(run, z[batch[:, None] + np.arange(in_len)], horizon)


def windows_per_batch(run, most: int = 256) -> int:
    """Windows forecast at once (footprint.inference_windows): ``most``, fewer for many series."""
    from stanhop.footprint import inference_windows

    return inference_windows(len(run.data.columns), most)


SHOWN_PASSES = 100  # a recursive forecast of this many passes shows its progress
MOST_PASSES = 10_000  # a forecast from its own forecasts this many times over: its errors compound past any use
RESULT_BYTES = 40  # per value of a forecast's table: float32 passes and their concatenation, float64 values, the table


def horizon_of(run, horizon: int | None) -> int:
    """``horizon`` checked (a whole number >= 1, of at most MOST_PASSES passes of out_len steps),
    or the run's out_len when None."""
    out_len = run.config.model.out_len
    if horizon is None:
        return out_len
    if not isinstance(horizon, numbers.Integral) or isinstance(horizon, bool) or horizon < 1:
        raise UserError(f"horizon must be a whole number >= 1, got {cited(horizon)}")
    if horizon > out_len * MOST_PASSES:
        raise UserError(f"horizon {horizon:,} takes {passes_of(horizon, out_len):,} passes of the run's {counted(out_len, 'step')}, "
                        f"each from the forecasts before it; the largest allowed is {out_len * MOST_PASSES:,} "
                        f"({MOST_PASSES:,} passes), as errors compound with every pass: forecast a shorter horizon, or "
                        "train a run with a longer --out-len")
    return int(horizon)


def refuse_unfitting_horizon(run, horizon: int, levels: list[float]) -> None:
    """A UserError, giving the largest horizon that fits, when a forecast's table of ``horizon``
    rows (RESULT_BYTES per value, with the intervals' bounds) would take more than the free memory."""
    from stanhop.footprint import USABLE, GiB, free_memory, usable

    per_step = 8 + RESULT_BYTES * len(run.data.columns) * (1 + 2 * len(levels))  # a timestamp and the row's values
    if (memory := free_memory()) is None or horizon * per_step <= USABLE * memory.bytes:
        return
    raise UserError(f"a forecast of horizon {horizon:,} would hold ≈ {horizon * per_step / GiB:.1f} GiB, more than "
                    f"{usable(memory)}: the largest horizon that fits is about {int(0.9 * USABLE * memory.bytes // per_step):,}"
                    " (free memory changes from one run to the next)")


def passes_of(horizon: int, out_len: int) -> int:
    """The model's passes a forecast of ``horizon`` steps takes, out_len steps each."""
    return -(-horizon // out_len)


def recursive_notice(run, horizon: int) -> str:
    """What a forecast past the run's out_len is made of, and how to measure it."""
    out_len = run.config.model.out_len
    return (f"the run forecasts {counted(out_len, 'step')} at a time: steps {out_len + 1}-{horizon} are forecast from its own "
            f"forecasts ({passes_of(horizon, out_len)} passes), so their errors compound; "
            f"{command('forecast', run.path, '--backtest', '--horizon', horizon)} measures them on the run's test split")


def future_index(index: pd.DatetimeIndex, steps: int, freq: str) -> pd.DatetimeIndex:
    """The ``steps`` timestamps after ``index[-1]`` at frequency ``freq``."""
    return pd.date_range(start=index[-1], periods=steps + 1, freq=freq)[1:]


@one_job()
def forecast(run, frame: pd.DataFrame, *, horizon: int | None = None, intervals=None,
             notify: Notify | None = None, progress: bool = False, source: str = "the input") -> pd.DataFrame:
    """Forecast the ``horizon`` (default ``out_len``) steps after the last row of ``frame``, in
    original units; past ``out_len`` recursively, with a notice.

    Uses the last ``in_len`` rows (they must be complete; a gap in time before them is no
    matter: the rows before it are left out, with a notice). Returns one row per future step,
    indexed by the timestamps that continue the input's frequency, one column per channel;
    with ``intervals`` (levels in percent, e.g. "80,95" or [80, 95]) each channel is followed
    by its conformal interval at each level, ``<channel>_lo80``, ``<channel>_hi80``, …
    (:mod:`stanhop.intervals`, calibrated on the run's validation split). A long ``frame``
    (unique_id, ds, y) gets its forecast long: unique_id, ds, STanHop, STanHop-lo-80, … .
    ``source``: what messages call the frame (the CLI gives a long CSV's path).
    """
    from stanhop.intervals import conformal_half_widths, parse_levels

    horizon, levels = horizon_of(run, horizon), parse_levels(intervals)
    refuse_unfitting_horizon(run, horizon, levels)
    in_len, out_len = run.config.model.in_len, run.config.model.out_len
    given, frame = frame, align(run, frame, source=source, notify=notify, last_rows=in_len)
    if len(frame) < in_len:
        raise UserError(f"the input has {len(frame)} rows but the run needs the last {in_len} (its in_len) to forecast")
    window = frame.iloc[-in_len:]
    check_complete(window, f"the last {in_len} rows of {source} (the forecast's input)", run.data.freq, is_long(given))
    tell_if_far(run, window, source, notify)
    widths = conformal_half_widths(run, horizon, levels, progress=progress) if levels else {}
    if horizon > out_len:  # the input and the intervals accepted: tell what the forecast will be made of
        (notify or notice_to_stderr)(recursive_notice(run, horizon))
    z = scaled(run, window)[None]  # (1, in_len, c)
    prediction = scaler_of(run).inverse_transform(rollout(run, z, horizon, progress=progress)[0].astype(np.float64))  # (horizon, c)
    index = future_index(frame.index, horizon, run.data.freq).rename(frame.index.name or run.data.date_column)
    table = pd.DataFrame(with_intervals(run.data.columns, prediction, widths, np.asarray(run.data.scale)), index=index)
    return _as_given(run, table, given, levels)


def _as_given(run, table: pd.DataFrame, given, levels: list[float], **long_layout) -> pd.DataFrame:
    """``table`` long (frames.to_long) where the input ``given`` was long, else with its channels'
    columns named as ``given`` names them (0, not '0': the run names channels by text)."""
    from stanhop.frames import to_long
    from stanhop.intervals import label

    if not is_long(given):
        labels = {str(c): c for c in given.columns if not isinstance(c, str)} if isinstance(given, pd.DataFrame) else {}
        return table.rename(columns=labels) if labels else table
    return to_long(table, list(run.data.columns), given, levels=[label(level) for level in levels], **long_layout)


def with_intervals(columns: list[str], prediction: np.ndarray, widths: dict[float, np.ndarray], scale: np.ndarray,
                   suffix: str = "", truth: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Columns of a forecast table: each channel's ``prediction`` (rows, c) in original units
    (named ``<channel><suffix>``), then its interval at each level, ``<channel>_lo<level>`` and
    ``_hi<level>``, from the scaled half-widths (rows, c) of ``widths``, then its ``truth``
    (rows, c) as ``<channel>_true`` when given."""
    from stanhop.intervals import label

    table = {}
    for i, name in enumerate(columns):
        table[f"{name}{suffix}"] = prediction[:, i]
        for level, width in widths.items():
            half = width[:, i].astype(np.float64) * scale[i]
            table[f"{name}_lo{label(level)}"] = prediction[:, i] - half
            table[f"{name}_hi{label(level)}"] = prediction[:, i] + half
        if truth is not None:
            table[f"{name}_true"] = truth[:, i]
    return table


# ---------------------------------------------------------------- backtest


class BacktestErrors:
    """Per-channel sums of squared and absolute scaled errors over every forecast element, and
    with interval half-widths ({level: (t, c) scaled}) the count of elements inside each."""

    def __init__(self, columns: list[str], scale: list[float], widths: dict[float, np.ndarray] | None = None):
        self.columns, self.scale = list(columns), np.asarray(scale, dtype=np.float64)
        self.sq = np.zeros(len(columns))
        self.ab = np.zeros(len(columns))
        self.widths = widths or {}  # a NaN half-width: no interval there (intervals.half_widths)
        self.inside = {level: np.zeros(len(columns)) for level in self.widths}
        self.bounded = {level: np.zeros(len(columns)) for level in self.widths}  # elements scored with an interval
        self.n = np.zeros(len(columns))  # elements scored per channel

    def update(self, prediction: np.ndarray, truth: np.ndarray) -> None:  # (b, t, c) scaled; truth NaN: not scored
        scored = ~np.isnan(truth)
        error = np.where(scored, prediction.astype(np.float64) - truth.astype(np.float64), 0.0)
        self.sq += np.square(error).sum(axis=(0, 1))
        self.ab += np.abs(error).sum(axis=(0, 1))
        for level, width in self.widths.items():
            self.inside[level] += (scored & (np.abs(error) <= width[None])).sum(axis=(0, 1))
            self.bounded[level] += (scored & ~np.isnan(width[None])).sum(axis=(0, 1))
        self.n += scored.sum(axis=(0, 1))

    def result(self) -> dict[str, Any]:
        """Overall figures over every element scored; a channel with none scored (a series whose
        every target the fill made up) has None for its figures, not a perfect 0."""
        from stanhop.intervals import label

        n, total = np.maximum(self.n, 1), max(self.n.sum(), 1)
        mse, mae = self.sq / n, self.ab / n
        per = {c: _metrics(mse[i], mae[i], mse[i] * self.scale[i] ** 2, mae[i] * self.scale[i]) if self.n[i] else
               dict.fromkeys(METRIC_KEYS) for i, c in enumerate(self.columns)}
        overall = _metrics(self.sq.sum() / total, self.ab.sum() / total, (self.sq * self.scale**2).sum() / total,
                           (self.ab * self.scale).sum() / total)
        result: dict[str, Any] = {"overall": overall, "per_channel": per}
        if self.widths:  # the share of forecast elements inside each level's interval, where it has one
            result["coverage"] = {label(level): {"overall": _share(inside.sum(), self.bounded[level].sum()),
                                                 "per_channel": {c: _share(inside[i], self.bounded[level][i])
                                                                 for i, c in enumerate(self.columns)}}
                                  for level, inside in self.inside.items()}
        return result


def _share(part: float, whole: float) -> float | None:
    return float(part / whole) if whole else None


def _metrics(*values: float) -> dict[str, float]:
    return dict(zip(METRIC_KEYS, (float(v) for v in values)))


@dataclass
class Backtest:
    """A backtest's long table (one row per window and step) and its metrics."""

    table: pd.DataFrame
    metrics: dict[str, Any]


@dataclass
class BacktestStream:
    """Tables batch by batch; ``metrics()`` once every batch has been read."""

    chunks: Iterator[pd.DataFrame]
    errors: BacktestErrors
    facts: dict[str, Any]

    def metrics(self) -> dict[str, Any]:
        return {**self.facts, **self.errors.result()}


def window_starts(rows: int, in_len: int, horizon: int, stride: int, n_windows: int | None = None) -> np.ndarray:
    """The first rows of a backtest's windows over ``rows`` rows, ascending: the last window's
    horizon ends on the last row, each earlier one starts ``stride`` rows before the next
    (neuralforecast's cross_validation); ``n_windows``: only the last n."""
    last = rows - in_len - horizon  # the last window's start
    starts = np.arange(last % stride, last + 1, stride)
    if n_windows is None:
        return starts
    if not isinstance(n_windows, numbers.Integral) or isinstance(n_windows, bool) or n_windows < 1:
        raise UserError(f"n_windows must be a whole number >= 1, got {cited(n_windows)}")
    if n_windows > len(starts):
        raise UserError(f"{n_windows} windows asked for (n_windows; CLI: --n-windows) and {len(starts)} fit in the "
                        f"{rows} rows (in_len + horizon = {in_len + horizon} rows each, stride {stride}): ask for at "
                        f"most {len(starts)}, or give more rows or a smaller stride")
    return starts[-int(n_windows):]


@one_job()
def backtest_stream(run, frame: pd.DataFrame, *, stride: int | None = None, horizon: int | None = None,
                    n_windows: int | None = None, intervals=None, batch_size: int | None = None,
                    notify: Notify | None = None, progress: bool = False, source: str = "the input",
                    truth: pd.DataFrame | None = None) -> BacktestStream:
    """Check the input now; forecast its windows lazily, ``batch_size`` (default:
    windows_per_batch) at a time, each ``horizon`` steps (default out_len; past it
    recursively, as :func:`forecast`), with the conformal ``intervals`` (levels in percent)
    and their coverage when given. The windows end on the last row (see :func:`window_starts`;
    ``n_windows``: the last n only). ``progress``: progress bars on stderr. For a long
    ``frame`` the tables are long too (see :func:`backtest`). ``truth``: ``frame`` as it was
    before a fill (the same layout, rows and series; NaN where the fill made a value up): the
    forecasts are scored against its values only, and the table's truth is NaN where it has none."""
    from stanhop.intervals import conformal_half_widths, parse_levels

    horizon, levels = horizon_of(run, horizon), parse_levels(intervals)
    given, frame = frame, align(run, frame, source=source, notify=notify)
    if truth is not None:
        truth = aligned_truth(run, truth, source)
        if not (truth.index.equals(frame.index) and truth.columns.equals(frame.columns)):
            raise UserError(f"the truth given for {source} must have its rows and series")
    in_len, out_len = run.config.model.in_len, run.config.model.out_len
    stride = horizon if stride is None else stride
    batch_size = windows_per_batch(run) if batch_size is None else batch_size
    if not isinstance(stride, numbers.Integral) or isinstance(stride, bool) or stride < 1:
        raise UserError(f"stride must be a whole number >= 1, got {cited(stride)}")
    if not isinstance(batch_size, numbers.Integral) or isinstance(batch_size, bool) or batch_size < 1:
        raise UserError(f"batch_size must be a whole number >= 1, got {cited(batch_size)}")
    if len(frame) < in_len + horizon:
        needs = "in_len + out_len" if horizon == out_len else "in_len + horizon"
        raise UserError(f"a backtest needs at least {needs} = {in_len + horizon} rows, {source} has {len(frame)}: "
                        f"a shorter horizon, or more rows" + (" (--input with the whole file)" if source == OWN_SOURCE else ""))
    starts = window_starts(len(frame), in_len, horizon, int(stride), n_windows)
    check_complete(frame.iloc[starts[0]:], "the backtest's rows", run.data.freq, is_long(given))
    from stanhop.baselines import naive_errors, season_of

    truth = frame if truth is None else truth
    frame, truth, starts = frame.iloc[starts[0]:], truth.iloc[starts[0]:], starts - starts[0]  # the rows the windows use
    tell_if_far(run, frame, source, notify)
    z = scaled(run, frame)  # (rows, c)
    z_truth = z if truth is frame else scaled(run, truth)  # (rows, c), NaN where a fill made the value up
    if np.isnan(z_truth[in_len:]).all():
        raise UserError(f"the backtest's {len(z_truth) - in_len} target rows of {source} hold no value of the file (its "
                        "fill made up every one): nothing to score; backtest on rows that have values")
    widths = conformal_half_widths(run, horizon, levels, progress=progress) if levels else {}
    errors = BacktestErrors(list(run.data.columns), run.data.scale, widths)
    facts = {"windows": len(starts), "stride": int(stride), "in_len": in_len, "out_len": out_len, "horizon": horizon,
             "first_window_start": str(frame.index[0]), "last_window_start": str(frame.index[starts[-1]]),
             "baselines": naive_errors(z, starts, in_len, horizon, season_of(run.data.freq), truth=z_truth)}
    chunks = _chunks(run, frame, truth, z, z_truth, starts, horizon, int(batch_size), errors, progress)
    as_given = (_as_given(run, chunk, given, levels, prediction="_pred",
                                   keep=("window_start", "cutoff", "step")) for chunk in chunks)
    return BacktestStream(as_given, errors, facts)


def _chunks(run, frame: pd.DataFrame, truth: pd.DataFrame, z: np.ndarray, z_truth: np.ndarray, starts: np.ndarray,
            horizon: int, batch_size: int, errors: BacktestErrors, progress: bool) -> Iterator[pd.DataFrame]:
    # frame: the rows in original units, z: the same scaled (n, c); truth, z_truth: the same with NaN where made up
    scaler, original = scaler_of(run), truth.to_numpy()
    for batch, rows, prediction in window_forecasts(run, z, starts, horizon, batch_size, desc="backtest", progress=progress):
        errors.update(prediction, z_truth[rows])
        yield _long_table(frame, batch, rows, scaler.inverse_transform(prediction.astype(np.float64)), original[rows],
                          errors.widths, errors.scale)


def _long_table(frame: pd.DataFrame, starts: np.ndarray, rows: np.ndarray, prediction: np.ndarray, truth: np.ndarray,
                widths: dict[float, np.ndarray], scale: np.ndarray) -> pd.DataFrame:
    """One row per (window, step): window_start (its first input row), cutoff (its last, the
    forecast's origin, as neuralforecast's cross-validation names it), timestamp, step, then per
    channel <channel>_pred, its interval bounds at each level (<channel>_lo80, _hi80, …) and
    <channel>_true."""
    b, t, c = prediction.shape
    table = {
        "window_start": np.repeat(frame.index[starts], t),
        "cutoff": np.repeat(frame.index[rows[:, 0] - 1], t),
        "timestamp": frame.index[rows.reshape(-1)],
        "step": np.tile(np.arange(1, t + 1), b),
    }
    tiled = {level: np.tile(width, (b, 1)) for level, width in widths.items()}  # (b·t, c): each window's steps
    table.update(with_intervals(list(frame.columns), prediction.reshape(b * t, c), tiled, scale, suffix="_pred",
                                truth=truth.reshape(b * t, c)))
    return pd.DataFrame(table)


@one_job()
def backtest(run, frame: pd.DataFrame, *, stride: int | None = None, horizon: int | None = None,
             n_windows: int | None = None, intervals=None, batch_size: int | None = None, notify: Notify | None = None,
             source: str = "the input", truth: pd.DataFrame | None = None) -> Backtest:
    """Forecast every window of ``frame`` ``horizon`` steps ahead (default out_len; stride
    default: the horizon) beside the truth, the last window ending on the last row
    (``n_windows``: the last n windows only).

    Returns the long table in original units (for a long ``frame``, neuralforecast's layout:
    unique_id, ds, window_start, cutoff, step, y, STanHop, …) and the metrics: ``overall`` and
    ``per_channel`` MSE/MAE, scaled and in original units, plus the window facts. A ``frame``
    you filled is scored against ``truth``, the same frame before the fill (NaN: not scored).
    """
    stream = backtest_stream(run, frame, stride=stride, horizon=horizon, n_windows=n_windows, intervals=intervals,
                             batch_size=batch_size, notify=notify, source=source, truth=truth)
    table = pd.concat(list(stream.chunks), ignore_index=True)
    if is_long(frame):  # series by series, as neuralforecast orders them (the stream gives them batch by batch)
        order = {uid: i for i, uid in enumerate(pd.unique(table["unique_id"]))}
        table = table.sort_values("unique_id", key=lambda ids: ids.map(order), kind="stable", ignore_index=True)
    return Backtest(table=table, metrics=stream.metrics())


# ---------------------------------------------------------------- output files


def output_format(path: str | os.PathLike | None, fmt: str | None) -> str:
    """``fmt`` if given, else parquet for a .parquet/.pq file name, else csv; parquet only
    where pyarrow is installed (an optional dependency: stanhop[parquet])."""
    if fmt is not None and fmt not in FORMATS:
        raise UserError(f"format must be one of {', '.join(FORMATS)}, got {cited(fmt)}")
    chosen = fmt or ("parquet" if path is not None and Path(path).suffix.lower() in (".parquet", ".pq") else "csv")
    if chosen == "parquet" and importlib.util.find_spec("pyarrow") is None:
        raise UserError("writing Parquet needs pyarrow, which is not installed: pip install pyarrow (or stanhop[parquet]), "
                        "or write a .csv")
    return chosen


def is_stream(path: str | os.PathLike) -> bool:
    """Whether an output names a stream, not a file: ``-`` or /dev/stdout (:func:`is_stdout`), or
    an existing character device, named pipe or socket (/dev/fd/3, a fifo). A stream is written
    straight through: no temp file renamed over it (that would replace a device's link with a
    file, and the reader would get nothing), and nothing is written beside it."""
    if is_stdout(path):
        return True
    try:
        mode = os.stat(path).st_mode  # through links
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def is_stdout(path: str | os.PathLike) -> bool:
    """Whether an output is this process's stdout: ``-``, /dev/stdout, or the file or pipe
    stdout already is."""
    if str(path) == "-":
        return True
    try:
        return os.path.samestat(os.stat(path), os.fstat(sys.stdout.fileno()))
    except (OSError, ValueError, AttributeError):  # no such file; a stdout with no descriptor (a notebook's)
        return False


def check_output(path: str | os.PathLike, *, force: bool = False, keep: Iterable[str | os.PathLike] = ()) -> Path:
    """Refuse an existing file unless ``force``, a folder always, any of the files in ``keep``
    (the input, a run's own files) even with ``force``, and a place where nothing can be
    written; create missing parent folders. A stream (:func:`is_stream`) is always accepted."""
    if is_stream(path):
        return Path(path)
    path = Path(path)
    _name_fits(path)
    real = Path(os.path.realpath(path))  # the file it names once its folders exist (new/../in.csv is in.csv)
    if real.is_dir():
        raise UserError(f"{path} is a folder; give a file name for the output")
    if real.exists() and any(Path(kept).exists() and real.samefile(kept) for kept in keep):
        raise UserError(f"{path} is one of the files this command reads (the input or the run's own); "
                        f"write to another file, or it would replace your data")
    if real.exists() and not force:
        raise UserError(f"{path} already exists; choose another file name, or replace it with --force "
                        "(Python: force=True)")
    writable_folder(path.parent, "--output")
    _name_fits(path)  # (its folder there now: a name too long is told only where the folder is)
    return path


def _name_fits(path: Path) -> None:
    """A UserError when no file can have the name ``path`` (too long for the file system)."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        pass
    except OSError as err:
        raise UserError(f"cannot write {path} ({err.strerror}); choose another file name") from None


def write_table(chunks: Iterable[pd.DataFrame], path: str | os.PathLike, fmt: str, *, index: bool = False,
                freq: str | None = None) -> Path:
    """Write tables (one after another) to ``path`` (:func:`output_file`: atomically, or to a
    stream as they come). ``freq``: the run's step, for the dates' format in a CSV
    (csv_date_format)."""
    with output_file(path, binary=fmt != "csv") as f:
        _write_csv(chunks, f, index, freq) if fmt == "csv" else _write_parquet(chunks, f, index)
    return Path(path)


@contextmanager
def output_file(path: str | os.PathLike, *, binary: bool = False):
    """A file to write the output ``path`` through. A stream (:func:`is_stream`; ``-`` is
    stdout) is written as it comes: stdout as it is (opened anew, a file it appends to would be
    truncated), a pipe or device opened. Anything else is written atomically: a temp file beside
    the file ``path`` names (through links: the link is kept), renamed over it once written, and
    removed if the writing fails."""
    if is_stdout(path):
        sys.stdout.flush()
        yield sys.stdout.buffer if binary else sys.stdout
        sys.stdout.flush()
        return
    text = {} if binary else {"newline": "", "encoding": "utf-8"}
    if is_stream(path):
        try:
            with open(path, "wb" if binary else "w", **text) as f:
                yield f
        except OSError as err:  # (a write names no file)
            raise (naming(err, path) if err.filename is None else err) from None
        return
    with atomic_file(os.path.realpath(path), "wb" if binary else "w", **text) as f:
        yield f


def metrics_path(output: str | os.PathLike) -> Path:
    """Where a backtest's metrics go beside its table: ``bt.csv`` -> ``bt.metrics.json``."""
    return Path(output).with_suffix(".metrics.json")


def write_metrics(metrics: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write metrics as indented JSON, atomically."""
    write_json(Path(path), metrics)
    return Path(path)



def _write_csv(chunks: Iterable[pd.DataFrame], f, index: bool, freq: str | None) -> None:  # f: a text file
    for i, chunk in enumerate(chunks):
        chunk.to_csv(f, header=i == 0, index=index, date_format=csv_date_format(chunk, freq))


def csv_date_format(table: pd.DataFrame, freq: str | None) -> str | None:
    """to_csv's date_format for ``table``: the time on every row where the run's step ``freq`` is
    under a day (pandas leaves it out of a table whose times are all midnight, as a one-step
    hourly forecast at 00:00 is); else None, pandas' own (daily dates; dates with a UTC offset or
    fractions of a second, which pandas writes in full)."""
    if freq is None:
        return None
    step = to_offset(freq)
    if not (isinstance(step, pd.offsets.Tick) and pd.Timedelta(step) < pd.Timedelta(days=1)):
        return None
    columns = [table.index] if isinstance(table.index, pd.DatetimeIndex) else []
    columns += [table[name] for name in table.columns if pd.api.types.is_datetime64_any_dtype(table[name])]
    if not columns:  # (a backtest's window_start, cutoff and timestamp alike: one format for all)
        return None
    dates = [pd.DatetimeIndex(column) for column in columns]
    whole_seconds = not any(d.microsecond.any() or d.nanosecond.any() for d in dates)  # else pandas writes the fractions
    return "%Y-%m-%d %H:%M:%S" if all(d.tz is None for d in dates) and whole_seconds else None


def _write_parquet(chunks: Iterable[pd.DataFrame], f, index: bool) -> None:  # f: a binary file
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    try:
        for chunk in chunks:
            table = pa.Table.from_pandas(chunk.reset_index() if index else chunk, preserve_index=False)
            writer = writer or pq.ParquetWriter(f, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
