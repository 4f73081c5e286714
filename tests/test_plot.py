"""`stanhop plot` and the library's plot functions: real figures of a smoke run, checked as images."""

import shutil
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

import cli
from stanhop.csvio import load_series
from stanhop.errors import UserError
from stanhop.plot import COLOURS, plot_forecast, plot_outliers, plot_training, save_figure, training_log

ROOT = Path(__file__).resolve().parents[1]
def invoke(*args):
    return CliRunner().invoke(cli.cli, [str(a) for a in args])


def hex_rgb(colour: str) -> np.ndarray:
    return np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])


def check_png(path: Path, *, colours: tuple[str, ...] = ()) -> np.ndarray:
    """A valid PNG, far from blank, holding pixels of each given colour; returns its RGB array."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.shape[0] > 200 and pixels.shape[1] > 400
    flat = pixels.reshape(-1, 3)
    assert len(np.unique(flat, axis=0)) > 50  # lines, text and anti-aliasing, not a blank canvas
    assert (flat.min(axis=1) < 128).mean() > 0.005  # some dark ink (text, lines)
    for colour in colours:
        near = np.abs(flat.astype(int) - hex_rgb(colour)).max(axis=1) < 30
        assert near.sum() > 50, f"no {colour} in {path.name}"
    return pixels


def test_forecast_plot_from_a_csv_with_truth(run_dir, run, etth1, tmp_path):
    cut = etth1.iloc[900:1000]
    source = tmp_path / "in.csv"
    cut.to_csv(source, index_label="date")
    out = tmp_path / "forecast.png"
    result = invoke("plot", run_dir, "--input", source, "--channels", "OT,HUFL", "--output", out)
    assert result.exit_code == 0, result.output
    check_png(out, colours=(COLOURS["history"], COLOURS["truth"], COLOURS["forecast"]))


def test_forecast_figure_draws_the_forecast_from_out_len_rows_before_the_end(run, etth1):
    out_len, in_len = run.config.model.out_len, run.config.model.in_len
    cut = etth1.iloc[900:1000]
    fig = plot_forecast(run, cut, channels=["OT", "HUFL"])
    axes = fig.get_axes()
    assert len(axes) == 2
    lines = {line.get_label(): line for line in axes[0].get_lines()}
    expected = run.forecast(cut.iloc[:-out_len])
    np.testing.assert_allclose(lines["forecast"].get_ydata()[1:], expected["OT"].to_numpy())
    np.testing.assert_allclose(lines["truth"].get_ydata()[1:], cut["OT"].iloc[-out_len:].to_numpy())
    assert len(lines["history"].get_xdata()) == min(in_len, max(3 * out_len, 48))
    mse = ((expected["OT"] - cut["OT"].iloc[-out_len:]) ** 2).mean()
    assert f"MSE {mse:.3g}" in axes[0].get_title() and axes[1].get_title().startswith("HUFL")
    title = fig._suptitle.get_text()
    assert run.path.name in title and f"{out_len}-step" in title
    assert f"forecast from {cut.index[-out_len - 1]:%Y-%m-%d %H:%M} (" in title  # hourly: minutes, no seconds


def test_forecast_figure_with_a_horizon_starts_that_many_rows_before_the_end(run, run_dir, etth1, tmp_path):
    horizon = 2 * run.config.model.out_len + 1
    cut = etth1.iloc[900:1000]
    fig = plot_forecast(run, cut, horizon=horizon)
    lines = {line.get_label(): line for line in fig.get_axes()[0].get_lines()}
    np.testing.assert_allclose(lines["forecast"].get_ydata()[1:],
                               run.forecast(cut.iloc[:-horizon], horizon=horizon)["OT"].to_numpy())
    np.testing.assert_allclose(lines["truth"].get_ydata()[1:], cut["OT"].iloc[-horizon:].to_numpy())
    assert f"{horizon}-step" in fig._suptitle.get_text()
    source = tmp_path / "in.csv"
    cut.to_csv(source, index_label="date")
    result = invoke("plot", run_dir, "--input", source, "--horizon", horizon, "--output", tmp_path / "h.png")
    assert result.exit_code == 0, result.output
    check_png(tmp_path / "h.png", colours=(COLOURS["truth"], COLOURS["forecast"]))
    refused = invoke("plot", run_dir, "--what", "training", "--horizon", horizon)
    assert refused.exit_code == 2 and "--horizon" in refused.stderr


def test_forecast_past_the_end_when_there_is_no_truth(run, etth1):
    short = etth1.iloc[:run.config.model.in_len + 2]
    fig = plot_forecast(run, short)
    (ax,) = fig.get_axes()
    labels = [line.get_label() for line in ax.get_lines()]
    assert "truth" not in labels and "forecast" in labels and "no truth" in ax.get_title()
    assert ax.get_ylabel() == "OT"  # the run's target by default


def test_forecast_plot_without_input_uses_the_runs_test_end(run_dir, run, tmp_path):
    out = tmp_path / "own.png"
    result = invoke("plot", run_dir, "--output", out)
    assert result.exit_code == 0, result.output
    check_png(out, colours=(COLOURS["truth"], COLOURS["forecast"]))
    fig = plot_forecast(run)
    truth = next(line for line in fig.get_axes()[0].get_lines() if line.get_label() == "truth")
    test_end = load_series("ETTh1").index[run.data.borders["test"][1] - 1]
    assert pd.Timestamp(truth.get_xdata()[-1]) == test_end


def test_default_output_lives_in_the_run_and_is_replaced(run_dir):
    for _ in range(2):
        result = invoke("plot", run_dir, "--what", "training")
        assert result.exit_code == 0, result.output
    check_png(run_dir / "plots" / "training.png")


def test_training_plot_shows_each_epoch(run_dir, tmp_path):
    log = training_log(run_dir)
    assert list(log.index) == [0, 1] and log["val_mse"].notna().all() and log["train_loss"].notna().all()
    fig = plot_training(run_dir)
    lines = {line.get_label(): line for line in fig.get_axes()[0].get_lines()}
    np.testing.assert_allclose(lines["val MSE (scaled)"].get_ydata(), log["val_mse"].to_numpy())
    best = int(log["val_mse"].idxmin()) + 1  # counted from 1, as train prints "epoch 2/2"
    assert f"best epoch {best}" in lines
    np.testing.assert_array_equal(lines["val MSE (scaled)"].get_xdata(), [1, 2])
    assert f"at epoch {best} of 2" in fig.get_axes()[0].get_title()
    out = tmp_path / "training.png"
    assert invoke("plot", run_dir, "--what", "training", "--output", out).exit_code == 0
    check_png(out, colours=("#1f77b4", "#d95f02"))


def test_forecast_plot_arguments_as_a_notebook_gives_them(run_dir):
    fig = plot_forecast(run_dir, channels="OT")  # one channel by name, not its letters
    assert [ax.get_title().split(":")[0] for ax in fig.get_axes()] == ["OT"]
    for history in (0, -5, 2.5):
        with pytest.raises(UserError, match="history is the number of past rows drawn"):
            plot_forecast(run_dir, history=history)
    shown = plot_forecast(run_dir, channels="OT", history=np.int64(30))  # numpy's integers, as horizon takes them
    assert len(shown.get_axes()[0].get_lines()[0].get_xdata()) == 30
    with pytest.raises(UserError, match="unknown channel\\(s\\) 0; the run's channels"):
        plot_forecast(run_dir, channels=0)  # a position is not a channel (0 drew the target, as if none was given)


def test_a_one_epoch_training_plot_has_whole_epoch_ticks(run_dir, tmp_path):
    one = shutil.copytree(run_dir, tmp_path / "one")
    log = pd.read_csv(one / "logs" / "metrics.csv")
    log[log["epoch"] == 0].to_csv(one / "logs" / "metrics.csv", index=False)
    ax = plot_training(one).get_axes()[0]
    ax.figure.canvas.draw()
    ticks = [tick for tick in ax.get_xticks() if ax.get_xlim()[0] <= tick <= ax.get_xlim()[1]]
    assert 1 in ticks and all(float(tick).is_integer() for tick in ticks), ticks  # the epoch, counted from 1


def test_outlier_plot_as_png_svg_and_pdf(run_dir, run, tmp_path):
    per_module = run.metrics["outliers"]["per_module"]
    fig = plot_outliers(run_dir)
    left, right = fig.get_axes()
    assert [t.get_text() for t in left.get_yticklabels()] == list(per_module)
    kurtosis = [bar.get_width() for bar in left.patches]
    np.testing.assert_allclose(kurtosis, [m["kurtosis"] for m in per_module.values()])
    assert f"max ∞-norm {run.metrics['outliers']['inf_norm_max']:.2f} (of the modules' means)" in fig._suptitle.get_text()
    png, svg, pdf = (tmp_path / f"outliers.{ext}" for ext in ("png", "svg", "pdf"))
    for path in (png, svg, pdf):
        assert invoke("plot", run_dir, "--what", "outliers", "--output", path).exit_code == 0
    check_png(png, colours=("#7570b3",))
    assert ElementTree.parse(svg).getroot().tag.endswith("svg")
    assert pdf.read_bytes().startswith(b"%PDF")


def test_plot_mistakes_are_one_line_errors(run_dir, tmp_path):
    taken = tmp_path / "taken.png"
    taken.write_bytes(b"keep")
    cases = [
        ("--output", tmp_path / "fig.jpg"),
        ("--channels", "OT,NOPE"),
        ("--output", taken),
        ("--what", "outliers", "--channels", "OT"),
    ]
    for args in cases:
        result = invoke("plot", run_dir, *args)
        assert result.exit_code == 2 and result.stderr.startswith("error:") and len(result.stderr.strip().splitlines()) == 1, args
    assert taken.read_bytes() == b"keep"
    assert invoke("plot", tmp_path / "no-run").exit_code == 2


@pytest.mark.parametrize("name, why", [("/gone/mine.csv", "moved or deleted?"),
                                       ("mine.csv", "relative to the folder it was trained in")])
def test_a_run_whose_csv_is_gone_says_why_and_what_to_give(run_dir, tmp_path, name, why):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("name: ETTh1", f"name: {name}"))
    for command, option in (("plot", "--input"), ("evaluate", "--data"), ("forecast", "--input")):
        result = invoke(command, run, *(["--output", tmp_path / "fig.png"] if command == "plot" else []))
        assert result.exit_code == 2 and f"the run's data file {name} is not found (" in result.stderr, result.output
        assert why in result.stderr and option in result.stderr


def test_save_figure_keeps_an_existing_file_unless_force(run_dir, tmp_path):
    fig = plot_training(run_dir)
    path = save_figure(fig, tmp_path / "a.svg")
    with pytest.raises(UserError, match=r"already exists; choose another file name, or replace it with --force "
                                        r"\(Python: force=True\)$"):  # no CLI-only '--output' to a Python caller
        save_figure(fig, path)
    save_figure(fig, path, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.svg"]


def _truth_and_titles(fig) -> tuple[list[np.ndarray], list[str]]:
    axes = fig.get_axes()
    truth = [next(line for line in ax.get_lines() if line.get_label() == "truth").get_ydata()[1:] for ax in axes]
    return truth, [ax.get_title() for ax in axes]


def test_values_a_fill_made_up_are_neither_truth_nor_scored(run, run_dir, etth1, tmp_path, monkeypatch):
    """OT's last 3 values and all of HUFL's truth empty, filled by ffill: the truth line has
    gaps there, OT's MSE counts its real values alone and HUFL's title says it has none."""
    out_len = run.config.model.out_len
    observed = etth1.iloc[900:1000].copy()
    observed.iloc[-3:, observed.columns.get_loc("OT")] = np.nan
    observed.iloc[-out_len:, observed.columns.get_loc("HUFL")] = np.nan
    expected = run.forecast(observed.ffill().iloc[:-out_len])
    real = observed["OT"].iloc[-out_len:-3]
    mse = ((expected["OT"].iloc[:-3] - real) ** 2).mean()
    source = tmp_path / "ragged.csv"
    observed.to_csv(source, index_label="date")
    figures = []
    monkeypatch.setattr("stanhop.plot.save_figure", lambda fig, path, **_: figures.append(fig))
    result = invoke("plot", run_dir, "--input", source, "--fill", "ffill", "--channels", "OT,HUFL", "--output", tmp_path / "f.png")
    assert result.exit_code == 0, result.output
    for made in (lambda: figures[0], lambda: plot_forecast(run, observed.ffill(), channels=["OT", "HUFL"], observed=observed)):
        fig = made()  # the CLI's figure, then the API's
        (ot, hufl), (ot_title, hufl_title) = _truth_and_titles(fig)
        np.testing.assert_allclose(ot[:-3], real.to_numpy())
        assert np.isnan(ot[-3:]).all() and np.isnan(hufl).all()
        assert f"OT: MSE {mse:.3g} (original units)" in ot_title and f"{out_len - 3} of {out_len} steps" in ot_title
        assert "HUFL: no MSE" in hufl_title and "MSE" not in hufl_title.replace("no MSE", "")
        assert "the file's values only" in fig._suptitle.get_text()


def test_a_run_filled_by_its_data_fill_is_plotted_against_its_own_values_only(tmp_path):
    """The run's own data (no --input): a series that ends early is not drawn as its carried-forward value."""
    hours = pd.date_range("2021-01-01", periods=300, freq="h", name="date")
    t = np.arange(300)
    frame = pd.DataFrame({"a": np.sin(t / 5), "c": np.cos(t / 3)}, index=hours)
    frame.loc[frame.index[-20:], "c"] = np.nan  # c ends inside the test split
    frame.to_csv(tmp_path / "ragged.csv")
    result = invoke("train", "--config", ROOT / "configs" / "smoke.yaml", "--data", tmp_path / "ragged.csv", "--split",
                    "0.7/0.1/0.2", "--fill", "ffill", "--out", tmp_path / "run", "--set", "train.max_epochs=1",
                    "--set", "train.limit_train_batches=2")
    assert result.exit_code == 0, result.output
    fig = plot_forecast(tmp_path / "run", channels=["a", "c"])
    (a, c), (a_title, c_title) = _truth_and_titles(fig)
    assert np.isfinite(a).all() and np.isnan(c).all()
    assert "a: MSE" in a_title and "c: no MSE" in c_title
