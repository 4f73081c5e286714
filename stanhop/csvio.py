"""Read a time-series CSV into a checked pandas DataFrame.

The file holds one date column (``date`` unless told otherwise) and channels: every other
numeric column, or the ``columns`` asked for. A column with no number in it (a label, a
station name) is not a channel. Every problem is a UserError of one line that names the
column and the file line (line 1 is the header), so the user can fix the file:

- missing, empty or over-sized file (cap: ``STANHOP_MAX_CSV_BYTES``, default 2 GiB),
  header only, not text, a delimiter other than , ; or tab, no date column, unknown ``columns``;
- an empty or unparsable date, dates out of order, a repeated date, irregular spacing;
- a non-numeric cell in a channel ('-' or '?': zero in some exports, missing in others);
- empty cells, infinite values (inf, 1e400) and missing timestamps (gaps of whole steps),
  unless ``fill`` is ``"ffill"`` (carry the last value forward) or ``"interpolate"`` (linear in
  time): then the missing timestamps are inserted and every empty or infinite cell is filled;
  both give leading gaps the first value.

Values are separated by commas, or by semicolons or tabs (a spreadsheet's export where the
decimal mark is a comma, so commas in its channels' numbers are decimal commas); the decimal mark
is found from the channels' numbers, and may differ in a column whose marks cannot group
thousands (:func:`_without_thousands_marks`). Dates written
day.month.year are read day first; other dates month first (pandas' reading) unless only day
first gives real dates at a regular step, or whole numbers that pandas cannot read fit as Unix
time. A notice says when a file is read in one of these ways.

Lines are counted as the file has them: blank lines inside the file are kept as empty rows
(and so reported), blank lines at its end are ignored.
"""

from __future__ import annotations

import bz2
import functools
import gzip
import io
import lzma
import os
import re
import shlex
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

from stanhop import datasets
from stanhop.errors import UserError, cited, clipped, likely_name, listing, tell_once
from stanhop.frames import LONG_COLUMNS, numbers_not_dates

FILLS = ("ffill", "interpolate")
DEFAULT_MAX_CSV_BYTES = 2 * 1024**3
FIRST_ROW_LINE = 2  # the file line of the frame's row 0: row i is line i + 2


def load_series(
    name_or_path: str | os.PathLike,
    date_column: str = "date",
    columns: list[str] | None = None,
    fill: str | None = None,
) -> pd.DataFrame:
    """A registered data set or a CSV file as a DataFrame: DatetimeIndex, float64 channels.

    The index is named by the date column, regular, strictly increasing; no cell is empty.
    """
    return load_observed(name_or_path, date_column, columns, fill)[0]


def load_observed(name_or_path: str | os.PathLike, date_column: str = "date", columns: list[str] | None = None,
                  fill: str | None = None) -> tuple[pd.DataFrame, np.ndarray | None]:
    """:func:`load_series`, and which of its cells hold a value of the file: (rows, c) bool,
    False where ``fill`` filled the cell (empty or infinite); None where it filled none."""
    frame = read_series(name_or_path, date_column, columns, insert_missing_dates=fill is not None,
                        keep_infinite=fill is not None)
    observed = np.isfinite(frame.to_numpy(dtype=np.float64))  # (rows, c)
    return fill_missing(frame, fill, name_or_path), None if observed.all() else observed


def _memory_told(read):
    """``read`` (of a CSV named by its first argument), its MemoryError (pyarrow's ArrowMemoryError
    is one; ``ulimit -v`` raises them early) a UserError: a file within the size cap can still
    take more than the memory left, which the cap does not know."""
    @functools.wraps(read)
    def reading(name_or_path, *args, **kwargs):
        try:
            return read(name_or_path, *args, **kwargs)
        except MemoryError:
            raise UserError(f"{name_or_path} does not fit in the memory left to read it; use a smaller file (fewer rows "
                            "or columns) or free memory; a lower STANHOP_MAX_CSV_BYTES (bytes) refuses such files before "
                            "reading them") from None
    return reading


@_memory_told
def read_series(name_or_path: str | os.PathLike, date_column: str = "date", columns: list[str] | None = None, *,
                insert_missing_dates: bool = False, keep_gaps: bool = False, keep_infinite: bool = False) -> pd.DataFrame:
    """Like :func:`load_series` but empty cells are left as NaN. With ``insert_missing_dates``,
    timestamps missing from the regular step (gaps of whole steps) come back as rows of NaN, for
    a fill; with ``keep_gaps`` the rows come back as they are, gaps and all (the caller checks
    them: :func:`refuse_gaps`); with neither, such gaps are a UserError. Infinite values are a
    UserError unless ``keep_infinite``: they come back as ±inf, which :func:`fill_missing`
    fills as missing values."""
    path = datasets.resolve(name_or_path)
    columns = [columns] if isinstance(columns, str) else columns
    header, dialect = _open(path)
    _check_header(path, header, dialect, date_column, columns)
    raw = _read(path, dialect, usecols=None if columns is None else [date_column, *columns], dtype={date_column: "str"})
    raw = _drop_trailing_blank_rows(raw)
    if raw.empty:
        raise UserError(f"{path} has a header but no data rows")
    _refuse_units_row(raw.iloc[:2].drop(columns=date_column), path)  # (its first two rows: no copy of the file)
    _refuse_long_format(raw, date_column, path)
    if columns is None and (unnamed := [c for c in raw.columns if _UNNAMED.fullmatch(str(c))]):
        tell_once(f"{path}: ignoring {len(unnamed)} column(s) with no name in the header (an index pandas wrote, "
                   "or a delimiter at the end of each line?)")
        raw = raw.drop(columns=unnamed)
    names = [c for c in raw.columns if c != date_column] if columns is None else columns
    decimal, why = _decimal_mark([raw[name] for name in names], dialect["sep"], path, raw[date_column])
    if decimal == "," and (points := [name for name in names if raw[name].dtype.kind == "f"]):
        raw[points] = _read(path, dialect, usecols=points, dtype="str")[points]  # their text: 5.827 may group thousands
    index = _parse_dates(raw[date_column], path)
    channels = {}
    for name in names:
        values = _to_float(raw[name], name, path, required=columns is not None, decimal=decimal, why=why,
                           keep_infinite=keep_infinite)
        if values is not None:
            channels[name] = values
    if not channels:
        raise UserError(f"{path} has no numeric column besides '{date_column}'")
    if skipped := [name for name in names if name not in channels]:
        tell_once(f"{path}: ignoring the text column(s) {listing(_with_example(raw[name], name) for name in skipped)}; "
                  "the channels are the numeric columns (name them with --columns; Python: data.columns)")
    frame = pd.DataFrame(channels)
    frame.index = index
    if keep_gaps and not insert_missing_dates:
        return frame
    return frame if _regular(index) else _with_missing_dates(frame, path, insert_missing_dates)


