"""Loading and checking CSVs, splits, the scaler, windows and the data module."""

import bz2
import gzip
import json
import lzma
import math
import re
import tempfile
from pathlib import Path

import lightning
import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cli import cli
from stanhop.config import DataConfig
from stanhop.data import ForecastDataModule, Scaler, WindowDataset, describe, infer_freq, load_series, split_borders
from stanhop.errors import UserError
from stanhop.splits import parse_split, unused_rows_notice, window_range

PROPERTY = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def csv_lines(n: int = 40, freq: str = "h", columns: tuple[str, ...] = ("a", "b")) -> list[str]:
    """Header plus n rows of a regular series: column j of row i holds i + 100 j (+ a wiggle)."""
    dates = pd.date_range("2020-01-01", periods=n, freq=freq)
    rows = [",".join([str(d), *(f"{i + 100 * j + math.sin(i):.6f}" for j in range(len(columns)))]) for i, d in enumerate(dates)]
    return [",".join(["date", *columns]), *rows]


def write(folder: Path, lines: list[str] | bytes, name: str = "series.csv") -> Path:
    path = folder / name
    if isinstance(lines, bytes):
        path.write_bytes(lines)
    else:
        path.write_text("\n".join(lines) + "\n")
    return path


def edit(lines: list[str], line: int, column: int, value: str) -> list[str]:
    """Set the cell of file line ``line`` (1 = header) and column index ``column``."""
    lines = list(lines)
    cells = lines[line - 1].split(",")
    cells[column] = value
    lines[line - 1] = ",".join(cells)
    return lines


def swapped(lines: list[str], line: int) -> list[str]:
    lines = list(lines)
    lines[line - 1], lines[line - 2] = lines[line - 2], lines[line - 1]
    return lines


BASE = csv_lines()
SMALL = ["--in-len", "2", "--out-len", "1", "--split", "0.6/0.2/0.2"]
# (id, file content or None for no file, CLI arguments after the file, environment, message pattern)
BAD_INPUTS = [
    ("missing file", None, SMALL, {}, r"not found"),
    ("empty file", b"", SMALL, {}, r"is empty"),
    ("header only", ["date,a,b"], SMALL, {}, r"has a header but no data rows"),
    ("no date column", [line.replace("date", "time", 1) for line in BASE], SMALL, {}, r"no date column 'date' \(columns: time, a, b\)"),
    ("date column spelt otherwise", [line.replace("date", "Date ", 1) for line in BASE], SMALL, {},  # (its space stripped)
     r"did you mean 'Date'\? \(CLI: --date-column Date; Python: date_column=\)"),
    ("a comment line first", ["# exported from SCADA", *BASE], SMALL, {}, r"its first line is a comment: remove the comment"),
    ("date and time apart", ["date,time,a,b", *(f"{line.split(' ')[0]},{line.split(' ')[1][:5]},{line.split(',', 1)[1]}"
                                                for line in BASE[1:])], SMALL, {},
     r"its timestamps are split in two columns, 'date' and 'time' \(the time of day\); join them into one"),
    ("pipes", [line.replace(",", "|") for line in BASE], SMALL, {}, r"not to be comma-separated"),
    ("binary garbage", bytes(range(256)) * 8, SMALL, {}, r"not UTF-8 text"),
    ("windows code page", "\n".join(BASE[:3] + ["2020-01-01 02:00:00,caf\u00e9,1"]).encode("cp1252"), SMALL, {},
     r"not UTF-8 text \(byte 0xe9 on line 4: a Windows code page such as cp1252\?\); save it as UTF-8"),
    ("utf-16", "\n".join(BASE).encode("utf-16"), SMALL, {}, r"is UTF-16 text; save it as UTF-8"),
    ("a workbook", b"PK\x03\x04" + bytes(60), SMALL, {}, r"is a zip archive, as an Excel workbook \(.xlsx\) is: save the sheet"),
    ("gzip named .csv", gzip.compress("\n".join(BASE).encode()), SMALL, {}, r"is gzip-compressed: name it .csv.gz"),
    ("unparsable date", edit(BASE, 5, 0, "2020-13-45 00:00:00"), SMALL, {}, r"line 5 has a date that cannot be read: '2020-13-45 00:00:00'"),
    ("empty date", edit(BASE, 4, 0, ""), SMALL, {}, r"line 4 has no date"),
    ("repeated column name", [BASE[0] + ",b"] + [line + ",1" for line in BASE[1:]], SMALL, {},
     r"the header names column\(s\) 'b' more than once; give each column its own name"),
    ("non-numeric cell", edit(BASE, 6, 2, "abc"), SMALL, {}, r"column 'b' has a non-numeric value 'abc' at line 6; fix "
     r"the cell, or, for a missing value, leave it empty \(or write NA or NaN\) and fill it \(CLI: --fill .*, or leave "
     r"the column out \(CLI: --columns"),
    ("a dash for a missing value", edit(BASE, 6, 2, "-"), SMALL, {},  # zero in accounting exports: not guessed
     r"column 'b' has a non-numeric value '-' at line 6; .* leave it empty \(or write NA or NaN\) and fill it"),
    ("infinite cell", edit(BASE, 7, 1, "inf"), SMALL, {},
     r"column 'a' has an infinite value at line 7; fix the cell, or leave it empty and fill it \(CLI: --fill ffill"),
    ("unsorted dates", swapped(BASE, 5), SMALL, {}, r"not in increasing order: line 5"),
    ("duplicate date", edit(BASE, 5, 0, BASE[3].split(",")[0]), SMALL, {}, r"line 5 repeats the date 2020-01-01 02:00:00"),
    ("the spring clock change on local time",
     ["date,a", *(f"{t},{i}" for i, t in enumerate(pd.date_range("2024-03-30", periods=60, freq="h",
                                                                tz="Europe/Berlin").tz_localize(None)))], SMALL, {},
     r"1 timestamp\(s\) missing .*2024-03-31 02:00:00.* \(the hour the clocks go forward in spring\? it never was"),
    ("the autumn clock change on local time",
     ["date,a", *(f"{t},{i}" for i, t in enumerate(pd.date_range("2024-10-26", periods=60, freq="h",
                                                                tz="Europe/Berlin").tz_localize(None)))], SMALL, {},
     r"line 29 repeats the date 2024-10-27 02:00:00 .*\(the hour the clocks go back in autumn\? write the dates with"),
    ("missing timestamp", BASE[:10] + BASE[11:], SMALL, {},
     r"1 timestamp\(s\) missing at the step 'h' \(the first 2020-01-01 09:00:00, between lines 10 and 11\); insert them .*--fill"),
    ("irregular spacing", edit(BASE, 11, 0, "2020-01-01 09:30:00"), SMALL, {},
     r"irregular time steps: line 11 \(2020-01-01 09:30:00\) comes 0 days 01:30:00 after"),
    ("bad split", BASE, ["--split", "0.7/5"], {}, r"needs three positive numbers"),
    ("mixed split", BASE, ["--split", "0.7/5/1"], {}, r"mixes months and fractions"),
    ("unknown column", BASE, [*SMALL, "--columns", "a,zz"], {}, r"unknown column\(s\) zz"),
    ("over the size cap", BASE, SMALL, {"STANHOP_MAX_CSV_BYTES": "100"}, r"over the 0.00 GiB limit; .*STANHOP_MAX_CSV_BYTES"),
    ("bad size cap", BASE, SMALL, {"STANHOP_MAX_CSV_BYTES": "lots"}, r"STANHOP_MAX_CSV_BYTES must be a whole number"),
]


def _bad_path(tmp_path, content) -> str:
    return str(tmp_path / "absent.csv") if content is None else str(write(tmp_path, content, "bad.csv"))


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_a_user_error(case, tmp_path, monkeypatch):
    _, content, args, env, pattern = case
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    options = dict(zip(args[::2], args[1::2]))
    kwargs = {
        "split": options.get("--split", "14/5/5"), "in_len": int(options.get("--in-len", 168)),
        "out_len": int(options.get("--out-len", 24)),
        "columns": options["--columns"].split(",") if "--columns" in options else None,
    }
    with pytest.raises(UserError, match=pattern):
        describe(_bad_path(tmp_path, content), **kwargs)


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_through_the_cli(case, tmp_path):
    _, content, args, env, pattern = case
    result = CliRunner().invoke(cli, ["data", "describe", _bad_path(tmp_path, content), *args], env=env)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output
    assert re.search(pattern, lines[0])


@pytest.mark.parametrize("args, problem", [
    (["--split", "0.6/0.2/0.2"], r"leaves the train part 24 rows of 40, too short for one window \(needs 192"),
    (["--in-len", "2", "--out-len", "1"], r"the split 14/5/5 needs 17280 rows .* but the data has 40.*\(--split; Python: data.split\)"),
])
def test_data_describe_describes_a_file_its_split_does_not_fit_and_says_why(tmp_path, args, problem):
    """A short file on the default split of months: its rows, step and empty cells all the same
    (it was an error alone, so describe told nothing of the file)."""
    path = _bad_path(tmp_path, BASE)
    result = CliRunner().invoke(cli, ["data", "describe", path, *args])
    assert result.exit_code == 0, result.output
    assert "rows      40" in result.stdout and re.search(r"  does not fit: .*" + problem, result.stdout)
    info = json.loads(CliRunner().invoke(cli, ["data", "describe", path, *args, "--json"]).stdout)
    assert info["split"] is None and re.search(problem, info["split_problem"]) and info["rows"] == 40


