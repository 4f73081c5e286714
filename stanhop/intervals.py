"""Prediction intervals by split conformal prediction on the run's validation split.

The run forecasts the validation windows (those ``stanhop evaluate`` scores on the val
split; at most MAX_WINDOWS of them, evenly spaced) and keeps each forecast element's
absolute error in scaled units, e = |ŷ - y|, per horizon step s and channel c. For a level
L (in percent) the half-width is the conformal quantile of those n errors,

    q_{s,c} = the k-th smallest e_{s,c},   k = ⌈(n + 1) · L / 100⌉,

and the interval of a forecast is ŷ ± q_{s,c} · scale_c in original units. When the test
windows are exchangeable with the validation ones, each element lies inside with
probability at least L % (split conformal prediction; Vovk et al. 2005, Lei et al. 2018);
on drifting series the coverage a backtest reports is the honest figure.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from stanhop.errors import UserError, cited, listing, notice_to_stderr

MAX_WINDOWS = 500  # validation windows forecast, evenly spaced: enough for a 99.8 % level
MAX_ELEMENTS = 50_000_000  # errors kept (windows × horizon × channels): 200 MB of float32
REMEDY = "prediction intervals are calibrated on the run's validation split: run the command where its data is"


def parse_levels(text: str | Iterable[float] | None) -> list[float]:
    """'80,95' (or numbers, or one number) -> [80.0, 95.0]: distinct levels strictly between 0
    and 100, sorted (None or no numbers: none)."""
    if text is None:
        return []
    if isinstance(text, str):
        items = [t.strip() for t in text.split(",")]
    else:
        items = list(text) if isinstance(text, Iterable) else [text]
    levels = []
    for item in items:
        try:
            level = float(item)
        except (TypeError, ValueError):
            raise UserError(f"interval levels are percentages such as 80,95; got {cited(item)}") from None
        if not 0 < level < 100:
            raise UserError(f"an interval level is a percentage between 0 and 100 (exclusive), got {cited(item)}")
        if level < 1:  # 0.8 for 80 %, as quantile levels are written elsewhere
            raise UserError(f"interval levels are percentages: {label(level)} would be a {label(level)}% interval; "
                            f"write {label(level * 100)} for {label(level * 100)}%")
        levels.append(level)
    return sorted(set(levels))


def label(level: float) -> str:
    """80.0 -> '80', 97.5 -> '97.5': the suffix of the interval columns."""
    return f"{level:g}"


def calibration_errors(run, horizon: int, *, progress: bool = False) -> np.ndarray:
    """|ŷ - y| in scaled units over the run's validation windows (at most MAX_WINDOWS, evenly
    spaced): (n, horizon, c) float32. ``progress``: a progress bar on stderr."""
    from stanhop.forecast import own_data_and_truth, scaled, window_forecasts, windows_per_batch

    in_len = run.config.model.in_len
    frame, as_read = own_data_and_truth(run, "val", remedy=REMEDY)
    z = scaled(run, frame)  # (rows, c)
    truth = z if as_read is None else scaled(run, as_read)
    count = len(z) - in_len - horizon + 1
    if count < 1:
        raise UserError(f"the run's validation split ({len(z) - in_len} rows) is shorter than the horizon "
                        f"({horizon}): no window to calibrate intervals on; ask for a shorter horizon (CLI: --horizon)")
    most = max(1, min(MAX_WINDOWS, MAX_ELEMENTS // (horizon * z.shape[1])))
    starts = np.unique(np.linspace(0, count - 1, min(count, most)).round().astype(int))  # evenly thinned
    batches = window_forecasts(run, z, starts, horizon, windows_per_batch(run), desc="calibrating intervals",
                               progress=progress)
    return np.concatenate([np.abs(prediction - truth[rows]) for _, rows, prediction in batches])  # NaN: made up


def half_widths(errors: np.ndarray, levels: list[float]) -> dict[float, np.ndarray]:
    """The conformal quantile of ``errors`` (n, horizon, c) at each level: {level: (horizon, c)},
    each element's of its own n errors that are not NaN (a target a fill made up). An element
    with too few of them for the level gets NaN (no interval); a UserError where every one has."""
    n = (~np.isnan(errors)).sum(axis=0)  # (horizon, c)
    ordered = np.sort(errors, axis=0)  # NaN last
    widths = {}
    for level in levels:
        k = np.ceil((n + 1) * level / 100).astype(int)  # (horizon, c)
        if (k > n).all():
            needed = math.ceil(100 / (100 - level)) - 1
            raise UserError(f"a {label(level)}% interval needs at least {needed} validation windows, and the "
                            f"calibration has {n.max()} (the run's validation split, at most {MAX_WINDOWS} of its windows): "
                            f"ask for a lower level")
        picked = np.take_along_axis(ordered, np.minimum(k, len(errors))[None] - 1, axis=0)[0]
        widths[level] = np.where(k > n, np.nan, picked)
    return widths


def conformal_half_widths(run, horizon: int, levels: list[float], *, progress: bool = False) -> dict[float, np.ndarray]:
    """{level: (horizon, c) half-widths in scaled units} from the run's validation windows.

    Kept on the Run by (horizon, level): its weights do not change while it is loaded, and its
    own data is checked against the rows it was trained on before any calibration
    (forecast.check_own_rows), so a service that keeps a Run calibrates once per horizon and
    level; a level not yet kept forecasts the validation windows again."""
    kept = run.calibration  # {(horizon, level): (horizon, c), read-only}
    if missing := [level for level in levels if (horizon, level) not in kept]:
        for level, width in half_widths(calibration_errors(run, horizon, progress=progress), missing).items():
            width.flags.writeable = False  # shared by every later call
            kept[horizon, level] = width
            if lacking := [c for c, none in zip(run.data.columns, np.isnan(width).any(axis=0)) if none]:
                notice_to_stderr(f"no {label(level)}% interval for {listing(lacking)} at some or all steps: the run's "
                                 "validation split holds too few values of the file there (its fill made up the rest)")
    return {level: kept[horizon, level] for level in levels}
