"""Naive forecasts, the yardstick beside a model's errors.

For a window whose input ends at row t, over the same windows and steps as the model:

- naive: every step repeats the last input value, ŷ_{t+s} = x_t;
- seasonal naive: each step repeats the value one season of m steps earlier, from within
  the input, ŷ_{t+s} = x_{t+s-m·⌈s/m⌉} (m from the data's step: 24 for hourly data, 7 for
  daily; none where the input is shorter than a season).

Errors are in the model's scaled units, so their MSE and MAE compare with its figures.
"""

from __future__ import annotations

import math

import numpy as np
from pandas.tseries.frequencies import to_offset

DAY_NS = 86_400 * 10**9
SEASONS_ABOVE_A_DAY = {"B": 5, "W": 52, "M": 12, "Q": 4}  # business days a week, weeks, months, quarters a year


def season_of(freq: str) -> int | None:
    """Steps in one season of data at step ``freq``: a day of sub-daily steps, a week of days,
    a year of weeks, months or quarters; None where none applies (yearly data, odd steps)."""
    try:
        offset = to_offset(freq)
    except ValueError:
        return None
    prefix = offset.name.split("-")[0].rstrip("SE").upper() or offset.name.upper()
    if offset.n == 1 and prefix in SEASONS_ABOVE_A_DAY:
        return SEASONS_ABOVE_A_DAY[prefix]
    try:
        step = offset.nanos
    except ValueError:  # months, quarters, years have no fixed length
        return None
    if step == DAY_NS:
        return 7
    if step < DAY_NS and DAY_NS % step == 0:
        return DAY_NS // step
    return None


def naive_errors(z: np.ndarray, starts: np.ndarray, in_len: int, horizon: int, season: int | None,
                 batch: int = 4096, truth: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """MSE and MAE of the naive and (where ``season`` fits in the input) seasonal naive
    forecasts of the windows starting at ``starts`` of the scaled series ``z`` (rows, c),
    against ``truth`` (default ``z``; NaN at cells a fill made up, which are not scored)."""
    truth = z if truth is None else truth
    steps = np.arange(1, horizon + 1)
    lags = None if season is None or season > in_len else season * np.ceil(steps / season).astype(int)  # (horizon,)
    sums = {"naive": np.zeros(2)} | ({"seasonal_naive": np.zeros(2)} if lags is not None else {})
    count = 0
    for first in range(0, len(starts), batch):
        last = starts[first : first + batch] + in_len - 1  # (b,) the input's last row
        target = truth[last[:, None] + steps]  # (b, horizon, c)
        scored = ~np.isnan(target)
        count += int(scored.sum())
        guesses = {"naive": z[last][:, None, :]}
        if lags is not None:
            guesses["seasonal_naive"] = z[last[:, None] + steps - lags]
        for name, guess in guesses.items():
            error = np.where(scored, target.astype(np.float64) - guess, 0.0)
            sums[name] += np.square(error).sum(), np.abs(error).sum()
    count = max(count, 1)
    result = {name: {"mse": float(sq / count), "mae": float(ab / count)} for name, (sq, ab) in sums.items()}
    if lags is not None:
        result["seasonal_naive"]["season"] = int(season)
    return result


def describe(baselines: dict[str, dict[str, float]]) -> list[tuple[str, dict[str, float]]]:
    """(label, figures) of each baseline, for printing."""
    labels = {"naive": "naive (last value)"}
    if "seasonal_naive" in baselines:
        labels["seasonal_naive"] = f"seasonal naive ({baselines['seasonal_naive']['season']} steps back)"
    return [(labels[name], figures) for name, figures in baselines.items()]


def better_than(mse: float, baselines: dict[str, dict[str, float]]) -> tuple[str, dict[str, float]] | None:
    """(label, figures) of the baseline with the lowest MSE, where that is below the model's
    ``mse``; None where the model beats every baseline."""
    best = min(describe(baselines), key=lambda item: item[1]["mse"], default=None)
    return best if best is not None and best[1]["mse"] < mse else None


def skill(mse: float, baseline_mse: float) -> float:
    """1 - MSE / baseline MSE: the share of the baseline's squared error the model removes."""
    return 1.0 - mse / baseline_mse if baseline_mse > 0 else math.nan