def test_unknown_data_set_through_the_cli():
    result = CliRunner().invoke(cli, ["data", "describe", "ETTh9"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: unknown data set 'ETTh9'; known: ETTh1 (or give the path of a CSV file)"


# ---------------------------------------------------------------- reading


def test_etth1_loads(etth1_path):
    frame = load_series("ETTh1")
    assert frame.shape == (17420, 7) and list(frame.columns) == ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]
    assert isinstance(frame.index, pd.DatetimeIndex) and frame.index.name == "date"
    assert all(dtype == np.float64 for dtype in frame.dtypes)
    first = etth1_path.read_text().splitlines()[1].split(",")
    assert str(frame.index[0]) == first[0] and frame.iloc[0].tolist() == [float(v) for v in first[1:]]
    assert str(frame.index[-1]) == "2018-06-26 19:00:00"
    assert infer_freq(frame.index) == "h"
    assert load_series(etth1_path).equals(frame)


def test_text_columns_are_not_channels_and_columns_choose(tmp_path, capsys):
    lines = [line + (",note" if i else ",label") for i, line in enumerate(csv_lines(6, columns=("a", "b", "c")))]
    path = write(tmp_path, lines)
    assert list(load_series(path).columns) == ["a", "b", "c"]
    assert "ignoring the text column(s) label ('note')" in capsys.readouterr().err  # said, not silently dropped
    unit = [line + (",4.5 kW" if i else ",load") for i, line in enumerate(csv_lines(6))]
    assert list(load_series(write(tmp_path, unit, "unit.csv")).columns) == ["a", "b"]
    assert "load ('4.5 kW': numbers with a unit? strip it to use the column)" in capsys.readouterr().err
    chosen = load_series(path, columns=["c", "a"])
    assert list(chosen.columns) == ["c", "a"] and chosen["a"].iloc[2] == pytest.approx(2 + math.sin(2), abs=1e-6)
    with pytest.raises(UserError, match="column 'label' has a non-numeric value 'note' at line 2"):
        load_series(path, columns=["a", "label"])


def test_date_column_option_bom_and_trailing_blank_lines(tmp_path):
    lines = [line.replace("date", "when", 1) for line in csv_lines(5)]
    path = tmp_path / "s.csv"
    path.write_bytes(b"\xef\xbb\xbf" + ("\n".join(lines) + "\n\n\n").encode())
    frame = load_series(path, date_column="when")
    assert frame.index.name == "when" and len(frame) == 5


def test_blank_line_inside_the_file_is_reported(tmp_path):
    lines = csv_lines(8)
    path = write(tmp_path, lines[:4] + [""] + lines[4:])
    with pytest.raises(UserError, match="line 5 has no date"):
        load_series(path)


@pytest.mark.parametrize("freq, expected", [("15min", "15min"), ("h", "h"), ("D", "D"), ("MS", "MS"), ("W-SUN", "W-SUN")])
def test_infer_freq(tmp_path, freq, expected):
    assert infer_freq(load_series(write(tmp_path, csv_lines(6, freq=freq))).index) == expected


def test_infer_freq_of_two_rows_and_of_one():
    assert infer_freq(pd.DatetimeIndex(["2020-01-01 00:00", "2020-01-01 00:10"])) == "10min"
    with pytest.raises(UserError, match="at least 2 rows"):
        infer_freq(pd.DatetimeIndex(["2020-01-01"]))


def test_mixed_time_zones_are_a_user_error(tmp_path):
    naive_and_offset = ["date,a", "2020-01-01 00:00:00,1", "2020-01-01 01:00:00+02:00,2", "2020-01-01 02:00:00+01:00,3"]
    with pytest.raises(UserError, match="line 3 has a date that cannot be read"):
        load_series(write(tmp_path, naive_and_offset))
    # offsets that fit no clock: the same wall-clock time twice, and going back in UTC
    no_clock = ["date,a", "2020-01-01 00:00:00+01:00,1", "2020-01-01 00:00:00+02:00,2", "2020-01-01 02:00:00+01:00,3"]
    with pytest.raises(UserError, match=r"line 3 \(2019-12-31 22:00:00\+00:00\)"):
        load_series(write(tmp_path, no_clock, "no_clock.csv"))


def test_daylight_saving_offsets_are_read_on_the_clock_that_keeps_the_steps_regular(tmp_path, capsys):
    """Hourly data across a change of offset is regular in UTC; daily data stamped at local
    midnight is regular on the wall clock. Either way the user is told."""
    hours = pd.date_range("2021-03-28 00:00", periods=6, freq="h", tz="UTC").tz_convert("Europe/Berlin")
    lines = ["date,a", *(f"{t.isoformat()},{i}" for i, t in enumerate(hours))]  # +01:00, then +02:00 from 01:00Z
    hourly = load_series(write(tmp_path, lines, "hourly.csv"))
    assert list(hourly.index) == list(hours.tz_convert("UTC")) and infer_freq(hourly.index) == "h"
    assert "read in UTC" in capsys.readouterr().err
    days = pd.date_range("2021-03-26", periods=5, freq="D", tz="Europe/Berlin")  # midnights, +01:00 then +02:00
    lines = ["date,a", *(f"{t.isoformat()},{i}" for i, t in enumerate(days))]
    daily = load_series(write(tmp_path, lines, "daily.csv"))
    assert list(daily.index) == list(days.tz_localize(None)) and infer_freq(daily.index) == "D"
    assert "read on the local wall clock" in capsys.readouterr().err


def _spreadsheet_export(lines: list[str], sep: str, date_format: str | None = None) -> list[str]:
    """csv_lines as a spreadsheet in a locale with decimal commas saves them: ``sep`` between
    values, a comma as the decimal mark, the dates in ``date_format``."""
    out = [lines[0].replace(",", sep)]
    for line in lines[1:]:
        date, *values = line.split(",")
        date = pd.Timestamp(date).strftime(date_format) if date_format else date
        out.append(sep.join([date, *(v.replace(".", ",") for v in values)]))
    return out


@pytest.mark.parametrize("sep, date_format, told", [
    (";", "%d.%m.%Y %H:%M", "semicolon-separated values with decimal commas"),
    ("\t", None, "tab-separated values with decimal commas"),
])
def test_a_spreadsheet_export_with_semicolons_or_tabs_and_decimal_commas_reads_as_the_csv(tmp_path, capsys, sep, date_format, told):
    lines = csv_lines(40, freq="D")  # 40 days: read month first, 01.02.2020 would be 2 January
    exported = write(tmp_path, _spreadsheet_export(lines, sep, date_format), "export.csv")
    assert load_series(exported).equals(load_series(write(tmp_path, lines)))
    err = capsys.readouterr().err
    assert told in err  # said, so a wrong guess shows
    if date_format:  # day.month.year, which pandas alone reads month first
        assert "are read day first (day.month.year) (09.02.2020 00:00 is 09 February 2020)" in err
    with_points = write(tmp_path, [line.replace(",", sep) for line in lines], "points.csv")
    assert load_series(with_points).equals(load_series(write(tmp_path, lines)))


def test_decimal_commas_name_the_line_of_a_bad_cell(tmp_path):
    lines = _spreadsheet_export(csv_lines(8), ";")
    lines[5] = lines[5].replace(";", ";x", 1)  # a cell of column a reads "x104,1…": the column stays text
    with pytest.raises(UserError, match="column 'a' has a non-numeric value 'x.*' at line 6"):
        load_series(write(tmp_path, lines))


def test_thousands_separators_are_read_where_every_such_mark_groups_thousands(tmp_path, capsys):
    dates = [str(d) for d in pd.date_range("2020-01-01", periods=4, freq="h")]
    german = ["date;load;t", *(f"{d};{v};{t}" for d, v, t in zip(dates, ["1.002", "998", "1.100,5", "-12.345.678"],
                                                                 ["13,6", "1", "2,5", "3"]))]
    frame = load_series(write(tmp_path, german, "de.csv"))
    assert frame["load"].tolist() == [1002.0, 998.0, 1100.5, -12345678.0] and frame["t"].tolist() == [13.6, 1, 2.5, 3]
    assert "in column 'load', '.' is read as a thousands separator ('1.002' is 1002)" in capsys.readouterr().err
    english = ["date,load", *(f'{d},"{v}"' for d, v in zip(dates, ["1,002.51", "998.5", "12,100", "7"]))]
    assert load_series(write(tmp_path, english, "en.csv"))["load"].tolist() == [1002.51, 998.5, 12100.0, 7.0]
    assert "',' is read as a thousands separator ('1,002.51' is 1002.51)" in capsys.readouterr().err
    points = ["date;load;t", *(f"{d};{v};2,5" for d, v in zip(dates, ["0.5", "1.002", "2.25", "3"]))]
    assert load_series(write(tmp_path, points, "points.csv"))["load"].tolist() == [0.5, 1.002, 2.25, 3.0]
    assert "thousands separator" not in capsys.readouterr().err  # not every point groups thousands: decimal points
    with pytest.raises(UserError, match="column 'load' has a non-numeric value '1,00,2.5' at line 2"):
        load_series(write(tmp_path, ["date,load", f'{dates[0]},"1,00,2.5"', f"{dates[1]},3"], "bad.csv"))


def test_a_comma_in_a_comment_or_in_the_dates_leaves_the_decimal_points_of_a_semicolon_file(tmp_path, capsys):
    dates = [str(d) for d in pd.date_range("2020-01-01", periods=4, freq="h")]
    values = ["5.827", "0.462", "1.340", "30.531"]  # three decimals: each could group thousands, but for 0.462
    comment = ["date;a;b;Kommentar", *(f"{d};{v};{v};" for d, v in zip(dates, values))]
    comment[2] += "Wartung, Pumpe 2 aus"
    frame = load_series(write(tmp_path, comment, "comment.csv"))
    assert frame["a"].tolist() == frame["b"].tolist() == [5.827, 0.462, 1.34, 30.531]
    assert "Kommentar ('Wartung, Pumpe 2 aus')" in capsys.readouterr().err  # a text column, not a channel
    scada = ["Timestamp;a", *(f"{d},000;{v}" for d, v in zip(dates, values))]  # milliseconds after a comma
    assert load_series(write(tmp_path, scada, "scada.csv"), date_column="Timestamp")["a"].tolist() == [5.827, 0.462, 1.34, 30.531]
    assert "decimal commas" not in capsys.readouterr().err


def test_quoted_decimal_commas_in_a_comma_separated_file_are_decimals_column_by_column(tmp_path, capsys):
    dates = [str(d) for d in pd.date_range("2020-01-01", periods=4, freq="h")]
    quoted = ["date,a,b,count", *(f'{d},"{a}","{b}",{i}' for i, (d, a, b) in
                                  enumerate(zip(dates, ["5,827", "2,009", "1,340", "30,531"], ["0,462", "-0,107", "1,5", "2,25"])))]
    frame = load_series(write(tmp_path, quoted, "quoted.csv"))  # a's marks could group thousands; b's cannot: decimal commas
    assert frame["a"].tolist() == [5.827, 2.009, 1.34, 30.531] and frame["b"].tolist() == [0.462, -0.107, 1.5, 2.25]
    assert frame["count"].tolist() == [0, 1, 2, 3]
    assert "reading it as comma-separated values with decimal commas" in capsys.readouterr().err
    sheets = ["date,OT,count", *(f'{d},"{v}",{i}' for i, (d, v) in enumerate(zip(dates, ["30,53", "27,79", "1,5", "2"])))]
    assert load_series(write(tmp_path, sheets, "sheets.csv"))["OT"].tolist() == [30.53, 27.79, 1.5, 2.0]  # not text
    assert load_series(write(tmp_path, sheets, "sheets.csv"), columns=["OT"])["OT"].tolist() == [30.53, 27.79, 1.5, 2.0]
    mixed = ["Datum;a;b", *(f"{d};{a};{b}" for d, a, b in zip(dates, ["5,827", "2,009", "1,340", "3"], ["0.462", "1.031", "0.426", "2"]))]
    frame = load_series(write(tmp_path, mixed, "mixed.csv"), date_column="Datum")  # b's points: 0.462 groups no thousands
    assert frame["a"].tolist() == [5.827, 2.009, 1.34, 3.0] and frame["b"].tolist() == [0.462, 1.031, 0.426, 2.0]
    assert "in column 'b', '.' is read as the decimal mark ('0.462' cannot group thousands)" in capsys.readouterr().err


def test_the_decimal_mark_notice_quotes_the_cell_that_decides_it(tmp_path, capsys):
    dates = [f"{d:%d.%m.%Y %H:%M}" for d in pd.date_range("2021-01-01", periods=4, freq="h")]
    lines = ["Zeit;A;Z", *(f"{d};{a};{z}" for d, a, z in zip(dates, ["1,771", "3,131", "8,211", "6,239"],
                                                            ["4.332", "6.227", "-0.398", "4.700"]))]
    frame = load_series(write(tmp_path, lines, "neg0.csv"), date_column="Zeit")
    assert frame["Z"].tolist() == [4.332, 6.227, -0.398, 4.7]
    err = capsys.readouterr().err  # 4.332 could group thousands: -0.398 (a group of 0 first) cannot
    assert "in column 'Z', '.' is read as the decimal mark ('-0.398' cannot group thousands)" in err


def test_quoted_commas_that_could_group_thousands_are_decimal_commas_beside_day_month_year_dates(tmp_path, capsys):
    days = pd.date_range("2016-07-01", periods=4, freq="h")
    values = ["30,531", "27,787", "27,787", "25,044"]  # three decimals each, no decimal point in the file
    dotted = ["Datum,OT", *(f'{d:%d.%m.%Y %H:%M},"{v}"' for d, v in zip(days, values))]
    assert load_series(write(tmp_path, dotted, "ot.csv"), date_column="Datum")["OT"].tolist() == [30.531, 27.787, 27.787,
                                                                                                  25.044]
    err = capsys.readouterr().err
    assert ("reading it as comma-separated values with decimal commas: the commas in its numbers ('30,531') could group "
            "thousands, but none of its numbers has a decimal point and its dates are written day.month.year") in err
    iso = ["date,OT", *(f'{d},"{v}"' for d, v in zip(days, values))]  # nothing tells: read as thousands, said honestly
    assert load_series(write(tmp_path, iso, "iso.csv"))["OT"].tolist() == [30531.0, 27787.0, 27787.0, 25044.0]
    err = capsys.readouterr().err
    assert "',' is read as a thousands separator ('30,531' is 30531), as the file's decimal mark is taken to be '.'" in err
    assert "separate the values by ';'" in err
    semicolons = [line.replace(",", ";", 1) for line in iso]  # as the notice says: decimal commas
    assert load_series(write(tmp_path, semicolons, "semi.csv"))["OT"].tolist() == [30.531, 27.787, 27.787, 25.044]


def test_thousands_beside_decimal_commas_and_negative_grouped_numbers_read_as_before(tmp_path):
    dates = [str(d) for d in pd.date_range("2020-01-01", periods=3, freq="h")]
    watts = ["Datum;W;kW", *(f"{d};{w};{k}" for d, w, k in zip(dates, ["5.827", "12.009", "462"], ["5,827", "0,462", "12,009"]))]
    frame = load_series(write(tmp_path, watts, "watts.csv"), date_column="Datum")  # whole watts beside decimal commas
    assert frame["W"].tolist() == [5827.0, 12009.0, 462.0] and frame["kW"].tolist() == [5.827, 0.462, 12.009]
    negative = ["date,a", *(f'{d},"{v}"' for d, v in zip(dates, ["-5,827.00", "-462.00", "12,345,678.5"]))]
    assert load_series(write(tmp_path, negative, "negative.csv"))["a"].tolist() == [-5827.0, -462.0, 12345678.5]


def test_spaces_and_apostrophes_that_group_thousands_are_read_so(tmp_path, capsys):
    dates = [str(d) for d in pd.date_range("2020-01-01", periods=3, freq="h")]
    for mark, told in ((" ", "a space"), ("\u00a0", "a no-break space"), ("'", "an apostrophe")):
        decimal = "." if mark == "'" else ","  # Swiss 5'827.00, French 5 827,0
        cells = [f"5{mark}827{decimal}5", f"462{decimal}0", f"-12{mark}345{mark}678"]
        lines = ["date;load", *(f"{d};{v}" for d, v in zip(dates, cells))]
        assert load_series(write(tmp_path, lines, "grouped.csv"))["load"].tolist() == [5827.5, 462.0, -12345678.0]
        assert f"in column 'load', {told} is read as a thousands separator" in capsys.readouterr().err
    lines = ["date;load", *(f"{d};{v}" for d, v in zip(dates, ["5\u00a0827,5", "46\u00a02,0", "1"]))]
    with pytest.raises(UserError, match="non-numeric value '5 827,5' at line 2") as err:  # 46 2,0 groups nothing
        load_series(write(tmp_path, lines, "bad.csv"))
    assert "\\xa0" not in str(err.value)


def test_an_excel_separator_line_a_units_row_and_a_file_without_dates_are_told_what_to_fix(tmp_path):
    lines = csv_lines(6)
    with pytest.raises(UserError, match="its first line 'sep=;' is Excel's note of the separator, not the header; delete"):
        load_series(write(tmp_path, ["sep=;", *(line.replace(",", ";") for line in lines)], "excel.csv"))
    units = [lines[0], ",kW,°C", *lines[1:]]
    with pytest.raises(UserError, match=r"line 2 looks like a row of units under the header \('kW', '°C'\), not data; delete"):
        load_series(write(tmp_path, units, "units.csv"))
    numbers = [line.split(",", 1)[1] for line in lines]  # the header "a,b" and numbers: no timestamps at all
    with pytest.raises(UserError, match="every column holds numbers: a column of timestamps is required .* add one named 'date'"):
        load_series(write(tmp_path, numbers, "numbers.csv"))


def test_the_separator_and_decimal_mark_are_found_past_a_comma_in_a_name_and_the_first_lines(tmp_path):
    dates = [str(d) for d in pd.date_range("2020-01-01", periods=12, freq="h")]
    named = ["date;Leistung (kW, gesamt);t", *(f"{d};{i};{i}" for i, d in enumerate(dates))]
    assert list(load_series(write(tmp_path, named, "named.csv")).columns) == ["Leistung (kW, gesamt)", "t"]
    late = ["date;a", *(f"{d};{i}" for i, d in enumerate(dates[:-1])), f"{dates[-1]};3,5"]  # the first comma on line 13
    assert load_series(write(tmp_path, late, "late.csv"))["a"].iloc[-1] == 3.5


@pytest.mark.parametrize("ending, compress", [(".csv.gz", gzip.compress), (".csv.bz2", bz2.compress),
                                             (".csv.xz", lzma.compress)])
def test_a_compressed_csv_reads_as_the_plain_one(tmp_path, ending, compress, capsys, monkeypatch):
    plain = _spreadsheet_export(csv_lines(40), ";")  # the sniffing reads the decompressed text too
    expected = load_series(write(tmp_path, plain, "plain.csv"))
    packed = tmp_path / f"packed{ending}"
    packed.write_bytes(compress(("\n".join(plain) + "\n").encode()))
    assert load_series(packed).equals(expected)
    assert f"{packed}: reading it as semicolon-separated values with decimal commas" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)  # named as a relative path: a file, not a registered data set's name
    described = CliRunner().invoke(cli, ["data", "describe", f"packed{ending}", "--split", "0.6/0.2/0.2",
                                         "--in-len", "2", "--out-len", "1"])
    assert described.exit_code == 0 and "rows      40" in described.output, described.output


