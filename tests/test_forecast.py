"""`stanhop forecast` and the library's run.forecast / run.backtest on CSVs cut from ETTh1."""

import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

import cli
from stanhop.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=True, index_label="date")
    return path


def invoke(*args):
    return CliRunner().invoke(cli.cli, [str(a) for a in args])


def test_force_never_replaces_the_input_or_the_runs_own_files(run_dir, etth1, tmp_path):
    source = write_csv(etth1.iloc[1000:1100], tmp_path / "in.csv")
    before = {path: path.read_bytes() for path in (source, run_dir / "metrics.json")}
    around = tmp_path / "new" / ".." / "in.csv"  # the input again, through a folder not made yet
    for target, extra in ((source, ()), (run_dir / "metrics.json", ()), (source, ("--backtest",)),
                          (around, ()), (run_dir / "new" / ".." / "metrics.json", ())):
        result = invoke("forecast", run_dir, "--input", source, "--output", target, "--force", *extra)
        assert result.exit_code == 2 and "is one of the files this command reads" in result.stderr, result.output
    unforced = invoke("forecast", run_dir, "--input", source, "--output", around)
    assert unforced.exit_code == 2 and "is one of the files this command reads" in unforced.stderr
    assert {path: path.read_bytes() for path in before} == before
    moved = invoke("forecast", run_dir, "--input", source, "--output", tmp_path / "next.csv", "--force")
    assert moved.exit_code == 0, moved.output  # another file: written


def test_forecast_gives_out_len_hourly_rows_starting_one_hour_after_the_input(run, run_dir, etth1, tmp_path):
    cut = etth1.iloc[1000:1100]
    out = tmp_path / "pred.csv"
    result = invoke("forecast", run_dir, "--input", write_csv(cut, tmp_path / "in.csv"), "--output", out)
    assert result.exit_code == 0, result.output
    pred = pd.read_csv(out, index_col="date", parse_dates=["date"])
    out_len = run.config.model.out_len
    assert len(pred) == out_len
    expected = pd.date_range(cut.index[-1] + pd.Timedelta(hours=1), periods=out_len, freq="h")
    assert list(pred.index) == list(expected)
    assert list(pred.columns) == run.data.columns
    assert np.isfinite(pred.to_numpy()).all()
    np.testing.assert_allclose(pred.to_numpy(), run.forecast(cut).to_numpy(), rtol=1e-12)


def test_forecast_is_the_model_on_the_scaled_last_window_scaled_back(run, etth1):
    """ŷ = model((x[-in_len:] - mean) / scale) * scale + mean, computed here by hand."""
    cut = etth1.iloc[500:600]
    mean, scale = torch.tensor(run.data.mean), torch.tensor(run.data.scale)
    x = torch.tensor(cut.to_numpy()[-run.config.model.in_len:])
    with torch.no_grad():
        by_hand = run.model(((x - mean) / scale).float()[None])[0].double() * scale + mean
    np.testing.assert_allclose(run.forecast(cut).to_numpy(), by_hand.numpy(), rtol=1e-5, atol=1e-6)
    # only the last in_len rows matter
    np.testing.assert_allclose(run.forecast(cut.iloc[-run.config.model.in_len:]).to_numpy(), run.forecast(cut).to_numpy())


def test_columns_in_another_order_and_extra_columns_give_the_same_forecast(run, run_dir, etth1, tmp_path):
    cut = etth1.iloc[2000:2050]
    shuffled = cut[list(reversed(cut.columns))].assign(station=7.0)
    plain = invoke("forecast", run_dir, "--input", write_csv(cut, tmp_path / "a.csv"))
    other = invoke("forecast", run_dir, "--input", write_csv(shuffled, tmp_path / "b.csv"))
    assert plain.exit_code == 0 and other.exit_code == 0, other.output
    assert "station" in other.stderr and "ignoring" in other.stderr
    assert plain.stdout == other.stdout and len(plain.stdout.strip().splitlines()) == run.config.model.out_len + 1


def test_library_accepts_a_date_column_or_a_datetime_index(run, etth1, capsys):
    cut = etth1.iloc[300:340]
    by_index = run.forecast(cut)
    by_column = run.forecast(cut.reset_index()[["OT", "date", *cut.columns[:-1]]].assign(extra=1))
    pd.testing.assert_frame_equal(by_index, by_column)
    assert "extra" in capsys.readouterr().err
    with pytest.raises(UserError, match="DatetimeIndex"):
        run.forecast(cut.reset_index(drop=True))


@pytest.mark.parametrize("command, option", [("forecast", "--input"), ("evaluate", "--data")])
def test_missing_channels_are_named_alike_by_forecast_and_evaluate(run_dir, etth1, tmp_path, command, option):
    cut = etth1.iloc[:60].drop(columns=["OT", "LULL"])
    result = invoke(command, run_dir, option, write_csv(cut, tmp_path / "in.csv"))
    assert result.exit_code == 2
    assert result.stderr.startswith("error:") and "lacks the channel(s) LULL, OT the run was trained on" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("command, option", [("forecast", "--input"), ("evaluate", "--data")])
def test_a_file_in_long_format_gets_the_pivot_hint_not_missing_channels(run_dir, etth1, tmp_path, command, option):
    long = etth1.iloc[:60].reset_index().melt(id_vars="date", var_name="unique_id", value_name="y")
    path = tmp_path / "long.csv"
    long.to_csv(path, index=False)
    result = invoke(command, run_dir, option, path)
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "one row per series and timestamp (the series named in column 'unique_id', 7 of them)" in result.stderr
    assert "df.pivot(index='date', columns='unique_id', values='y')" in result.stderr


def test_evaluate_data_with_another_date_column_names_it_with_date_column(run_dir, etth1, tmp_path):
    path = tmp_path / "in.csv"
    etth1.to_csv(path, index=True, index_label="time")
    result = invoke("evaluate", run_dir, "--data", path)
    assert result.exit_code == 2 and "has no date column 'date' (columns: time, HUFL" in result.stderr
    assert "name its timestamp column with --date-column" in result.stderr
    named = invoke("evaluate", run_dir, "--data", path, "--date-column", "time", "--json")
    own = invoke("evaluate", run_dir, "--json")
    assert named.exit_code == 0 and json.loads(named.stdout)["test"] == json.loads(own.stdout)["test"]
    alone = invoke("evaluate", run_dir, "--date-column", "time")
    assert alone.exit_code == 2 and "give it with data (CLI: --data)" in alone.stderr


