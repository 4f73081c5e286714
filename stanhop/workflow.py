"""The main jobs, end to end: train a run directory, evaluate a finished run, quantize it.

These functions are what the CLI's `train` and `evaluate` call; a notebook user can call
them the same way.
"""

from __future__ import annotations

import copy
import math
import os
import pickle
import time
import warnings
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stanhop.config import Config, absolute_data_name, make_paths_absolute
from stanhop.errors import (Terminated, UserError, cited, command, counted, known_as, listing, log_line, notice_to_stderr,
                            one_job, redrawn_bars, writable_folder)
from stanhop.randomness import kept_determinism, kept_random_state
from stanhop.runs import (
    FRAME_DATA, LOG_BACKUP, MEMORY_SETTINGS, METRICS, TRAINING_WRITES, DataInfo, check_new_run_dir, check_run_dir,
    load_run, own_place, prepare_run_dir, read_json, refuse_if_training, refuse_unwritable_run, save_run_files, save_weights, training_lock, write_json,
)


def default_run_dir(config: Config) -> Path:
    """runs/<data>-<separation>-<timestamp> (datasets.data_label: the file's name without its
    endings when the data is a file)."""
    from stanhop.datasets import data_label

    data = data_label(str(config.data.name))
    return Path("runs") / f"{data}-{config.model.separation}{'-gated' if config.model.gate else ''}-{time.strftime('%Y%m%d-%H%M%S')}"


def _is_child_process() -> bool:
    """True in the processes Lightning's DDP launcher starts (they re-run the command)."""
    return os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0"


def make_data_module(config: Config, scaler=None):
    """The data module of a config, set up; ``scaler`` replaces the one fit on training rows.
    Validation and test go as many windows at a time as a forward pass without gradients takes
    (footprint.inference_windows: 256 of ETTh1's), or as a training step's, if more."""
    from stanhop.data import ForecastDataModule
    from stanhop.footprint import inference_windows

    m, t = config.model, config.train
    dm = ForecastDataModule(config.data, m.in_len, m.out_len, t.batch_size, scaler=scaler)
    dm.setup()
    dm.eval_batch_size = max(min(t.micro_batch_size or t.batch_size, t.batch_size), inference_windows(dm.n_series))
    return dm


def refuse_unscored(dm, name: str) -> None:
    """A UserError where the targets of ``dm``'s (set up) validation or test windows hold no
    value of the file, every one made up by its fill: no figure could be measured there (they
    would read 0)."""
    for part in ("val", "test"):
        windows = dm.dataset(part)
        first = windows.target_start(0)
        targets = dm.truth[first : first + windows.count - 1 + windows.out_len]  # (rows, c) every target row
        if targets.isnan().all():
            raise UserError(f"{name}: the {part} split's {len(targets)} target rows hold no value of the file (its fill "
                            f"made up every one): nothing to score there; remove rows that hold no values (a file's "
                            f"empty rows for future dates), or choose a split that leaves values in it (--split)")


def constant_channels(dm) -> list[str]:
    """The channels of ``dm`` (set up) that hold one value in every training row."""
    start, end = dm.borders["train"]
    rows = dm.frame.iloc[start:end]
    return [str(name) for name in rows.columns if rows[name].nunique() <= 1]


SPREAD_OF_FEW = 10.0  # a standard deviation this many times the middle half's (normal: 1, ETTh1: 0.9-1.8, t₂: 3)


def channels_scaled_by_few(dm) -> list[str]:
    """The channels of ``dm`` (set up) whose training rows' standard deviation, their scale, is
    over SPREAD_OF_FEW times the spread of their middle half (interquartile range / 1.349): a
    few extreme values (a typo, a value in other units) set the scale, and the rest of the
    channel lies squashed near its mean; each named with its most extreme value and its time."""
    start, end = dm.borders["train"]
    rows = dm.frame.iloc[start:end]
    found = []
    for name in rows.columns:
        values = rows[name]
        middle = (values.quantile(0.75) - values.quantile(0.25)) / 1.349
        spread = values.std(ddof=0)
        if middle > 0 and spread > SPREAD_OF_FEW * middle:
            at = (values - values.median()).abs().idxmax()
            found.append(f"{name} (its scale {spread:.3g} against {middle:.3g} for its middle half; {values[at]:.6g} "
                         f"at {at})")
    return found


def run_data_module(run, remedy: str = "evaluate can read a copy with --data"):
    """The data module of a finished run's config (as the caller may have edited it: another
    data file or split), with the run's columns and its own scaler, never one fit anew;
    ``remedy``: what the command can do when the data file is gone."""
    from stanhop.datasets import check_run_file
    from stanhop.scaling import Scaler

    check_run_file(str(run.config.data.name), remedy)
    run.config.data.columns = list(run.data.columns)
    return make_data_module(run.config, scaler=Scaler.from_dict({"mean": run.data.mean, "scale": run.data.scale}))


def data_info(dm, config: Config, timezone: str | None = None) -> DataInfo:
    """What the run records of its data; ``timezone``: the zone of a DataFrame's timestamps (its
    CSV copy keeps only their UTC offsets), else that of the timestamps as read ("" for none)."""
    tz = dm.frame.index.tz
    return DataInfo(
        timezone=timezone if timezone is not None else ("" if tz is None else str(tz)),
        columns=list(dm.columns), freq=dm.freq, date_column=config.data.date_column,
        mean=[float(v) for v in dm.scaler.mean], scale=[float(v) for v in dm.scaler.scale],
        target=config.data.target, borders={part: [int(start), int(end)] for part, (start, end) in dm.borders.items()},
        fingerprint=rows_fingerprint(dm.frame, dm.borders),
    )


