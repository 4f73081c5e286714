"""Give a trained run an external memory plugin: choose the memory set from its data, attach
Plug-and-Play or Tune-and-Play (stanhop.memory holds their mathematics), save it into the
run directory, and evaluate with and without it. What `stanhop tune` and `stanhop train
--memory` call.
"""

from __future__ import annotations

import copy
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from stanhop.config import Config
from stanhop.errors import UserError, cited, one_job, tell_once
from stanhop.runs import load_run, refuse_unwritable_run, training_lock
from stanhop.randomness import kept_random_state
from stanhop.workflow import csv_name, evaluate, run_data_module, same_windows


def check_memory_config(config: Config) -> None:
    """Raise UserError on settings no run could use (Config.validate) and memory settings no run
    with a plugin could (before any training)."""
    config.validate()
    mem = config.memory
    if mem.kind is None:
        return
    if mem.strategy == "csv" and not mem.csv:
        raise UserError("memory strategy csv needs a file: --memory-strategy csv:FILE (or memory.csv in the config)")
    if mem.strategy == "csv" and not Path(mem.csv).is_file():
        raise UserError(f"memory CSV {mem.csv} not found; give an existing file with --memory-strategy csv:FILE "
                        "(Python: memory.csv, or csv= of add_memory); a resumed run reads the file its config names: "
                        "put it back there")
    if mem.csv and mem.strategy != "csv":  # else recorded as if read, and never read
        raise UserError(f"memory.csv names a memory CSV, which only strategy csv reads (memory.strategy is "
                        f"{cited(mem.strategy)}): give --memory-strategy csv:FILE, or leave memory.csv out")


def memory_frame(config: Config, dm):
    """The memory CSV's rows (strategy csv; None for the others), read and checked as the run's
    own data (the data module ``dm``, set up) is: the run's date column and channels, no empty
    cell (unless data.fill), the run's time step, and at least one window of in_len + out_len
    rows; notices for channels whose values lie far from the training data's
    (``_far_from_training``) and for rows inside the run's validation and test period. Called
    before any training, so that a bad file cannot leave a trained run without its memory."""
    from stanhop.csvio import fill_missing, read_series
    from stanhop.forecast import check_csv_header, same_freq, step_of

    mem, m = config.memory, config.model
    if mem.kind is None or mem.strategy != "csv":
        return None
    channels, freq, window = list(dm.columns), dm.freq, m.in_len + m.out_len
    check_csv_header(mem.csv, list(channels), config.data.date_column)
    frame = read_series(mem.csv, config.data.date_column, list(channels), keep_gaps=True,  # gaps part incidents
                        keep_infinite=config.data.fill is not None)
    if not (frame.index.is_monotonic_increasing and frame.index.is_unique):
        raise UserError(f"memory CSV {mem.csv}: its timestamps must be increasing and unique; sort the rows and drop "
                        "repeated dates")
    frame = fill_missing(frame, config.data.fill, mem.csv)  # empty cells; missing timestamps part its stretches
    step = step_of(frame.index)  # None where it has gaps: stretches at the run's step, or none
    if step is not None and not same_freq(step, freq):
        raise UserError(f"memory CSV {mem.csv} has time step '{step}' but the run's data has '{freq}'; "
                        f"give windows at the run's step")
    parts = stretches(frame, freq)
    usable = [part for part in parts if len(part) >= window]
    if not usable and len(parts) == 1:
        raise UserError(f"memory CSV {mem.csv} has {len(frame)} rows, too few for one window of {m.in_len} + "
                        f"{m.out_len} steps")
    if not usable:
        raise UserError(f"memory CSV {mem.csv} has no {window} rows in a row at the run's step '{freq}' (its longest "
                        f"stretch without a gap: {max(len(part) for part in parts)}), too few for one window of "
                        f"{m.in_len} + {m.out_len} steps")
    if len(parts) > 1:
        tell_once(f"memory CSV {mem.csv}: {len(parts)} stretches without gaps (incidents); windows are taken within "
                  f"each{f', leaving out {len(parts) - len(usable)} shorter than a window ({window} rows)' if len(usable) < len(parts) else ''}")
    _far_from_training(mem.csv, frame, dm.scaler)
    first, last = dm.frame.index[dm.borders["val"][0]], dm.frame.index[dm.borders["test"][1] - 1]
    dates = _on_clock(frame.index, dm.frame.index.tz)  # a file with UTC offsets against a run without, or the other way
    inside = int(((dates >= first) & (dates <= last)).sum())
    if inside:
        tell_once(f"memory CSV {mem.csv}: {inside} of its rows lie in the run's validation and test period ({first} to "
                  f"{last}): a memory taken from them holds what the plugin is chosen on and scored on, so its "
                  "figures would flatter it")
    return frame