def _with_example(column: pd.Series, name: str) -> str:
    """A text column's name with its first value, and what it seems to be where that is telling:
    "load ('1002.51 kW': numbers with a unit? strip it to use the column)"."""
    values = column.dropna().astype("str").str.strip()
    if values.empty:
        return clipped(name)
    first = values.iloc[0]
    if values.str.lower().isin(["true", "false"]).all():
        return f"{clipped(name)} (true/false)"
    if re.fullmatch(r"[+-]?[\d.,]*\d[\d.,]*\s*[^\d\s.,]{1,4}", first):
        return f"{clipped(name)} ({_shown(first)}: numbers with a unit? strip it to use the column)"
    return f"{clipped(name)} ({_shown(first)})"


_NA_TEXTS = ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A",
             "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]  # what pandas reads as missing by default


@_memory_told
def read_long(name_or_path: str | os.PathLike, *, keep_infinite: bool = False) -> pd.DataFrame | None:
    """A CSV file in neuralforecast's long layout, one row per series and timestamp under the
    columns unique_id, ds and y (others may follow), as a DataFrame of those rows: ids as
    written (an id "NA" is a series, not a missing value), ds as timestamps (``_long_dates``),
    y as numbers; what stanhop.frames takes as a long frame. None for a file without those
    three columns. An infinite y is refused unless ``keep_infinite`` (a fill will fill it)."""
    path = datasets.resolve(name_or_path)
    header, dialect = _open(path)
    if not set(LONG_COLUMNS) <= {str(c) for c in header}:
        return None
    raw = _read(path, dialect, dtype={"unique_id": "str", "ds": "str"}, keep_default_na=False,
                na_values={"y": _NA_TEXTS})
    raw = raw[(raw[list(LONG_COLUMNS)].astype("str") != "").any(axis=1) | raw["y"].notna()]  # blank lines: none
    if raw.empty:
        raise UserError(f"{path} has a header but no data rows")
    for column in ("unique_id", "ds"):
        empty = (raw[column].str.strip() == "").to_numpy()
        if empty.any():
            line = int(np.flatnonzero(empty)[0]) + FIRST_ROW_LINE
            raise UserError(f"{path}: line {line} has no {column}; every row needs its series and its timestamp")
    raw = raw.reset_index(drop=True)
    decimal, why = _decimal_mark([raw["y"]], dialect["sep"], path, raw["ds"])
    raw["ds"] = _long_dates(raw["ds"], path)
    raw["y"] = _to_float(raw["y"], "y", path, True, decimal, why, keep_infinite=keep_infinite, leave_out=False)
    return raw


def _long_dates(text: pd.Series, path: Path) -> pd.Series:
    """A long file's ds column as timestamps. Its dates repeat, one per series, in any order:
    each distinct one is read once, and the readings a wide file's dates may get are tried in
    turn (pandas' own, day first, Unix time, one clock for several UTC offsets), keeping the
    first under which the distinct dates fall on one regular step (else the first that reads
    them all; one with no timestamp missing before one with gaps); the user is told of any
    other than pandas' own."""
    unique = pd.unique(text)
    distinct = _whole_numbers(pd.Series(unique, name="ds"), path)
    _refuse_step_counts(distinct, path)
    readings = [(how, dates) for how, dates in _long_readings(distinct) if not dates.isna().any()]

    def fits(dates: pd.Series, gaps_allowed: bool) -> bool:  # in any order: one per series
        index = pd.DatetimeIndex(dates).sort_values()
        return _regular(index) or (gaps_allowed and _full_range(index) is not None)

    chosen = _first_fitting(readings, fits) or next(iter(readings), None)
    if chosen is None:
        unread = _to_datetime(text, utc=True).isna().to_numpy()
        row = int(np.argmax(unread)) if unread.any() else 0
        raise UserError(f"{path}: line {row + FIRST_ROW_LINE} has a date that cannot be read: {cited(text.iloc[row])} in "
                        "column 'ds' (expected e.g. 2016-07-01 00:00:00, one format for the whole column)")
    how, dates = chosen[:2]
    if how:
        tell_once(f"{path}: the dates in column 'ds' are read {how}")
    else:
        for day_first in (d for h, d in readings if h == "day first"):
            _tell_if_day_first_fits_too(distinct, dates, day_first, path)
    return text.map(dict(zip(unique, dates)))


def _long_readings(distinct: pd.Series):
    """(how, dates) for each reading of a long file's distinct dates, pandas' own first ("")."""
    day_first = bool(distinct.str.match(_DAY_DOT_MONTH).all())
    try:
        own = _to_datetime(distinct, dayfirst=day_first)
        mixed = own.dtype == object  # pandas 2.x: several UTC offsets came back as objects
    except (ValueError, TypeError, OverflowError):
        mixed = True
    if mixed:
        if distinct.str.fullmatch(_WITH_UTC_OFFSET).all():
            yield "in UTC (they have several UTC offsets: daylight saving time?)", _to_datetime(distinct, utc=True)
            yield ("on the local wall clock (they have several UTC offsets, dropped)",
                   _to_datetime(distinct.str.replace(rf"{_UTC_OFFSET}$", "", regex=True)))
        return
    yield ("day first (day.month.year)" if day_first else ""), own
    yield from _other_readings(distinct)


def refuse_gaps(frame: pd.DataFrame, path: str | os.PathLike, first_row: int = 0) -> None:
    """The UserError read_series gives a file with gaps (naming the first), unless ``frame``'s
    timestamps are one regular step apart; ``frame`` holds the file's rows from ``first_row`` on."""
    if not _regular(frame.index):
        _with_missing_dates(frame, Path(path), insert=False, first_row=first_row)


FILL_ADVICE = "(CLI: --fill ffill|interpolate; Python: data.fill in a config, fill= in a function)"  # a file's gaps and empty cells


def fill_missing(frame: pd.DataFrame, fill: str | None, source: str | os.PathLike = "the data",
                 last_rows: int | None = None) -> pd.DataFrame:
    """Reject empty cells naming their lines, or fill them by ``"ffill"`` / ``"interpolate"``
    with a notice (once per file) of how many were filled in each column, how many of them were
    infinite (read_series' ``keep_infinite``: filled as missing values), and how many lie before
    its first value or after its last (which are repeated there); ``source`` names
    the file in both. ``last_rows``: the rows at the end a forecast reads; a column with no value
    among them is told, its forecast resting on filled values only."""
    if fill not in (None, *FILLS):
        raise UserError(f"fill must be ffill or interpolate, got {cited(fill)}")
    missing = _missing(frame)
    if not missing.any().any():
        return frame
    empty = [name for name in frame.columns if missing[name].all()]
    if empty:  # before any advice to fill: nothing would fill them
        raise UserError(f"{source}: column(s) {listing(empty)} have no values at all; leave them out with "
                        "columns=[...] (CLI: --columns)")
    if fill is None:
        raise UserError(f"{source}: {_describe_missing(missing)}; fill them {FILL_ADVICE} or fix the file")
    counts = {name: int(n) for name, n in missing.sum().items() if n}
    infinite = {name: int(n) for name, n in np.isinf(frame[list(counts)]).sum().items()}
    leading = {name: int((~missing[name]).to_numpy().argmax()) for name in counts}  # before the first value
    trailing = {name: int((~missing[name]).to_numpy()[::-1].argmax()) for name in counts}  # after the last

    def told(name: str, n: int) -> str:
        inf = f", {infinite[name]} of them infinite" if infinite[name] else ""
        late = f", {leading[name]} before its first value, which is carried back to them" if leading[name] else ""
        early = f", {trailing[name]} after its last value, which is carried forward to them" if trailing[name] else ""
        return f"{clipped(name)} {n} ({n / len(frame):.0%}{inf}{late}{early})"

    frame = frame.mask(missing)  # infinite values too: none of them is a "last value"
    tell_once(f"{source}: {sum(counts.values())} {'empty or infinite' if any(infinite.values()) else 'empty'} cell(s) "
              f"filled by {fill}: " + listing([told(name, n) for name, n in counts.items()]))
    if last_rows and (bare := [name for name in counts if trailing[name] >= last_rows]):
        tell_once(f"{source}: the last {last_rows} rows, the forecast's input, hold no value of "
                  f"{listing(f'{clipped(name)} (its last value at {frame[name].last_valid_index()})' for name in bare)}; "
                  f"{'its' if len(bare) == 1 else 'their'} forecast rests on filled values only, that last value "
                  "repeated")
    if fill == "ffill":
        return frame.ffill().bfill()
    return frame.interpolate(method="linear", limit_direction="both")