def rows_fingerprint(frame, borders) -> str:
    """A hash of the rows the windows of split ``borders`` use in ``frame`` (its first through
    the test split's last), their timestamps and values as read: the same for the run's file
    and any copy of it, another for a file that differs in any of those rows."""
    import hashlib

    import numpy as np

    rows = frame.iloc[: borders["test"][1]]
    digest = hashlib.sha256(np.ascontiguousarray(rows.index.asi8).tobytes())
    digest.update(np.ascontiguousarray(rows.to_numpy(dtype=np.float64)).tobytes())
    return digest.hexdigest()


@one_job()
@kept_random_state()  # the training seeds every generator: a caller's draws go on as they would have
def train(config: Config, out: str | Path | None = None, *, force: bool = False, resume: str | Path | None = None,
          init_from: str | Path | None = None, frame=None, frame_name: str = "the DataFrame", progress: bool = True,
          callbacks: list | None = None) -> dict[str, Any]:
    """Train STanHop-Net into a run directory and return its metrics (also in metrics.json).

    ``resume``: continue the run in that directory from its last checkpoint (epoch,
    optimiser, schedule and early-stopping state). ``init_from``: a new run whose model
    starts from that finished run's weights (fine-tuning, e.g. on newer data); the model
    settings and channels must be the run's, the optimiser and epochs start anew, and the
    scaler is fit on the new training rows as in any run. ``frame``: train on this pandas
    DataFrame instead of ``config.data.name`` (wide, or long as neuralforecast's unique_id,
    ds, y; :mod:`stanhop.frames`); it is saved as RUN/data.csv, the run's data from then on.
    ``frame_name``: what messages call the frame (the CLI gives a long CSV's path).
    ``callbacks``: extra Lightning callbacks. The checkpoint is loaded with
    ``weights_only=True``: tensors and plain containers only, never arbitrary pickled objects.
    The training seeds Python's, NumPy's and torch's generators with ``train.seed``; they are
    put back as they were when it returns, as are torch's determinism settings, Lightning's
    loggers and the warnings filters. glibc's malloc thresholds are left alone: the CLI sets
    them (:mod:`stanhop.allocator`).
    """
    if not isinstance(config, Config):
        raise UserError(f"config must be a stanhop Config (stanhop.config.load_config(FILE), or Config()), got "
                        f"{type(config).__name__}")
    config = copy.deepcopy(config)  # the run's own: the caller's config is left as it was given
    if resume is not None and init_from is not None:
        raise UserError("a resumed run continues from its own checkpoint: leave out init_from")
    if frame is None:
        with _paths_as_given(config):
            return _train(config, out, force=force, resume=resume, init_from=init_from, progress=progress,
                          callbacks=callbacks)
    if resume is not None:
        raise UserError("a resumed run reads its own data: leave out the DataFrame")
    if (config.train.devices, config.train.num_nodes) != (1, 1):
        raise UserError("training from a DataFrame runs in one process: write it to a CSV to train on several devices")
    run_dir = check_new_run_dir(Path(out) if out is not None else default_run_dir(config), force=force)
    with staged_frame(frame, run_dir, config, frame_name) as staged:
        return _train(config, run_dir, force=force, init_from=init_from, progress=progress, callbacks=callbacks,
                      staged=staged, data_source=frame_name, zone=zone_of(frame))


def zone_of(frame) -> str | None:
    """The time zone of a DataFrame's timestamps (its DatetimeIndex, or a long frame's ds), as
    its CSV copy cannot keep it; None where they have none or are not read yet."""
    import pandas as pd

    dates = frame.index if isinstance(frame.index, pd.DatetimeIndex) else frame.get("ds")
    tz = getattr(getattr(dates, "dt", dates), "tz", None) if dates is not None else None
    return None if tz is None else str(tz)


@contextmanager
def _paths_as_given(config: Config):
    """Within the block, messages name the data file and the memory CSV as the config gives
    them, not as the absolute paths the run's saved config holds (the same notice told twice,
    once for each spelling)."""
    from stanhop.datasets import looks_like_path

    with ExitStack() as stack:
        for given in {str(name) for name in (config.data.name, config.memory.csv) if name is not None}:
            absolute = str(Path(given).expanduser().absolute())
            if looks_like_path(given) and absolute != given:
                stack.enter_context(known_as(absolute, given))
        yield


@contextmanager
def staged_frame(frame, run_dir: Path, config: Config, name: str = "the DataFrame"):
    """Write ``frame`` as a CSV beside ``run_dir`` and point ``config.data.name`` at it, for the
    training to read like any CSV (which moves it into the run once the data is accepted);
    on the way out remove a file the training did not take. Messages call it ``name``, not
    the file."""
    from stanhop.csvio import FIRST_ROW_LINE
    from stanhop.frames import write_frame

    staged = writable_folder(run_dir.parent, "--out") / f".{run_dir.name}.data.csv.tmp"
    kept = run_dir / FRAME_DATA  # where the training moves it: read again there for the evaluation
    try:
        with (known_as(str(staged.resolve()), name, first_row_line=FIRST_ROW_LINE),
              known_as(str(staged), name, first_row_line=FIRST_ROW_LINE),
              known_as(str(kept.resolve()), name, first_row_line=FIRST_ROW_LINE)):
            write_frame(frame, staged, config.data.date_column, config.data.fill, name)
            config.data.name = str(staged.resolve())
            yield staged
    finally:
        staged.unlink(missing_ok=True)


