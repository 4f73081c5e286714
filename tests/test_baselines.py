"""The naive yardsticks (stanhop.baselines): by hand on small series, and beside the model in
evaluate and backtest."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

import cli
from stanhop.baselines import better_than, naive_errors, season_of, skill


def test_seasons_follow_the_data_step():
    expected = {"h": 24, "15min": 96, "D": 7, "B": 5, "W-SUN": 52, "MS": 12, "QS-OCT": 4, "YS": None, "7D": None}
    assert {freq: season_of(freq) for freq in expected} == expected


def test_naive_forecasts_by_hand_on_a_straight_line():
    """x_t = t: the naive forecast misses step s by s; with a season of 2 the guess for step s
    is x_{t+s-2⌈s/2⌉}, missing by 2, 2, 4, 4."""
    z = np.arange(40, dtype=np.float32)[:, None]  # (rows, 1)
    starts = np.arange(0, 30, 3)
    got = naive_errors(z, starts, in_len=5, horizon=4, season=2)
    assert got["naive"] == {"mse": pytest.approx((1 + 4 + 9 + 16) / 4), "mae": pytest.approx(2.5)}
    assert got["seasonal_naive"] == {"mse": pytest.approx(10.0), "mae": pytest.approx(3.0), "season": 2}
    assert "seasonal_naive" not in naive_errors(z, starts, in_len=5, horizon=4, season=6)  # a season longer than the input


def test_a_seasonal_series_is_forecast_exactly_by_its_seasonal_naive():
    t = np.arange(24 * 30)
    z = np.stack([np.sin(2 * np.pi * t / 24), np.cos(2 * np.pi * t / 24)], axis=1)
    got = naive_errors(z, np.arange(0, 24 * 25, 7), in_len=48, horizon=30, season=24, batch=5)
    assert got["seasonal_naive"]["mse"] == pytest.approx(0.0, abs=1e-12) and got["naive"]["mse"] > 0.3
    assert skill(0.25, 1.0) == pytest.approx(0.75)


def test_better_than_names_the_best_baseline_below_the_model():
    baselines = {"naive": {"mse": 1.2, "mae": 0.9}, "seasonal_naive": {"mse": 0.4, "mae": 0.5, "season": 24}}
    assert better_than(0.3, baselines) is None
    assert better_than(0.5, baselines) == ("seasonal naive (24 steps back)", baselines["seasonal_naive"])
    assert better_than(2.0, {"naive": baselines["naive"]}) == ("naive (last value)", baselines["naive"])
    assert better_than(2.0, {}) is None  # a run from before the yardsticks


def test_evaluate_and_backtest_report_the_same_yardsticks_on_the_test_windows(run, run_dir, etth1):
    result = CliRunner().invoke(cli.cli, ["evaluate", str(run_dir), "--json"])
    assert result.exit_code == 0, result.output
    baselines = json.loads(result.stdout)["baselines"]
    assert baselines["seasonal_naive"]["season"] == 24
    start, end = run.data.borders["test"]
    rows = etth1.iloc[start - run.config.model.in_len : end]
    backtest = run.backtest(rows, stride=1).metrics["baselines"]
    for name in ("naive", "seasonal_naive"):
        for key in ("mse", "mae"):
            assert backtest[name][key] == pytest.approx(baselines[name][key], rel=1e-5), (name, key)
    printed = CliRunner().invoke(cli.cli, ["evaluate", str(run_dir)])
    assert f"naive test MSE, last value     {baselines['naive']['mse']:.4f}" in printed.stdout
    assert f"naive test MSE, 24 steps back  {baselines['seasonal_naive']['mse']:.4f}" in printed.stdout
    test_mse = json.loads(result.stdout)["test"]["mse"]
    beaten = min(b["mse"] for b in baselines.values()) < test_mse
    assert ("has a lower test MSE than the model" in printed.stderr) == beaten  # a notice only where one is lower


def test_the_python_api_tells_too_when_a_naive_forecast_beats_the_model(run_dir, capsys):
    from stanhop.workflow import evaluate

    metrics = evaluate(run_dir, progress=False)
    beaten = min(b["mse"] for b in metrics["baselines"].values()) < metrics["test"]["mse"]
    assert beaten  # the smoke run, a few steps of training, does worse than repeating the past
    assert "has a lower test MSE than the model" in capsys.readouterr().err