@pytest.mark.parametrize("ending, compress", [(".csv.gz", gzip.compress), (".csv.bz2", bz2.compress),
                                             (".csv.xz", lzma.compress)])
def test_a_compressed_csv_is_capped_by_the_bytes_it_decompresses_to(tmp_path, ending, compress, monkeypatch):
    text = ("\n".join(csv_lines(3000)) + "\n").encode()  # ≈ 90 kB, compressed to a fifth or less
    packed = tmp_path / f"packed{ending}"
    packed.write_bytes(compress(text))
    monkeypatch.setenv("STANHOP_MAX_CSV_BYTES", str(len(text)))
    assert len(load_series(packed)) == 3000  # within the cap: read
    for cap in (len(text) - 1, 2 * packed.stat().st_size):  # past the 64 kB the first checks read, and within them
        monkeypatch.setenv("STANHOP_MAX_CSV_BYTES", str(cap))
        result = CliRunner().invoke(cli, ["data", "describe", str(packed), *SMALL])
        assert result.exit_code == 2, result.output
        assert result.stderr.strip() == (f"error: {packed} is, once decompressed, over the 0.00 GiB limit; use a smaller "
                                         "file or raise STANHOP_MAX_CSV_BYTES (bytes) if memory allows")


def test_a_csv_that_does_not_fit_the_memory_left_is_a_user_error(tmp_path, monkeypatch):
    path = write(tmp_path, BASE)

    def no_memory(*args, **kwargs):  # as pyarrow's ArrowMemoryError, a MemoryError, under ulimit -v
        raise MemoryError

    monkeypatch.setattr(pd, "read_csv", no_memory)
    result = CliRunner().invoke(cli, ["data", "describe", str(path), *SMALL])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.output
    assert "does not fit in the memory left to read it" in result.stderr and "STANHOP_MAX_CSV_BYTES" in result.stderr


