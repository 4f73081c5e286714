"""Training from a pandas DataFrame (workflow.train(config, out, frame=df)): wide or long
(neuralforecast's unique_id, ds, y), saved as the run's data.csv."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stanhop.config import apply_overrides, load_config
from stanhop.errors import UserError
from stanhop.frames import to_long, to_wide
from stanhop.runs import load_run
from stanhop.workflow import train

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["data.split=0.6/0.2/0.2", "train.max_epochs=1", "train.limit_train_batches=3"]


def smoke(*settings: str):
    return apply_overrides(load_config(ROOT / "configs" / "smoke.yaml"), [*QUICK, *settings])


def test_a_dataframe_trains_as_its_csv_does_and_stays_with_the_run(etth1, tmp_path):
    frame = etth1.iloc[:1200]
    csv = tmp_path / "cut.csv"
    frame.to_csv(csv, index_label="date")
    from_csv = train(smoke(f"data.name={csv}"), tmp_path / "csv", progress=False)
    from_frame = train(smoke(), tmp_path / "frame", frame=frame, progress=False)
    assert from_frame["test"]["mse"] == pytest.approx(from_csv["test"]["mse"], rel=1e-9)

    run = load_run(tmp_path / "frame")
    assert run.config.data.name == str((tmp_path / "frame" / "data.csv").resolve())
    saved = pd.read_csv(tmp_path / "frame" / "data.csv", index_col="date", parse_dates=["date"])
    pd.testing.assert_frame_equal(saved, frame, check_freq=False, check_names=False)
    assert not list(tmp_path.glob(".*.tmp"))  # the staged file became the run's
    pd.testing.assert_frame_equal(run.forecast(saved), run.forecast(frame))


def test_a_dataframe_run_moved_or_copied_reads_its_own_data(etth1, tmp_path):
    import shutil

    from stanhop.workflow import evaluate

    train(smoke(), tmp_path / "original", frame=etth1.iloc[:1200], progress=False)
    shutil.copytree(tmp_path / "original", tmp_path / "copy")
    before = load_run(tmp_path / "copy").forecast(etth1.iloc[:1200], intervals=[80])
    train(smoke(), tmp_path / "original", frame=etth1.iloc[3000:4200] * 3, force=True, progress=False)  # other data there
    copied = load_run(tmp_path / "copy")
    assert copied.config.data.name == str((tmp_path / "copy" / "data.csv").resolve())
    pd.testing.assert_frame_equal(copied.forecast(etth1.iloc[:1200], intervals=[80]), before)  # its own calibration
    (tmp_path / "copy").rename(tmp_path / "moved")
    assert evaluate(tmp_path / "moved", progress=False)["test"]["mse"] > 0  # the old place is gone: its own file


def test_a_loaded_run_refuses_its_data_once_another_training_replaced_it(etth1, tmp_path):
    """A service keeps a Run while a job trains into the same folder again (--force, the same
    number of rows): the kept Run must not forecast, backtest or calibrate from the new rows."""
    train(smoke(), tmp_path / "run", frame=etth1.iloc[:1200], progress=False)
    kept = load_run(tmp_path / "run")
    kept.forecast()
    calibrated = kept.forecast(etth1.iloc[:300], intervals=[95])
    train(smoke(), tmp_path / "run", frame=etth1.iloc[:1200] * 10, force=True, progress=False)
    for call in (kept.forecast, kept.backtest, lambda: kept.forecast(etth1.iloc[:300], intervals=[80])):
        with pytest.raises(UserError, match=r"^the run's data changed since the run was loaded .*: load the run again"):
            call()
    pd.testing.assert_frame_equal(kept.forecast(etth1.iloc[:300], intervals=[95]), calibrated)  # its own weights' calibration
    again = load_run(tmp_path / "run")
    assert len(again.forecast()) == again.config.model.out_len
    edited = pd.read_csv(tmp_path / "run" / "data.csv", index_col="date", parse_dates=["date"])
    edited.iloc[5, 0] += 1.0
    edited.to_csv(tmp_path / "run" / "data.csv", index_label="date")
    with pytest.raises(UserError, match=r"^the run's data .*data.csv changed since the run was trained .*put the file back"):
        load_run(tmp_path / "run").forecast()


def test_a_long_dataframe_is_pivoted_to_one_series_per_id(etth1, tmp_path, capsys):
    frame = etth1.iloc[:1200, :3]
    long = frame.rename_axis("ds").reset_index().melt(id_vars="ds", var_name="unique_id", value_name="y")
    wide = to_wide(long.sample(frac=1.0, random_state=0), "date").set_index("date")  # row order does not matter
    pd.testing.assert_frame_equal(wide, frame[sorted(frame.columns)], check_names=False, check_freq=False)
    assert "read as 3 series" in capsys.readouterr().err
    to_wide(long.assign(price=1.0), "date")  # an exogenous column is not used, and the user is told
    assert "its other column(s) price are not used" in capsys.readouterr().err
    ragged = long[~((long["unique_id"] == "HUFL") & (long["ds"] < frame.index[5]))]  # HUFL starts 5 steps later
    with pytest.raises(UserError, match=r"has 5 missing value\(s\) \(empty, or a timestamp the series lacks\), the first "
                                        r"for series 'HUFL'.*--fill.*keep the dates they share"):
        train(smoke(), tmp_path / "ragged", frame=ragged, progress=False)
    metrics = train(smoke(), tmp_path / "long", frame=long, progress=False)
    assert load_run(tmp_path / "long").config.model.n_series == 3 and np.isfinite(metrics["test"]["mse"])
    repeated = pd.concat([long, long.iloc[:1]])
    with pytest.raises(UserError, match="repeated \\(unique_id, ds\\) pair"):
        to_wide(repeated, "date")


def test_each_training_in_a_process_tells_its_own_notices(etth1, tmp_path, capsys):
    # two frames whose notices read alike ("the DataFrame: ..."): the second's is told too
    first = etth1.iloc[:1200].copy()
    first.iloc[50, 2] = np.nan
    second = first * 2
    for i, frame in enumerate((first, second)):
        train(smoke("data.fill=ffill"), tmp_path / f"run{i}", frame=frame, progress=False)
        told = [line for line in capsys.readouterr().err.splitlines() if "filled by ffill" in line]
        assert told == ["notice: the DataFrame: 1 empty cell(s) filled by ffill: MUFL 1 (0%)"], i


def test_bad_dataframes_are_told_as_dataframes_and_leave_nothing_behind(etth1, tmp_path, capsys):
    holed = etth1.iloc[:1200].copy()
    holed.iloc[50, 2] = np.nan
    with pytest.raises(UserError) as told:
        train(smoke(), tmp_path / "holed", frame=holed, progress=False)
    assert str(told.value).startswith("the DataFrame has 1 empty (NaN) cell(s), the first in column 'MUFL' at "
                                      f"{holed.index[50]}; fill them")
    capsys.readouterr()
    filled = train(smoke("data.fill=interpolate"), tmp_path / "filled", frame=holed, progress=False)
    assert np.isfinite(filled["test"]["mse"])
    told_fill = [line for line in capsys.readouterr().err.splitlines() if "filled by interpolate" in line]
    assert told_fill == ["notice: the DataFrame: 1 empty cell(s) filled by interpolate: MUFL 1 (0%)"]  # once, not
    # again for the run's data.csv read after the training
    (tmp_path / "filled").rename(tmp_path.parent / f"{tmp_path.name}-filled")  # the folder below must end empty
    irregular = etth1.iloc[:1200].drop(etth1.index[100:103])
    with pytest.raises(UserError) as told:
        train(smoke(), tmp_path / "gap", frame=irregular, progress=False)
    assert "the DataFrame" in str(told.value) and ".tmp" not in str(told.value), told.value
    assert "between positions 99 and 100" in str(told.value) and "line" not in str(told.value)  # as iloc counts
    assert str(told.value).endswith("or fix the DataFrame")
    backwards = etth1.iloc[:1200].iloc[::-1]
    with pytest.raises(UserError, match=rf"position 1 \({backwards.index[1]}\) comes after .*; sort the DataFrame by date"):
        train(smoke(), tmp_path / "backwards", frame=backwards, progress=False)
    texty = etth1.iloc[:1200].assign(station="north")
    train(smoke(), tmp_path / "texty", frame=texty, progress=False)
    assert "notice: the DataFrame: ignoring the text column(s) station" in capsys.readouterr().err
    (tmp_path / "texty").rename(tmp_path.parent / f"{tmp_path.name}-texty")
    with pytest.raises(UserError, match="DatetimeIndex or a 'date' column"):
        train(smoke(), tmp_path / "plain", frame=etth1.iloc[:1200].reset_index(drop=True), progress=False)
    with pytest.raises(UserError, match="must be a pandas DataFrame"):
        train(smoke(), tmp_path / "array", frame=etth1.to_numpy(), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_long_dataframe_forecasts_and_backtests_as_its_wide_form_given_back_long(run, etth1, capsys):
    """The same numbers as the wide form's, in neuralforecast's layout: a row per series and
    step, series by series, the forecast in a column named after the model."""
    wide = etth1.iloc[3000:3300]
    long = wide.rename_axis("ds").reset_index().melt(id_vars="ds", var_name="unique_id", value_name="y")
    got, plain = run.forecast(long, horizon=10, intervals=[80]), run.forecast(wide, horizon=10, intervals=[80])
    assert list(got.columns) == ["unique_id", "ds", "STanHop", "STanHop-lo-80", "STanHop-hi-80"]
    assert list(pd.unique(got["unique_id"])) == list(run.data.columns) and len(got) == 10 * len(run.data.columns)
    for name, one in got.groupby("unique_id", sort=False):
        np.testing.assert_array_equal(one["ds"].to_numpy(), plain.index.to_numpy())
        for column, wide_column in (("STanHop", name), ("STanHop-lo-80", f"{name}_lo80"), ("STanHop-hi-80", f"{name}_hi80")):
            np.testing.assert_array_equal(one[column].to_numpy(), plain[wide_column].to_numpy())

    long_backtest, wide_backtest = run.backtest(long, stride=5), run.backtest(wide, stride=5)
    assert long_backtest.metrics == wide_backtest.metrics
    table, reference = long_backtest.table, wide_backtest.table
    assert list(table.columns) == ["unique_id", "ds", "window_start", "cutoff", "step", "y", "STanHop"]
    ot = table[table["unique_id"] == "OT"]
    np.testing.assert_array_equal(ot["ds"].to_numpy(), reference["timestamp"].to_numpy())
    np.testing.assert_array_equal(ot["y"].to_numpy(), reference["OT_true"].to_numpy())
    np.testing.assert_array_equal(ot["STanHop"].to_numpy(), reference["OT_pred"].to_numpy())

    told = []
    extra = pd.concat([long, long[long["unique_id"] == "OT"].assign(unique_id="spare")])
    capsys.readouterr()
    run.forecast(extra, notify=told.append)  # every notice to notify, that of the long layout too, none on stderr
    assert told == ["the input, long (unique_id, ds, y), is read as 8 series, one column each",
                    "ignoring series spare of the input: the run was not trained on them"]
    assert capsys.readouterr().err == ""
    with pytest.raises(UserError, match=r"the input lacks the series \(unique_id\) OT the run was trained on"):
        run.forecast(long[long["unique_id"] != "OT"])


def test_a_long_dataframe_without_y_is_told_it_lacks_y(run, etth1, tmp_path):
    # it was refused as a frame without a DatetimeIndex or a 'date' column
    long = melted(etth1.iloc[:300])
    with pytest.raises(UserError, match=r"^the input has neuralforecast's long columns unique_id and ds but no y, the "
                                        r"series' values; name the column of values y: "
                                        r"frame.rename\(columns=\{'value': 'y'\}\)$"):
        run.forecast(long.rename(columns={"y": "value"}))
    with pytest.raises(UserError, match=r"^the DataFrame has neuralforecast's long columns unique_id and ds but no y"):
        train(smoke(), tmp_path / "no-y", frame=long.drop(columns="y"), progress=False)
    assert not list(tmp_path.iterdir())


def melted(wide: pd.DataFrame) -> pd.DataFrame:
    """neuralforecast's long layout of a wide frame: unique_id, ds, y."""
    return (wide.rename_axis("ds").reset_index().melt(id_vars="ds", var_name="unique_id", value_name="y")
            [["unique_id", "ds", "y"]])