def test_evaluate_data_with_empty_cells_is_filled_with_fill(run_dir, etth1, tmp_path):
    """The advice to fill (--fill ffill|interpolate) is an option evaluate has, for --data only."""
    path = tmp_path / "holes.csv"
    holes = etth1.copy()
    holes.iloc[100, holes.columns.get_loc("OT")] = np.nan  # in the training rows: the test windows are the run's own
    holes.to_csv(path, index_label="date")
    refused = invoke("evaluate", run_dir, "--data", path)
    assert refused.exit_code == 2 and "--fill ffill|interpolate" in refused.stderr
    filled = invoke("evaluate", run_dir, "--data", path, "--fill", "ffill", "--json")
    own = invoke("evaluate", run_dir, "--json")
    assert filled.exit_code == 0, filled.output
    assert json.loads(filled.stdout)["test"] == json.loads(own.stdout)["test"]
    alone = invoke("evaluate", run_dir, "--fill", "ffill")
    assert alone.exit_code == 2 and "give it with data (CLI: --data)" in alone.stderr


def test_short_input_is_refused(run, run_dir, etth1, tmp_path):
    cut = etth1.iloc[: run.config.model.in_len - 1]
    result = invoke("forecast", run_dir, "--input", write_csv(cut, tmp_path / "in.csv"))
    assert result.exit_code == 2 and "needs the last" in result.stderr
    assert invoke("forecast", run_dir, "--input", write_csv(etth1.iloc[: run.config.model.in_len], tmp_path / "ok.csv")).exit_code == 0


def test_nan_in_the_used_rows_is_refused_but_not_before_them(run, run_dir, etth1, tmp_path):
    cut = etth1.iloc[:80].copy()
    cut.iloc[-3, 2] = np.nan
    result = invoke("forecast", run_dir, "--input", write_csv(cut, tmp_path / "late.csv"))
    assert result.exit_code == 2 and "MUFL" in result.stderr and str(cut.index[-3]) in result.stderr
    assert invoke("forecast", run_dir, "--input", tmp_path / "late.csv", "--fill", "ffill").exit_code == 0
    early = etth1.iloc[:80].copy()
    early.iloc[5, 2] = np.nan  # outside the last in_len rows
    assert invoke("forecast", run_dir, "--input", write_csv(early, tmp_path / "early.csv")).exit_code == 0
    with pytest.raises(UserError, match="missing or infinite"):
        run.forecast(cut)


def test_an_infinite_value_is_as_an_empty_cell_before_the_used_rows_and_filled_with_fill(run, run_dir, etth1, tmp_path):
    early = etth1.iloc[:80].copy()
    early.iloc[5, 2] = np.inf  # outside the last in_len rows: no matter, as an empty cell there
    result = invoke("forecast", run_dir, "--input", write_csv(early, tmp_path / "early.csv"))
    assert result.exit_code == 0, result.output
    late = etth1.iloc[:80].copy()
    late.iloc[-3, 2] = -np.inf
    result = invoke("forecast", run_dir, "--input", write_csv(late, tmp_path / "late.csv"))
    assert result.exit_code == 2 and "1 missing or infinite value(s)" in result.stderr and "--fill" in result.stderr
    filled = invoke("forecast", run_dir, "--input", tmp_path / "late.csv", "--fill", "ffill")
    assert filled.exit_code == 0 and "1 empty or infinite cell(s) filled by ffill: MUFL 1" in filled.stderr
    assert "1 of them infinite" in filled.stderr
    backtest = invoke("forecast", run_dir, "--input", tmp_path / "early.csv", "--backtest")  # every row used: refused
    assert backtest.exit_code == 2 and "column 'MUFL' has an infinite value at line 7; fix the cell" in backtest.stderr
    with pytest.raises(UserError, match=r"Python frame.replace\(\[np.inf, -np.inf\], np.nan\) first, then e.g. "
                                        r"frame.asfreq\('h'\).interpolate\(\)"):  # interpolate alone leaves inf
        run.forecast(late)
    fixed = late.replace([np.inf, -np.inf], np.nan).asfreq("h").interpolate()  # the advice works
    assert np.isfinite(run.forecast(fixed).to_numpy()).all()


def test_missing_timestamps_in_the_input_are_filled_with_fill(run, run_dir, etth1, tmp_path):
    gappy = etth1.iloc[:80].drop(etth1.index[[70, 71]])
    path = write_csv(gappy, tmp_path / "gappy.csv")
    result = invoke("forecast", run_dir, "--input", path)
    assert result.exit_code == 2 and "2 timestamp(s) missing at the step 'h'" in result.stderr
    filled = invoke("forecast", run_dir, "--input", path, "--fill", "interpolate", "--output", tmp_path / "out.csv")
    assert filled.exit_code == 0, filled.output
    expected = etth1.iloc[:80].copy()
    expected.iloc[70:72] = np.nan
    want = run.forecast(expected.interpolate(method="linear"))
    got = pd.read_csv(tmp_path / "out.csv", index_col=0, parse_dates=True)
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=1e-5)
    assert got.index.equals(want.index.rename(got.index.name))