def test_dates_that_only_fit_day_first_are_read_so_and_said(tmp_path, capsys):
    lines = csv_lines(20, freq="D", columns=("a",))
    day_first = [lines[0], *(f"{pd.Timestamp(line.split(',')[0]):%d/%m/%Y},{line.split(',')[1]}" for line in lines[1:])]
    frame = load_series(write(tmp_path, day_first, "uk.csv"))
    assert frame.equals(load_series(write(tmp_path, lines)))
    assert "read day first (20/01/2020 is 20 January 2020)" in capsys.readouterr().err
    month_first = [lines[0], *(f"{pd.Timestamp(line.split(',')[0]):%m/%d/%Y},{line.split(',')[1]}" for line in lines[1:])]
    assert load_series(write(tmp_path, month_first, "us.csv")).equals(frame)
    assert "day first" not in capsys.readouterr().err
    neither = day_first[:5] + ["2020-01-05,4"] + day_first[6:]
    with pytest.raises(UserError, match="line 6 .*2020-01-05"):  # one format per column: no guessing row by row
        load_series(write(tmp_path, neither, "mixed.csv"))


def test_day_first_without_gaps_goes_before_month_first_with_gaps_and_ambiguous_dates_are_told(tmp_path, capsys):
    hours = pd.date_range("2023-02-05", periods=48, freq="h")  # month first: 2 May and 2 June, a month apart
    lines = ["date,a", *(f"{t:%d/%m/%Y %H:%M},{i}" for i, t in enumerate(hours))]
    frame = load_series(write(tmp_path, lines, "hourly.csv"))
    assert frame.index.equals(pd.DatetimeIndex(hours, name="date"))
    assert "read day first (06/02/2023 23:00 is 06 February 2023 23:00)" in capsys.readouterr().err
    days = pd.date_range("2023-01-01", periods=12, freq="D")  # month first: the first of 12 months, also regular
    frame = load_series(write(tmp_path, ["date,a", *(f"{t:%d/%m/%Y},{i}" for i, t in enumerate(days))], "daily.csv"))
    assert frame.index[-1] == pd.Timestamp("2023-12-01")  # pandas' reading, as before
    assert ("read month first, as pandas reads them (12/01/2023 is 01 December 2023); read day first it would be "
            "12 January 2023") in capsys.readouterr().err
    thirteen = pd.date_range("2023-01-01", periods=13, freq="D")
    load_series(write(tmp_path, ["date,a", *(f"{t:%m/%d/%Y},{i}" for i, t in enumerate(thirteen))], "us.csv"))
    assert "month first" not in capsys.readouterr().err  # 01/13/2023 is no date day first: not ambiguous


def test_year_first_dates_are_never_read_day_first(tmp_path, capsys):
    minutes = pd.date_range("2016-07-01", periods=30, freq="min")  # inside one day: day first would be 7 January
    frame = load_series(write(tmp_path, ["date,a", *(f"{t},{i}" for i, t in enumerate(minutes))], "minutes.csv"))
    assert frame.index.equals(pd.DatetimeIndex(minutes, name="date"))
    holed = pd.date_range("2016-07-01", periods=12, freq="h").delete(5)  # a gap: pandas' reading has one, kept
    frame = load_series(write(tmp_path, ["date,a", *(f"{t},{i}" for i, t in enumerate(holed))], "holed.csv"), fill="ffill")
    assert frame.index[0] == pd.Timestamp("2016-07-01") and len(frame) == 12
    assert "day first" not in capsys.readouterr().err


def test_business_days_with_holidays_missing_are_business_days(tmp_path):
    holidays = pd.DatetimeIndex(["2024-01-15", "2024-02-19", "2024-05-27"])
    days = pd.bdate_range("2024-01-01", periods=120).difference(holidays)
    path = write(tmp_path, ["date,a", *(f"{d:%Y-%m-%d},{i}" for i, d in enumerate(days))], "workdays.csv")
    with pytest.raises(UserError, match=r"3 timestamp\(s\) missing at the step 'B' \(the first 2024-01-15"):
        load_series(path)  # the holidays, not every weekend
    filled = load_series(path, fill="ffill")
    assert len(filled) == 120 and infer_freq(filled.index) == "B" and (filled.index.dayofweek < 5).all()


def test_columns_without_a_name_are_not_channels(tmp_path, capsys):
    lines = csv_lines(6)
    plain = load_series(write(tmp_path, lines, "plain.csv"))
    indexed = [f",{lines[0]}", *(f"{i},{line}" for i, line in enumerate(lines[1:]))]  # pandas' to_csv with its index
    trailing = [line.replace(",", ";") + ";" for line in lines]  # a delimiter at the end of every line
    for name, content in (("indexed.csv", indexed), ("trailing.csv", trailing)):
        assert load_series(write(tmp_path, content, name)).equals(plain)
        assert f"{name}: ignoring 1 column(s) with no name in the header" in capsys.readouterr().err
    unnamed_dates = [lines[0].replace("date", "", 1), *lines[1:]]  # the dates written as pandas' unnamed index
    with pytest.raises(UserError, match="its first column has no name in the header .*index_label='date'"):
        load_series(write(tmp_path, unnamed_dates, "unnamed.csv"))