def invoke(*args):
    import cli
    from click.testing import CliRunner

    return CliRunner().invoke(cli.cli, [str(a) for a in args])


def test_plot_input_takes_a_long_csv_as_forecast_does(run, run_dir, etth1, tmp_path):
    from stanhop.plot import forecast_with_truth

    long_csv = tmp_path / "long.csv"
    melted(etth1.iloc[:300]).to_csv(long_csv, index=False)
    drawn = invoke("plot", run_dir, "--input", long_csv, "--output", tmp_path / "long.png")
    assert drawn.exit_code == 0 and (tmp_path / "long.png").stat().st_size > 0, drawn.output
    assert f"{long_csv}, long (unique_id, ds, y), is read as 7 series" in drawn.stderr  # named as the file, not 'the input'
    from_long, from_wide = (forecast_with_truth(run, frame)[1] for frame in (melted(etth1.iloc[:300]), etth1.iloc[:300]))
    pd.testing.assert_frame_equal(from_long, from_wide)  # the same forecast drawn
    dated = invoke("plot", run_dir, "--input", long_csv, "--date-column", "date", "--output", tmp_path / "x.png")
    assert dated.exit_code == 2 and "its timestamps are in ds; leave out --date-column" in dated.stderr


def test_a_long_csv_trains_forecasts_and_backtests_from_the_cli(run, run_dir, etth1, tmp_path):
    """The CLI takes a CSV in neuralforecast's layout as the Python API takes the DataFrame."""
    frame = etth1.iloc[:1200, :3]
    long_csv = tmp_path / "long.csv"
    melted(frame).to_csv(long_csv, index=False)
    trained = invoke("train", "--config", ROOT / "configs" / "smoke.yaml", "--data", long_csv,
                     *[arg for setting in QUICK for arg in ("--set", setting)], "--out", tmp_path / "long-run")
    assert trained.exit_code == 0, trained.output
    assert f"{long_csv}, long (unique_id, ds, y), is read as 3 series" in trained.stderr
    from_frame = train(smoke(), tmp_path / "frame", frame=frame, progress=False)
    from_csv = load_run(tmp_path / "long-run")
    assert from_csv.metrics["test"]["mse"] == pytest.approx(from_frame["test"]["mse"], rel=1e-9)
    assert from_csv.data.columns == ["HUFL", "HULL", "MUFL"]
    from stanhop.catalog import run_row

    assert run_row(tmp_path / "long-run")["data"] == "long.csv"  # what it came from, not the run's data.csv
    assert run_row(tmp_path / "frame")["data"] == "DataFrame"
    own = invoke("forecast", tmp_path / "long-run")  # its own data, in the layout it was given in
    assert own.exit_code == 0 and own.stdout.splitlines()[0] == "unique_id,ds,STanHop", own.output
    wide = from_csv.forecast()
    assert len(own.stdout.splitlines()) == 1 + wide.size and own.stdout.splitlines()[1].startswith("HUFL,")
    assert invoke("forecast", tmp_path / "frame").stdout.splitlines()[0].startswith("date,")  # a DataFrame's: wide

    recent = etth1.iloc[3000:3300]
    recent_csv = tmp_path / "recent.csv"
    melted(recent).sample(frac=1.0, random_state=0).to_csv(recent_csv, index=False)  # rows in any order
    out = tmp_path / "forecast.csv"
    result = invoke("forecast", run_dir, "--input", recent_csv, "--output", out)
    assert result.exit_code == 0, result.output
    got = pd.read_csv(out, parse_dates=["ds"])
    assert list(got.columns) == ["unique_id", "ds", "STanHop"] and len(got) == run.config.model.out_len * 7
    want = run.forecast(recent)
    for name, one in got.groupby("unique_id", sort=False):
        np.testing.assert_allclose(one["STanHop"].to_numpy(), want[name].to_numpy(), rtol=1e-12)
        np.testing.assert_array_equal(one["ds"].to_numpy(), want.index.to_numpy())
    printed = invoke("forecast", run_dir, "--input", recent_csv)
    assert printed.stdout.splitlines()[0] == "unique_id,ds,STanHop"  # no index column

    backtest = invoke("forecast", run_dir, "--input", recent_csv, "--backtest", "--stride", "50",
                      "--output", tmp_path / "bt.csv", "--json")
    assert backtest.exit_code == 0, backtest.output
    wide_backtest = run.backtest(recent, stride=50)
    assert json.loads(backtest.stdout) == json.loads(json.dumps(wide_backtest.metrics))
    table = pd.read_csv(tmp_path / "bt.csv", parse_dates=["ds", "window_start"])
    assert list(table.columns) == ["unique_id", "ds", "window_start", "cutoff", "step", "y", "STanHop"]
    ot = table[table["unique_id"] == "OT"]
    np.testing.assert_allclose(ot["STanHop"].to_numpy(), wide_backtest.table["OT_pred"].to_numpy(), rtol=1e-12)
    holed = melted(recent)
    holed = holed.drop(holed.index[(holed["unique_id"] == "OT") & (holed["ds"] == recent.index[-3])])  # OT lacks a row
    holed_csv = tmp_path / "holed.csv"
    holed.to_csv(holed_csv, index=False)
    missing = invoke("forecast", run_dir, "--input", holed_csv)
    assert missing.exit_code == 2 and "'OT'" in missing.stderr and "--fill" in missing.stderr
    filled = invoke("forecast", run_dir, "--input", holed_csv, "--fill", "ffill", "--output", tmp_path / "filled.csv")
    assert filled.exit_code == 0, filled.output
    assert f"notice: {holed_csv}: 1 empty cell(s) filled by ffill: OT 1" in filled.stderr
    gap = melted(recent.drop(recent.index[-3]))  # a timestamp no series has, among the last rows
    gap_csv = tmp_path / "gap.csv"
    gap.to_csv(gap_csv, index=False)
    for extra in ((), ("--backtest",)):
        refused = invoke("forecast", run_dir, "--input", gap_csv, *extra)
        assert refused.exit_code == 2 and f"error: {gap_csv}: 1 timestamp missing at the step 'h'" in refused.stderr
        assert "--fill" in refused.stderr and "filled_long(frame, 'ffill', 'h')" in refused.stderr
        assert "position" not in refused.stderr  # rows of the pivoted table would mean nothing in the file
    inserted = invoke("forecast", run_dir, "--input", gap_csv, "--fill", "interpolate")
    assert inserted.exit_code == 0 and "7 empty cell(s) filled by interpolate" in inserted.stderr, inserted.output
    patched = recent.copy()
    patched.loc[recent.index[-3], "OT"] = recent.loc[recent.index[-4], "OT"]
    np.testing.assert_allclose(pd.read_csv(tmp_path / "filled.csv").query("unique_id == 'OT'")["STanHop"].to_numpy(),
                               run.forecast(patched)["OT"].to_numpy(), rtol=1e-12)