def count_missing(frame: pd.DataFrame) -> dict[str, int]:
    """Empty (or infinite: read_series' ``keep_infinite``) cells per channel."""
    return {name: int(n) for name, n in _missing(frame).sum().items()}


def _missing(frame: pd.DataFrame) -> pd.DataFrame:
    """Whether each cell is empty (NaN) or infinite, as a fill takes it."""
    return frame.isna() | frame.isin([np.inf, -np.inf])


def infer_freq(index: pd.DatetimeIndex, frame_name: str | None = None, first_position: int | None = 0) -> str:
    """The pandas offset alias of a regular index (``"h"``, ``"15min"``, ``"D"``, ``"MS"`` ...).

    Raises UserError naming the first line of the file whose step differs from the usual one,
    or, for the index of a DataFrame called ``frame_name``, its position (pandas' iloc);
    ``index`` holds the rows from position ``first_position`` on (None: name the time alone,
    as for a long frame pivoted).
    """
    if len(index) < 2:
        raise UserError(f"need at least 2 rows to tell the time step, got {len(index)}")
    if len(index) >= 3:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pandas 3 announces infer_freq will return an offset
            found = pd.infer_freq(index)
        if found is not None:
            return to_offset(found).freqstr
    steps = pd.Series(index[1:] - index[:-1])
    usual = steps.mode().iloc[0]
    if (steps == usual).all():
        return to_offset(usual).freqstr
    first = int(np.argmax((steps != usual).to_numpy()))
    if steps[first] > usual:
        fix = "insert the missing timestamps and fill them"
    else:
        fix = "remove or correct the rows off that step"
    if frame_name is not None:
        where = "" if first_position is None else f"position {first_position + first + 1} "
        raise UserError(
            f"irregular time steps in {frame_name}: {where}{index[first + 1]} comes {steps[first]} after the row before, "
            f"but the usual step is {usual}; {fix} (frame.asfreq('{to_offset(usual).freqstr}') keeps the rows on the "
            "step and inserts the missing ones as NaN, to fill), or resample"
        )
    raise UserError(
        f"irregular time steps: line {(first_position or 0) + first + 1 + FIRST_ROW_LINE} ({index[first + 1]}) comes "
        f"{steps[first]} after the line before, but the usual step is {usual}; {fix}, or resample the file"
    )


def header_of(name_or_path: str | os.PathLike) -> list[str]:
    """The column names of a registered data set or a CSV file, read from its header line alone."""
    return [str(c) for c in _open(datasets.resolve(name_or_path))[0]]


def _open(path: Path) -> tuple[pd.Index, dict[str, str]]:
    """The header of a CSV file within the size cap and in text, and read_csv's options for it
    (its delimiter; its header's names stripped of spaces, "date, a , b": the channels are a and
    b, as --columns and the other options name them), found once for every read of the file
    that follows."""
    _check_size(path)
    _check_text(path)
    dialect = _dialect(path)
    written = list(_read(path, dialect, header=None, nrows=1, dtype=str).iloc[0])
    if (stripped := _stripped_names(path, dialect, written)) is not None:
        dialect = {**dialect, "header": 0, "names": stripped}
    names = [n for n in (stripped or written) if not pd.isna(n)]
    if repeated := sorted({n for n in names if names.count(n) > 1}):  # pandas would rename them silently (name.1)
        raise UserError(f"{path}: the header names column(s) {listing(cited(n) for n in repeated)} more than once; give each column "
                        f"its own name")
    return _read(path, dialect, nrows=0).columns, dialect


def _read(path: Path, dialect: dict, **kwargs) -> pd.DataFrame:
    """read_csv of a file with the options ``_open`` found for it."""
    try:
        if path.suffix.lower() not in COMPRESSIONS:
            return pd.read_csv(path, skip_blank_lines=False, encoding="utf-8", **dialect, **kwargs)
        with _open_bytes(path) as f:  # decompressed within the cap
            return pd.read_csv(f, skip_blank_lines=False, encoding="utf-8", compression=None, **dialect, **kwargs)
    except pd.errors.EmptyDataError:
        raise UserError(f"{path} is empty; it needs a header line and data rows") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text (a Windows code page such as cp1252?); save it as UTF-8 (Excel: "
                        "CSV UTF-8)") from None
    except (ValueError, OverflowError) as err:  # pandas' ParserError is a ValueError
        raise UserError(f"{path} is not a readable CSV file ({str(err).splitlines()[0]})") from None
    except OSError as err:
        raise UserError(f"cannot read {path} ({err.strerror or err})") from None


def _stripped_names(path: Path, dialect: dict, written: list) -> list[str] | None:
    """The header's names (``written``, as read_csv reads the first line) stripped of the spaces
    around them ("date, a , b": a and b) unless written in quotes, as a long file's pivot writes
    its unique_ids (' a' and 'a' are two series), where some name is stripped; else None."""
    with io.TextIOWrapper(_open_bytes(path), encoding="utf-8", errors="replace") as f:
        quoted = _quoted_fields(f.readline().lstrip("\ufeff"), dialect["sep"])
    quoted += [False] * (len(written) - len(quoted))  # (a quoted name across lines: the rest stripped)
    if not any(isinstance(n, str) and n != n.strip() and not q for n, q in zip(written, quoted)):
        return None
    return [(n if q else n.strip()) if isinstance(n, str) else f"Unnamed: {i}"
            for i, (n, q) in enumerate(zip(written, quoted))]


def _quoted_fields(line: str, sep: str) -> list[bool]:
    """Whether each field of a CSV line is written in double quotes ("a",b: True, False)."""
    quoted, inside, start = [], False, True
    for char in line.rstrip("\r\n"):
        if start:
            quoted.append(char == '"')
            start = False
        if char == '"':
            inside = not inside
        elif char == sep and not inside:
            start = True
    return quoted + [False] * start