def _train(config: Config, out: str | Path | None = None, *, force: bool = False, resume: str | Path | None = None,
           init_from: str | Path | None = None, progress: bool = True, callbacks: list | None = None,
           staged: Path | None = None, data_source: str | None = None, zone: str | None = None) -> dict[str, Any]:
    """:func:`train` from ``config.data.name``; ``staged``: a DataFrame's CSV (staged_frame)
    that becomes RUN/data.csv once its data is read and the run's folder made, and
    ``data_source`` what it came from (metrics.json's data_source: "the DataFrame", or a long
    CSV's path), since the run's config names only RUN/data.csv."""
    import lightning as L
    import torch

    from stanhop.splits import unused_rows_notice
    from stanhop.training import EpochTimer, Forecaster, StoppableWhileWaiting, make_trainer, quiet_lightning

    from stanhop.memory_runs import add_memory, check_memory_config, memory_frame

    check_memory_config(config)  # before any work, not after the training
    if config.train.accelerator == "gpu" and not (torch.cuda.is_available() or torch.backends.mps.is_available()):
        raise UserError("--accelerator gpu: torch finds no GPU on this machine (a CPU-only torch build, or no driver); "
                        "use --accelerator auto or cpu")
    if config.train.precision == "16-mixed" and (config.train.accelerator == "cpu" or not torch.cuda.is_available()):
        raise UserError("train.precision 16-mixed needs a CUDA GPU (on a CPU, Lightning would run bf16-mixed while the "
                        "run's config said 16-mixed): use --precision bf16-mixed, or 32")
    source = None  # the finished run whose weights the model starts from (init_from)
    if resume is not None:
        run_dir = check_run_dir(resume)
        refuse_if_training(run_dir)  # (before the data is read; the training's lock is taken below)
        refuse_unwritable_run(run_dir, "a resumed run trains into its own folder", "resume the copy")
        for place in TRAINING_WRITES:
            own_place(run_dir, place, "a resumed run writes there: put a folder of the run's own in place of the link "
                                      "(moving its files in), or remove what stands there")
        from stanhop.datasets import check_run_file

        check_run_file(str(config.data.name), "put it back there: a resumed run reads the data it was trained on")
        ckpt = run_dir / "checkpoints" / "last.ckpt"
        if not ckpt.is_file():
            start = ("start a new run instead" if not ckpt.with_name("best.ckpt").is_file()
                     else _from_best(ckpt))  # (a full disk stopped the training before writing it)
            raise UserError(f"run {run_dir} has no checkpoints/last.ckpt to resume from; {start}")
        if zone is None:  # a DataFrame's zone, which its CSV copy does not keep, stays the run's
            from stanhop.runs import SCALER

            zone = (read_json(run_dir / SCALER) if (run_dir / SCALER).is_file() else {}).get("timezone") or None
        done = finished_epochs(ckpt)
        if done is not None and config.train.max_epochs < done:  # else Lightning's error, after the run's files changed
            raise UserError(f"run {run_dir} has trained {done} epochs, more than --max-epochs {config.train.max_epochs}: "
                            f"give at least {done} (its figures as it is: {command('evaluate', run_dir)})")
    else:
        run_dir = Path(out) if out is not None else default_run_dir(config)
        source = None if init_from is None else starting_run(init_from, run_dir, config)
        if not _is_child_process():  # refused before the data is read; created after (below)
            check_new_run_dir(run_dir, force=force)
            refuse_files_inside(run_dir, {"the data": config.data.name, "the memory CSV": config.memory.csv})
        ckpt = None
        make_paths_absolute(config)  # the saved config finds its CSV files from any folder

    L.seed_everything(config.train.seed, workers=True, verbose=False)
    dm = make_data_module(config)
    config.model.n_series = dm.n_series
    config.validate()
    windows, limit = len(dm.dataset("train")), config.train.limit_train_batches
    batches = math.ceil(windows / config.train.batch_size)
    if isinstance(limit, float) and limit * batches < 1:  # else Lightning's error, after the run's folder is made
        raise UserError(f"train.limit_train_batches {limit} of the {batches} training batches is less than one; give "
                        f"at least {1 / batches:.3g}, or a whole number of batches")
    if config.train.batch_size > windows:
        notice_to_stderr(f"train.batch_size {config.train.batch_size} is more than the {windows} training windows: "
                         "every epoch is one step of all of them")
    refuse_unscored(dm, config.data.name)
    if constant := constant_channels(dm):
        notice_to_stderr(f"{config.data.name}: column(s) {listing(constant)} hold one value all through the training "
                         "rows: the model learns nothing of them (its forecasts of them wobble around that value); "
                         "leave them out with --columns (Python: data.columns)")
    if scaled_by_few := channels_scaled_by_few(dm):
        notice_to_stderr(f"{config.data.name}: a few extreme values set the scale of {listing(scaled_by_few)} in the "
                         "training rows: the rest of such a column lies squashed near its mean, and forecasts of it are "
                         "poor however small its scaled errors; check those values (a typo, other units?) and correct "
                         "or remove them")
    memory_rows = memory_frame(config, dm)  # checked now, before any training
    memory = training_memory(config)  # (before the model is made: one too large for the machine is refused)
    module = Forecaster(config)
    if source is not None:
        start_from(module.model, source, config, dm.columns)
    fit_to_free_memory(config, dm, module.model, memory)  # before the config is saved, and before any folder is made
    with _what_is_left_told(run_dir), ExitStack() as held:  # an interrupt from here on (training, or the evaluation
        # after it): what the run folder holds, and how to go on
        if not _is_child_process():
            if resume is None:  # the data read and the config valid: only now is a previous run replaced
                prepare_run_dir(run_dir, force=force)
                if staged is not None:  # the DataFrame's CSV becomes the run's own data
                    config.data.name = str(staged.replace(run_dir / FRAME_DATA).resolve())
                if unused := unused_rows_notice(len(dm.frame), dm.borders["test"][1], config.data.split, config.data.name):
                    notice_to_stderr(unused)
            held.enter_context(training_lock(run_dir))  # till the run is evaluated: no other training into it
            save_run_files(run_dir, config, data_info(dm, config, zone))

        if config.train.num_nodes > 1 and not _is_child_process():  # else it seems to hang: it waits for the others
            notice_to_stderr(f"training on {config.train.num_nodes} machines: this one waits until the same command runs on "
                             f"the others, each with NODE_RANK=1..{config.train.num_nodes - 1} and MASTER_ADDR / MASTER_PORT "
                             f"naming this machine (Lightning's DDP)")
        held.enter_context(quiet_lightning())  # (the loggers and warnings filters as they were when train() returns)
        held.enter_context(kept_determinism())  # Trainer(deterministic=True) sets torch's determinism for the process
        timer = EpochTimer()
        waiting = []
        if config.train.num_nodes > 1 and not _is_child_process():  # Ctrl+C and SIGTERM heard while it waits
            waiting = [StoppableWhileWaiting(lambda: _after_interrupt(run_dir))]
            held.callback(waiting[0].stop)
        trainer = make_trainer(config, run_dir, progress=progress, extra_callbacks=[timer, *waiting, *(callbacks or [])])
        earlier_log = protect_log(run_dir) if resume is not None else []
        try:
            trainer.fit(module, datamodule=dm, ckpt_path=ckpt, weights_only=True)
        except pickle.UnpicklingError:
            raise UserError(_unsafe(ckpt)) from None
        except SystemExit as ended:
            if trainer.interrupted:  # Lightning ends Ctrl+C with a silent sys.exit(1): say what is left and how to go on
                # SIGTERM: at the next batch's end, or (before Lightning's handler is set) as our Terminated
                sigterm = trainer.received_sigterm or isinstance(ended.__context__, Terminated)
                stop = Terminated if sigterm else KeyboardInterrupt
                raise stop(_after_interrupt(run_dir)) from None
            raise
        if not trainer.is_global_zero:
            return {}
        if resume is not None:
            write_log(run_dir, combine_logs(earlier_log, read_log(run_dir)))
            (run_dir / "logs" / LOG_BACKUP).unlink(missing_ok=True)

        best = trainer.checkpoint_callback.best_model_path or str(run_dir / "checkpoints" / "last.ckpt")
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]  # tensors only, no pickled code
        model = module.model.cpu()
        model.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})
        kept = _kept_facts(run_dir) if resume is not None else {}
        # the figures of the weights replaced now go first: none (stanhop runs: not evaluated) rather than stale ones
        (run_dir / METRICS).unlink(missing_ok=True)
        save_weights(model, run_dir / "model.safetensors")

        facts = {
            **kept,
            "params": sum(p.numel() for p in model.parameters()),
            "epochs": trainer.current_epoch,
            "train_seconds": round(timer.seconds, 1),
            "best_checkpoint": Path(best).name,
            **({} if source is None else {"init_from": str(source.path.resolve())}),  # found from any folder
            **({} if data_source is None else {"data_source": data_source}),
        }
        if config.memory.kind is not None:
            return add_memory(run_dir, kind=config.memory.kind, facts=facts, progress=progress, csv_rows=memory_rows)
        return evaluate(run_dir, facts=facts, progress=progress)