def test_notebook_habits_neither_break_a_run_nor_crash(etth1, tmp_path):
    """Re-running cells: a config used for one training is not changed by it; retraining a run's
    own config into its folder is refused before anything is replaced; integer column names,
    a Path for evaluate's data, and a DataFrame where a path belongs."""
    from stanhop.memory_runs import add_memory
    from stanhop.workflow import evaluate

    frame = etth1.iloc[:1200, :3].set_axis([0, 1, 2], axis=1)  # integer column names
    config = smoke()
    name = config.data.name
    train(config, tmp_path / "r1", frame=frame, progress=False)
    assert config.data.name == name  # not the run's data.csv
    run = load_run(tmp_path / "r1")
    assert run.data.columns == ["0", "1", "2"]
    np.testing.assert_allclose(run.forecast(frame).to_numpy(), run.forecast(frame.rename(columns=str)).to_numpy())
    assert list(run.forecast(frame).columns) == [0, 1, 2]  # named as the frame names them: fc[0] works
    pd.testing.assert_frame_equal(run.forecast(), run.forecast(frame.rename(columns=str)))  # its own data, as the CLI
    assert run.backtest().metrics["windows"] > 0
    assert evaluate(run, progress=False)["test"]["mse"] == pytest.approx(run.metrics["test"]["mse"], rel=1e-6)  # a Run
    assert run.backtest(frame, stride=50).metrics["windows"] > 0

    before = sorted(p.name for p in (tmp_path / "r1").iterdir())
    with pytest.raises(UserError, match=r"the data .*data.csv lies in .*r1, which a new run there replaces"):
        train(run.config, tmp_path / "r1", force=True, progress=False)
    assert sorted(p.name for p in (tmp_path / "r1").iterdir()) == before and load_run(tmp_path / "r1")

    scored = evaluate(tmp_path / "r1", data=tmp_path / "r1" / "data.csv", progress=False)  # a Path, not only a str
    assert scored["test"]["mse"] == pytest.approx(run.metrics["test"]["mse"], rel=1e-6)
    assert not list((tmp_path / "r1").glob(".*.tmp"))
    with pytest.raises(UserError, match=r"data must be a CSV path .*got DataFrame; .*backtest"):
        evaluate(tmp_path / "r1", data=frame, progress=False)
    with pytest.raises(UserError, match=r"csv must be a CSV path .*got DataFrame"):
        add_memory(tmp_path / "r1", kind="plug", strategy="csv", csv=frame, progress=False)