def _dialect(path: Path) -> dict[str, str]:
    """read_csv's ``sep`` for the file: commas between values, unless the header has semicolons
    or tabs and no comma, or a comma only inside a name ("Leistung (kW, gesamt)": its first
    lines have as many semicolons or tabs as the header and not as many commas). The decimal
    mark is found from the values read (:func:`_decimal_mark`)."""
    with io.TextIOWrapper(_open_bytes(path), encoding="utf-8", errors="replace") as f:
        lines = [line for _, line in zip(range(_SNIFFED_LINES), f)]
    header, data = (lines[0], [line for line in lines[1:] if line.strip()]) if lines else ("", [])
    if re.fullmatch(r'\ufeff?"?sep=.?"?\s*', header):
        raise UserError(f"{path}: its first line {cited(header.strip().lstrip(chr(0xfeff)))} is Excel's note of the separator, "
                        "not the header; delete that line, so that the header is line 1")

    def splits_every_line(sep: str) -> bool:
        return all(line.count(sep) == header.count(sep) for line in data)

    sep = next((s for s in _SEPARATOR_NAMES if s in header), None)
    if sep is None or ("," in header and (splits_every_line(",") or not splits_every_line(sep))):
        return {"sep": ","}
    return {"sep": sep}


def _decimal_mark(columns: list[pd.Series], sep: str, path: Path, dates: pd.Series) -> tuple[str, str]:
    """The file's decimal mark, from the numbers in its channels ``columns`` (not a comment's
    text, not the date column's milliseconds), and why it is that mark, for a notice that a
    column's other mark groups thousands. ',' where one has a comma in a file separated by
    semicolons or tabs (a spreadsheet's export from a locale with decimal commas), or in a
    comma-separated file, a quoted comma that cannot group thousands ("30,53", "0,462"), or
    where every quoted comma could ("30,531") but no number has a decimal point and the
    ``dates`` are written day.month.year (01.07.2016: a locale with decimal commas); else '.'.
    The user is told when it is not a comma-separated file with decimal points."""
    decimal, grouping = ".", None  # grouping: a quoted comma that could group thousands
    for column in columns:
        if pd.api.types.is_numeric_dtype(column):
            continue
        text = column.dropna().astype("str").str.strip()
        commas = text[text.str.fullmatch(_NUMBER) & text.str.contains(",", regex=False)]
        commas = commas.str.replace(f"[{_SPACES}]", "", regex=True)
        if len(commas) and (sep != "," or not commas.str.fullmatch(_grouped(",", r"\.")).all()):
            decimal = ","
            break
        grouping = grouping if grouping is not None or commas.empty else commas.iloc[0]
    if decimal == "." and grouping is not None and not any(_has_point(column) for column in columns):
        dates = dates.dropna().astype("str")
        if len(dates) and dates.str.match(_DAY_DOT_MONTH).all():
            tell_once(f"{path}: reading it as comma-separated values with decimal commas: the commas in its numbers "
                      f"({_shown(grouping)}) could group thousands, but none of its numbers has a decimal point and its "
                      f"dates are written day.month.year ({dates.iloc[0].strip()}), as where the decimal mark is a "
                      "comma; if the commas group thousands, remove them from the numbers")
            return ",", ", as the file's decimal mark is ','"
        return ".", (", as the file's decimal mark is taken to be '.' (none of its numbers has one to tell); if ',' "
                     "is the decimal mark, separate the values by ';' instead of ','")
    if sep != "," or decimal == ",":
        tell_once(f"{path}: reading it as {_SEPARATOR_NAMES.get(sep, 'comma')}-separated values"
                  + (" with decimal commas" if decimal == "," else ""))
    return decimal, f", as the file's decimal mark is '{decimal}'"


def _has_point(column: pd.Series) -> bool:
    """Whether a number of ``column`` is written with a decimal point: a fraction read by
    read_csv, or a number in text with a point."""
    if pd.api.types.is_numeric_dtype(column):
        values = column.to_numpy(dtype="float64")
        values = values[np.isfinite(values)]
        return bool((values != np.round(values)).any())
    text = column.dropna().astype("str").str.strip()
    return bool((text.str.fullmatch(_NUMBER) & text.str.contains(".", regex=False)).any())


_SNIFFED_LINES = 6  # the header and the first data lines
_UNNAMED = re.compile(r"Unnamed: \d+")  # pandas' name for a column whose header cell is empty
_SEPARATOR_NAMES = {";": "semicolon", "\t": "tab"}
_SPACES = " \u00a0\u202f'’"  # thousands separators that are never a decimal mark: 12 345 (also no-break), 12'345
_NUMBER = rf"[+-]?[\d.,{_SPACES}]*\d[\d.,{_SPACES}]*"  # a cell that may be a number, its marks aside


def _size_cap() -> int:
    raw = os.environ.get("STANHOP_MAX_CSV_BYTES", str(DEFAULT_MAX_CSV_BYTES))
    try:
        return int(raw)
    except ValueError:
        raise UserError(f"STANHOP_MAX_CSV_BYTES must be a whole number of bytes, got {cited(raw)}") from None


def _over_the_cap(path: Path, size: str, cap: int) -> UserError:
    """``size``: "is 2.50 GiB," or, of a compressed file, "is, once decompressed,"."""
    return UserError(f"{path} {size} over the {cap / 1024**3:.2f} GiB limit; "
                     "use a smaller file or raise STANHOP_MAX_CSV_BYTES (bytes) if memory allows")


def _check_size(path: Path) -> None:
    """The file within the cap; a compressed file's decompressed bytes are counted as they are
    read (_Capped), its size on disk says little of them (75 MB of gzip can hold 1 GB of CSV)."""
    cap, size = _size_cap(), path.stat().st_size
    if size > cap:
        raise _over_the_cap(path, f"is {size / 1024**3:.2f} GiB,", cap)


class _Capped(io.RawIOBase):
    """A decompressing stream that refuses to give more than ``cap`` bytes (UserError): what a
    compressed file holds is known only as it is read (a gzip trailer's size is modulo 4 GiB,
    and of its last member only)."""

    def __init__(self, stream, path: Path, cap: int):
        super().__init__()
        self.stream, self.path, self.cap, self.given = stream, path, cap, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self.stream.readinto(buffer)
        self.given += n
        if self.given > self.cap:
            raise _over_the_cap(self.path, "is, once decompressed,", self.cap)
        return n

    def close(self) -> None:
        self.stream.close()
        super().close()


COMPRESSIONS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}  # read_csv infers them from the name too
COMPRESSED_STARTS = {b"\x1f\x8b": ".gz", b"BZh": ".bz2", b"\xfd7zXZ\x00": ".xz"}  # their files' first bytes


def compression_ending(head: bytes) -> str:
    """The name ending that says how bytes starting with ``head`` are compressed ("" for none)."""
    return next((ending for start, ending in COMPRESSED_STARTS.items() if head.startswith(start)), "")