# what a resumed run writes below its folder (Lightning's CSV logger and checkpoints, protect_log)
def _kept_facts(run_dir: Path) -> dict[str, Any]:
    """What a resumed run's metrics.json says of where its model came from (init_from,
    data_source), which the resumed training does not know itself."""
    try:
        previous = read_json(run_dir / METRICS) if (run_dir / METRICS).is_file() else {}
    except UserError:  # damaged: nothing to keep
        return {}
    return {key: previous[key] for key in ("init_from", "data_source") if isinstance(previous, dict) and key in previous}


def finished_epochs(ckpt: Path) -> int | None:
    """How many epochs the checkpoint ``ckpt`` has finished (None where it does not say); a
    UserError when it cannot be read (cut short by a full disk, emptied), saying how to go on."""
    try:
        epoch = _checkpoint_epoch(ckpt)
    except pickle.UnpicklingError:  # more than weights: refused before any work
        raise UserError(_unsafe(ckpt)) from None
    except Exception as err:  # torch says RuntimeError (a zip cut short), EOFError (empty), ...
        text = (str(err).splitlines() or [type(err).__name__])[0].split(". ")[0][:120]  # torch's first sentence
        why = "an empty file" if ckpt.stat().st_size == 0 else text
        raise UserError(f"cannot read checkpoint {ckpt} ({why}): it is damaged or cut short (a full disk?); "
                        f"{_from_best(ckpt)}") from None
    return None if epoch is None else int(epoch) + 1


def _unsafe(ckpt: Path) -> str:
    """Why the checkpoint ``ckpt`` was refused, and what to do; in our words: torch's own text
    ends by suggesting the loading that would run the checkpoint's code."""
    return (f"checkpoint {ckpt} was not loaded: besides tensors and plain values it holds pickled objects, which "
            "loading would run as code (unsafe to unpickle); resume only from a checkpoint stanhop wrote, or train the "
            "run again with --force")


def _from_best(last: Path) -> str:
    """How to go on when the checkpoint ``last`` is missing or damaged: from best.ckpt beside
    it where that one is readable, else by training again."""
    import shlex

    best = last.with_name("best.ckpt")
    try:
        epoch = _checkpoint_epoch(best) if best.is_file() else None
    except Exception:  # damaged too
        epoch = None
    if epoch is None:
        return "train the run again with --force"
    return (f"go on from checkpoints/best.ckpt (epoch {epoch + 1}) with: {shlex.join(['cp', str(best), str(last)])} "
            f"&& {command('train', '--resume', last.parent.parent)}, or train the run again with --force")


def _checkpoint_epoch(ckpt: Path) -> int | None:
    """The 'epoch' (from 0) a Lightning checkpoint records; torch's error where it cannot be read."""
    import zipfile

    import torch

    whole = zipfile.is_zipfile(ckpt)  # (mmap reads only torch's zip format: not a file cut short, nor a bare pickle)
    with warnings.catch_warnings():  # a bare pickle's protocol: torch's two-line warning before our own error
        warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
        epoch = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=whole).get("epoch")
    return None if epoch is None else int(epoch)