def test_frames_as_pandas_reads_them_without_parse_dates_work_and_other_indexes_are_explained(run, etth1):
    text_index = etth1.iloc[:300].set_axis(etth1.index[:300].astype(str)).rename_axis("date")  # read_csv(index_col=0)
    pd.testing.assert_frame_equal(run.forecast(text_index), run.forecast(etth1.iloc[:300]))
    long = melted(etth1.iloc[:300])
    cases = [
        (text_index.rename_axis(None), r"its index holds text: frame.index = pd.to_datetime\(frame.index\)"),
        (etth1.iloc[:300].to_period("h"), r"its index is a PeriodIndex: frame.to_timestamp\(\)"),
        (long.set_index("unique_id"), r"unique_id or ds is in its index \(unique_id\): frame.reset_index\(\)"),
        (long.assign(ds=long.groupby("unique_id").cumcount()), r"ds holds numbers \(0, ...\), not timestamps"),
    ]
    for frame, message in cases:
        with pytest.raises(UserError, match=message):
            run.forecast(frame)
    with pytest.raises(UserError, match=r"ds holds numbers"):
        to_wide(cases[-1][0], "date")  # as train(frame=) reads it


def test_a_long_frame_whose_series_ends_early_is_told_as_series_with_the_long_fill(run, etth1):
    long = melted(etth1.iloc[:300])
    early = long[~((long["unique_id"] == "OT") & (long["ds"] > long["ds"].max() - pd.Timedelta(hours=5)))]
    with pytest.raises(UserError, match=r"have 5 missing or infinite value\(s\), the first of series 'OT' at "
                                        r".*every series needs a value .*stanhop.frames.filled_long\(frame, 'ffill', 'h'\)"):
        run.forecast(early)
    with pytest.raises(UserError, match=r"the first in column 'OT' .*Python e.g. frame.asfreq\('h'\)"):
        run.forecast(etth1.iloc[:300].assign(OT=lambda f: f["OT"].where(f.index < f.index[-5])))


