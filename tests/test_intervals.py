"""Conformal prediction intervals (stanhop.intervals): the quantile rule, the calibration on the
run's validation windows, the forecast's columns and their coverage on a stationary series."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import cli
from stanhop.errors import UserError
from stanhop.intervals import conformal_half_widths, half_widths, parse_levels

ROOT = Path(__file__).resolve().parents[1]


def invoke(*args):
    return CliRunner().invoke(cli.cli, [str(a) for a in args])


def test_levels_are_percentages_strictly_between_0_and_100():
    assert parse_levels("95, 80,80") == [80.0, 95.0] and parse_levels([97.5]) == [97.5] and parse_levels(None) == []
    assert parse_levels(80) == [80.0] and parse_levels(97.5) == [97.5]  # one level, as a number
    for bad in ("0", "100", "-5", "eighty", "", "80,,95"):
        with pytest.raises(UserError, match="percentage|level"):
            parse_levels(bad)


def test_the_half_width_is_the_conformal_quantile_of_the_errors():
    """k = ⌈(n + 1)·L⌉-th smallest error of each (step, channel); a level that needs more
    windows than there are is refused with the number needed."""
    rng = np.random.default_rng(0)
    errors = rng.permutation(np.arange(1.0, 10.0))[:, None, None] * np.array([1.0, 10.0])  # (9, 1, 2)
    widths = half_widths(errors, [50.0, 80.0])
    np.testing.assert_array_equal(widths[50.0], [[5.0, 50.0]])  # k = ⌈10 · 0.5⌉ = 5
    np.testing.assert_array_equal(widths[80.0], [[8.0, 80.0]])  # k = ⌈10 · 0.8⌉ = 8
    with pytest.raises(UserError, match="needs at least 19 validation windows.*has 9"):
        half_widths(errors, [95.0])
    made_up = errors.copy()
    made_up[np.argsort(errors[:, 0, 1])[-2:], 0, 1] = np.nan  # the largest two of channel 1: targets a fill made up
    widths = half_widths(made_up, [50.0, 80.0])  # channel 1 from its 7 errors 10..70: k = ⌈8 · L⌉
    np.testing.assert_array_equal(widths[50.0], [[5.0, 40.0]])
    np.testing.assert_array_equal(widths[80.0], [[8.0, 70.0]])
    made_up[:, 0, 1] = np.nan  # channel 1's every target made up: no interval there, channel 0's as before
    widths = half_widths(made_up, [80.0])
    assert widths[80.0][0, 0] == 8.0 and np.isnan(widths[80.0][0, 1])


def test_calibration_uses_the_runs_validation_windows(run, etth1):
    """The half-widths equal the quantiles of a backtest's errors over the validation split."""
    in_len, out_len = run.config.model.in_len, run.config.model.out_len
    start, end = run.data.borders["val"]
    table = run.backtest(etth1.iloc[start - in_len : end], stride=1).table
    widths = conformal_half_widths(run, out_len, [80.0])[80.0]  # (out_len, c)
    n = end - start - out_len + 1
    assert len(table) == n * out_len
    k = int(np.ceil((n + 1) * 0.8))
    for i, channel in enumerate(run.data.columns):
        scaled = ((table[f"{channel}_pred"] - table[f"{channel}_true"]).abs() / run.data.scale[i]).to_numpy()
        by_step = np.sort(scaled.reshape(n, out_len), axis=0)[k - 1]
        np.testing.assert_allclose(widths[:, i], by_step, rtol=1e-4, atol=1e-6)


def test_forecast_columns_hold_each_channels_intervals(run, etth1):
    cut = etth1.iloc[2000:2100]
    plain = run.forecast(cut)
    table = run.forecast(cut, intervals="80,95")
    channels = run.data.columns
    assert list(table.columns[:5]) == [channels[0], f"{channels[0]}_lo80", f"{channels[0]}_hi80",
                                       f"{channels[0]}_lo95", f"{channels[0]}_hi95"]
    pd.testing.assert_frame_equal(table[channels], plain)
    widths = conformal_half_widths(run, run.config.model.out_len, [80.0])[80.0]
    for i, c in enumerate(channels):
        np.testing.assert_allclose(table[f"{c}_hi80"] - table[c], widths[:, i] * run.data.scale[i], rtol=1e-6)
        np.testing.assert_allclose(table[c] - table[f"{c}_lo80"], table[f"{c}_hi80"] - table[c], rtol=1e-9)
        assert (table[f"{c}_hi95"] >= table[f"{c}_hi80"]).all() and (table[f"{c}_lo95"] <= table[f"{c}_lo80"]).all()