# the model settings that decide the weights' shapes and meaning: a run starts from another's
# weights only where these are the same
WEIGHT_SETTINGS = ("n_series", "in_len", "out_len", "seg_len", "win_size", "d_model", "d_ff", "n_heads", "e_layers",
                   "factor", "cross_series", "separation", "gate", "instance_norm")


@dataclass
class StartingRun:
    """A finished run whose weights a new run starts from (``train --init-from``)."""

    path: Path
    config: Config
    data: DataInfo


def check_starting_run(path: str | Path, run_dir: str | Path | None) -> Path:
    """The folder of the finished run at ``path`` that a new run at ``run_dir`` starts from: a
    UserError unless it is complete and not the new run's own folder (it is kept)."""
    from stanhop.runs import CONFIG, SCALER, WEIGHTS

    source = check_run_dir(path)
    for name in (CONFIG, SCALER, WEIGHTS):
        if not (source / name).is_file():
            raise UserError(f"--init-from {source}: its {name} is missing (did its training finish?)")
    if run_dir is not None and Path(run_dir).resolve() == source.resolve():
        raise UserError(f"--init-from {source} is the run to start from and is kept: give the new run another --out")
    return source


def starting_run(path: str | Path, run_dir: Path, config: Config) -> StartingRun:
    """The finished run at ``path``, checked before any work: complete, not the new run's own
    folder (it is kept), and whose channels the new data has. When the config names no
    channels, the run's are chosen, in its order."""
    from stanhop.config import load_config
    from stanhop.runs import CONFIG, SCALER

    source = check_starting_run(path, run_dir)
    start = StartingRun(source, load_config(source / CONFIG), DataInfo.from_dict(read_json(source / SCALER), source / SCALER))
    if config.data.columns is None:
        from stanhop.datasets import looks_like_path

        name = str(config.data.name)
        if looks_like_path(name) and Path(name).expanduser().is_file():  # said in forecast's words
            from stanhop.csvio import header_of
            from stanhop.forecast import require_file_channels

            path = Path(name).expanduser()
            require_file_channels(path, header_of(path), start.data.columns, config.data.date_column)
        config.data.columns = list(start.data.columns)
    return start


def start_from(model, source: StartingRun, config: Config, columns: list[str]) -> None:
    """Load ``source``'s weights into ``model`` (built from ``config``), after checking that
    both models have the same settings and the new data the same channels, in order."""
    from stanhop.runs import WEIGHTS, load_weights

    if list(columns) != list(source.data.columns):
        raise UserError(f"--init-from {source.path}: it was trained on the channels {listing(source.data.columns)}, "
                        f"and this data gives {listing(columns)}; choose its channels, in its order, with --columns")
    different = [f"{key} ({cited(getattr(config.model, key))} here, {cited(getattr(source.config.model, key))} there)"
                 for key in WEIGHT_SETTINGS if getattr(config.model, key) != getattr(source.config.model, key)]
    if different:
        raise UserError(f"--init-from {source.path}: its model differs in {', '.join(different)}; "
                        f"start from a run with these settings, or train with its own (leave out --config and the model options)")
    load_weights(model, source.path / WEIGHTS)
    if not _is_child_process():
        notice_to_stderr(f"the model starts from the weights of {source.path}")


def training_memory(config: Config):
    """The memory a training on the CPU in one process may take (stanhop.footprint.free_memory),
    or None where it is not estimated (on a GPU, in several processes, or not known); a
    UserError when the model's parameters with their gradients and Adam's moments would not fit
    in it, found on the model made on torch's meta device, which allocates nothing."""
    import torch

    from stanhop import footprint
    from stanhop.model import STanHopNet

    t = config.train
    on_gpu = t.accelerator == "gpu" or (t.accelerator == "auto" and (torch.cuda.is_available() or torch.backends.mps.is_available()))
    memory = footprint.free_memory()
    if on_gpu or (t.devices, t.num_nodes, t.strategy) != (1, 1, "auto") or memory is None:
        return None
    with torch.device("meta"):
        footprint.refuse_oversized_model(STanHopNet(config.model), memory)
    return memory


def fit_to_free_memory(config: Config, dm, model, memory) -> None:
    """Lower train.micro_batch_size (and the evaluation's windows per pass) when a training
    step of the planned windows of ``model`` would not fit in ``memory`` (training_memory) beside
    its parameters (stanhop.footprint), with a notice; validation and test passes take no more
    windows than a training step could (a bound: they keep no activations for a backward pass).
    Not with activation checkpointing (whose saved tensors do not tell its peak)."""
    from stanhop import footprint

    t, m = config.train, config.model
    if memory is None or m.checkpoint:
        return
    planned = min(t.micro_batch_size or t.batch_size, t.batch_size, len(dm.dataset("train")))  # a step's windows
    measured = footprint.activations(model, m.in_len, m.n_series, bf16=t.precision == "bf16-mixed")
    state = footprint.training_state(model)
    fitting = footprint.fit_micro_batch(planned, measured, memory, m.n_series, state)  # min(planned, most that fit)
    dm.eval_batch_size = min(dm.eval_batch_size, footprint.most_windows(measured, memory, state))
    if fitting < planned:
        notice_to_stderr(
            f"a training step of {planned} windows of {m.n_series} series would hold ≈ "
            f"{measured.step_peak(planned) / footprint.GiB:.1f} GiB of activations, more than fit beside the parameters in "
            f"{footprint.usable(memory)}: training goes {fitting} windows at a time (train.micro_batch_size "
            f"{fitting}: more time per step; the batch's gradients, though with dropout its masks are other draws)")
        t.micro_batch_size = fitting