def test_columns_a_series_cannot_be_named_by_are_told_so(run, etth1):
    full = etth1.iloc[:300]
    levels = full.set_axis(pd.MultiIndex.from_product([["x"], full.columns]), axis=1)
    alike = pd.DataFrame({"unique_id": [1] * 3 + ["1"] * 3, "ds": list(full.index[:3]) * 2, "y": np.arange(6.0)})
    for frame, message in ((pd.concat([full, full[["OT"]]], axis=1), r"has the column\(s\) 'OT' more than once"),
                           (levels, r"has columns of several levels \(a MultiIndex\); give each one name"),
                           (alike, r"several unique_id values that read '1' as text \(as 1 and '1' do\)")):
        with pytest.raises(UserError, match=message):
            run.forecast(frame)
        with pytest.raises(UserError, match=message):
            to_wide(frame, "date")  # as train(frame=) reads it


def test_a_channel_called_unique_id_is_forecast_wide(etth1, tmp_path):
    """Whether a forecast comes back long follows the input's layout, not a column's name."""
    frame = etth1.iloc[:1200, :3].rename(columns={"MUFL": "unique_id"})
    wide_csv = tmp_path / "wide.csv"
    frame.to_csv(wide_csv, index_label="date")
    trained = invoke("train", "--config", ROOT / "configs" / "smoke.yaml", "--data", wide_csv,
                     *[arg for setting in QUICK for arg in ("--set", setting)], "--out", tmp_path / "run")
    assert trained.exit_code == 0, trained.output
    result = invoke("forecast", tmp_path / "run", "--input", wide_csv, "--output", tmp_path / "out.csv")
    assert result.exit_code == 0, result.output
    got = pd.read_csv(tmp_path / "out.csv", index_col="date", parse_dates=["date"])
    assert list(got.columns) == ["HUFL", "HULL", "unique_id"] and got.index[0] == frame.index[-1] + pd.Timedelta(hours=1)