def _open_bytes(path: Path):
    """The file's bytes, decompressed where its name ends in .gz, .bz2 or .xz (my.csv.gz), then
    within STANHOP_MAX_CSV_BYTES (_Capped)."""
    decompress = COMPRESSIONS.get(path.suffix.lower())
    if decompress is None:
        return open(path, "rb")
    return io.BufferedReader(_Capped(decompress(path, "rb"), path, _size_cap()))


_MAGIC = {b"\x1f\x8b": "gzip-compressed: name it .csv.gz, or decompress it",
          b"PK\x03\x04": "a zip archive, as an Excel workbook (.xlsx) is: save the sheet as CSV (Excel: CSV UTF-8)",
          b"\xd0\xcf\x11\xe0": "an old Excel workbook (.xls): save the sheet as CSV (Excel: CSV UTF-8)"}


def _check_text(path: Path) -> None:
    """Refuse binary files early, with a message that shows none of their bytes and says what
    the file looks like (compressed, a workbook, UTF-16 or a Windows code page)."""
    sample = 1 << 16
    try:
        with _open_bytes(path) as f:
            head = f.read(sample)
    except (OSError, EOFError, lzma.LZMAError) as err:  # gzip's BadGzipFile is an OSError
        raise UserError(f"cannot read {path} ({getattr(err, 'strerror', None) or err})") from None
    for magic, what in _MAGIC.items():
        if head.startswith(magic):
            raise UserError(f"{path} is {what}")
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise UserError(f"{path} is UTF-16 text; save it as UTF-8 (Excel: CSV UTF-8)")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 3 or len(head) < sample:  # not just a character cut at the end of the sample
            line = head[:err.start].count(b"\n") + 1
            raise UserError(f"{path} is not UTF-8 text (byte 0x{head[err.start]:02x} on line {line}: a Windows code "
                            "page such as cp1252?); save it as UTF-8 (Excel: CSV UTF-8)") from None
    if b"\x00" in head:
        raise UserError(f"{path} looks binary (it holds NUL bytes), not like a CSV text file")


_DATE_NAMES = {"date", "time", "timestamp", "datetime", "date_time", "ds", "dt", "datum", "zeit", "fecha", "data"}


def _check_header(path: Path, header: pd.Index, dialect: dict[str, str], date_column: str,
                  columns: list[str] | None) -> None:
    names = [str(c) for c in header]
    if date_column not in names:
        hint = ""
        if len(names) == 1 and "|" in names[0]:
            hint = "; the file seems not to be comma-separated: save it with ',' (or ';') between values"
        elif set(LONG_COLUMNS) <= set(names):  # neuralforecast's long layout: the pivot, not --date-column ds
            hint = ("; it is in long format, one row per series and timestamp (neuralforecast's unique_id, ds, y), "
                    "which the CLI's train, forecast, plot, evaluate and data describe take as it is (Python: stanhop.csvio.read_long); "
                    "here one column per series is needed: "
                    f"pivot it, e.g. with pandas df.pivot(index='ds', columns='unique_id', values='y')"
                    f".rename_axis('{date_column}')")
        elif names and _UNNAMED.fullmatch(names[0]):
            hint = (f"; its first column has no name in the header (an index pandas wrote?): name it '{date_column}' "
                    f"there (pandas: df.to_csv(path, index_label='{date_column}'))")
        elif names and names[0].lstrip().startswith("#"):
            hint = "; its first line is a comment: remove the comment lines above the header"
        elif len(names) > 1:
            hint = "; name it with date_column=... (CLI: --date-column)"
            likely = likely_name(date_column, names) or next((n for n in names if n.strip().casefold() in _DATE_NAMES),
                                                            None)
            if likely is not None:
                hint = f"; did you mean {cited(likely)}? (CLI: --date-column {shlex.quote(likely)}; Python: date_column=)"
            elif _numbers_only(_read(path, dialect, nrows=5, dtype="str")):
                hint = (f"; every column holds numbers: a column of timestamps is required (2016-07-01 00:00:00 on each "
                        f"line), add one named '{date_column}'")
        shown = ", ".join(n if n.isprintable() else _shown(n) for n in names[:10])[:200]
        raise UserError(f"{path} has no date column '{date_column}' (columns: {shown}){hint}")
    if columns is not None:
        if not columns:
            raise UserError("columns is empty; name at least one channel or leave it out for all numeric columns")
        unknown = [c for c in columns if c not in names or c == date_column]
        if unknown:
            _refuse_if_long_format(path, dialect, date_column)  # there the series are values of a column
            raise UserError(f"unknown column(s) {listing(unknown)} in {path}; channels there: {listing(n for n in names if n != date_column)}")
        if len(set(columns)) != len(columns):
            raise UserError(f"columns lists a column twice: {', '.join(columns)}")


def _numbers_only(rows: pd.DataFrame) -> bool:
    """Whether the first ``rows`` of a file hold numbers alone, and none could be Unix time (no
    column of them could be the dates)."""
    cells = rows.stack().astype("str").str.strip()
    return bool(len(cells)) and bool(cells.str.fullmatch(_NUMBER).all()) and not cells.str.fullmatch(_UNIX_TIME).any()


def refuse_long_format(name_or_path: str | os.PathLike, date_column: str) -> None:
    """A UserError saying how to pivot the file when it is in long format; nothing otherwise.
    For callers about to say that series they need are missing from the header: a file in
    long format names its series in a column instead."""
    path = datasets.resolve(name_or_path)
    _refuse_if_long_format(path, _open(path)[1], date_column)


def _refuse_if_long_format(path: Path, dialect: dict[str, str], date_column: str) -> None:
    _refuse_long_format(_read(path, dialect, dtype={date_column: "str"}), date_column, path)


def _refuse_long_format(raw: pd.DataFrame, date_column: str, path: Path) -> None:
    """A UserError saying how to pivot a file in long format (one row per series and timestamp,
    as neuralforecast's unique_id, ds, y), which repeats its dates; other files with repeated
    dates, and files without, pass on."""
    if raw[date_column].is_unique or len(raw) < 1.5 * raw[date_column].nunique():  # few repeats: not one per series
        return
    texts = [c for c in raw.columns if c != date_column and not pd.api.types.is_numeric_dtype(raw[c])
             and pd.to_numeric(raw[c], errors="coerce").isna().all()]
    if times := [c for c in texts if raw[c].astype("str").str.fullmatch(r"\s*\d{1,2}:\d{2}(:\d{2}(\.\d*)?)?\s*").all()]:
        raise UserError(f"{path}: its timestamps are split in two columns, '{date_column}' and '{times[0]}' (the time of "
                        f"day); join them into one, e.g. with pandas df['{date_column}'] = df['{date_column}'] + ' ' + "
                        f"df['{times[0]}'], and drop '{times[0]}'")
    ids = [c for c in texts if raw[c].nunique() > 1 and not raw.duplicated([date_column, c]).any()]
    if not ids:
        return
    key = ids[0]
    values = [c for c in raw.columns if c not in (date_column, *texts)]
    shown = f", values='{values[0]}'" if len(values) == 1 else ""
    raise UserError(
        f"{path} has one row per series and timestamp (the series named in column '{key}', {raw[key].nunique()} of "
        f"them); here one column per series is needed: pivot it, e.g. with pandas "
        f"df.pivot(index='{date_column}', columns='{key}'{shown})")