def test_a_gap_before_the_last_in_len_rows_leaves_out_the_rows_before_it(run, run_dir, etth1, tmp_path):
    in_len = run.config.model.in_len
    rows = etth1.iloc[:in_len + 30]
    old_gap = rows.drop(rows.index[[10, 11, 12]])  # the last in_len rows come well after it
    path = write_csv(old_gap, tmp_path / "old_gap.csv")
    result = invoke("forecast", run_dir, "--input", path, "--output", tmp_path / "out.csv")
    assert result.exit_code == 0, result.output
    assert f"skips time steps before {rows.index[13]}" in result.stderr and "the 10 rows before" in result.stderr
    tail = old_gap.iloc[10:]
    got = pd.read_csv(tmp_path / "out.csv", index_col=0, parse_dates=True)
    np.testing.assert_allclose(got.to_numpy(), run.forecast(tail).to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(run.forecast(old_gap, notify=lambda _: None).to_numpy(), got.to_numpy(), rtol=1e-12)

    # a backtest uses every row: the gap is refused, as is one among the last in_len rows
    backtest = invoke("forecast", run_dir, "--input", path, "--backtest")
    assert backtest.exit_code == 2 and "3 timestamp(s) missing" in backtest.stderr
    late_gap = rows.drop(rows.index[[-5]])
    late = invoke("forecast", run_dir, "--input", write_csv(late_gap, tmp_path / "late_gap.csv"))
    assert late.exit_code == 2 and "1 timestamp(s) missing" in late.stderr and "between lines" in late.stderr
    with pytest.raises(UserError, match=rf"the input: 1 timestamp missing at the step 'h' \(the first {rows.index[-5]}, "
                                        rf"between positions {len(rows) - 6} and {len(rows) - 5}\)"):
        run.forecast(late_gap)

    # with an older gap too, the one among the last rows is named: the older one is no matter
    both = late_gap.drop(late_gap.index[[10]])
    told = invoke("forecast", run_dir, "--input", write_csv(both, tmp_path / "both.csv"))
    assert told.exit_code == 2 and f"(the first {rows.index[-5]}, between lines" in told.stderr, told.stderr
    assert f"a forecast reads the last {in_len} rows" in told.stderr
    with pytest.raises(UserError, match=rf"the first {rows.index[-5]}, between positions {len(rows) - 7} and"):
        run.forecast(both)
    one = rows.drop(rows.index[[1]])  # one row before the gap: "is"
    notes = []
    run.forecast(one, notify=notes.append)
    assert "so the 1 row before the last gap is left out (to keep them, fill the gap: CLI --fill ffill|interpolate, " \
           "Python e.g. frame.asfreq('h').interpolate())" in notes[0]
    extra = pd.concat([rows, rows.iloc[[-3]].set_axis(rows.index[[-3]] + pd.Timedelta(minutes=30))]).sort_index()
    with pytest.raises(UserError, match=r"comes 0 days 00:30:00 after the row before, but the usual step is 0 days "
                                        r"01:00:00; remove or correct the rows off that step \(frame.asfreq\('h'\)"):
        run.forecast(extra)  # a row too many, not a gap
    from stanhop.plot import forecast_with_truth

    history, _, truth = forecast_with_truth(run, one)  # the plot's forecast too: no refusal, the same rows
    assert history.index[0] == one.index[1] and truth is not None
    texty = rows.astype(object)
    texty.iloc[12, 3] = "abc"
    with pytest.raises(UserError, match=rf"not numeric \('abc' in column '{rows.columns[3]}' at position 12 \("):
        run.forecast(texty)


def test_intervals_past_the_calibration_are_refused_before_the_long_horizon_notice(run, etth1):
    notes = []
    with pytest.raises(UserError, match="no window to calibrate intervals on; ask for a shorter horizon"):
        run.forecast(etth1.iloc[:100], horizon=5000, intervals=[80], notify=notes.append)
    assert notes == []  # no notice of a recursive forecast that is not made


def test_missing_steps_are_named_on_the_runs_calendar():
    from stanhop.forecast import after_last_gap, refuse_missing_steps

    months = pd.date_range("2015-01-01", periods=40, freq="MS")
    with pytest.raises(UserError, match=r"1 timestamp missing at the step 'MS' \(the first 2016-03-01 00:00:00, "
                                        r"between positions 13 and 14\)"):
        refuse_missing_steps(months.drop(months[14]), "MS", "the input")
    days = pd.date_range("2021-03-10", periods=40, freq="D", tz="Europe/Berlin")  # clocks change on 03-28
    with pytest.raises(UserError, match=r"the first 2021-04-10 00:00:00\+02:00"):
        refuse_missing_steps(days.drop(days[31]), "D", "the input")
    frame = pd.DataFrame({"a": np.arange(40.0)}, index=days)
    assert after_last_gap(frame, "D", 10, "the input", notify=pytest.fail) is frame  # a change of clocks is no gap
    trimmed = after_last_gap(frame.drop(days[5]), "D", 10, "the input", notify=lambda _: None)
    assert trimmed.index[0] == days[6] and len(trimmed) == 34
    off_step = pd.DataFrame({"a": [1.0, 2.0, 3.0]}, index=pd.to_datetime(["2021-01-01 00:00", "2021-01-01 00:30",
                                                                         "2021-01-01 01:00"]))
    assert after_last_gap(off_step, "h", 1, "the input", notify=pytest.fail) is off_step  # off the step: not a gap


def test_another_frequency_is_refused(run_dir, etth1, tmp_path):
    two_hourly = etth1.iloc[:200:2]
    result = invoke("forecast", run_dir, "--input", write_csv(two_hourly, tmp_path / "in.csv"))
    assert result.exit_code == 2 and "'2h'" in result.stderr and "'h'" in result.stderr


def test_an_existing_output_is_kept_unless_force(run_dir, etth1, tmp_path):
    source = write_csv(etth1.iloc[:60], tmp_path / "in.csv")
    out = tmp_path / "pred.csv"
    out.write_text("precious\n")
    result = invoke("forecast", run_dir, "--input", source, "--output", out)
    assert result.exit_code == 2 and "--force" in result.stderr
    assert out.read_text() == "precious\n"
    assert invoke("forecast", run_dir, "--input", source, "--output", out, "--force").exit_code == 0
    assert out.read_text().startswith("date,HUFL")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "pred.csv"]  # no temp file left


def test_parquet_output_holds_the_same_table(run, run_dir, etth1, tmp_path):
    cut = etth1.iloc[:60]
    out = tmp_path / "pred.parquet"
    assert invoke("forecast", run_dir, "--input", write_csv(cut, tmp_path / "in.csv"), "--output", out).exit_code == 0
    table = pd.read_parquet(out).set_index("date")
    np.testing.assert_allclose(table.to_numpy(), run.forecast(cut).to_numpy())
    piped = invoke("forecast", run_dir, "--input", tmp_path / "in.csv", "--format", "parquet")  # into a pipe, not a terminal
    assert piped.exit_code == 0, piped.output
    pd.testing.assert_frame_equal(pd.read_parquet(io.BytesIO(piped.stdout_bytes)).set_index("date"), table)