def test_long_csvs_are_read_as_users_write_them(tmp_path, capsys, run_dir):
    from stanhop.csvio import load_series, read_long

    def long_csv(name: str, ids, dates, values=None) -> Path:
        rows = [(i, d, float(v)) for i in ids for v, d in enumerate(dates)] if values is None else values
        path = tmp_path / name
        pd.DataFrame(rows, columns=["unique_id", "ds", "y"]).to_csv(path, index=False)
        return path

    hours = [f"2016-08-{d:02d} {h:02d}:00:00" for d in range(1, 4) for h in range(24)]
    got = read_long(long_csv("na.csv", ["NA", "EU"], hours))  # North America, not a missing id
    assert sorted(pd.unique(got["unique_id"])) == ["EU", "NA"] and got["y"].notna().all()
    with pytest.raises(UserError, match=r"no_id.csv: line 3 has no unique_id"):
        read_long(long_csv("no_id.csv", [], [], values=[("a", hours[0], 1.0), ("", hours[0], 2.0)]))
    zeros = to_wide(read_long(long_csv("01.csv", ["01", "1"], hours)), "date")
    assert list(zeros.columns) == ["date", "01", "1"]
    zeros.to_csv(tmp_path / "wide01.csv", index=False)  # a header that pandas would read as 1 and 1
    assert list(load_series(tmp_path / "wide01.csv").columns) == ["01", "1"]
    with pytest.raises(UserError, match="a series whose unique_id is 'date'"):
        to_wide(read_long(long_csv("iddate.csv", ["date", "OT"], hours)), "date")

    day_first = [f"{d:02d}/08/2016 {h:02d}:00" for d in range(1, 20) for h in (0, 12)]  # 13/08 and on: day first
    got = read_long(long_csv("dmy.csv", ["a", "b"], day_first))
    assert got["ds"].max() == pd.Timestamp("2016-08-19 12:00") and "read day first" in capsys.readouterr().err
    ambiguous = [f"{d:02d}/01/2023" for d in range(1, 13)]  # 12 days, or the first of 12 months
    assert read_long(long_csv("ambiguous.csv", ["a", "b"], ambiguous))["ds"].max() == pd.Timestamp("2023-12-01")
    assert "read day first it would be 12 January 2023" in capsys.readouterr().err
    day_first_hours = [f"{t:%d/%m/%Y %H:%M}" for t in pd.date_range("2023-02-05", periods=48, freq="h")]
    assert read_long(long_csv("gapless.csv", ["a"], day_first_hours))["ds"].max() == pd.Timestamp("2023-02-06 23:00")
    unix = [str(1470009600 + 3600 * h) for h in range(48)]
    assert read_long(long_csv("unix.csv", ["a"], unix))["ds"].iloc[0] == pd.Timestamp("2016-08-01")
    assert "as Unix time in seconds" in capsys.readouterr().err
    clocks = [*(f"2021-03-27T{h:02d}:00:00+01:00" for h in range(24)), "2021-03-28T00:00:00+01:00",
              "2021-03-28T01:00:00+01:00", *(f"2021-03-28T{h:02d}:00:00+02:00" for h in range(3, 24))]
    got = read_long(long_csv("dst.csv", ["a", "b"], clocks))  # hourly across a change of clocks: one step in UTC
    assert got["ds"].dt.tz is not None and "in UTC" in capsys.readouterr().err
    with pytest.raises(UserError, match=r"bad.csv: line \d+ has a date that cannot be read: 'notadate'"):
        read_long(long_csv("bad.csv", [], [], values=[("a", hours[0], 1.0), ("a", "notadate", 2.0)]))

    refused = invoke("evaluate", run_dir, "--data", long_csv("eval.csv", ["HUFL"], hours))
    assert refused.exit_code == 2 and "eval.csv lacks the channel(s) HULL" in refused.stderr  # named as the long file


def test_evaluate_data_takes_a_long_csv_as_its_wide_form(run_dir, etth1, tmp_path):
    wide, long = tmp_path / "wide.csv", tmp_path / "long.csv"
    etth1.to_csv(wide, index_label="date")
    melted(etth1).to_csv(long, index=False)
    scored = {path: invoke("evaluate", run_dir, "--data", path, "--json") for path in (wide, long)}
    assert all(result.exit_code == 0 for result in scored.values()), scored[long].output
    from_wide, from_long = (json.loads(scored[path].stdout) for path in (wide, long))
    assert from_long["test"] == from_wide["test"] and from_long["data"] == str(long)  # not a temporary file's name


def test_data_describe_takes_a_long_csv_as_its_wide_form(etth1, tmp_path):
    wide, long = tmp_path / "wide.csv", tmp_path / "long.csv"
    etth1.iloc[:2000].to_csv(wide, index_label="date")
    melted(etth1.iloc[:2000]).to_csv(long, index=False)
    described = {path: invoke("data", "describe", path, "--split", "0.6/0.2/0.2", "--json") for path in (wide, long)}
    assert described[long].exit_code == 0, described[long].output
    from_wide, from_long = (json.loads(described[path].stdout) for path in (wide, long))
    assert sorted(from_long.pop("columns")) == sorted(from_wide.pop("columns"))  # the pivot sorts the series' ids
    assert from_long == {**from_wide, "name": str(long)}