def stationary_csv(path: Path, rows: int = 2400, seed: int = 0) -> Path:
    """Three hourly channels: a daily sine plus AR(1) noise, the same process throughout."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    noise = np.zeros((rows, 3))
    for i in range(1, rows):
        noise[i] = 0.7 * noise[i - 1] + rng.normal(0, 0.5, 3)
    values = np.sin(2 * np.pi * t[:, None] / 24 + np.array([0.0, 1.0, 2.0])) + noise
    frame = pd.DataFrame(values, columns=["a", "b", "c"], index=pd.date_range("2020-01-01", periods=rows, freq="h"))
    frame.to_csv(path, index_label="date")
    return path


def test_intervals_cover_about_their_level_on_a_stationary_series(tmp_path):
    """Where test windows are like the validation ones, the share of test elements inside
    each interval is close to its level (split conformal prediction's promise)."""
    from stanhop.config import apply_overrides, load_config
    from stanhop.runs import load_run
    from stanhop.workflow import train

    data = stationary_csv(tmp_path / "stationary.csv")
    config = apply_overrides(load_config(ROOT / "configs" / "smoke.yaml"),
                             [f"data.name={data}", "data.split=0.5/0.25/0.25", "train.max_epochs=1",
                              "train.limit_train_batches=3"])
    train(config, tmp_path / "run", progress=False)
    run = load_run(tmp_path / "run")
    start, end = run.data.borders["test"]
    frame = pd.read_csv(data, index_col="date", parse_dates=["date"])
    metrics = run.backtest(frame.iloc[start - run.config.model.in_len : end], stride=1, intervals=[50, 80, 95]).metrics
    coverage = {level: metrics["coverage"][level]["overall"] for level in ("50", "80", "95")}
    assert coverage["50"] == pytest.approx(0.50, abs=0.06), coverage
    assert coverage["80"] == pytest.approx(0.80, abs=0.05), coverage
    assert coverage["95"] == pytest.approx(0.95, abs=0.03), coverage


def test_cli_forecast_and_backtest_with_intervals(run, run_dir, etth1, tmp_path):
    source = tmp_path / "in.csv"
    etth1.iloc[:400].to_csv(source, index_label="date")
    out = tmp_path / "pred.csv"
    result = invoke("forecast", run_dir, "--input", source, "--intervals", "90", "--output", out)
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out, index_col="date", parse_dates=["date"])
    assert {"OT", "OT_lo90", "OT_hi90"} <= set(table.columns) and (table["OT_lo90"] < table["OT_hi90"]).all()

    scored = invoke("forecast", run_dir, "--input", source, "--backtest", "--intervals", "80,95", "--output", tmp_path / "bt.csv")
    assert scored.exit_code == 0, scored.output
    assert "in 80%" in scored.stdout and "in 95%" in scored.stdout
    saved = json.loads((tmp_path / "bt.metrics.json").read_text())
    assert set(saved["coverage"]) == {"80", "95"} and set(saved["coverage"]["80"]["per_channel"]) == set(run.data.columns)
    bt = pd.read_csv(tmp_path / "bt.csv")
    inside = ((bt["OT_lo80"] <= bt["OT_true"]) & (bt["OT_true"] <= bt["OT_hi80"])).mean()
    assert saved["coverage"]["80"]["per_channel"]["OT"] == pytest.approx(inside, abs=1e-9)

    for bad, words in (("100", "between 0 and 100"), ("eighty", "percentages such as 80,95")):
        refused = invoke("forecast", run_dir, "--input", source, "--intervals", bad)
        assert refused.exit_code == 2 and words in refused.stderr
    too_high = invoke("forecast", run_dir, "--input", source, "--intervals", "99.99")
    assert too_high.exit_code == 2 and "validation windows" in too_high.stderr