def _refuse_units_row(raw: pd.DataFrame, path: Path) -> None:
    """A UserError where the file's line 2 holds words (kW, °C) where line 3 holds numbers, and
    no number: a row of units under the header."""
    if len(raw) < 2:
        return
    first, second = (raw.iloc[i].dropna().astype("str").str.strip() for i in (0, 1))
    words = first[(first != "") & ~first.str.fullmatch(_NUMBER)]
    if len(words) == (first != "").sum() and second.reindex(words.index).str.fullmatch(_NUMBER).any():
        raise UserError(f"{path}: line 2 looks like a row of units under the header ({listing(cited(w) for w in pd.unique(words)[:3])}), "
                        "not data; delete that line")


def _drop_trailing_blank_rows(raw: pd.DataFrame) -> pd.DataFrame:
    filled = raw.notna().any(axis=1).to_numpy()
    last = len(filled) - int(np.argmax(filled[::-1])) if filled.any() else 0
    return raw.iloc[:last]


def _parse_dates(text: pd.Series, path: Path) -> pd.DatetimeIndex:
    name = text.name
    empty = text.isna().to_numpy()
    if empty.any():
        line = int(np.argmax(empty)) + FIRST_ROW_LINE
        raise UserError(f"{path}: line {line} has no date in column '{clipped(name)}'; every row needs a timestamp")
    text = _whole_numbers(text, path)
    _refuse_step_counts(text, path)
    day_dot_month = bool(text.str.match(_DAY_DOT_MONTH).all())  # 01.07.2016: pandas alone reads it month first
    try:
        dates = _to_datetime(text, dayfirst=day_dot_month)
        if dates.dtype == object:  # pandas 2.x returned mixed offsets as objects (with a FutureWarning)
            raise ValueError("Mixed timezones detected")
    except (ValueError, TypeError, OverflowError) as err:  # e.g. mixed time zones
        if not text.str.fullmatch(_WITH_UTC_OFFSET).all():
            raise UserError(f"{path}: cannot read the dates in column '{clipped(name)}' ({str(err).splitlines()[0]})") from None
        dates = _on_one_clock(text, path)
    else:
        dates = _another_reading_if_only_that_fits(text, dates, path)
        if day_dot_month and not dates.isna().any():
            _tell_read_as(text, dates, path, "day first (day.month.year)")
    bad = dates.isna().to_numpy()
    if bad.any():
        row = int(np.argmax(bad))
        raise UserError(
            f"{path}: line {row + FIRST_ROW_LINE} has a date that cannot be read: {cited(text.iloc[row])} in column '{clipped(name)}' "
            f"(expected e.g. 2016-07-01 00:00:00, one format for the whole column)"
        )
    index = pd.DatetimeIndex(dates, name=name)
    _check_order(index, path)
    return index


def _regular(index: pd.DatetimeIndex) -> bool:
    """Whether the (increasing) timestamps are one regular step apart."""
    try:
        infer_freq(index)
    except UserError:
        return False
    return True


def calendar(index: pd.DatetimeIndex, freq: str) -> pd.DatetimeIndex | None:
    """The timestamps of the step ``freq`` (a run's) from the first of ``index`` to its last:
    calendar months, days across a change of clocks; None where pandas cannot make them."""
    try:
        return pd.date_range(index[0], index[-1], freq=freq)
    except (TypeError, ValueError):
        return None


def on_calendar(index: pd.DatetimeIndex, freq: str) -> pd.DatetimeIndex | None:
    """``calendar(index, freq)`` where every one of ``index`` is among its timestamps; None
    where a timestamp lies off that step, or pandas cannot make the range."""
    grid = calendar(index, freq)
    return grid if grid is not None and index.isin(grid).all() else None


def _full_range(index: pd.DatetimeIndex) -> pd.DatetimeIndex | None:
    """The regular timestamps from the first to the last that hold every one of ``index`` (some
    may be missing from it): business days for daily data on weekdays only (holidays missing),
    else its usual step, or for monthly data month starts or ends; None when there is no such
    step."""
    if len(index) < 3:
        return None
    usual = pd.Series(index[1:] - index[:-1]).mode().iloc[0]
    monthly = pd.Timedelta(days=28) <= usual <= pd.Timedelta(days=31)
    business = usual == pd.Timedelta(days=1) and bool((index.dayofweek < 5).all())  # weekdays only: holidays missing
    for step in (*((pd.offsets.BDay(),) if business else ()), usual,
                 *((pd.offsets.MonthBegin(), pd.offsets.MonthEnd()) if monthly else ())):
        full = pd.date_range(index[0], index[-1], freq=step, name=index.name)
        if index.isin(full).all():
            return full
    return None


def _with_missing_dates(frame: pd.DataFrame, path: Path, insert: bool, first_row: int = 0) -> pd.DataFrame:
    """``frame`` with the timestamps missing from its step inserted as rows of NaN (``insert``),
    the user told how many; else a UserError naming the first gap (or the first step off the
    usual one)."""
    full = _full_range(frame.index)
    if full is None:
        try:
            infer_freq(frame.index, first_position=first_row)  # raises, naming the first step off the usual one
        except UserError as err:
            raise UserError(f"{path}: {err}") from None
    gone = full.difference(frame.index)
    row = first_row + int(frame.index.searchsorted(gone[0])) - 1  # the last row before the first gap
    missing = (f"{len(gone)} timestamp(s) missing at the step '{infer_freq(full)}' "  # 'D' as elsewhere, not '24h'
               f"(the first {gone[0]}, between lines {row + FIRST_ROW_LINE} and {row + 1 + FIRST_ROW_LINE})")
    first = gone[0]
    if (full.tz is None and first.hour == 2 and first.minute == 0 and first.month in (3, 4)
            and full.freq is not None and pd.Timedelta(full.freq) <= pd.Timedelta(hours=1)):
        missing += (" (the hour the clocks go forward in spring? it never was: write the dates with their UTC "
                    "offsets, or they are filled as if it had been)")
    if not insert:
        raise UserError(f"{path}: {missing}; insert them and fill their cells {FILL_ADVICE}, or fix the file")
    tell_once(f"{path}: {missing} inserted, their cells filled")
    return frame.reindex(full)


_UTC_OFFSET = r"(?:Z|[+-]\d\d:?\d\d)"  # Z or an offset such as +01:00
_WITH_UTC_OFFSET = rf".*\d{_UTC_OFFSET}"
_DAY_DOT_MONTH = r"\s*\d{1,2}\.\d{1,2}\.\d{2,4}\b"  # 01.07.2016: day first wherever dates are written so
_DAY_OR_MONTH_FIRST = r"\s*\d{1,2}[./-]\d{1,2}[./-]\d{2,4}\b"  # 13/07/2016, 07-13-2016: not year first
_UNIX_TIME = r"\s*\d{9,13}(?:\.\d*)?\s*"  # seconds or milliseconds since 1970-01-01 UTC
_UNIX_YEARS = (pd.Timestamp("1990-01-01"), pd.Timestamp("2100-01-01"))  # a plausible range, so a count of steps is not read so