def test_a_long_forecast_keeps_the_ids_as_the_frame_wrote_them():
    table = pd.DataFrame({"1": [1.0, 2.0], "2": [3.0, 4.0]}, index=pd.date_range("2024-01-01", periods=2, freq="D"))
    ids = pd.DataFrame({"unique_id": [1, 2], "ds": ["2023-12-31"] * 2, "y": [0.0, 0.0]})
    got = to_long(table, ["1", "2"], ids)
    assert got["unique_id"].tolist() == [1, 1, 2, 2] and got["STanHop"].tolist() == [1.0, 2.0, 3.0, 4.0]


def test_file_lines_become_frame_positions_only_in_messages_about_the_frame():
    from stanhop.errors import aliased, known_as

    with known_as("/tmp/x.csv", "the DataFrame", first_row_line=2):
        assert (aliased("/tmp/x.csv: empty cell(s) at line(s) 3, 9 and 12 more; fix the file")
                == "the DataFrame: empty cell(s) at position(s) 1, 7 and 12 more; fix the DataFrame")
        assert aliased("other.csv: line 9 is bad; fix the file") == "other.csv: line 9 is bad; fix the file"


def test_training_leaves_the_callers_random_generators_as_they_were(etth1, tmp_path):
    import random

    import torch

    def draws():
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    random.seed(7), np.random.seed(1234), torch.manual_seed(99)
    expected = draws()
    random.seed(7), np.random.seed(1234), torch.manual_seed(99)
    train(smoke(), tmp_path / "run", frame=etth1.iloc[:1200], progress=False)  # it seeds every generator with its own
    assert draws() == expected


def test_integer_ids_of_a_long_csv_are_ordered_as_numbers(tmp_path):
    from stanhop.csvio import read_long

    dates = pd.date_range("2020-01-01", periods=3, freq="h")
    long = pd.DataFrame({"unique_id": np.repeat([0, 1, 2, 10, 11], 3), "ds": np.tile(dates, 5), "y": np.arange(15.0)})
    long.to_csv(tmp_path / "long.csv", index=False)  # read back, the ids are text: '10' sorted before '2'
    wide = to_wide(read_long(tmp_path / "long.csv"), "date", "long.csv")
    assert list(wide.columns) == ["date", "0", "1", "2", "10", "11"]


def test_a_run_of_a_zoned_dataframe_dates_every_forecast_in_its_zone(etth1, tmp_path, capsys):
    from stanhop.runs import load_run

    index = pd.date_range("2021-03-01", periods=1200, freq="h", tz="Europe/Berlin", name="date")  # across the spring change
    zoned = etth1.iloc[:1200].set_axis(index)
    train(smoke(), tmp_path / "run", frame=zoned, progress=False)
    run = load_run(tmp_path / "run")
    assert run.data.timezone == "Europe/Berlin"  # its data.csv keeps only the UTC offsets
    own, given = run.forecast(), run.forecast(zoned)
    assert str(own.index.tz) == str(given.index.tz) == "Europe/Berlin"  # the run's own data was dated in UTC
    capsys.readouterr()
    run.forecast(zoned.tz_localize(None))
    assert "its timestamps have no time zone, and those the run was trained on were in Europe/Berlin" in capsys.readouterr().err


def test_a_frame_whose_column_names_have_spaces_around_them_forecasts_as_it_trained(etth1, tmp_path):
    from stanhop.runs import load_run

    spaced = etth1.iloc[:1200].rename(columns=lambda name: f" {name} ")
    train(smoke(), tmp_path / "run", frame=spaced, progress=False)
    run = load_run(tmp_path / "run")
    assert run.data.columns == list(etth1.columns)  # its CSV copy is read as any CSV: names stripped
    future = run.forecast(spaced)  # the frame it trained on, names and all (it lacked the channel 'HUFL' before)
    assert len(future) == run.config.model.out_len and np.isfinite(future.to_numpy()).all()


def test_ids_with_spaces_around_them_are_kept_exactly(etth1, tmp_path):
    """' a' and 'a' are two series, and a forecast's ids merge with the input's (the pivot's
    header was read with its names stripped: ' a' came back as a, or as a repeated column)."""
    long = melted(etth1.iloc[:1200, :3].set_axis([" a", "a", "b "], axis=1))
    long_csv = tmp_path / "spaced.csv"
    long.to_csv(long_csv, index=False)
    described = invoke("data", "describe", long_csv, "--split", "0.6/0.2/0.2", "--json")
    assert described.exit_code == 0, described.output
    assert sorted(json.loads(described.stdout)["columns"]) == [" a", "a", "b "]
    trained = invoke("train", "--config", ROOT / "configs" / "smoke.yaml", "--data", long_csv,
                     *[arg for setting in QUICK for arg in ("--set", setting)], "--out", tmp_path / "run")
    assert trained.exit_code == 0, trained.output
    run = load_run(tmp_path / "run")
    assert sorted(run.data.columns) == [" a", "a", "b "]
    out = invoke("forecast", tmp_path / "run", "--input", long_csv, "--output", tmp_path / "out.csv")
    assert out.exit_code == 0, out.output
    written = pd.read_csv(tmp_path / "out.csv", dtype={"unique_id": str})
    assert set(written["unique_id"]) == set(long["unique_id"])
    assert set(run.forecast(long)["unique_id"]) == set(long["unique_id"])


