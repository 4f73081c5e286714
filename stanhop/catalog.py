"""The runs under a folder, a row each: what `stanhop runs` lists.

A row holds what tells runs apart (data, separation map, window lengths, size) beside their
figures from metrics.json (validation and test MSE/MAE, the naive forecasts' test MSE on the
same windows, W8A8 MSE, the memory plugin). Only
YAML and JSON are read, never the weights, so listing hundreds of runs takes a moment; a run
that cannot be read gets a row that says why instead of stopping the listing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stanhop.config import load_config
from stanhop.datasets import looks_like_path
from stanhop.errors import UserError, cited, clipped, command
from stanhop.runs import (CONFIG, LAST_EPOCHS, MARKER, METRICS, SCALER, WEIGHTS, DataInfo, check_run_dir, damaged_file,
                          read_json, training_pid)

__all__ = ["SORT_KEYS", "find_runs", "run_row", "list_runs"]

SORT_KEYS = ("name", "val_mse", "test_mse", "test_mae")
MAX_DEPTH = 3  # runs/…, a study's study/<variant>-seed<k>/, one folder of studies above that


def find_runs(folder: str | Path) -> list[Path]:
    """Run directories (holding stanhop.json) in ``folder`` and below it, up to MAX_DEPTH
    levels, by path; ``folder`` itself when it is a run. Nothing inside a run is searched."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder; give the folder your runs are in (stanhop train --out FOLDER/NAME)")
    found, seen, level = [], set(), [folder]
    for _ in range(MAX_DEPTH + 1):
        below = []
        for path in level:
            if (path / MARKER).exists():  # (a FIFO there: a damaged run, listed with a note)
                if path.resolve() not in seen:  # a link to a run listed already (runs/latest -> runs/x): once
                    seen.add(path.resolve())
                    found.append(path)
            else:
                below += [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
        level = sorted(below, key=lambda p: (p.is_symlink(), str(p)))  # a folder before a link to it
    return sorted(found)


def run_row(path: Path) -> dict[str, Any]:
    """One run's settings and figures; ``note`` says what is missing or unusual."""
    row: dict[str, Any] = {"run": str(path)}
    if (damage := damaged_file(path)) is not None:  # none of its files is read
        return {**row, "note": damage}
    if not (path / CONFIG).is_file():
        return {**row, "note": f"incomplete: {CONFIG} is missing (did its training finish?)"}
    try:
        config = load_config(path / CONFIG)
    except UserError as err:
        return {**row, "note": f"unreadable: {err}"}
    unreadable = None
    try:
        metrics = read_json(path / METRICS) if (path / METRICS).exists() else {}
    except UserError as err:  # the settings still shown; evaluate measures the figures anew
        metrics, unreadable = {}, str(err)
    if not isinstance(metrics, dict):
        metrics, unreadable = {}, f"{path / METRICS} does not hold a JSON object"
    try:  # what forecast and evaluate read first: told here, not by their errors
        check_run_dir(path)
        if (path / SCALER).exists():
            DataInfo.from_dict(read_json(path / SCALER), path / SCALER)  # its facts checked as loading a run checks them
        damaged = None
    except UserError as err:
        damaged = str(err)
    m = config.model
    data = clipped(metrics.get("data_source") or config.data.name)  # a DataFrame's run: what it came from, not data.csv
    row.update(
        data="DataFrame" if data == "the DataFrame" else Path(data).name if looks_like_path(data) else data,
        separation=m.separation + ("+gate" if m.gate else ""), cross_series=m.cross_series,
        instance_norm=m.instance_norm, split=config.data.split,
        in_len=m.in_len, out_len=m.out_len, params=_fact(metrics.get("params")), epochs=_fact(metrics.get("epochs")),
        val_mse=_figure(metrics, "val", "mse"), test_mse=_figure(metrics, "test", "mse"),
        test_mae=_figure(metrics, "test", "mae"), w8a8_mse=_figure(metrics.get("quantized", {}), "w8a8", "mse"),
        w8a8_range=_fact((metrics.get("quantized", {}).get("w8a8") or {}).get("range")),  # how activations were measured
        memory=_fact((metrics.get("memory") or {}).get("kind")),
        naive_mse=_figure(metrics.get("baselines", {}), "naive", "mse"),
        seasonal_naive_mse=_figure(metrics.get("baselines", {}), "seasonal_naive", "mse"),
    )
    if (pid := training_pid(path)) is not None:  # its figures, if any, are of the model before this training
        row["note"] = f"training now (process {pid})" if pid > 0 else "training now"
    elif damaged is not None:
        row["note"] = f"unreadable: {damaged}"
    elif unreadable is not None:
        row["note"] = f"unreadable: {unreadable}; {command('evaluate', path)} measures its figures anew"
    elif row["test_mse"] is None:
        row["note"] = _what_is_missing(path)
    elif (ahead := _epochs_past_figures(path, metrics)) is not None:  # an interrupted resume
        row["note"] = (f"unfinished: {command('train', '--resume', path)} (its last checkpoint holds {ahead} epochs, "
                       f"its figures {metrics.get('epochs')})")
    elif not (path / WEIGHTS).is_file():  # deleted since: its figures are of weights no more there
        again = (command("train", "--resume", path) if (path / "checkpoints" / "last.ckpt").is_file()
                 else "train it again with --force")
        row["note"] = f"{WEIGHTS} is missing: {again} writes it"
    elif metrics.get("init_from"):  # train --init-from: the run it started from
        row["note"] = f"from {_fact(metrics['init_from'])}"
    if metrics.get("init_from"):  # for scripts, under metrics.json's name, whatever the note says
        row["init_from"] = _fact(metrics["init_from"])
    return row


def _epochs_past_figures(path: Path, metrics: dict[str, Any]) -> int | None:
    """The epochs of the run's last checkpoint (checkpoints/last.json) where they are more than
    its figures' (a resume stopped before its end), else None. Read from the files' contents,
    not their times, which a copy need not keep."""
    try:
        last = read_json(path / "checkpoints" / LAST_EPOCHS)["epochs"]
    except (UserError, OSError, KeyError, TypeError):  # none (older runs), or unreadable: nothing told
        return None
    figures = metrics.get("epochs")
    return last if isinstance(last, int) and isinstance(figures, int) and last > figures else None


def _what_is_missing(path: Path) -> str:
    """For a run without test figures: the command that gives them (--resume, where a
    checkpoint holds them, also gives the training's facts: epochs, time)."""
    resumable = (path / "checkpoints" / "last.ckpt").is_file()
    if (path / WEIGHTS).is_file():
        return f"not evaluated: {command('train', '--resume', path) if resumable else command('evaluate', path)}"
    if resumable or (path / "checkpoints" / "best.ckpt").is_file():  # (without last.ckpt resume says how to go on)
        return f"unfinished: {command('train', '--resume', path)}"
    return "unfinished before its first checkpoint: train it again with --force"


def list_runs(folder: str | Path, sort: str = "name") -> list[dict[str, Any]]:
    """A row per run under ``folder``, sorted by ``sort`` (a figure: smallest first, runs
    without it last); none for a folder without runs."""
    if sort not in SORT_KEYS:
        raise UserError(f"unknown sort key {cited(sort)}; choose one of {', '.join(SORT_KEYS)}")
    rows = [_listed(path) for path in find_runs(folder)]
    if sort != "name":
        rows.sort(key=lambda row: (row.get(sort) is None, row.get(sort) or 0.0))
    return rows


def _listed(path: Path) -> dict[str, Any]:
    """run_row, or for a run damaged in a way no check of it foresaw, a row that says so: the
    other runs are listed all the same."""
    try:
        return run_row(path)
    except Exception as err:  # one damaged run must not hide the others
        return {"run": str(path), "note": f"unreadable: {type(err).__name__}: {clipped(err)}"}


def _fact(value: Any) -> Any:
    """A fact of metrics.json as it is where it is a number (or missing); else its text, cut
    (clipped): a damaged or edited file may hold anything."""
    return value if value is None or isinstance(value, (int, float)) else clipped(value)


def _figure(metrics: Any, part: str, key: str) -> float | None:
    section = metrics.get(part) if isinstance(metrics, dict) else None
    value = section.get(key) if isinstance(section, dict) else None
    return float(value) if isinstance(value, (int, float)) else None