_COMPACT_DATES = {8: "%Y%m%d", 10: "%Y%m%d%H", 12: "%Y%m%d%H%M", 14: "%Y%m%d%H%M%S"}  # whole numbers that are dates


def _whole_numbers(text: pd.Series, path: Path) -> pd.Series:
    """A date column of whole numbers written as floats (20200101.0, as pandas writes a column of
    yyyymmdd dates that has an empty cell) without their '.0', the user told; else as it is."""
    if not text.str.fullmatch(r"\s*[+-]?\d+\.0*\s*").all():
        return text
    tell_once(f"{path}: the dates in column '{text.name}' are whole numbers written with a decimal point "
              f"({text.iloc[0].strip()}); they are read without it")
    return text.str.replace(r"\.0*(\s*)$", r"\1", regex=True)


def _refuse_step_counts(text: pd.Series, path: Path) -> None:
    """A UserError for a date column of whole numbers other than dates written yyyymmdd (20200101,
    or 202001010000 with the time) or Unix time (``_other_readings``): steps 0..n-1
    (neuralforecast's integer ds), which pandas reads as no date, or from 1000 on as years
    (1000-01-01); the Python API refuses them so too."""
    if not text.str.fullmatch(r"\s*[+-]?\d+\s*").all():
        return
    digits = text.str.strip()
    compact = _COMPACT_DATES.get(int(digits.str.len().max())) if digits.str.len().nunique() == 1 else None
    if compact and _to_datetime(digits, format=compact).notna().all():
        return
    if next(_other_readings(text), None) is None:
        raise UserError(numbers_not_dates(path, text.name, text))


def _fits(dates: pd.Series, path: Path, gaps_allowed: bool = True) -> bool:
    """Whether every date was read and they increase by one regular step (some timestamps may be
    missing where ``gaps_allowed``: read_series says so)."""
    index = pd.DatetimeIndex(dates)
    if index.hasnans:
        return False
    try:
        _check_order(index, path)
    except UserError:
        return False
    return _regular(index) or (gaps_allowed and _full_range(index) is not None)


def _another_reading_if_only_that_fits(text: pd.Series, dates: pd.Series, path: Path) -> pd.Series:
    """pandas' reading of the dates when it fits (every date read, one regular step); else the
    first other reading that fits, and the user is told: day first (13/07/2016), or whole
    numbers as Unix time in seconds or milliseconds (1467331200) from 1990 to 2100. A reading
    with no timestamp missing goes before one with gaps (05/02 to 06/02, hourly: day first is
    two days in a row, month first two days a month apart); where day first fits as well as
    pandas' reading and gives other dates, the user is told which was taken."""
    readings = [("", dates), *_other_readings(text)]
    chosen = _first_fitting(readings, lambda other, gaps_allowed: _fits(other, path, gaps_allowed=gaps_allowed))
    if chosen is None:
        return dates  # the caller says what is wrong with them
    how, other, gapless = chosen
    if how:
        _tell_read_as(text, other, path, how)
    elif gapless:
        for day_first in (d for h, d in readings if h == "day first"):
            _tell_if_day_first_fits_too(text, other, day_first, path)
    return other


def _first_fitting(readings, fits) -> tuple[str, pd.Series, bool] | None:
    """(how, dates, gapless) of the first of ``readings`` (how, dates) whose dates fit with no
    timestamp missing (``fits(dates, False)``), else of the first that fits with gaps
    (``fits(dates, True)``); None where none fits."""
    for gaps_allowed in (False, True):
        for how, dates in readings:
            if fits(dates, gaps_allowed):
                return how, dates, not gaps_allowed
    return None


def _tell_if_day_first_fits_too(text: pd.Series, dates: pd.Series, day_first: pd.Series, path: Path) -> None:
    """A notice where the dates read day first fall on a regular step too, and differ: such
    dates are ambiguous, and read month first."""
    index = pd.DatetimeIndex(day_first).sort_values()
    if not day_first.equals(dates) and not index.hasnans and index.is_unique and _regular(index):
        last = int(np.argmax(pd.DatetimeIndex(dates)))
        tell_once(f"{path}: the dates in column '{text.name}' are read month first, as pandas reads them "
                  f"({text.iloc[last]} is {_spelt(dates.iloc[last])}); read day first it would be "
                  f"{_spelt(day_first.iloc[last])}: if so, write the dates year first (2016-07-01)")


def _tell_read_as(text: pd.Series, dates: pd.Series, path: Path, how: str) -> None:
    """Tell the user once how the date column was read, with its last date spelt out."""
    tell_once(f"{path}: the dates in column '{text.name}' are read {how} ({text.iloc[-1]} is {_spelt(dates.iloc[-1])})")


def _spelt(moment: pd.Timestamp) -> str:
    return f"{moment:%d %B %Y}" if moment == moment.normalize() else f"{moment:%d %B %Y %H:%M}"


def _other_readings(text: pd.Series):
    """(how, dates) for each other reading of the date column, most likely first: day first only
    for dates written day or month first (13/07/2016; pandas' dayfirst would also turn 2016-07-01
    into 7 January)."""
    if text.str.match(_DAY_OR_MONTH_FIRST).all():
        yield "day first", _to_datetime(text, dayfirst=True)
    if not text.str.fullmatch(_UNIX_TIME).all():
        return
    numbers = pd.to_numeric(text)
    for unit, name in (("s", "seconds"), ("ms", "milliseconds")):
        dates = pd.to_datetime(numbers, unit=unit, errors="coerce")
        if dates.between(*_UNIX_YEARS).all():
            yield f"as Unix time in {name} (UTC)", dates


def _on_one_clock(text: pd.Series, path: Path) -> pd.Series:
    """Dates with several UTC offsets (daylight saving time) on one clock: UTC where that makes
    the steps regular (hourly data), else the local wall clock, offsets dropped (daily data
    stamped at local midnight); the user is told which."""
    clocks = {"in UTC": _to_datetime(text, utc=True),
              "on the local wall clock (offsets dropped)": _to_datetime(text.str.replace(rf"{_UTC_OFFSET}$", "", regex=True))}
    for clock, dates in clocks.items():
        if not _fits(dates, path):  # an unreadable date or irregular steps: the caller names the line
            continue
        tell_once(f"{path}: the dates in column '{text.name}' have several UTC offsets (daylight saving time?); "
                   f"they are read {clock}, and forecasts are dated so")
        return dates
    return clocks["in UTC"]  # the caller says what is wrong with it


def _to_datetime(text: pd.Series, **kwargs) -> pd.Series:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "could not infer format": unparsable cells become NaT (checked by the caller)
        return pd.to_datetime(text, errors="coerce", **kwargs)