def test_whole_numbers_in_a_long_or_wide_csvs_dates_are_refused_as_the_api_refuses_them(tmp_path):
    """Steps 0..n-1 were 'a date that cannot be read', and from 1000 on silently years; dates
    written yyyymmdd are still dates."""
    from stanhop.csvio import load_series, read_long

    for first in (0, 1000):
        steps = np.arange(first, first + 40)
        long = tmp_path / f"long{first}.csv"
        pd.DataFrame({"unique_id": np.repeat(["x", "y"], 40), "ds": np.tile(steps, 2), "y": np.arange(80.0)}).to_csv(
            long, index=False)
        with pytest.raises(UserError, match=rf"ds holds numbers \({first}, ...\), not timestamps.*integer ds, freq=1"):
            read_long(long)
        refused = invoke("data", "describe", long, "--split", "0.6/0.2/0.2", "--in-len", "4", "--out-len", "2")
        assert refused.exit_code == 2 and "holds numbers" in refused.stderr
        wide = tmp_path / f"wide{first}.csv"
        pd.DataFrame({"date": steps, "a": np.arange(40.0)}).to_csv(wide, index=False)
        with pytest.raises(UserError, match=rf"date holds numbers \({first}, ...\), not timestamps"):
            load_series(wide)
    days = pd.date_range("2020-01-01", periods=40, freq="D")
    ymd = tmp_path / "ymd.csv"
    pd.DataFrame({"unique_id": "x", "ds": days.strftime("%Y%m%d").astype(int), "y": np.arange(40.0)}).to_csv(ymd, index=False)
    assert list(read_long(ymd)["ds"]) == list(days)
    pd.DataFrame({"date": days.strftime("%Y%m%d"), "a": np.arange(40.0)}).to_csv(ymd, index=False)
    assert list(load_series(ymd).index) == list(days)


def test_a_series_that_ends_early_is_told_in_the_fill_notice_and_the_forecast(run_dir, etth1, tmp_path):
    long = melted(etth1.iloc[:300])
    ended = long[~((long["unique_id"] == "OT") & (long["ds"] > long["ds"].max() - pd.Timedelta(hours=30)))]
    path = tmp_path / "ended.csv"
    ended.to_csv(path, index=False)
    result = invoke("forecast", run_dir, "--input", path, "--fill", "ffill")
    assert result.exit_code == 0, result.output
    assert "OT 30 (10%, 30 after its last value, which is carried forward to them)" in result.stderr
    assert (f"{path}: the last 24 rows, the forecast's input, hold no value of OT (its last value at "
            f"{etth1.index[269]}); its forecast rests on filled values only") in result.stderr
    backtested = invoke("forecast", run_dir, "--input", path, "--fill", "ffill", "--backtest")
    assert backtested.exit_code == 0 and "the forecast's input" not in backtested.stderr  # it reads every window
    wide = tmp_path / "wide.csv"
    etth1.iloc[:300].assign(OT=lambda f: f["OT"].where(f.index <= etth1.index[269])).to_csv(wide, index_label="date")
    result = invoke("forecast", run_dir, "--input", wide, "--fill", "ffill")
    assert result.exit_code == 0 and "hold no value of OT" in result.stderr, result.output


def test_a_quoted_header_name_with_spaces_is_told_apart_from_the_runs_channel(run_dir, tmp_path, etth1_path):
    """A header's quoted names keep their spaces (a long file's ids ' a' and 'a' are two series);
    a wide file whose quoted names have spaces the run's channels lack is refused saying so."""
    frame = pd.read_csv(etth1_path, nrows=300)
    quoted = tmp_path / "quoted.csv"
    with quoted.open("w") as f:
        f.write(",".join('"date"' if c == "date" else f'"{c} "' for c in frame.columns) + "\n")
        frame.to_csv(f, header=False, index=False)
    result = invoke("forecast", run_dir, "--input", quoted)
    assert result.exit_code == 2 and "'OT ' differ by the spaces around them" in result.stderr, result.output


def test_a_column_of_years_is_told_how_to_write_years(tmp_path):
    """Four-digit whole numbers are refused as other step counts are, but the advice for years
    comes first (it led with hourly steps)."""
    from stanhop.csvio import load_series

    years = tmp_path / "years.csv"
    pd.DataFrame({"year": np.arange(1700, 1760), "a": np.arange(60.0)}).to_csv(years, index=False)
    with pytest.raises(UserError, match=r"year holds numbers \(1700, ...\).*if they are years, write each as a date, "
                                        r"2000-01-01 for the year 2000 \(pandas: pd.to_datetime\(df\['year'\]"):
        load_series(years, date_column="year")
    steps = tmp_path / "steps.csv"
    pd.DataFrame({"date": np.arange(60), "a": np.arange(60.0)}).to_csv(steps, index=False)
    with pytest.raises(UserError, match=r"put dates in 'date', e.g. pd.date_range"):
        load_series(steps)