def test_plot_draws_each_interval_as_a_band_around_the_forecast(run, run_dir, etth1, tmp_path):
    from stanhop.plot import COLOURS, plot_forecast

    cut = etth1.iloc[900:1000]
    fig = plot_forecast(run, cut, intervals="80,95")
    ax = fig.get_axes()[0]
    bands = {c.get_label(): c for c in ax.collections if c.get_label().endswith("% interval")}
    assert set(bands) == {"80% interval", "95% interval"}
    table = run.forecast(cut.iloc[: -run.config.model.out_len], intervals="80,95")
    for level in ("80", "95"):
        ys = bands[f"{level}% interval"].get_paths()[0].vertices[:, 1]
        assert ys.min() == pytest.approx(table[f"OT_lo{level}"].min()) and ys.max() == pytest.approx(table[f"OT_hi{level}"].max())
    out = tmp_path / "bands.png"
    result = invoke("plot", run_dir, "--input", _csv(cut, tmp_path), "--intervals", "90", "--output", out)
    assert result.exit_code == 0, result.output
    from test_plot import check_png

    check_png(out, colours=(COLOURS["truth"], COLOURS["forecast"]))
    refused = invoke("plot", run_dir, "--what", "training", "--intervals", "90")
    assert refused.exit_code == 2 and "--intervals" in refused.stderr


def _csv(frame: pd.DataFrame, folder: Path) -> Path:
    path = folder / "in.csv"
    frame.to_csv(path, index_label="date")
    return path


def test_intervals_need_the_runs_own_data_and_say_how_to_get_it(run_dir, etth1, tmp_path, monkeypatch):
    monkeypatch.setenv("STANHOP_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    result = invoke("forecast", run_dir, "--input", _csv(etth1.iloc[:100], tmp_path), "--intervals", "80")
    assert result.exit_code == 2
    assert "'ETTh1' is not on this machine (`stanhop data describe ETTh1` downloads it)" in result.stderr
    assert "calibrated on the run's validation split" in result.stderr


def test_a_loaded_run_calibrates_each_horizon_and_level_once(run_dir, etth1, monkeypatch):
    """A service that keeps a Run pays the calibration (the run's data read, its validation
    windows forecast) once per horizon and level, with the same intervals every call."""
    from stanhop import intervals
    from stanhop.runs import load_run

    calibrations = []
    calibrate = intervals.calibration_errors
    monkeypatch.setattr(intervals, "calibration_errors", lambda run, horizon, **kw: calibrations.append(horizon)
                        or calibrate(run, horizon, **kw))
    run, rows = load_run(run_dir), etth1.iloc[:300]
    out_len = run.config.model.out_len
    first = run.forecast(rows, intervals=[80, 95])
    pd.testing.assert_frame_equal(run.forecast(rows, intervals=[80, 95]), first)
    pd.testing.assert_frame_equal(run.forecast(rows, intervals=[95]), first.filter(regex="^[^_]*$|95$"))
    run.backtest(rows, intervals=[80])
    assert calibrations == [out_len]  # once, for every later call at that horizon and those levels
    run.forecast(rows, intervals=[50, 80])  # a new level calibrates again, a new horizon too
    run.forecast(rows, horizon=3, intervals=[80])
    assert calibrations == [out_len, out_len, 3]
    uncached = half_widths(calibrate(run, out_len), [80.0])[80.0]
    np.testing.assert_array_equal(conformal_half_widths(run, out_len, [80.0])[80.0], uncached)
    assert len(calibrations) == 3


def test_calibration_takes_at_most_max_windows_evenly_spaced(run, etth1, monkeypatch):
    """Many validation windows are thinned to MAX_WINDOWS, the first and the last kept."""
    from stanhop import intervals
    from stanhop.forecast import windows_per_batch

    out_len = run.config.model.out_len
    every = intervals.calibration_errors(run, out_len)  # (n, out_len, c)
    monkeypatch.setattr(intervals, "MAX_WINDOWS", 20)
    thinned = intervals.calibration_errors(run, out_len)
    assert len(every) > 100 and len(thinned) == 20
    picked = np.linspace(0, len(every) - 1, 20).round().astype(int)
    np.testing.assert_allclose(thinned, every[picked], rtol=1e-5, atol=1e-6)
    assert windows_per_batch(run) == 256  # 7 series
    run_321 = type("R", (), {"data": type("D", (), {"columns": [f"s{i}" for i in range(321)]})})()
    assert windows_per_batch(run_321) == 51  # ≈ 16k series-windows a batch


def test_a_level_written_as_a_fraction_is_refused_with_the_percentage():
    with pytest.raises(UserError, match=r"interval levels are percentages: 0.8 would be a 0.8% interval; write 80 for 80%"):
        parse_levels("0.8")