def stretches(frame, freq: str) -> list:
    """``frame``'s runs of rows one step ``freq`` apart: parts of it, in order."""
    from pandas.tseries.frequencies import to_offset

    index = frame.index
    if len(index) < 2:
        return [frame]
    with warnings.catch_warnings():  # a calendar offset added to every timestamp: pandas' PerformanceWarning
        warnings.simplefilter("ignore")
        next_step = index[:-1] + to_offset(freq)
    cuts = [0, *(i + 1 for i in np.flatnonzero(next_step != index[1:])), len(index)]
    return [frame.iloc[a:b] for a, b in zip(cuts[:-1], cuts[1:])]


def _on_clock(index, tz):
    """``index`` on the clock of ``tz`` (None: timestamps without a zone, read as UTC's)."""
    if index.tz is None:
        return index if tz is None else index.tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
    return index.tz_convert(tz) if tz is not None else index.tz_convert(None)


def _far_from_training(path: str, frame, scaler) -> None:
    """A notice naming the memory CSV's channels far from the run's training data
    (stanhop.scaling.far_from_training): memory windows are compared with inputs on the run's
    scale, so a file in other units (W for kW, a shifted baseline) matches no input and the
    plugin retrieves nothing useful."""
    from stanhop.scaling import far_from_training

    if far := far_from_training(frame, scaler):
        tell_once(f"memory CSV {path}: {far}; memory windows are compared with inputs on that scale, so check the "
                  "file's units")