def _check_order(index: pd.DatetimeIndex, path: Path) -> None:
    steps = (index[1:] - index[:-1]).to_numpy()
    wrong = steps <= np.timedelta64(0)
    if not wrong.any():
        return
    row = int(np.argmax(wrong)) + 1
    line = row + FIRST_ROW_LINE
    if steps[row - 1] == np.timedelta64(0):
        repeated = index[row]
        clocks = (" (the hour the clocks go back in autumn? write the dates with their UTC offsets: in Central "
                  f"Europe {repeated:%Y-%m-%dT%H:%M}+02:00, then +01:00)"
                  if index.tz is None and repeated.hour in (1, 2) and repeated.minute == 0 and repeated.month in (10, 11)
                  else "")
        raise UserError(f"{path}: line {line} repeats the date {repeated} of the line before; each timestamp must "
                        f"appear once{clocks}")
    raise UserError(f"{path}: dates are not in increasing order: line {line} ({index[row]}) comes after {index[row - 1]}; sort the file by date")


def _to_float(column: pd.Series, name: str, path: Path, required: bool, decimal: str = ".", why: str = "", *,
              keep_infinite: bool = False, leave_out: bool = True) -> pd.Series | None:
    """The column as float64; None for a text column that was not asked for. ``decimal``: the
    file's decimal mark (read_csv leaves a column as text when one of its cells is not a number);
    a column may have the other (:func:`_without_thousands_marks`; ``why``: the reason the file's
    mark is that one). An infinite value (inf, 1e400) is refused unless ``keep_infinite`` (a fill
    takes it as a missing value); a cell that is no number is refused always ('-' is zero in some
    exports, missing in others), the advice naming --columns where ``leave_out``."""
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        values = column.astype("float64")
    else:
        text = column.astype("str").str.strip().where(column.notna())
        text = text.where(text != "")
        plain, decimal = _without_thousands_marks(text, name, path, decimal, why)
        values = pd.to_numeric(plain.str.replace(decimal, ".", regex=False), errors="coerce").astype("float64")
        bad = (values.isna() & text.notna()).to_numpy()
        if values.notna().sum() == 0 and text.notna().any() and not required:
            return None
        if bad.any():
            row = int(np.argmax(bad))
            raise UserError(f"{path}: column '{clipped(name)}' has a non-numeric value {_shown(text.iloc[row])} at line "
                            f"{row + FIRST_ROW_LINE}; fix the cell, or, for a missing value, leave it empty (or write NA "
                            f"or NaN) and fill it {FILL_ADVICE}"
                            + (", or leave the column out (CLI: --columns; Python: columns=[...])" if leave_out else ""))
    infinite = np.isinf(values.to_numpy())
    if infinite.any() and not keep_infinite:
        row = int(np.argmax(infinite))
        raise UserError(f"{path}: column '{clipped(name)}' has an infinite value at line {row + FIRST_ROW_LINE}; fix the cell, "
                        f"or leave it empty and fill it {FILL_ADVICE}")
    return values.reset_index(drop=True)


def _without_thousands_marks(text: pd.Series, name: str, path: Path, decimal: str,
                             why: str = "") -> tuple[pd.Series, str]:
    """A text column's cells without thousands marks, and the column's decimal mark. Spaces and
    apostrophes (12 345,5; 12'345.5) are thousands marks wherever every one of them groups
    thousands. The other mark than the file's ``decimal`` (1.002,5 with decimal commas,
    "1,002.5" with decimal points) is one where every cell holding it is a number grouped in
    thousands by it; where some cell's cannot be (0.462: no number starts with a group of 0;
    5,83: two digits after it), it is the column's decimal mark, and the file's mark groups its
    thousands if anything. The user is told once, with an example (the cell that decides it;
    ``why``: the reason the file's mark is ``decimal``)."""
    other = "." if decimal == "," else ","
    spaced = _read_as_thousands(text, f"[{_SPACES}]", "[.,]", name, path, "")
    if spaced is None:
        return text, decimal  # the caller names the cell that is no number
    grouped = _grouped(re.escape(other), re.escape(decimal))
    plain = _read_as_thousands(spaced, re.escape(other), re.escape(decimal), name, path, why)
    if plain is not None:
        return plain, decimal
    deciding = spaced.str.contains(other, regex=False, na=False) & spaced.str.fullmatch(_NUMBER, na=False)
    example = spaced[deciding & ~spaced.str.fullmatch(grouped, na=False)].iloc[0]  # a mark that cannot group thousands
    tell_once(f"{path}: in column '{clipped(name)}', '{other}' is read as the decimal mark ({_shown(example)} cannot group "
              f"thousands), unlike the file's '{decimal}'")
    plain = _read_as_thousands(spaced, re.escape(decimal), re.escape(other), name, path, "")
    return (spaced if plain is None else plain), other


def _read_as_thousands(text: pd.Series, mark: str, point: str, name: str, path: Path, why: str) -> pd.Series | None:
    """``text`` without the thousands marks ``mark`` (a regex) where every number holding one is
    grouped in thousands by it, its decimals after a ``point``, and the user told so; as it is
    where none holds one; None where some number's mark cannot group thousands."""
    marked = text.str.contains(mark, na=False) & text.str.fullmatch(_NUMBER, na=False)
    if not marked.any():
        return text
    if not text[marked].str.fullmatch(_grouped(mark, point)).all():
        return None
    plain = text.str.replace(mark, "", regex=True)
    example = text[marked].iloc[0]
    shown = plain[marked].iloc[0].replace(",", ".") if "," in point else plain[marked].iloc[0]
    tell_once(f"{path}: in column '{clipped(name)}', {_MARK_NAMES.get(re.search(mark, example)[0], 'a mark')} is read as a "
              f"thousands separator ({_shown(example)} is {shown}){why}")
    return plain


def _grouped(mark: str, point: str) -> str:
    """A number grouped in thousands by ``mark`` (regexes both): 1.002 or -12.345.678,5, not
    0.462 (no number starts with a group of 0) nor 1.00.2."""
    return rf"[+-]?[1-9]\d{{0,2}}(?:{mark}\d{{3}})+(?:{point}\d*)?"


_MARK_NAMES = {".": "'.'", ",": "','", " ": "a space", "\u00a0": "a no-break space", "\u202f": "a narrow no-break space",
               "'": "an apostrophe", "’": "an apostrophe"}


def _shown(cell: str) -> str:
    """A cell quoted for a message (cited: a long one cut), its no-break spaces shown as spaces (not '\\xa0')."""
    return cited(re.sub("[\u00a0\u202f]", " ", cell))


def _describe_missing(missing: pd.DataFrame) -> str:  # missing: _missing's (rows, c)
    empty = missing.to_numpy()
    rows = np.flatnonzero(empty.any(axis=1))
    first_col = missing.columns[int(np.argmax(empty[rows[0]]))]
    lines = ", ".join(str(r + FIRST_ROW_LINE) for r in rows[:5]) + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")
    return f"{int(empty.sum())} empty cell(s), first in column '{clipped(first_col)}', at line(s) {lines}"