def test_a_file_in_long_format_is_refused_with_how_to_pivot_it(tmp_path):
    wide = pd.read_csv(write(tmp_path, csv_lines(6)))
    long = wide.melt(id_vars="date", var_name="unique_id", value_name="y").rename(columns={"date": "ds"})
    path = tmp_path / "long.csv"
    long.to_csv(path, index=False)
    with pytest.raises(UserError, match=r"one row per series and timestamp \(the series named in column 'unique_id', 2 of "
                                        r"them\); .* df.pivot\(index='ds', columns='unique_id', values='y'\)"):
        load_series(path, date_column="ds")
    with pytest.raises(UserError, match="one row per series and timestamp"):  # not "unknown column(s) a"
        load_series(path, date_column="ds", columns=["a"])
    with pytest.raises(UserError, match=r"no date column 'date' .*long format.* df.pivot\(index='ds', columns='unique_id'"):
        load_series(path)  # the default date column: told to pivot, not only to name the column
    long.pivot(index="ds", columns="unique_id", values="y").to_csv(path)  # as the message says
    assert load_series(path, date_column="ds").to_numpy().tolist() == wide[["a", "b"]].to_numpy().tolist()
    with pytest.raises(UserError, match="repeats the date"):  # repeated dates with no series column: as before
        load_series(write(tmp_path, [*csv_lines(3), csv_lines(3)[-1]], "repeated.csv"))
    noted = [line + (",note" if i == 0 else f",remark {i}") for i, line in enumerate(csv_lines(6))]
    with pytest.raises(UserError, match="line 4 repeats the date"):  # one repeated date, a text column that differs
        load_series(write(tmp_path, noted[:3] + [noted[2].replace("remark 2", "remark 9")] + noted[3:], "noted.csv"))


def test_whole_numbers_that_only_fit_as_unix_time_are_read_so_and_said(tmp_path, capsys):
    lines = csv_lines(30, columns=("a",))
    hourly = load_series(write(tmp_path, lines))
    seconds = (hourly.index - pd.Timestamp("1970-01-01")) // pd.Timedelta("1s")
    for unit, scale in (("seconds", 1), ("milliseconds", 1000)):
        unix = [lines[0], *(f"{t * scale},{line.split(',')[1]}" for t, line in zip(seconds, lines[1:]))]
        assert load_series(write(tmp_path, unix, f"{unit}.csv")).equals(hourly)
        assert f"read as Unix time in {unit} (UTC) ({seconds[-1] * scale} is 02 January 2020 05:00)" in capsys.readouterr().err
    compact = [lines[0], *(f"{t:%Y%m%d%H%M},{line.split(',')[1]}" for t, line in zip(hourly.index, lines[1:]))]
    assert load_series(write(tmp_path, compact, "compact.csv")).equals(hourly)  # 202001010000: pandas' reading fits
    steps = [lines[0], *(f"{i},{line.split(',')[1]}" for i, line in enumerate(lines[1:]))]
    with pytest.raises(UserError, match=r"date holds numbers \(0, ...\), not timestamps"):  # a count is not a date
        load_series(write(tmp_path, steps, "steps.csv"))
    days = load_series(write(tmp_path, csv_lines(30, freq="D", columns=("a",)), "days.csv"))
    floats = [lines[0], *(f"{t:%Y%m%d}.0,{line.split(',')[1]}" for t, line in zip(days.index, lines[1:]))]
    assert load_series(write(tmp_path, floats, "floats.csv")).index.equals(days.index)  # as pandas writes yyyymmdd with a NaN
    assert "whole numbers written with a decimal point (20200101.0); they are read without it" in capsys.readouterr().err
    months = pd.date_range("2000-01-01", periods=30, freq="MS")
    yyyymm = [lines[0], *(f"{t:%Y%m},{line.split(',')[1]}" for t, line in zip(months, lines[1:]))]
    with pytest.raises(UserError, match=r"date holds numbers \(200001, ...\), not timestamps; the run's steps are of the "
                                        r"calendar: if they are months written yyyymm, write each as a date, 2000-01-01 "
                                        r"for 200001 \(pandas: pd.to_datetime\(df\['date'\].astype\(str\), "
                                        r"format='%Y%m'\)\)"):
        load_series(write(tmp_path, yyyymm, "months.csv"))


# ---------------------------------------------------------------- missing values


@pytest.mark.parametrize("fill", ["ffill", "interpolate"])
def test_missing_timestamps_are_inserted_and_filled_when_asked(tmp_path, capsys, fill):
    lines = csv_lines(30)
    full = load_series(write(tmp_path, lines, "full.csv"))
    gappy = write(tmp_path, lines[:6] + lines[9:20] + lines[21:])  # rows 5-7 and 19 missing
    frame = load_series(gappy, fill=fill)
    assert frame.index.equals(full.index) and not frame.isna().any().any()
    kept = full.index.delete([5, 6, 7, 19])
    assert frame.loc[kept].equals(full.loc[kept])  # the file's rows as they were
    a = full["a"].to_numpy()
    expected = a[4] if fill == "ffill" else a[4] + (a[8] - a[4]) * 2 / 4  # row 6, between rows 4 and 8
    assert frame["a"].iloc[6] == pytest.approx(expected)
    assert ("4 timestamp(s) missing at the step 'h' (the first 2020-01-01 05:00:00, between lines 6 and 7) "
            "inserted") in capsys.readouterr().err
    info = describe(gappy, split="0.6/0.2/0.2", in_len=2, out_len=1, fill=fill)
    assert info["rows"] == 30 and info["missing"] == 8  # 4 rows × 2 channels, counted before the fill
    for freq in ("MS", "ME"):  # months have no fixed length: their gaps are found on the calendar
        months = csv_lines(24, freq=freq)
        gappy_months = write(tmp_path, months[:5] + months[7:], f"months-{freq}.csv")
        with pytest.raises(UserError, match=rf"2 timestamp\(s\) missing at the step '{freq}' \(the first 2020-0"):
            load_series(gappy_months)
        filled = load_series(gappy_months, fill=fill)
        assert filled.index.equals(load_series(write(tmp_path, months, f"all-{freq}.csv")).index)
        assert infer_freq(filled.index) == freq
    days = csv_lines(20, freq="D")
    with pytest.raises(UserError, match=r"2 timestamp\(s\) missing at the step 'D' "):  # named as elsewhere, not '24h'
        load_series(write(tmp_path, days[:5] + days[7:], "days.csv"))
    off_step = edit(lines, 8, 0, "2020-01-01 06:20:00")  # a timestamp off the hourly step: not a gap to fill
    with pytest.raises(UserError, match=r"irregular time steps: line 8 \(2020-01-01 06:20:00\)"):
        load_series(write(tmp_path, off_step, "off.csv"), fill=fill)


def test_fill_ffill_and_interpolate(tmp_path, capsys):
    lines = edit(edit(edit(csv_lines(8), 2, 1, ""), 5, 1, ""), 6, 1, "")  # a: rows 0, 3, 4 empty
    path = write(tmp_path, lines)
    with pytest.raises(UserError, match=rf"^{re.escape(str(path))}: 3 empty cell\(s\), first in column 'a'"):
        load_series(path)  # the message names the file
    exact = load_series(write(tmp_path, csv_lines(8), "full.csv"))["a"].to_numpy()
    ffill = load_series(path, fill="ffill")["a"].to_numpy()
    assert ffill[0] == exact[1] and ffill[3] == ffill[4] == exact[2]  # leading gap takes the first value
    assert (f"notice: {path}: 3 empty cell(s) filled by ffill: a 3 (38%, 1 before its first value, which is carried "
            "back to them)") in capsys.readouterr().err  # not silently, and the start said apart
    linear = load_series(path, fill="interpolate")["a"].to_numpy()
    assert linear[3] == pytest.approx(exact[2] + (exact[5] - exact[2]) / 3) and linear[0] == exact[1]
    assert not np.isnan(linear).any() and np.array_equal(linear[[1, 2, 5, 6, 7]], exact[[1, 2, 5, 6, 7]])
    with pytest.raises(UserError, match="fill must be ffill or interpolate"):
        load_series(path, fill="mean")


