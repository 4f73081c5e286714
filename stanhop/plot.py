"""Figures of a run: its forecast against the truth, its training curves, its outlier statistics.

Each ``plot_*`` function returns a :class:`matplotlib.figure.Figure` built without pyplot
(no global state, no display needed; saving renders with Agg) and leaves saving to the
caller, e.g. :func:`save_figure`. matplotlib is imported here only, so the CLI starts
without it.
"""

from __future__ import annotations

import numbers
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stanhop.errors import UserError, cited, command, listing, one_job

FIGURE_FORMATS = ("png", "svg", "pdf")
WHATS = ("forecast", "training", "outliers")
COLOURS = {"history": "#4d4d4d", "truth": "#1b9e77", "forecast": "#d95f02", "origin": "#9e9e9e"}


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _run_dir(run) -> Path:
    """The directory of a Run or a run path (checked), without loading the model."""
    from stanhop.runs import check_run_dir

    return Path(run.path) if hasattr(run, "path") else check_run_dir(run)


# ---------------------------------------------------------------- forecast


def target_of(run) -> str:
    """The channel a plot shows by default: the run's target, else the data set's, else the last."""
    from stanhop import datasets

    if run.data.target in run.data.columns:
        return run.data.target
    info = datasets.lookup(str(run.config.data.name))
    return info.target if info is not None and info.target in run.data.columns else run.data.columns[-1]