@one_job()
@kept_random_state()
def add_memory(run_path: str | Path, *, kind: str, size: int | None = None, strategy: str | None = None,
               csv: str | None = None, epochs: int | None = None, fill: str | None = None,
               facts: dict[str, Any] | None = None, progress: bool = True, csv_rows=None) -> dict[str, Any]:
    """Give a trained run an external memory plugin (replacing one it has) and evaluate it.

    kind "plug": Plug-and-Play, λ and β₀ chosen by validation MSE; "tune": Tune-and-Play,
    starting from that β₀ and fine-tuned ``epochs`` epochs on the training split with the
    backbone frozen. The memory
    is K = ``size`` windows of the training split (or of ``csv``) chosen by ``strategy``;
    unset arguments come from the run's config (memory section), which is updated; ``fill``
    sets data.fill, for a csv memory's empty cells and missing timestamps. Writes
    memory.safetensors + memory.json; metrics.json gets ``memory`` with MSE with and without
    the plugin on validation, test and test's sudden-event subset (stanhop.memory.memory_report).
    ``csv_rows``: the memory CSV's rows as ``memory_frame`` gave them, when already read.
    """
    import torch

    from stanhop import memory as M
    from stanhop.config import save_config
    from stanhop.runs import CONFIG

    if kind not in ("plug", "tune"):  # None attached Tune-and-Play while the run's config said it had no plugin
        raise UserError(f"kind must be 'plug' (Plug-and-Play) or 'tune' (Tune-and-Play), got {cited(kind)}")
    csv = csv_name(csv, "csv", "write the memory windows to a CSV file first (frame.to_csv(path))")
    if csv is not None and strategy not in (None, "csv"):
        raise UserError(f"csv= names the memory windows' file, for strategy='csv'; leave it out with strategy={cited(strategy)}")
    strategy = "csv" if csv is not None else strategy  # a file given is the memory asked for
    if epochs is not None and kind != "tune":
        raise UserError(f"epochs= is Tune-and-Play's (kind='tune'); a {cited(kind)} memory is not trained")
    started = time.perf_counter()
    run = load_run(run_path)
    refuse_unwritable_run(run.path, "a memory plugin is saved in its run", "add the plugin to the copy")  # before any work
    # tune of a finished run: no training into it meanwhile (a training adding its plugin holds the lock itself)
    with training_lock(run.path) if facts is None else nullcontext():
        model = M.backbone(run.model)
        config, mem = run.config, run.config.memory
        mem.kind = kind
        csv = None if csv is None else str(Path(csv).expanduser().resolve())  # saved absolute: found from any folder
        for name, value in (("size", size), ("strategy", strategy), ("csv", csv), ("tune_epochs", epochs)):
            if value is not None:
                setattr(mem, name, value)
        if strategy is not None and strategy != "csv":
            mem.csv = None
        check_memory_config(config)
        own_rows = "a memory is taken from, and tuned on, the run's own training rows"
        dm = run_data_module(run, f"put it back there: {own_rows}")
        if run.data.borders and not same_windows(run, dm):  # grown or edited: its split would reach the run's test rows
            raise UserError(f"{config.data.name} no longer holds the rows {run.path} was trained on (its split borders or "
                            f"training rows differ), and {own_rows}; put back the file as it was when the run was trained")
        reading = config  # the memory CSV is read with ``fill``; the run's own data keeps its own fill
        if fill is not None and fill != config.data.fill:
            reading = copy.deepcopy(config)
            reading.data.fill = fill
        rows, first_row = _memory_rows(reading, dm, csv_rows)
        memory = M.select_memory(rows, config.model.in_len, config.model.out_len, size=mem.size, strategy=mem.strategy,
                                 seed=config.train.seed, first_row=first_row)

        use_gpu = config.train.accelerator != "cpu" and torch.cuda.is_available()
        device = torch.device("cuda" if use_gpu else "cpu")
        if kind == "plug":
            forecaster = M.plug_and_play(model.to(device), memory).to(device)
            lam, beta, _ = M.choose_plug(forecaster, dm.val_dataloader())
            details = {"lambda": lam, "beta": beta}
        else:
            # start from the β₀ that Plug-and-Play's validation grid prefers (on ETTh1 the default 16
            # finds no matches and the plugin learns nothing; 1-4 do), the gate from 0 as always
            _, beta, _ = M.choose_plug(M.plug_and_play(model.to(device), memory).to(device), dm.val_dataloader())
            forecaster = M.tune_and_play(model, memory, beta=beta, seed=config.train.seed).to(device)
            train_windows = dm.dataset("train")
            losses = M.tune(forecaster, dm.series, train_windows.first, len(train_windows), epochs=mem.tune_epochs,
                            seed=config.train.seed)
            details = {"tune_epochs": mem.tune_epochs, "tune_loss": losses[-1], "beta_start": beta}
        val = M.memory_report(forecaster, dm.val_dataloader())
        forecaster.cpu()
        settings = {"size": len(memory), "strategy": mem.strategy, "csv": mem.csv, "seed": config.train.seed}
        M.save_memory(forecaster, run.path, settings)
        save_config(config, run.path / CONFIG)
        summary = {"kind": kind, "size": len(memory), "strategy": mem.strategy, **details,
                   "val_mse": val["test_mse"], "val_mse_plain": val["test_mse_plain"],
                   "seconds": round(time.perf_counter() - started, 1)}
        return evaluate(run.path, facts={**(facts or {}), "memory": summary}, progress=progress)


def _memory_rows(config: Config, dm, frame=None):
    """(scaled rows (rows, c), row of the first) that memory windows are taken from: the
    training split, or the user's CSV (``frame``, or read with the run's columns; scaled with
    the run's scaler)."""
    import numpy as np
    import torch

    mem = config.memory
    if mem.strategy != "csv":
        start, end = dm.borders["train"]
        return dm.series[start:end], start
    if frame is None:
        frame = memory_frame(config, dm)
    return [torch.from_numpy(np.asarray(dm.scaler.transform(part.to_numpy(dtype=np.float64)), dtype=np.float32))
            for part in stretches(frame, dm.freq)], -1  # windows within each stretch without gaps