def test_infinite_values_are_filled_as_missing_values_with_fill_and_said_so(tmp_path, capsys):
    lines = csv_lines(12)
    for line, cell in ((3, "inf"), (5, "-inf"), (7, "Infinity"), (9, "1e400")):  # 1e400: inf in float64
        lines = edit(lines, line, 2, cell)
    path = write(tmp_path, edit(lines, 11, 2, ""))
    exact = load_series(write(tmp_path, csv_lines(12), "full.csv"))["b"].to_numpy()
    for fill in ("ffill", "interpolate"):
        filled = load_series(path, fill=fill)["b"].to_numpy()
        assert np.isfinite(filled).all() and np.array_equal(filled[[0, 2, 4, 6, 8, 10]], exact[[0, 2, 4, 6, 8, 10]])
        assert filled[1] == (exact[0] if fill == "ffill" else pytest.approx((exact[0] + exact[2]) / 2))
        assert (f"{path}: 5 empty or infinite cell(s) filled by {fill}: b 5 (42%, 4 of them infinite)"
                in capsys.readouterr().err)
    info = describe(path, split="0.5/0.25/0.25", in_len=1, out_len=1, fill="ffill")
    assert info["missing_by_column"] == {"a": 0, "b": 5}
    described = CliRunner().invoke(cli, ["data", "describe", str(path), "--fill", "ffill", "--split", "0.5/0.25/0.25",
                                         "--in-len", "1", "--out-len", "1"])
    assert described.exit_code == 0 and "missing   5 (b 5; before --fill)" in described.stdout, described.output
    with pytest.raises(UserError, match="column 'b' has an infinite value at line 3; fix the cell, or leave it empty"):
        load_series(path)  # without a fill: refused, with what to do


def test_a_long_files_infinite_values_are_filled_with_fill_as_a_wide_files_are(tmp_path):
    hours = pd.date_range("2021-01-01", periods=12, freq="h")
    long = pd.concat([pd.DataFrame({"unique_id": uid, "ds": hours, "y": np.arange(12.0) + k}) for k, uid in enumerate("ab")])
    long = long.astype({"y": object})
    long.iloc[15, 2] = "inf"  # b's fourth value
    path = tmp_path / "long.csv"
    long.to_csv(path, index=False)
    args = ["data", "describe", str(path), "--split", "0.5/0.25/0.25", "--in-len", "1", "--out-len", "1"]
    refused = CliRunner().invoke(cli, args)
    assert refused.exit_code == 2 and "column 'y' has an infinite value at line 17; fix the cell" in refused.output
    described = CliRunner().invoke(cli, [*args, "--fill", "ffill"])
    assert described.exit_code == 0 and "missing   1 (b 1; before --fill)" in described.stdout, described.output


def test_describe_counts_missing_before_filling(tmp_path):
    path = write(tmp_path, edit(edit(csv_lines(40), 3, 2, ""), 4, 2, ""))
    info = describe(path, split="0.6/0.2/0.2", in_len=4, out_len=2, fill="ffill")
    assert info["missing"] == 2 and info["missing_by_column"] == {"a": 0, "b": 2}
    result = CliRunner().invoke(cli, ["data", "describe", str(path), "--fill", "ffill", *SMALL])
    assert result.exit_code == 0 and "missing   2 (b 2; before --fill)" in result.stdout
    unfilled = CliRunner().invoke(cli, ["data", "describe", str(path), *SMALL])  # described, not refused
    assert unfilled.exit_code == 0, unfilled.output
    assert "missing   2 (b 2; train, forecast and plot need --fill ffill or --fill interpolate)" in unfilled.stdout