def forecast_with_truth(run, frame: pd.DataFrame, horizon: int | None = None, intervals=None, progress: bool = False,
                        source: str = "the input", observed: pd.DataFrame | None = None,
                        ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    """(history, forecast, truth): forecast ``horizon`` steps (default out_len) from the window
    ending ``horizon`` rows before the end when the frame has them (truth = those rows), else
    past the end (truth None); the forecast has the ``intervals``' columns when given.
    ``source``: what messages call the frame; ``observed``: the frame before a fill, NaN where
    the fill made a value up (the truth takes its values: made-up ones are NaN, not truth)."""
    from stanhop.forecast import align, aligned_truth, forecast, horizon_of

    horizon = horizon_of(run, horizon)
    frame = align(run, frame, source=source, last_rows=run.config.model.in_len)  # rows before an older gap: left out
    if len(frame) >= run.config.model.in_len + horizon:
        history, truth = frame.iloc[:-horizon], frame.iloc[-horizon:]
        if observed is not None:  # (its notices are the frame's); a timestamp it lacks was made up too
            truth = aligned_truth(run, observed, source, last_rows=horizon).reindex(truth.index)
    else:
        history, truth = frame, None
    return history, forecast(run, history, horizon=horizon, intervals=intervals, progress=progress, source=source), truth


@one_job()
def plot_forecast(run, frame: pd.DataFrame | None = None, *, channels: list[str] | None = None,
                  history: int | None = None, horizon: int | None = None, intervals=None, progress: bool = False,
                  source: str = "the input", observed: pd.DataFrame | None = None):
    """History, forecast and (where known) truth of each channel, one panel per channel.

    ``run``: a Run or a run directory; ``frame``: the series (default: the run's own data up
    to its test end); ``channels``: default the run's target; ``history``: rows of history
    drawn (default min(in_len, max(3·horizon, 48))); ``horizon``: steps forecast (default
    out_len; past it recursively); ``intervals``: levels in percent drawn as bands around the
    forecast (stanhop.intervals; ``progress``: a bar while they are calibrated). Titles give the MSE when truth is known, in original units
    and scaled (÷ scale²), the latter over all channels as in metrics.json. A long frame
    (unique_id, ds, y) is drawn as its wide form; ``source``: what messages call the frame.
    ``observed``: ``frame`` before a fill (NaN where it made a value up; default: the run's own
    data as read when ``frame`` is None): made-up values are neither drawn as truth nor scored.
    """
    from stanhop.intervals import parse_levels

    from stanhop.forecast import own_data_and_truth
    from stanhop.runs import load_run

    run = run if hasattr(run, "model") else load_run(run)
    channels = _channels(run, channels)
    if history is not None and (not isinstance(history, numbers.Integral) or isinstance(history, bool) or history < 1):
        raise UserError(f"history is the number of past rows drawn, a whole number 1 or more, got {cited(history)}")
    history = None if history is None else int(history)  # numpy's integers too
    if frame is None:
        frame, as_read = own_data_and_truth(run, "through_test")
        observed = as_read if observed is None else observed
    levels = parse_levels(intervals)
    past, future, truth = forecast_with_truth(run, frame, horizon, levels, progress, source, observed)
    in_len, steps = run.config.model.in_len, len(future)
    shown = past.iloc[-(history or min(in_len, max(3 * steps, 48))):]
    errors = None if truth is None else _squared_errors(run, future[run.data.columns], truth)

    fig = _figure(10, 1.2 + 2.6 * len(channels))
    axes = fig.subplots(len(channels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, name in zip(axes, channels):
        _draw_channel(ax, name, shown, future, truth, past.index[-1], levels)
        ax.set_title(_channel_title(name, None if errors is None else [e[:, run.data.columns.index(name)] for e in errors]),
                     fontsize=10)
    axes[0].legend(loc="upper left", fontsize=8, frameon=False, ncols=3)
    _date_axis(axes[-1])
    channels = "its one channel" if len(run.data.columns) == 1 else f"all {len(run.data.columns)} channels"
    summary = ""
    if errors is not None and not np.isnan(errors[1]).all():
        real = ", the file's values only" if np.isnan(errors[1]).any() else ""
        summary = f", MSE {np.nanmean(errors[1]):.3f} (scaled, {channels}{real})"
    start = past.index[-1]
    shown = (f"{start:%Y-%m-%d}" if start == start.normalize()  # daily or coarser: no 00:00:00
             else f"{start:%Y-%m-%d %H:%M}" if start == start.floor("min") else str(start))
    fig.suptitle(f"{run.path.name}: {steps}-step forecast from {shown} (input {in_len} steps){summary}", fontsize=11)
    return fig


def _channels(run, channels: list[str] | str | None) -> list[str]:
    if channels is None or isinstance(channels, (list, tuple)) and not channels:
        return [target_of(run)]
    if isinstance(channels, (str, int)):  # one channel by name, not its letters; 0 as a frame's column 0 names it
        channels = [channels]
    channels = [c if isinstance(c, str) else str(c) for c in channels]  # the run names its channels by text
    unknown = [c for c in channels if c not in run.data.columns]
    if unknown:
        raise UserError(f"unknown channel(s) {listing(unknown)}; the run's channels: {listing(run.data.columns)}")
    return list(dict.fromkeys(channels))  # each once, in the order given


def _channel_title(name: str, errors: list[np.ndarray] | None) -> str:
    """A panel's title: its MSE over the steps whose truth the file holds (``errors``: squared
    errors (t,) in original units and scaled, NaN where a fill made the truth up)."""
    if errors is None:
        return f"{name}: forecast past the end of the data (no truth to compare)"
    real = int(np.isfinite(errors[1]).sum())
    if real == 0:
        return f"{name}: no MSE, the data holds no value of these {len(errors[1])} steps (only filled ones)"
    some = f" over the {real} of {len(errors[1])} steps the data holds" if real < len(errors[1]) else ""
    return f"{name}: MSE {np.nanmean(errors[0]):.3g} (original units), {np.nanmean(errors[1]):.3f} (scaled){some}"


def _squared_errors(run, future: pd.DataFrame, truth: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Squared errors (out_len, c) in original units and scaled: (ŷ - y)² and ((ŷ - y) / scale)²."""
    error = future.to_numpy() - truth.to_numpy()
    return np.square(error), np.square(error / np.asarray(run.data.scale))


def _draw_channel(ax, name: str, shown: pd.DataFrame, future: pd.DataFrame, truth: pd.DataFrame | None, origin,
                  levels: list[float]) -> None:
    from stanhop.intervals import label

    for i, level in enumerate(sorted(levels, reverse=True)):  # the widest palest, under the narrower ones
        ax.fill_between(future.index, future[f"{name}_lo{label(level)}"], future[f"{name}_hi{label(level)}"], lw=0,
                        color=COLOURS["forecast"], alpha=0.14 + 0.12 * i, label=f"{label(level)}% interval")
    ax.plot(shown.index, shown[name], color=COLOURS["history"], lw=1.3, label="history")
    if truth is not None:  # joined to the last history point; a gap where a fill made the value up (NaN)
        dots = {"marker": "o", "ms": 2.5, "markevery": slice(1, None)} if truth[name].isna().any() else {}  # (a lone value between gaps shows)
        ax.plot(shown.index[-1:].append(truth.index), [shown[name].iloc[-1], *truth[name]], color=COLOURS["truth"], lw=1.6,
                label="truth", **dots)
    ax.plot(shown.index[-1:].append(future.index), [shown[name].iloc[-1], *future[name]], color=COLOURS["forecast"],
            lw=1.8, marker="o", ms=3, markevery=slice(1, None), label="forecast")
    ax.axvline(origin, color=COLOURS["origin"], ls="--", lw=1)
    ax.axvspan(origin, future.index[-1], color=COLOURS["forecast"], alpha=0.06)
    ax.set_ylabel(name)
    ax.grid(alpha=0.3)


def _date_axis(ax) -> None:
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


# ---------------------------------------------------------------- training


def training_log(run) -> pd.DataFrame:
    """Per epoch: train_loss (epoch mean), val_mse, val_mae, from the run's Lightning CSV log."""
    path = _run_dir(run) / "logs" / "metrics.csv"
    if not path.is_file():
        raise UserError(f"{path} not found: the run has no training log (was it trained by stanhop train?)")
    try:
        log = pd.read_csv(path)
    except (ValueError, OSError) as err:
        raise UserError(f"cannot read the training log {path}: {str(err).splitlines()[0]}") from None
    wanted = {"train_loss_epoch": "train_loss", "val_mse": "val_mse", "val_mae": "val_mae"}
    if "epoch" not in log.columns or not set(wanted) & set(log.columns):
        raise UserError(f"{path} has none of the columns epoch, train_loss_epoch, val_mse")
    per_epoch = {new: log.dropna(subset=[old]).groupby("epoch")[old].last() for old, new in wanted.items() if old in log.columns}
    table = pd.DataFrame(per_epoch)
    if table.empty:
        raise UserError(f"{path} holds no finished epoch yet")
    return table


def plot_training(run):
    """Training loss and validation MSE/MAE per epoch; the best epoch (lowest val MSE) marked.
    Epochs are counted from 1, as ``stanhop train`` prints them (the log counts from 0)."""
    table = training_log(run)
    table = table.set_axis(table.index + 1, axis=0)
    name = _run_dir(run).name
    fig = _figure(8, 4.5)
    ax = fig.subplots()
    styles = {"train_loss": ("train loss (MSE, scaled)", "#1f77b4", "-"), "val_mse": ("val MSE (scaled)", "#d95f02", "-"),
              "val_mae": ("val MAE (scaled)", "#d95f02", ":")}
    for column, (label, colour, ls) in styles.items():
        if column in table:
            series = table[column].dropna()
            ax.plot(series.index, series.to_numpy(), color=colour, ls=ls, marker="o", ms=4, lw=1.6, label=label)
    title = f"{name}: training"
    if "val_mse" in table and table["val_mse"].notna().any():
        best = table["val_mse"].idxmin()
        ax.plot([best], [table.loc[best, "val_mse"]], marker="*", ms=16, color="#e7298a", ls="none", label=f"best epoch {best}")
        title += f" (best val MSE {table.loc[best, 'val_mse']:.4f} at epoch {best} of {len(table)})"
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(table.index) == 1:  # one point: matplotlib would span ±0.05 with fractional ticks
        ax.set_xlim(table.index[0] - 1, table.index[0] + 1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    ax.set_title(title, fontsize=11)
    return fig


# ---------------------------------------------------------------- outliers


def outlier_table(run) -> pd.DataFrame:
    """Per module (model order): kurtosis, inf_norm_max, inf_norm_avg from metrics.json."""
    from stanhop.runs import METRICS, read_json

    path = _run_dir(run) / METRICS
    if not path.is_file():
        raise UserError(f"{path} not found; run '{command('evaluate', path.parent)}' first")
    per_module: dict[str, Any] = (read_json(path).get("outliers") or {}).get("per_module") or {}
    if not per_module:
        raise UserError(f"{path} has no outliers.per_module statistics; run '{command('evaluate', path.parent)}' to compute them")
    return pd.DataFrame.from_dict(per_module, orient="index")[["kurtosis", "inf_norm_max", "inf_norm_avg"]]


def plot_outliers(run):
    """Per-module kurtosis (3 = Gaussian) and ∞-norm (max and mean over samples) of the outputs."""
    table = outlier_table(run)
    y = np.arange(len(table))
    fig = _figure(11, 1.4 + 0.24 * len(table))
    left, right = fig.subplots(1, 2, sharey=True)
    left.barh(y, table["kurtosis"], color="#7570b3")
    left.axvline(3.0, color="black", ls="--", lw=1, label="Gaussian (3)")
    left.set_xlabel("kurtosis")
    left.legend(frameon=False, fontsize=8, loc="lower right")
    right.barh(y - 0.2, table["inf_norm_max"], height=0.4, color="#d95f02", label="largest sample")
    right.barh(y + 0.2, table["inf_norm_avg"], height=0.4, color="#1b9e77", label="mean over samples")
    right.set_xlabel("∞-norm")
    right.legend(frameon=False, fontsize=8, loc="upper right")
    left.set_yticks(y, table.index, fontsize=8)
    left.invert_yaxis()
    for ax in (left, right):
        ax.grid(axis="x", alpha=0.3)
    summary = (f"kurtosis mean {table['kurtosis'].mean():.2f}, max ∞-norm {table['inf_norm_avg'].max():.2f} "
               "(of the modules' means)")
    fig.suptitle(f"{_run_dir(run).name}: activation outliers per module ({summary})", fontsize=11)
    return fig


# ---------------------------------------------------------------- saving


def figure_format(path: str | os.PathLike) -> str:
    ext = Path(path).suffix.lower().lstrip(".")
    if ext not in FIGURE_FORMATS:
        raise UserError(f"cannot tell the figure format of {path}; end the file name in .png, .svg or .pdf")
    return ext


def save_figure(fig, path: str | os.PathLike, *, force: bool = False, dpi: int = 110) -> Path:
    """Save ``fig`` to ``path`` (format by extension) as any output is written
    (forecast.output_file: atomically, a named pipe through); refuse an existing file unless
    ``force``."""
    from stanhop.forecast import check_output, output_file

    fmt = figure_format(path)
    path = check_output(path, force=force)
    with output_file(path, binary=True) as f:
        fig.savefig(f, format=fmt, dpi=dpi)
    return path


@one_job()
def plot(run, what: str = "forecast", **kwargs):
    """``plot_forecast``, ``plot_training`` or ``plot_outliers`` by name."""
    if what not in WHATS:
        raise UserError(f"what must be one of {', '.join(WHATS)}, got {cited(what)}")
    return {"forecast": plot_forecast, "training": plot_training, "outliers": plot_outliers}[what](run, **kwargs)