def test_parquet_without_pyarrow_is_a_one_line_error_before_any_work(run_dir, etth1, tmp_path, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pyarrow" else find_spec(name, *a))
    result = invoke("forecast", run_dir, "--input", write_csv(etth1.iloc[:60], tmp_path / "in.csv"), "--output",
                    tmp_path / "pred.parquet")  # as after pip install stanhop, without the parquet extra
    assert result.exit_code == 2 and "writing Parquet needs pyarrow, which is not installed" in result.stderr
    assert not (tmp_path / "pred.parquet").exists()


def test_backtest_with_stride_1_on_the_test_rows_equals_evaluate(run, etth1):
    """Windows over [test_start - in_len, test_end) are exactly the test windows of `stanhop evaluate`."""
    start, end = run.data.borders["test"]
    rows = etth1.iloc[start - run.config.model.in_len : end]
    result = run.backtest(rows, stride=1)
    test = run.metrics["test"]
    assert result.metrics["windows"] == end - start - run.config.model.out_len + 1
    for key in ("mse", "mae", "mse_original_units", "mae_original_units"):
        assert result.metrics["overall"][key] == pytest.approx(test[key], rel=1e-6), key


def test_backtest_table_agrees_with_forecasts_truth_and_metrics(run, etth1):
    in_len, out_len = run.config.model.in_len, run.config.model.out_len
    rows = etth1.iloc[700:900]
    result = run.backtest(rows, stride=7, batch_size=10)
    table, windows = result.table, (len(rows) - in_len - out_len) // 7 + 1
    assert result.metrics["windows"] == windows and len(table) == windows * out_len
    assert list(table["step"][:out_len]) == list(range(1, out_len + 1))
    third = table[table["window_start"] == rows.index[14]]  # window 2 starts at row 2 * 7
    np.testing.assert_allclose(third[[f"{c}_pred" for c in rows.columns]].to_numpy(),
                               run.forecast(rows.iloc[: 14 + in_len]).to_numpy(), rtol=1e-5)
    np.testing.assert_array_equal(third[[f"{c}_true" for c in rows.columns]].to_numpy(),
                                  rows.iloc[14 + in_len : 14 + in_len + out_len].to_numpy())
    assert list(third["timestamp"]) == list(rows.index[14 + in_len : 14 + in_len + out_len])
    assert set(third["cutoff"]) == {rows.index[14 + in_len - 1]}  # the last input row, neuralforecast's cutoff
    for c in rows.columns:
        squared = (table[f"{c}_pred"] - table[f"{c}_true"]) ** 2
        assert result.metrics["per_channel"][c]["mse_original_units"] == pytest.approx(squared.mean(), rel=1e-4)
    same = run.backtest(rows, stride=7, batch_size=1000)
    assert same.metrics["overall"]["mse"] == pytest.approx(result.metrics["overall"]["mse"], rel=1e-6)


def test_backtest_windows_end_on_the_last_row_and_n_windows_keeps_the_last(run, run_dir, etth1, tmp_path):
    """As neuralforecast's cross_validation: the last window's horizon ends on the last row, the
    others step back by stride; n_windows keeps the last n, and more than fit is refused."""
    in_len, out_len = run.config.model.in_len, run.config.model.out_len
    rows = etth1.iloc[700:903]  # 203 rows: stride 7 from the start would leave the last 3 unscored
    table = run.backtest(rows, stride=7).table
    assert table["timestamp"].iloc[-1] == rows.index[-1]
    cutoffs = pd.unique(table["cutoff"])
    expected = rows.index[len(rows) - out_len - 1 :: -7][::-1]  # each cutoff stride rows before the next
    assert list(cutoffs) == list(expected[expected >= rows.index[in_len - 1]])
    last3 = run.backtest(rows, stride=7, n_windows=3)
    assert last3.metrics["windows"] == 3 and list(pd.unique(last3.table["cutoff"])) == list(cutoffs[-3:])
    pd.testing.assert_frame_equal(last3.table, table.iloc[-3 * out_len :].reset_index(drop=True), rtol=1e-5)
    with pytest.raises(UserError, match=f"{len(cutoffs)} fit in the 203 rows.*ask for at most {len(cutoffs)}"):
        run.backtest(rows, stride=7, n_windows=len(cutoffs) + 1)
    printed = invoke("forecast", run_dir, "--input", write_csv(rows, tmp_path / "in.csv"), "--backtest", "--stride", 7,
                     "--n-windows", 3, "--json")
    assert printed.exit_code == 0, printed.output
    assert json.loads(printed.stdout) == json.loads(json.dumps(last3.metrics))
    own = invoke("forecast", run_dir, "--backtest", "--n-windows", 2, "--json")  # the run's test split: its end too
    start, end = run.data.borders["test"]
    assert own.exit_code == 0, own.output
    assert json.loads(own.stdout)["last_window_start"] == str(etth1.index[end - in_len - out_len])
    too_many = invoke("forecast", run_dir, "--input", tmp_path / "in.csv", "--backtest", "--n-windows", 10_000)
    assert too_many.exit_code == 2 and "ask for at most" in too_many.stderr and "Traceback" not in too_many.output


def test_backtest_streams_batches(run, etth1):
    from stanhop.forecast import backtest_stream

    stream = backtest_stream(run, etth1.iloc[:200], stride=1, batch_size=64)
    sizes = [len(chunk) // run.config.model.out_len for chunk in stream.chunks]
    windows = 200 - run.config.model.in_len - run.config.model.out_len + 1
    assert sum(sizes) == windows and max(sizes) == 64 and len(sizes) == -(-windows // 64)
    assert stream.metrics()["windows"] == windows


def test_backtest_cli_writes_table_and_metrics(run, run_dir, etth1, tmp_path):
    rows = etth1.iloc[:150]
    out = tmp_path / "bt.csv"
    result = invoke("forecast", run_dir, "--input", write_csv(rows, tmp_path / "in.csv"), "--backtest", "--output", out)
    assert result.exit_code == 0, result.output
    in_len, out_len = run.config.model.in_len, run.config.model.out_len
    windows = (150 - in_len - out_len) // out_len + 1  # default stride: the horizon
    table = pd.read_csv(out)
    assert len(table) == windows * out_len and {"window_start", "timestamp", "step", "OT_pred", "OT_true"} <= set(table.columns)
    saved = json.loads((tmp_path / "bt.metrics.json").read_text())
    assert saved["windows"] == windows and saved["stride"] == out_len and set(saved["per_channel"]) == set(run.data.columns)
    assert f"{saved['overall']['mse']:.4f}" in result.stdout and "OT" in result.stdout
    printed = invoke("forecast", run_dir, "--input", tmp_path / "in.csv", "--backtest", "--stride", "3", "--json")
    assert printed.exit_code == 0 and json.loads(printed.stdout)["windows"] == (150 - in_len - out_len) // 3 + 1
    short = invoke("forecast", run_dir, "--input", write_csv(rows.iloc[: in_len + out_len - 1], tmp_path / "s.csv"), "--backtest")
    assert short.exit_code == 2 and "in_len + out_len" in short.stderr


def test_a_shorter_horizon_is_the_first_steps_and_a_longer_one_forecasts_from_the_forecast(run, etth1, capsys):
    """Past out_len the forecast is appended to the input and forecast again: the same as
    forecasting, by hand, the input followed by the forecasts so far."""
    out_len = run.config.model.out_len
    cut = etth1.iloc[1000:1100]
    plain = run.forecast(cut)
    pd.testing.assert_frame_equal(run.forecast(cut, horizon=3), plain.iloc[:3])
    assert "steps" not in capsys.readouterr().err

    horizon = 2 * out_len + 3
    long = run.forecast(cut, horizon=horizon)
    assert list(long.index) == list(pd.date_range(cut.index[-1], periods=horizon + 1, freq="h")[1:])
    pd.testing.assert_frame_equal(long.iloc[:out_len], plain)
    second = run.forecast(pd.concat([cut, plain]))
    third = run.forecast(pd.concat([cut, long.iloc[: 2 * out_len]]))
    np.testing.assert_allclose(long.iloc[out_len : 2 * out_len].to_numpy(), second.to_numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(long.iloc[2 * out_len :].to_numpy(), third.iloc[:3].to_numpy(), rtol=1e-4, atol=1e-5)
    assert not np.allclose(long.iloc[out_len : 2 * out_len].to_numpy(), plain.to_numpy())
    assert f"steps {out_len + 1}-{horizon} are forecast from its own forecasts (3 passes)" in capsys.readouterr().err
    for bad in (0, -1, 2.5, True, "8"):
        with pytest.raises(UserError, match="horizon must be a whole number"):
            run.forecast(cut, horizon=bad)


def test_a_backtest_with_a_longer_horizon_scores_the_recursive_forecasts(run, etth1):
    in_len, out_len = run.config.model.in_len, run.config.model.out_len
    rows, horizon = etth1.iloc[700:900], out_len + 5
    result = run.backtest(rows, stride=9, horizon=horizon, batch_size=7)
    windows = (len(rows) - in_len - horizon) // 9 + 1
    assert result.metrics["windows"] == windows and len(result.table) == windows * horizon
    assert result.metrics["horizon"] == horizon and result.metrics["stride"] == 9
    assert list(result.table["step"][:horizon]) == list(range(1, horizon + 1))
    first = (len(rows) - in_len - horizon) % 9  # the windows end on the last row
    second = result.table[result.table["window_start"] == rows.index[first + 9]]
    np.testing.assert_allclose(second[[f"{c}_pred" for c in rows.columns]].to_numpy(),
                               run.forecast(rows.iloc[: first + 9 + in_len], horizon=horizon).to_numpy(), rtol=1e-5)
    np.testing.assert_array_equal(second[[f"{c}_true" for c in rows.columns]].to_numpy(),
                                  rows.iloc[first + 9 + in_len : first + 9 + in_len + horizon].to_numpy())
    same = run.backtest(rows, stride=9, horizon=out_len)
    assert same.metrics == run.backtest(rows, stride=9).metrics
    assert run.backtest(rows, horizon=horizon).metrics["stride"] == horizon  # default stride: the horizon
    with pytest.raises(UserError, match=f"in_len \\+ horizon = {in_len + 190}"):
        run.backtest(rows, horizon=190)


def test_without_input_forecast_continues_the_runs_data_and_backtest_scores_its_test_split(run, run_dir, etth1):
    out_len = run.config.model.out_len
    result = invoke("forecast", run_dir, "--horizon", out_len + 2)
    assert result.exit_code == 0, result.output
    assert "the run's own data" in result.stderr and "all of it" in result.stderr
    table = pd.read_csv(io.StringIO(result.stdout), index_col="date", parse_dates=["date"])
    pd.testing.assert_frame_equal(table, run.forecast(etth1, horizon=out_len + 2), check_freq=False, rtol=1e-12)
    assert table.index[0] == etth1.index[-1] + pd.Timedelta(hours=1)

    scored = invoke("forecast", run_dir, "--backtest", "--stride", 1, "--json")
    assert scored.exit_code == 0, scored.output
    assert "its test split" in scored.stderr
    test = json.loads(scored.stdout)
    assert test["overall"]["mse"] == pytest.approx(run.metrics["test"]["mse"], rel=1e-6)
    assert test["windows"] == run.data.borders["test"][1] - run.data.borders["test"][0] - out_len + 1
    for option in ("--date-column", "--fill"):
        refused = invoke("forecast", run_dir, option, "date" if option == "--date-column" else "ffill")
        assert refused.exit_code == 2 and "for an --input CSV" in refused.stderr
    too_far = invoke("forecast", run_dir, "--backtest", "--horizon", 5000)  # longer than the test split: no input named
    assert too_far.exit_code == 2 and "rows, the run's own data has" in too_far.stderr, too_far.output
    assert too_far.stderr.strip().endswith("a shorter horizon, or more rows (--input with the whole file)")


def test_help_imports_neither_torch_nor_matplotlib():
    import subprocess
    import sys

    code = ("import sys; from click.testing import CliRunner; import cli; "
            "r = CliRunner().invoke(cli.cli, ['forecast', '--help']); assert r.exit_code == 0; "
            "CliRunner().invoke(cli.cli, ['plot', '--help']); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'matplotlib', 'lightning', 'pandas'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_forecast_does_not_load_lightning(run_dir, etth1, tmp_path):
    """A forecast needs the model and the run's scaler, not the training framework (≈ 3 s to import)."""
    import subprocess
    import sys

    source = write_csv(etth1.iloc[:100], tmp_path / "in.csv")
    code = ("import sys; from click.testing import CliRunner; import cli; "
            f"r = CliRunner().invoke(cli.cli, ['forecast', {str(run_dir)!r}, '--input', {str(source)!r}]); "
            "assert r.exit_code == 0, r.output; print('lightning' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_a_backtest_of_many_series_shows_the_first_and_last_few_and_where_the_rest_are(tmp_path):
    t = np.arange(400)
    frame = pd.DataFrame({f"s{j:02d}": np.sin(t / (5 + j)) for j in range(15)},
                         index=pd.Index(pd.date_range("2020-01-01", periods=400, freq="h"), name="date"))
    path = write_csv(frame, tmp_path / "wide.csv")
    trained = invoke("train", "--config", str(ROOT / "configs" / "smoke.yaml"), "--data", str(path), "--split", "0.6/0.2/0.2",
                     "--out", str(tmp_path / "run"), "--set", "train.max_epochs=1", "--set", "train.limit_train_batches=1")
    assert trained.exit_code == 0, trained.output
    shown = invoke("forecast", str(tmp_path / "run"), "--input", str(path), "--backtest")
    lines = shown.stdout.splitlines()
    assert [line.split()[0] for line in lines[2:-1]] == ["s00", "s01", "s02", "s03", "s04", "…", "s13", "s14", "all"]
    assert lines[7] == "… 8 more channels (--json prints them all)"
    assert lines[-1].startswith("on the same windows (scaled): naive (last value) MSE ")
    saved = invoke("forecast", str(tmp_path / "run"), "--input", str(path), "--backtest", "--output", str(tmp_path / "bt.csv"))
    assert f"… 8 more channels ({tmp_path / 'bt.metrics.json'} has them all)" in saved.stdout
    assert len(json.loads((tmp_path / "bt.metrics.json").read_text())["per_channel"]) == 15


def test_a_run_without_weights_but_with_a_checkpoint_points_to_resume(run, run_dir, tmp_path):
    import shutil

    stopped = tmp_path / "stopped"
    shutil.copytree(run_dir, stopped)
    (stopped / "model.safetensors").unlink()  # as a training stopped before its end leaves it
    result = invoke("forecast", stopped)
    assert result.exit_code == 2
    assert f"model.safetensors is missing (its training stopped early: stanhop train --resume {stopped})" in result.stderr
    shown = repr(run)  # a line that says what the run is, not its modules
    assert shown.startswith(f"Run({str(run_dir)!r}: ") and "out_len" in shown and "Linear" not in shown


def test_load_run_says_what_a_run_is_named_by(tmp_path):
    from stanhop.runs import load_run

    (tmp_path / "notes.txt").write_text("x")
    for bad, message in ((tmp_path / "notes.txt", "is a file; give the folder of a run"),
                         (None, "a run is named by the path of its folder, got NoneType"),
                         (123, "got int")):
        with pytest.raises(UserError, match=message):
            load_run(bad)
    from stanhop.workflow import train

    with pytest.raises(UserError, match="config must be a stanhop Config"):
        train({"model": {}}, tmp_path / "run")


def test_an_input_in_other_units_gets_a_notice_and_the_same_data_none(run_dir, etth1, tmp_path):
    plain = write_csv(etth1.iloc[16000:16500], tmp_path / "a-year-on.csv")  # far along ETTh1's trend, same units
    watts = write_csv(etth1.iloc[16000:16500].assign(OT=lambda f: f["OT"] * 1000), tmp_path / "watts.csv")
    for args in ((), ("--backtest",)):
        result = invoke("forecast", run_dir, "--input", plain, *args)
        assert result.exit_code == 0 and "far from the run's training data" not in result.stderr, result.stderr
        result = invoke("forecast", run_dir, "--input", watts, *args)
        told = [line for line in result.stderr.splitlines() if "far from the run's training data" in line]
        assert result.exit_code == 0 and len(told) == 1, result.stderr
        assert told[0].startswith(f"notice: {watts}: OT (mean ") and "HUFL" not in told[0] and "(other units?)" in told[0]
    all_watts = write_csv(etth1.assign(OT=lambda f: f["OT"] * 1000), tmp_path / "all-watts.csv")
    scored = invoke("evaluate", run_dir, "--data", all_watts)
    assert scored.exit_code == 0 and f"notice: {all_watts}: OT (mean " in scored.stderr, scored.output


def test_an_hourly_forecast_at_midnight_is_written_with_its_time(run_dir, etth1, tmp_path):
    ends_at_23 = etth1.iloc[: 1000 + int(np.flatnonzero(etth1.index[1000:].hour == 23)[0]) + 1]
    source = write_csv(ends_at_23, tmp_path / "in.csv")
    printed = invoke("forecast", run_dir, "--input", source, "--horizon", "1")
    midnight = ends_at_23.index[-1] + pd.Timedelta(hours=1)
    assert printed.exit_code == 0 and printed.stdout.splitlines()[1].split(",")[0] == f"{midnight:%Y-%m-%d %H:%M:%S}", \
        printed.stdout  # hourly data: the time too, as for any other hour
    written = invoke("forecast", run_dir, "--input", source, "--horizon", "1", "--output", tmp_path / "out.csv")
    assert written.exit_code == 0 and (tmp_path / "out.csv").read_text().splitlines()[1].split(",")[0].endswith(" 00:00:00")
    daily_starts = invoke("forecast", run_dir, "--input", write_csv(etth1.iloc[:392], tmp_path / "h.csv"), "--backtest",
                          "--stride", "24", "--output", tmp_path / "bt.csv")  # every window starts at midnight
    assert daily_starts.exit_code == 0, daily_starts.output
    first = (tmp_path / "bt.csv").read_text().splitlines()[1].split(",")
    assert first[0] == "2016-07-01 00:00:00" and first[1].endswith(":00:00")  # window_start as cutoff is: with its time


def test_dates_with_fractions_of_a_second_are_written_in_full():
    from stanhop.forecast import csv_date_format

    fractions = pd.DataFrame({"a": [1.0, 2.0]}, index=pd.DatetimeIndex(["2024-01-01 00:00:30", "2024-01-01 00:00:30.5"]))
    written = fractions.to_csv(date_format=csv_date_format(fractions, "500ms")).splitlines()
    assert [line.split(",")[0] for line in written[1:]] == ["2024-01-01 00:00:30.000", "2024-01-01 00:00:30.500"]
    midnight = pd.DataFrame({"a": [1.0]}, index=pd.DatetimeIndex(["2024-01-02"]))
    assert midnight.to_csv(date_format=csv_date_format(midnight, "h")).splitlines()[1].startswith("2024-01-02 00:00:00,")


def test_a_row_off_the_runs_calendar_among_the_last_rows_is_named_as_such(tmp_path):
    days = pd.bdate_range("2024-01-01", periods=200)
    t = np.arange(200)
    frame = pd.DataFrame({"a": np.sin(t / 5), "b": np.cos(t / 7)}, index=pd.Index(days, name="date"))
    trained = invoke("train", "--config", str(ROOT / "configs" / "smoke.yaml"), "--data", write_csv(frame, tmp_path / "b.csv"),
                     "--split", "0.6/0.2/0.2", "--in-len", "8", "--out-len", "4", "--out", tmp_path / "run",
                     "--set", "train.max_epochs=1", "--set", "train.limit_train_batches=1")
    assert trained.exit_code == 0, trained.output
    saturday = days[-1] + pd.Timedelta(days=1)  # a business-day run given a Saturday last
    off = pd.concat([frame, frame.iloc[[-1]].set_axis(pd.DatetimeIndex([saturday], name="date"))])
    result = invoke("forecast", tmp_path / "run", "--input", write_csv(off, tmp_path / "off.csv"))
    assert result.exit_code == 2 and f"line 202 ({saturday}) is not on the run's step 'B'" in result.stderr, result.stderr
    assert "remove that row" in result.stderr and "missing" not in result.stderr  # not the weekend as a gap


def test_tables_stream_to_stdout_and_pipes_never_replacing_them(run_dir, etth1, tmp_path):
    """--output - (or /dev/stdout, a named pipe) is written through: the table comes out there,
    a backtest's metrics go to stderr when the table is on stdout, and the pipe stays a pipe
    (a temp file renamed over /dev/stdout would replace the device's link with a file)."""
    import os
    import stat
    import subprocess
    import sys
    import threading

    source = write_csv(etth1.iloc[:300], tmp_path / "in.csv")
    dashed = invoke("forecast", run_dir, "--input", source, "--output", "-")
    assert dashed.exit_code == 0, dashed.output
    assert dashed.stdout == invoke("forecast", run_dir, "--input", source).stdout and not (tmp_path / "-").exists()

    piped = subprocess.run([sys.executable, str(ROOT / "cli.py"), "forecast", str(run_dir), "--input", str(source),
                            "--backtest", "--output", "/dev/stdout"], capture_output=True, text=True, cwd=tmp_path)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.startswith("window_start,cutoff,timestamp,step,")
    assert "windows (stride" in piped.stderr and "MSE" in piped.stderr  # the metrics, off the table's stdout
    assert os.path.islink("/dev/stdout") or not os.path.isfile("/dev/stdout")

    fifo = tmp_path / "table.fifo"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()))
    reader.start()
    to_fifo = invoke("forecast", run_dir, "--input", source, "--backtest", "--output", fifo, "--json")
    reader.join(timeout=60)
    assert to_fifo.exit_code == 0, to_fifo.output
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and not (tmp_path / "table.metrics.json").exists()
    assert received[0].startswith("window_start,cutoff,") and len(received[0].splitlines()) > 10
    assert json.loads(to_fifo.stdout)["windows"] > 1  # the pipe is not stdout: the metrics stay there


def test_an_input_from_stdin_or_a_pipe_forecasts_as_its_file_does(run_dir, etth1, tmp_path):
    import gzip
    import os
    import threading

    source = write_csv(etth1.iloc[:300], tmp_path / "in.csv")
    want = invoke("forecast", run_dir, "--input", source)
    assert want.exit_code == 0, want.output
    for given in (source.read_bytes(), gzip.compress(source.read_bytes())):  # cat in.csv | stanhop forecast RUN --input -
        piped = CliRunner().invoke(cli.cli, ["forecast", str(run_dir), "--input", "-"], input=given)
        assert piped.exit_code == 0, piped.output
        assert piped.stdout == want.stdout
    fifo = tmp_path / "in.fifo"  # as bash's <(...) gives one
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(source.read_bytes()))
    writer.start()
    from_pipe = invoke("forecast", run_dir, "--input", fifo)
    writer.join(timeout=60)
    assert from_pipe.exit_code == 0, from_pipe.output
    assert from_pipe.stdout == want.stdout
    short = CliRunner().invoke(cli.cli, ["forecast", str(run_dir), "--input", "-"], input=b"date,OT\n")
    assert short.exit_code == 2 and "stanhop-input-" not in short.stderr  # messages never name the temporary copy


def test_neuralforecasts_argument_names_are_told_what_they_are_called_here(run, etth1):
    rows = etth1.iloc[:200]
    for method, name, ours in (("forecast", "h", "horizon="), ("forecast", "level", "intervals="),
                               ("backtest", "step_size", "stride=")):
        with pytest.raises(TypeError, match=f"unexpected keyword argument '{name}': neuralforecast's {name}; here give {ours}"):
            getattr(run, method)(rows, **{name: 2})


def test_an_input_at_another_step_is_told_to_resample_by_forecast_plot_and_evaluate(run_dir, etth1, tmp_path):
    quarter_hours = etth1.iloc[:3000].set_axis(pd.date_range("2020-01-01", periods=3000, freq="15min", name="date"))
    source = write_csv(quarter_hours, tmp_path / "q.csv")
    for command in (["forecast", run_dir, "--input", source], ["plot", run_dir, "--input", source, "--output", tmp_path / "p.png"],
                    ["evaluate", run_dir, "--data", source]):
        told = invoke(*command)
        assert told.exit_code == 2, (command, told.output)
        assert "has time step '15min' but the run was trained on 'h' data; resample it to 'h'" in told.stderr, told.stderr
        assert "remove that row" not in told.stderr  # every row is off the run's step: not one row to remove


def test_a_run_with_in_len_1_forecasts(etth1, tmp_path):
    trained = invoke("train", "--config", ROOT / "configs" / "smoke.yaml", "--in-len", "1", "--set", "model.seg_len=1",
                     "--set", "train.max_epochs=1", "--set", "train.limit_train_batches=2", "--out", tmp_path / "run")
    assert trained.exit_code == 0, trained.output
    own = invoke("forecast", tmp_path / "run")
    given = invoke("forecast", tmp_path / "run", "--input", write_csv(etth1.iloc[:50], tmp_path / "in.csv"))
    for result in (own, given):  # one row is the window, and the run knows its step
        assert result.exit_code == 0, result.output
        assert len(result.stdout.splitlines()) == 1 + 8


def test_an_output_through_a_link_replaces_the_file_it_names_and_keeps_the_link(run_dir, etth1, tmp_path):
    import os

    target = tmp_path / "target.csv"
    target.write_text("old\n")
    link = tmp_path / "link.csv"
    os.symlink(target, link)
    result = invoke("forecast", run_dir, "--input", write_csv(etth1.iloc[:300], tmp_path / "in.csv"), "--output", link,
                    "--force")
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and os.readlink(link) == str(target)  # it was replaced by a file, the target left old
    assert target.read_text().startswith("date,")


def test_load_run_leaves_the_callers_random_generators_as_they_were(run_dir):
    # the model's initial weights, replaced by the run's, drew from the caller's torch generator
    import random

    import stanhop

    def draws():
        return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]

    def seed():
        torch.manual_seed(0)
        np.random.seed(0)
        random.seed(0)

    seed()
    expected = draws()
    seed()
    stanhop.load_run(run_dir)
    assert draws() == expected


def test_a_long_output_name_is_written_and_one_too_long_is_one_line(run_dir, etth1, tmp_path):
    """The temp file's name (.NAME.XXXXXXXX.tmp) was longer than the longest name allowed."""
    source = write_csv(etth1.iloc[:60], tmp_path / "in.csv")
    longest = tmp_path / "out" / ("c" * 245 + ".csv")  # 249 characters: a valid name
    assert invoke("forecast", run_dir, "--input", source, "--output", longest).exit_code == 0
    assert longest.read_text().startswith("date,HUFL")
    assert invoke("plot", run_dir, "--input", source, "--output", longest.with_suffix(".png")).exit_code == 0
    too_long = tmp_path / "out" / ("c" * 300 + ".csv")
    result = invoke("forecast", run_dir, "--input", source, "--output", too_long)
    assert result.exit_code == 2 and result.stderr.strip() == (
        f"error: cannot write {too_long} (File name too long); choose another file name")
    assert sorted(p.name for p in longest.parent.iterdir()) == [longest.name, longest.with_suffix(".png").name]


@pytest.mark.parametrize("command", ["forecast", "plot"])
def test_an_output_onto_a_full_disk_is_one_line_and_leaves_nothing(run_dir, etth1, tmp_path, monkeypatch, command):
    import errno
    import os

    source = write_csv(etth1.iloc[:60], tmp_path / "in.csv")
    out = tmp_path / "out" / ("fc.csv" if command == "forecast" else "fc.png")
    out.parent.mkdir()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", full)
    result = invoke(command, run_dir, "--input", source, "--output", out)
    assert result.exit_code == 2 and result.stderr.strip().splitlines()[-1] == (
        f"error: cannot write {out} (No space left on device); free some space, or write somewhere else (another "
        "--out / --output, another folder)"), result.output
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize("edit", [("d_model: 16", "d_model: 100000"), ("in_len: 24", "in_len: 10000000")])
def test_a_config_that_does_not_fit_the_weights_is_refused_before_its_model_is_made(run_dir, tmp_path, monkeypatch, edit):
    import shutil

    from stanhop.model import STanHopNet

    edited = tmp_path / "edited"
    shutil.copytree(run_dir, edited)
    config = (edited / "config.yaml").read_text()
    assert edit[0] in config
    (edited / "config.yaml").write_text(config.replace(*edit))
    made, init = [], STanHopNet.__init__

    def counted(self, *args, **kwargs):  # the device each model is made on; none with storage past the header's check
        made.append(device := torch.empty(0).device.type)
        if device != "meta":
            raise AssertionError("a model with storage was made")
        init(self, *args, **kwargs)

    monkeypatch.setattr(STanHopNet, "__init__", counted)
    for command in ("forecast", "evaluate"):
        result = invoke(command, edited)
        assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.output
        assert re.search(rf"weights {re.escape(str(edited / 'model.safetensors'))} do not fit the model of config.yaml: "
                         r"\S+ is \[[\d, ]+\] in them and \[[\d, ]+\] in the model.*: was config.yaml edited since the "
                         "training\\? put back the settings it was trained with", result.stderr), result.stderr
    assert set(made) == {"meta"}


def test_a_horizon_of_absurdly_many_passes_or_past_the_memory_is_refused_with_the_largest_allowed(
        run, run_dir, etth1, tmp_path, monkeypatch):
    from stanhop import footprint, forecast

    source = write_csv(etth1.iloc[1000:1100], tmp_path / "in.csv")
    monkeypatch.setattr(forecast, "MOST_PASSES", 50, raising=False)  # the real 10,000: 80,000 steps of the smoke run's 8
    result = invoke("forecast", run_dir, "--input", source, "--horizon", 8 * 50 + 1, "--output", tmp_path / "far.csv")
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.output
    assert ("error: horizon 401 takes 51 passes of the run's 8 steps, each from the forecasts before it; the largest "
            "allowed is 400 (50 passes), as errors compound with every pass") in result.stderr
    assert not (tmp_path / "far.csv").exists()

    free = footprint.Memory(int(200 * (8 + 40 * 7) / footprint.USABLE) + 1, "free")  # a table of 200 rows of 7 channels
    monkeypatch.setattr(footprint, "free_memory", lambda: free)
    result = invoke("forecast", run_dir, "--input", source, "--horizon", 300, "--output", tmp_path / "big.csv")
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.output
    assert "error: a forecast of horizon 300 would hold ≈ 0.0 GiB, more than the 0.0 GiB (70% of the 0.0 GiB free) " \
           "that may be taken: the largest horizon that fits is about 180" in result.stderr
    assert invoke("forecast", run_dir, "--input", source, "--horizon", 200, "--output", tmp_path / "big.csv").exit_code == 0


def test_a_long_recursive_forecast_tells_its_progress_in_a_log(run_dir, etth1, tmp_path):
    source = write_csv(etth1.iloc[1000:1100], tmp_path / "in.csv")
    result = invoke("forecast", run_dir, "--input", source, "--horizon", 8 * 200, "--output", tmp_path / "long.csv")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("forecast: ")]
    assert [line.split(" passes")[0] for line in lines] == [f"forecast: {20 * i} of 200" for i in range(1, 11)]
    assert len(pd.read_csv(tmp_path / "long.csv")) == 1600
    short = invoke("forecast", run_dir, "--input", source, "--horizon", 8 * 20, "--output", tmp_path / "short.csv")
    assert short.exit_code == 0 and "forecast: " not in short.stderr  # 20 passes: quick, nothing to follow