def test_empty_cells_are_refused_by_train_naming_the_file_and_lines(tmp_path):
    path = write(tmp_path, edit(edit(BASE, 3, 1, ""), 9, 2, ""), "holes.csv")
    result = CliRunner().invoke(cli, ["train", "--data", str(path), *SMALL, "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and result.stderr.splitlines() == [
        f"error: {path}: 2 empty cell(s), first in column 'a', at line(s) 3, 9; fill them (CLI: --fill "
        "ffill|interpolate; Python: data.fill in a config, fill= in a function) or fix the file"]
    assert not (tmp_path / "run").exists()


def test_column_without_any_value_cannot_be_filled_and_is_told_so_first(tmp_path):
    lines = [line + ("," if i else ",empty") for i, line in enumerate(csv_lines(6))]
    for fill in ("ffill", None):  # without --fill too: not advice to fill what nothing can fill
        with pytest.raises(UserError, match=r"column\(s\) empty have no values at all; leave them out"):
            load_series(write(tmp_path, lines), fill=fill)
    described = CliRunner().invoke(cli, ["data", "describe", str(write(tmp_path, lines)), "--split", "0.5/0.25/0.25",
                                         "--in-len", "1", "--out-len", "1"])
    assert "no values at all in empty: leave it out with --columns" in described.output, described.output


# ---------------------------------------------------------------- splits


@pytest.mark.parametrize(
    "split, borders, windows",
    [
        ("14/5/5", {"train": (0, 10080), "val": (10080, 13680), "test": (13680, 17280)}, (9889, 3577, 3577)),
        ("12/4/4", {"train": (0, 8640), "val": (8640, 11520), "test": (11520, 14400)}, (8449, 2857, 2857)),
    ],
)
def test_etth1_borders_and_windows(etth1_path, split, borders, windows):
    info = describe("ETTh1", split=split, in_len=168, out_len=24)
    assert {part: (s["start"], s["end"]) for part, s in info["split"].items()} == borders
    assert tuple(s["windows"] for s in info["split"].values()) == windows
    assert info["rows"] == 17420 and info["freq"] == "h" and info["name"] == "ETTh1"
    dm = ForecastDataModule(DataConfig(split=split), in_len=168, out_len=24, batch_size=256)
    dm.setup()
    assert dm.borders == borders and tuple(len(dm.dataset(p)) for p in ("train", "val", "test")) == windows
    test = dm.dataset("test")
    assert test.target_start(0) == borders["test"][0] and test.target_start(len(test) - 1) + 24 == borders["test"][1]


def test_describe_cli_json_and_text(etth1_path):
    result = CliRunner().invoke(cli, ["data", "describe", "ETTh1", "--split", "12/4/4", "--json"])
    assert result.exit_code == 0
    info = json.loads(result.stdout)
    assert info["split"]["val"] == {"start": 8640, "end": 11520, "rows": 2880, "windows": 2857}
    assert info["start"] == "2016-07-01 00:00:00" and info["missing"] == 0 and info["split_spec"] == "12/4/4"
    text = CliRunner().invoke(cli, ["data", "describe", "ETTh1"]).stdout
    assert "rows      17420" in text and "test   rows [13680, 17280)  3600 rows  3577 windows" in text


def test_fraction_rounding():
    assert split_borders(1001, "0.7/0.1/0.2", "h", 2, 1) == {"train": (0, 700), "val": (700, 800), "test": (800, 1001)}
    assert split_borders(1000, "0.5/0.25/0.125", "h", 2, 1)["test"] == (750, 875)  # the rest is unused


def test_a_split_that_leaves_much_of_a_csv_unused_is_pointed_out():
    borders = split_borders(2000, "14/5/5", "D", 28, 7)  # 720 of 2000 daily rows
    notice = unused_rows_notice(2000, borders["test"][1], "14/5/5", "my/daily.csv")
    assert "uses the first 720 of the 2000 rows of my/daily.csv; the last 1280 are unused" in notice
    assert "0.7/0.1/0.2" in notice
    assert unused_rows_notice(790, split_borders(790, "14/5/5", "D", 28, 7)["test"][1], "14/5/5", "d.csv") is None  # 70 rows: < 10%
    fractions = split_borders(2000, "0.3/0.1/0.1", "D", 28, 7)
    assert unused_rows_notice(2000, fractions["test"][1], "0.3/0.1/0.1", "d.csv") == (
        "the split 0.3/0.1/0.1 uses the first 1000 of the 2000 rows of d.csv (its fractions add up to 0.5); the last "
        "1000 are unused: fractions adding up to 1 use them all")
    # ETTh1's benchmark split leaves a third of the file unused on purpose
    assert unused_rows_notice(17420, split_borders(17420, "12/4/4", "h", 96, 24)["test"][1], "12/4/4", "ETTh1") is None
    result = CliRunner().invoke(cli, ["data", "describe", "ETTh1", "--split", "12/4/4"])
    assert result.exit_code == 0 and "notice" not in result.stderr


def test_months_need_a_fixed_step():
    assert split_borders(200, "1/1/1", "D", 5, 2) == {"train": (0, 30), "val": (30, 60), "test": (60, 90)}
    # weekly data, anchored on a weekday or not: 30/7 rows a month, ends rounded down
    for weekly in ("W-SUN", "W-MON", "7D"):
        assert split_borders(200, "7/7/14", weekly, 5, 2) == {"train": (0, 30), "val": (30, 60), "test": (60, 120)}
    assert split_borders(200, "14/7/7", "2W-WED", 3, 1) == {"train": (0, 30), "val": (30, 45), "test": (45, 60)}
    with pytest.raises(UserError, match="fixed time step, but the data's is 'MS'"):
        split_borders(200, "1/1/1", "MS", 5, 2)


@st.composite
def split_cases(draw):
    """A row count, a split text, its expected part ends, a step and window lengths."""
    n = draw(st.integers(1, 3000))
    if draw(st.booleans()):
        freq, per_month = draw(st.sampled_from([("h", 720), ("D", 30), ("15min", 2880), ("30min", 1440)]))
        months = draw(st.lists(st.integers(1, 6), min_size=3, max_size=3))
        text, ends = "/".join(map(str, months)), [per_month * sum(months[: i + 1]) for i in range(3)]
    else:
        freq = "h"
        permille = draw(st.lists(st.integers(1, 998), min_size=3, max_size=3).filter(lambda p: sum(p) <= 1000))
        text, ends = "/".join(f"0.{p:03d}" for p in permille), [n * sum(permille[: i + 1]) // 1000 for i in range(3)]
    return n, text, ends, freq, draw(st.integers(1, 60)), draw(st.integers(1, 30))


@PROPERTY
@given(split_cases())
def test_split_and_windows_agree_with_brute_force(case):
    n, text, ends, freq, in_len, out_len = case
    starts = [0, ends[0], ends[1]]
    # every window by definition: input [t, t+L), target [t+L, t+L+H), inside the data
    expected = {}
    for part, start, end in zip(("train", "val", "test"), starts, ends):
        lowest = start if part == "train" else start - in_len  # train inputs stay in train rows
        expected[part] = [t for t in range(max(0, lowest), n) if t + in_len >= start and t + in_len + out_len <= end]
    fits = ends[-1] <= n and all(expected.values())
    if not fits:
        with pytest.raises(UserError):
            split_borders(n, text, freq, in_len, out_len)
        return
    borders = split_borders(n, text, freq, in_len, out_len)
    assert borders == dict(zip(("train", "val", "test"), zip(starts, ends)))
    series = torch.arange(n, dtype=torch.float32)[:, None]  # (rows, 1): each value is its row number
    for part, ts in expected.items():
        first, count = window_range(part, borders, in_len, out_len)
        ds = WindowDataset(series, first, count, in_len, out_len)
        assert [int(ds[i][0][0, 0]) for i in range(len(ds))] == ts
        x, y = ds[len(ds) - 1]
        assert x.shape == (in_len, 1) and y.shape == (out_len, 1) and int(y[0, 0]) == int(x[-1, 0]) + 1
        if part != "train":
            assert int(ds[0][1][0, 0]) == borders[part][0] and int(y[-1, 0]) == borders[part][1] - 1


@pytest.mark.parametrize("text", ["", "14/5", "1/2/3/4", "a/b/c", "0/5/5", "-1/2/2", "0.5/0.4/0.3", "1.5/2/2"])
def test_bad_split_text(text):
    with pytest.raises(UserError, match="split"):
        parse_split(text)


# ---------------------------------------------------------------- scaler


def test_scaler_fits_train_rows_and_round_trips():
    rng = np.random.default_rng(0)
    values = rng.normal(3.0, 2.0, size=(50, 3))
    values[:, 2] = 7.0  # a constant channel gets scale 1
    scaler = Scaler.fit(values)
    assert np.allclose(scaler.mean, values.mean(axis=0)) and np.allclose(scaler.scale[:2], values[:, :2].std(axis=0))
    assert scaler.scale[2] == 1.0
    restored = Scaler.from_dict(json.loads(json.dumps(scaler.to_dict())))
    assert restored == scaler and all(type(v) is float for v in restored.mean + restored.scale)
    z = scaler.transform(values)
    assert np.allclose(z[:, :2].mean(axis=0), 0) and np.allclose(z[:, :2].std(axis=0), 1)
    assert np.allclose(scaler.inverse_transform(z), values)
    tensor = torch.tensor(values, dtype=torch.float32).reshape(5, 10, 3)  # (b, t, c): last axis channels
    zt = scaler.transform(tensor)
    assert zt.dtype == torch.float32 and torch.allclose(zt.reshape(50, 3), torch.tensor(z, dtype=torch.float32), atol=1e-5)
    assert torch.allclose(scaler.inverse_transform(zt), tensor, atol=1e-5)
    assert scaler.transform(values.astype(np.float32)).dtype == np.float32


@pytest.mark.parametrize(
    "raw", [None, {"mean": [1.0]}, {"mean": [1.0], "scale": [0.0]}, {"mean": [1.0, 2.0], "scale": [1.0]}, {"mean": ["x"], "scale": [1.0]}, {"mean": [], "scale": []}],
)
def test_damaged_scaler_dict(raw):
    with pytest.raises(UserError, match="scaler"):
        Scaler.from_dict(raw)


def test_scaler_rejects_the_wrong_channel_count():
    with pytest.raises(UserError, match="fit on 2 channels but the data has 3"):
        Scaler([0.0, 0.0], [1.0, 1.0]).transform(np.zeros((4, 3)))


# ---------------------------------------------------------------- data module


def module(path: Path, split: str = "0.6/0.2/0.2", in_len: int = 6, out_len: int = 3, batch_size: int = 8, **cfg) -> ForecastDataModule:
    dm = ForecastDataModule(DataConfig(name=str(path), split=split, **cfg), in_len=in_len, out_len=out_len, batch_size=batch_size)
    dm.setup()
    return dm


def test_scaler_sees_only_training_rows(tmp_path):
    lines = csv_lines(100)
    dm = module(write(tmp_path, lines))
    train_end = dm.borders["train"][1]
    assert dm.scaler == Scaler.fit(dm.frame.to_numpy()[:train_end])
    changed = lines
    for row in range(train_end, 100):  # every val/test cell of column a becomes huge
        changed = edit(changed, row + 2, 1, "1e6")
    assert module(write(tmp_path, changed, "later.csv")).scaler == dm.scaler
    assert module(write(tmp_path, edit(lines, train_end + 1, 1, "1e6"), "train.csv")).scaler != dm.scaler  # last train row


def test_windows_are_aligned_views_of_one_scaled_tensor(tmp_path):
    dm = module(write(tmp_path, csv_lines(100)))
    scaled = dm.scaler.transform(dm.frame.to_numpy())
    assert dm.series.dtype == torch.float32 and np.allclose(dm.series.numpy(), scaled, atol=1e-5)
    assert dm.columns == ["a", "b"] and dm.n_series == 2 and dm.freq == "h" and dm.target == "b"
    for part in ("train", "val", "test"):
        ds = dm.dataset(part)
        for i in (0, len(ds) // 2, len(ds) - 1):
            x, y = ds[i]
            row = ds.target_start(i)
            assert torch.equal(x, dm.series[row - 6 : row]) and torch.equal(y, dm.series[row : row + 3])
            assert x.untyped_storage().data_ptr() == dm.series.untyped_storage().data_ptr()
        start, end = dm.borders[part]
        low = start + 6 if part == "train" else start  # val/test inputs reach back before their border
        assert ds.target_start(0) == low and ds.target_start(len(ds) - 1) + 3 == end
    with pytest.raises(IndexError):
        dm.dataset("test")[len(dm.dataset("test"))]


def test_loaders(tmp_path):
    dm = module(write(tmp_path, csv_lines(100)), batch_size=8)
    batches = list(dm.test_dataloader())
    assert sum(len(x) for x, _ in batches) == len(dm.dataset("test")) == 18 and len(batches[-1][0]) == 2  # partial batch kept
    x, y = batches[0]
    assert x.shape == (8, 6, 2) and y.shape == (8, 3, 2) and x.dtype == y.dtype == torch.float32
    lightning.seed_everything(5, verbose=False)
    first = next(iter(dm.train_dataloader()))[0]
    lightning.seed_everything(5, verbose=False)
    again = next(iter(dm.train_dataloader()))[0]
    in_order = torch.stack([dm.dataset("train")[i][0] for i in range(8)])
    assert torch.equal(first, again) and not torch.equal(first, in_order)
    assert torch.equal(next(iter(dm.val_dataloader()))[0], torch.stack([dm.dataset("val")[i][0] for i in range(8)]))
    workers = ForecastDataModule(DataConfig(name=dm.cfg.name, split="0.6/0.2/0.2", num_workers=2), 6, 3, 8)
    assert workers.train_dataloader().num_workers == 2


def test_setup_is_idempotent_and_a_given_scaler_is_used(tmp_path):
    path = write(tmp_path, csv_lines(100))
    dm = module(path)
    series = dm.series
    dm.setup("fit")
    assert dm.series is series
    given_scaler = Scaler([1.0, 2.0], [3.0, 4.0])
    other = ForecastDataModule(DataConfig(name=str(path), split="0.6/0.2/0.2"), 6, 3, 8, scaler=given_scaler)
    other.setup()
    assert other.scaler is given_scaler and torch.allclose(other.series[0], torch.tensor((dm.frame.iloc[0].to_numpy() - [1, 2]) / [3, 4], dtype=torch.float32))


def test_target_and_module_errors(tmp_path):
    path = write(tmp_path, csv_lines(100))
    assert module(path, target="a").target == "a"
    with pytest.raises(UserError, match="data.target 'z' is not a channel"):
        module(path, target="z")
    with pytest.raises(UserError, match="batch_size"):
        ForecastDataModule(DataConfig(name=str(path)), 6, 3, 0)
    with pytest.raises(UserError, match="too short for one window"):
        module(path, in_len=80)


def test_etth1_module_target_is_ot(etth1_path):
    dm = module(Path("ETTh1"), split="12/4/4", in_len=168, out_len=24)
    assert dm.target == "OT" and dm.n_series == 7


# ---------------------------------------------------------------- property tests of the reader

numbers = st.one_of(st.floats(-1e6, 1e6).map(repr), st.integers(-(10**20), 10**20).map(str), st.just(""))
cells = st.one_of(
    numbers,
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", " ", "nan", "NA", "1e400", "-0", "1,5", '"2"', "x"]),
    st.text(max_size=4),
)


@st.composite
def small_csvs(draw):
    """Text of a small CSV: a date column and 1-3 channels; half of them clean, half broken anywhere."""
    clean = draw(st.booleans())
    n = draw(st.integers(0, 7))
    names = draw(st.lists(st.sampled_from(["a", "b", "c", "date", "x y", ""]), min_size=1, max_size=3))
    start, k, dates = pd.Timestamp("2021-03-01"), 0, []
    for _ in range(n):
        k += 1 if clean else draw(st.integers(-1, 3))  # 1 is regular; others break order or spacing
        dates.append(str(start + pd.Timedelta(hours=k)) if clean or draw(st.integers(0, 9)) else draw(st.sampled_from(["", "soon", "2021-02-30"])))
    rows = [",".join([d, *(draw(numbers if clean else cells) for _ in names)]) for d in dates]
    return "\n".join([",".join(["date", *names]), *rows]) + draw(st.sampled_from(["", "\n", "\n\n"]))


def _check_loaded_or_user_error(path: Path, **kwargs) -> None:
    try:
        frame = load_series(path, **kwargs)
    except UserError as err:
        assert "\n" not in str(err)
        return
    assert isinstance(frame.index, pd.DatetimeIndex) and frame.index.is_monotonic_increasing and frame.index.is_unique
    assert len(frame) >= 2 and frame.shape[1] >= 1 and all(dtype == np.float64 for dtype in frame.dtypes)
    assert np.isfinite(frame.to_numpy()).all()
    freq = infer_freq(frame.index)
    if kwargs.get("fill") is None:
        assert len(frame) <= path.read_text(errors="replace").count("\n") + 1
    else:  # missing timestamps were inserted: a row for every step from the first to the last
        assert len(frame) == len(pd.date_range(frame.index[0], frame.index[-1], freq=freq))


@PROPERTY
@given(small_csvs(), st.sampled_from([None, "ffill", "interpolate"]))
@example("date,a,a,a\n2021-03-01 00:00:00,0.0,,0.0\n2021-03-01 01:00:00,0.0,0.0,0.0\n2021-03-01 02:00:00,,0.0,\n"
         "2021-03-01 05:00:00,0.0,0.0,", "ffill")  # two missing timestamps inserted: more rows than lines
def test_small_csvs_load_consistently_or_fail_with_user_error(text, fill):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "p.csv"
        path.write_text(text)
        _check_loaded_or_user_error(path, fill=fill)


@PROPERTY
@given(st.binary(max_size=300))
def test_arbitrary_bytes_load_or_fail_with_user_error(blob):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "p.csv"
        path.write_bytes(b"date,a\n" + blob if blob[:1] == b"\x00" else blob)
        _check_loaded_or_user_error(path)


def test_hundreds_of_series_are_listed_short_in_describe_and_errors(tmp_path):
    """321 series (as Electricity's) would fill the screen: the first and last few and a count;
    --json keeps them all."""
    names = tuple(f"MT_{i:03d}" for i in range(321))
    path = write(tmp_path, csv_lines(20, columns=names))
    result = CliRunner().invoke(cli, ["data", "describe", str(path), *SMALL])
    assert result.exit_code == 0, result.output
    assert "columns   MT_000, MT_001, MT_002, MT_003, MT_004, …, MT_319, MT_320 (321 in all)\n" in result.stdout
    assert json.loads(CliRunner().invoke(cli, ["data", "describe", str(path), *SMALL, "--json"]).stdout)["columns"] == list(names)
    unknown = CliRunner().invoke(cli, ["data", "describe", str(path), *SMALL, "--columns", "MT_000,OT"])
    assert unknown.exit_code == 2 and len(unknown.stderr) < 200, unknown.stderr
    assert "unknown column(s) OT in" in unknown.stderr and "…, MT_319, MT_320 (321 in all)" in unknown.stderr


def test_names_in_a_header_written_with_spaces_after_the_commas_are_stripped(tmp_path):
    from stanhop.csvio import header_of, read_series

    path = tmp_path / "spaced.csv"
    path.write_text("date, a , b\n" + "".join(f"2020-01-{d:02d}, {d}.5, {d * 2}\n" for d in range(1, 11)))
    assert header_of(path) == ["date", "a", "b"]  # as --columns, data.target and plot --channels name them
    frame = read_series(path, "date", ["b"])
    assert list(frame.columns) == ["b"] and frame["b"].tolist() == [2.0 * d for d in range(1, 11)]
    path.write_text("date, a,a \n2020-01-01,1,2\n2020-01-02,3,4\n")
    with pytest.raises(UserError, match="names column\\(s\\) 'a' more than once"):
        header_of(path)


def test_a_huge_cell_or_column_name_is_cut_in_messages_and_output(tmp_path):
    """A cell or a column name of 300 000 characters (100 MB in the report) is quoted by its
    first 100 and its length: never a line as long as the file."""
    long = "1x" * 150_000
    cell = write(tmp_path, edit(csv_lines(40), 5, 1, long), "cell.csv")
    result = CliRunner().invoke(cli, ["data", "describe", str(cell), *SMALL])
    assert result.exit_code == 2 and len(result.stderr) < 600, len(result.stderr)
    assert f"non-numeric value '{long[:100]}'… (300000 characters) at line 5; fix the cell" in result.stderr

    name = "N" * 300_000
    lines = csv_lines(40, columns=(name, "b"))
    described = CliRunner().invoke(cli, ["data", "describe", str(write(tmp_path, lines, "name.csv")), *SMALL])
    assert described.exit_code == 0, described.output[:300]
    assert f"columns   {name[:100]}… (300000 characters), b\n" in described.stdout
    assert max(map(len, described.output.splitlines())) < 300
    refused = CliRunner().invoke(cli, ["data", "describe", str(write(tmp_path, edit(lines, 5, 1, "x"), "both.csv")), *SMALL])
    assert refused.exit_code == 2 and len(refused.stderr) < 600, len(refused.stderr)
    assert f"column '{name[:100]}… (300000 characters)' has a non-numeric value 'x' at line 5" in refused.stderr


def test_the_fill_notice_tells_a_long_name_whole_and_clips_only_a_huge_one(tmp_path, capsys):
    """A 43-character name that starts late and ends early: its notice item (~140 characters) is
    told whole; a name of 300 000 characters is clipped where it is quoted, the sentence kept."""
    name = "building_north_wing_floor3_temperature_degC"
    for header in (name, "N" * 300_000):
        lines = csv_lines(10, columns=(header, "b"))
        for line in (2, 10, 11):  # its first value and its last two
            lines = edit(lines, line, 1, "")
        load_series(write(tmp_path, lines), fill="ffill")
        told = capsys.readouterr().err
        shown = header if header == name else f"{header[:100]}… (300000 characters)"
        assert (f"filled by ffill: {shown} 3 (30%, 1 before its first value, which is carried back to them, "
                "2 after its last value, which is carried forward to them)\n") in told
        assert len(told) < 600


def test_no_message_line_repeats_user_data_whole():
    from stanhop.errors import bounded, cited, clipped

    assert clipped("a" * 150) == "a" * 100 + "… (150 characters)" and clipped("short") == "short"
    assert cited("x" * 101) == repr("x" * 100) + "… (101 characters)" and cited("OT") == "'OT'"
    laughs = ["lol"] * 9
    for _ in range(9):  # 9**10 items once written out: cited without writing them out
        laughs = [laughs] * 9
    assert len(cited(laughs)) <= 201 and cited(laughs).startswith("[[[")
    message = "what is wrong " + "z" * 10_000 + " what to do"
    assert len(bounded(message)) < 2100 and bounded(message).startswith("what is wrong ")
    assert bounded(message).endswith(" what to do") and f"({len(message) - 2000} characters left out)" in bounded(message)


def test_the_last_value_a_forecast_rests_on_is_never_an_infinite_one(capsys):
    from stanhop.csvio import fill_missing

    hours = pd.date_range("2021-01-01", periods=6, freq="h")
    frame = pd.DataFrame({"a": [1.0, 2, 3, 4, 5, 6], "b": [1.0, 2, 3, np.inf, np.nan, np.nan]}, index=hours)
    filled = fill_missing(frame, "ffill", "ends.csv", last_rows=3)
    assert filled["b"].tolist() == [1.0, 2, 3, 3, 3, 3]
    told = capsys.readouterr().err
    assert "hold no value of b (its last value at 2021-01-01 02:00:00)" in told, told