@contextmanager
def _what_is_left_told(run_dir: Path):
    """Ctrl+C or SIGTERM inside: raised again, saying what the run folder holds and how to go
    on (_after_interrupt), unless it says so already."""
    try:
        yield
    except KeyboardInterrupt as stop:
        if str(stop):
            raise
        raise type(stop)(_after_interrupt(run_dir)) from None


def _after_interrupt(run_dir: Path) -> str:
    """What an interrupted training left in run_dir, and the command that goes on from it."""
    if (run_dir / "checkpoints" / "last.ckpt").is_file():
        return f"continue from the last checkpoint with: {command('train', '--resume', run_dir)}"
    return f"{run_dir} holds no checkpoint yet (the first epoch did not end); train again with --force to replace it"


def read_log(run_dir: Path, name: str = "metrics.csv") -> list[dict[str, str]]:
    """Rows of the run's CSV log (logs/metrics.csv), or [] when there is none."""
    import csv

    path = run_dir / "logs" / name
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_log(run_dir: Path, rows: list[dict[str, str]]) -> None:
    import csv

    fields = list(dict.fromkeys(key for row in rows for key in row))
    with open(run_dir / "logs" / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def combine_logs(earlier: list[dict[str, str]], later: list[dict[str, str]]) -> list[dict[str, str]]:
    """The earlier rows of the epochs before the first one in ``later``, then ``later``."""
    first_later = min((int(row["epoch"]) for row in later if row.get("epoch")), default=None)
    if first_later is None:
        return earlier
    return [row for row in earlier if row.get("epoch") and int(row["epoch"]) < first_later] + later


def protect_log(run_dir: Path) -> list[dict[str, str]]:
    """Before a resume: Lightning's CSV logger starts its file anew, so keep the history in
    logs/metrics.before-resume.csv until the resumed training has merged it back (a resume
    that is itself interrupted leaves the backup, and the next resume uses it)."""
    import shutil

    history = combine_logs(read_log(run_dir, LOG_BACKUP), read_log(run_dir))
    if history:
        backup = run_dir / "logs" / LOG_BACKUP
        write_log(run_dir, history)
        shutil.copyfile(run_dir / "logs" / "metrics.csv", backup)
    return history


def refuse_files_inside(run_dir: Path, files: dict[str, str | None]) -> None:
    """A UserError when one of ``files`` (what: path) lies in ``run_dir``, a folder that
    force=True would replace before the training reads it again (evaluation, the memory)."""
    if not run_dir.exists():
        return
    from stanhop.datasets import looks_like_path

    folder = run_dir.resolve()
    for what, name in files.items():
        if name and looks_like_path(str(name)) and Path(name).expanduser().resolve().is_relative_to(folder):
            raise UserError(f"{what} {name} lies in {run_dir}, which a new run there replaces: copy it out of that "
                            f"folder first, or train into another (CLI: --out; Python: out=)")


def csv_name(value, argument: str, instead: str) -> str | None:
    """A CSV path (or a data set's name) given as str or os.PathLike, as the str that configs and
    metrics.json keep; None stays None; anything else (a DataFrame) is a UserError naming
    ``argument`` and what to do ``instead``."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise UserError(f"{argument} must be a CSV path (str or pathlib.Path), got {type(value).__name__}; {instead}")


@one_job()
@kept_random_state()
def evaluate(run_path: str | Path, *, data: str | None = None, split: str | None = None, quantize: str | None = None,
             act_range: str = "minmax", facts: dict[str, Any] | None = None, progress: bool = True,
             date_column: str | None = None, fill: str | None = None, _data_name: str | None = None) -> dict[str, Any]:
    """Test and validation MSE/MAE, outlier statistics and (optionally) W8A8 MSE of a run.

    ``data``/``split`` evaluate on another CSV (wide, or long as neuralforecast's unique_id,
    ds, y) with the same channels, or another split; the run's own scaler is used either way.
    ``date_column``: the timestamp column of ``data`` (default: the run's); ``fill``: ffill or
    interpolate, how ``data``'s empty cells and missing timestamps are filled (default: the run's
    data.fill; filled cells are inputs, never scored). Results are merged into the run's metrics.json when
    they are of the run's own windows (``same_windows``); figures of other data or another
    split are only returned, with a notice, so the run's own figures are never replaced.
    """
    from stanhop.evaluation import forecast_errors
    from stanhop.outliers import OutlierMonitor
    from stanhop.scaling import INPUT_FAR_MEAN, INPUT_FAR_SPREAD, far_from_training

    if quantize is not None:
        _check_quantize(quantize, act_range)  # before any work, not after the FP32 evaluation
    data = csv_name(data, "data", "to score a DataFrame, use stanhop.load_run(run).backtest(frame)")
    if date_column is not None and data is None:
        raise UserError("date_column (CLI: --date-column) names the timestamp column of another CSV: give it with "
                        "data (CLI: --data), or leave it out: the run's own data has its own")
    if fill is not None and data is None:
        raise UserError("fill (CLI: --fill) fills the empty cells of another CSV: give it with data (CLI: --data), or "
                        "leave it out: the run's own data is filled by its data.fill")
    from stanhop.csvio import FILLS

    if fill not in (None, *FILLS):
        raise UserError(f"fill must be ffill or interpolate, got {cited(fill)}")
    after_training = facts is not None  # (called by a training or tuning, which holds the run's lock itself)
    if not after_training:
        refuse_if_training(check_run_dir(run_path))  # its weights and metrics.json change meanwhile
    run = load_run(run_path)
    config = run.config
    try:  # read before the passes: a damaged file is told at once
        previous = read_json(run.path / METRICS) if (run.path / METRICS).exists() else {}
        if not isinstance(previous, dict):
            raise UserError(f"{run.path / METRICS} does not hold a JSON object")
    except UserError as err:  # damaged (cut short, edited): measured anew; the file is kept aside, not replaced
        previous, unreadable = {}, err
    else:
        unreadable = None
    if data is not None:
        from stanhop.csvio import read_long
        from stanhop.forecast import check_csv_header
        from stanhop.frames import as_wide_csv

        if (long := read_long(data, keep_infinite=(fill or run.config.data.fill) is not None)) is not None:  # its wide form
            if date_column not in (None, "ds"):
                raise UserError(f"{data} is long (unique_id, ds, y): its timestamps are in ds; leave out --date-column")
            with as_wide_csv(long, run.data.date_column, data, fill or run.config.data.fill) as staged:
                return evaluate(run.path, data=str(staged), split=split, quantize=quantize, act_range=act_range,
                                facts=facts, progress=progress, fill=fill, _data_name=data)
        config.data.date_column = date_column or run.data.date_column
        check_csv_header(data, run.data.columns, config.data.date_column, named_by="--date-column (Python: date_column=)")
        config.data.name = data
        config.data.fill = fill or config.data.fill
    if split is not None:
        config.data.split = split
    dm = run_data_module(run)
    if not after_training:  # (a training has checked its own)
        refuse_unscored(dm, data or config.data.name)
    if data is not None:
        from stanhop.forecast import refuse_other_step

        refuse_other_step(run, dm.freq, data)  # scored by a model of another step, its figures would mean nothing
    if data is not None and (far := far_from_training(dm.frame, dm.scaler, INPUT_FAR_MEAN, INPUT_FAR_SPREAD)):
        notice_to_stderr(f"{data}: {far}; the model's errors on data so far from what it learned mean little (other "
                         "units?)")

    from tqdm.auto import tqdm

    bars = progress and redrawn_bars()

    def bar(loader, what: str):
        if progress and not bars:  # a log file: a line per pass, not a bar
            log_line(f"evaluating the {what} split: {counted(len(loader.dataset), 'window')}")
        return tqdm(loader, desc=what, unit="batch", leave=False, disable=not bars)

    test_loader, val_loader = dm.test_dataloader(), dm.val_dataloader()
    with OutlierMonitor(run.model) as monitor:  # the outlier statistics come from the test pass's activations
        test = forecast_errors(run.model, bar(test_loader, "test"), run.data.mean, run.data.scale)
    outliers = monitor.summary()
    from stanhop.memory import MemoryForecaster, backbone, memory_report

    if isinstance(run.model, MemoryForecaster):  # it wraps the model: its modules keep the names of a plain run
        outliers["per_module"] = {name.removeprefix("model."): v for name, v in outliers["per_module"].items()}
    val = forecast_errors(run.model, bar(val_loader, "validation"), run.data.mean, run.data.scale)
    baselines = test_baselines(dm, config.model.in_len, config.model.out_len)
    if facts is not None:  # called after training or tuning: the model changed, so its W8A8 figures are stale
        previous.pop("quantized", None)
    own = same_windows(run, dm) if run.data.borders else data is None and split is None
    if not own:  # keep what describes the model; what was measured on the run's own windows does not apply
        plugin = {k: v for k, v in previous.get("memory", {}).items() if not k.startswith("val_")}
        previous = {key: previous[key] for key in RUN_FACTS if key in previous} | ({"memory": plugin} if plugin else {})
    if isinstance(run.model, MemoryForecaster):  # a memory plugin is attached: the side-by-side figures, on this data
        settings = (facts or {}).get("memory") or previous.get("memory") or _plugin_settings(run, val_loader)
        facts = {**(facts or {}), "memory": {**settings, **memory_report(run.model, test_loader)}}
    elif previous.pop("memory", None) is not None:  # its files were deleted: the figures are of a model no more
        notice_to_stderr(f"{run.path} has no memory plugin now ({MEMORY_SETTINGS} is gone): its figures are dropped "
                         f"from {METRICS}")
    previous.setdefault("params", sum(p.numel() for p in backbone(run.model).parameters()))
    metrics = {
        **previous,
        "test": test,
        "val": {"mse": val["mse"], "mae": val["mae"]},
        "baselines": baselines,
        "outliers": outliers,
        **(facts or {}),
        "separation": config.model.separation,
        "gate": config.model.gate,
        "cross_series": config.model.cross_series,
        "instance_norm": config.model.instance_norm,
        "split": config.data.split,
        "data": absolute_data_name(_data_name or config.data.name),  # where the scored file is, from any folder
        "in_len": config.model.in_len,
        "out_len": config.model.out_len,
    }
    if quantize is not None:
        metrics.setdefault("quantized", {})[quantize] = quantized_errors(run, dm, test["mse"], act_range, quantize)
    if own:
        if not after_training:  # a training began meanwhile: these figures are of the model it replaces
            refuse_if_training(run.path)
        try:
            if unreadable is not None:
                kept = (run.path / METRICS).rename(run.path / f"{METRICS}.unreadable")
                notice_to_stderr(f"{unreadable}; it is kept as {kept} and {METRICS} is written anew (the training's "
                                 "facts it held, such as epochs, are not in the new one)")
            write_json(run.path / METRICS, metrics)
        except OSError as err:
            if after_training:  # this command's own training or tuning: a run without figures is no success
                again = command("train", "--resume", run.path) if "epochs" in facts else command("evaluate", run.path)
                raise UserError(f"cannot write {METRICS} in {run.path} ({err.strerror}): the run has its model but no "
                                f"figures; free some space or make it writable, then {again} writes them") from None
            # someone else's run (a read-only archive, another user's): the figures are still given
            notice_to_stderr(f"cannot write {METRICS} in {run.path} ({err.strerror}); these figures are not saved in "
                             "the run")
    else:
        notice_to_stderr(f"{run.path / METRICS} is unchanged: it keeps the figures of the run's own data and split; "
                         f"these are of {config.data.name}, split {config.data.split}")
    from stanhop.baselines import better_than

    if beaten := better_than(test["mse"], baselines):
        label, figures = beaten
        notice_to_stderr(f"the {label} forecast has a lower test MSE than the model ({figures['mse']:.4f} against "
                         f"{test['mse']:.4f}): see 'the naive forecast beats the model' in the README's Troubleshooting")
    return metrics


def _plugin_settings(run, val_loader) -> dict[str, Any]:
    """metrics.json's memory settings and validation figures, as tuning wrote them, from the
    plugin and its memory.json (for a run whose metrics.json was lost)."""
    from stanhop.memory import memory_report

    saved = read_json(run.path / MEMORY_SETTINGS)
    val = memory_report(run.model, val_loader)
    return {"kind": run.model.kind, "size": len(run.model.windows), "strategy": saved.get("strategy"),
            **{key: saved[key] for key in ("lambda", "beta") if key in saved},
            "val_mse": val["test_mse"], "val_mse_plain": val["test_mse_plain"]}


RUN_FACTS = ("params", "epochs", "train_seconds", "best_checkpoint", "init_from", "data_source")  # metrics.json's keys that describe the model


def test_baselines(dm, in_len: int, out_len: int) -> dict[str, dict[str, float]]:
    """The naive and seasonal naive forecasts' MSE/MAE on ``dm``'s test windows (scaled units)."""
    import numpy as np

    from stanhop.baselines import naive_errors, season_of
    from stanhop.splits import window_range

    first, count = window_range("test", dm.borders, in_len, out_len)
    return naive_errors(dm.series.numpy(), np.arange(first, first + count), in_len, out_len, season_of(dm.freq),
                        truth=dm.truth.numpy())


def same_windows(run, dm) -> bool:
    """Whether ``dm`` (set up) holds the run's own windows: the same split borders, and the same
    rows (the same file, or a copy of it). Runs saved before ``rows_fingerprint`` compare the
    training rows' mean and scale with the run's."""
    import numpy as np

    from stanhop.scaling import Scaler

    borders = {part: [int(start), int(end)] for part, (start, end) in dm.borders.items()}
    if borders != run.data.borders:
        return False
    if run.data.fingerprint is not None:
        return rows_fingerprint(dm.frame, dm.borders) == run.data.fingerprint
    start, end = dm.borders["train"]
    fitted = Scaler.fit(dm.frame.to_numpy(dtype=np.float64)[start:end])
    return bool(np.allclose(fitted.mean, run.data.mean, rtol=1e-9, atol=1e-12)
                and np.allclose(fitted.scale, run.data.scale, rtol=1e-9, atol=1e-12))


QUANTIZATION_BITS = {"w8a8": (8, 8)}  # scheme -> (weight bits, activation bits)
CALIBRATION_BATCHES = 8


def _check_quantize(quantize: str, act_range: str) -> None:
    from stanhop.quantize import parse_range

    if quantize not in QUANTIZATION_BITS:
        raise UserError(f"unknown quantization {cited(quantize)}; choose one of {', '.join(QUANTIZATION_BITS)}")
    parse_range(act_range)


def quantized_errors(run, dm, fp32_mse: float, act_range: str, quantize: str = "w8a8") -> dict[str, float]:
    """Fake-quantized test MSE/MAE, ranges calibrated on CALIBRATION_BATCHES training batches.

    The calibration batches are a random draw of the training windows that is the same at
    every call (seed 0, the global random state is left as it was), so repeated evaluations
    of a run give the same numbers. mse_increase = MSE_quantized / MSE_fp32 − 1.
    """
    from itertools import islice

    import torch

    from stanhop.evaluation import forecast_errors
    from stanhop.quantize import parse_range, quantize_model

    weight_bits, act_bits = QUANTIZATION_BITS[quantize]
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the shuffling train loader draws its order from the global generator
        calibration = [x for x, _ in islice(iter(dm.train_dataloader()), CALIBRATION_BATCHES)]
    quantized = quantize_model(run.model, calibration, weight_bits=weight_bits, act_bits=act_bits, act_range=act_range)
    errors = forecast_errors(quantized, dm.test_dataloader(), run.data.mean, run.data.scale)
    return {"mse": errors["mse"], "mae": errors["mae"], "range": str(parse_range(act_range)),  # one spelling
            "mse_increase": errors["mse"] / fp32_mse - 1.0}


@one_job()
@kept_random_state()
def quantize_run(run_path: str | Path, *, quantize: str = "w8a8", act_range: str = "minmax") -> dict[str, Any]:
    """Add only ``quantized.<quantize>`` to an evaluated run's metrics.json and return the metrics.

    Cheaper than ``evaluate(run, quantize=...)`` when the FP32 test results are already there
    (it does not recompute them, the validation errors or the outlier statistics).
    """
    _check_quantize(quantize, act_range)
    refuse_if_training(check_run_dir(run_path))  # its metrics.json is rewritten when the training ends
    run = load_run(run_path)
    metrics = run.metrics
    if "test" not in metrics:
        raise UserError(f"run {run.path} has no test results in {METRICS}; run '{command('evaluate', run.path)}' first")
    config = run.config
    config.data.name = metrics.get("data", config.data.name)  # where the FP32 results were measured
    config.data.split = metrics.get("split", config.data.split)
    dm = run_data_module(run)
    metrics.setdefault("quantized", {})[quantize] = quantized_errors(run, dm, metrics["test"]["mse"], act_range, quantize)
    refuse_if_training(run.path)  # a training began meanwhile: these figures are of the model it replaces
    write_json(run.path / METRICS, metrics)
    return metrics
