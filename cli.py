"""The `stanhop` command line: click commands only.

Each command parses its options, calls the library, prints, and maps errors to exit codes:
a user's mistake (stanhop.errors.UserError) is one line on stderr and exit 2; an internal
error is a short message and exit 1; `--debug` shows the traceback. Heavy modules (torch,
lightning, pandas) are imported inside the commands so that `stanhop --help` stays fast.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import json
import os
import signal
import sys
import threading
import traceback

import click

from stanhop import __version__
from stanhop.allocator import retain_freed_memory
from stanhop.errors import (Terminated, UserError, abridged, bounded, clipped, command, counted, listing, notice_to_stderr,
                            one_job, redrawn_bars)

CONTEXT = {"show_default": True, "help_option_names": ["-h", "--help"], "max_content_width": 100}
MEMORY_STRATEGY_HELP = ("How the K memory windows are chosen from the training split: random; all (every window, "
                        "evenly thinned to K when there are more); extremes (the K with the largest change, the "
                        "sudden events); csv:FILE (windows of FILE, evenly thinned to K)")


_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2: a bare group shows its help


def _terminated(signum, frame) -> None:
    raise Terminated()


class StanhopGroup(click.Group):
    """A click group that turns exceptions into one-line messages and exit codes."""

    def invoke(self, ctx: click.Context):
        debug = ctx.params.get("debug", False) or ctx.obj == "debug"
        if threading.current_thread() is threading.main_thread():  # (only there may a handler be set)
            signal.signal(signal.SIGTERM, _terminated)  # told as Ctrl+C is (Lightning's own handler takes over in fit)
        try:
            with one_job():  # each notice once in the command
                return super().invoke(ctx)
        except _NO_ARGS_IS_HELP:  # a bare group: its help, as click shows it
            raise
        except click.UsageError as err:  # an unknown command or option, a bad option value: one line, as any mistake
            command = ctx.command_path + (f" {ctx.invoked_subcommand}" if ctx.invoked_subcommand else "")
            _tell_usage_error(err, err.ctx.command_path if err.ctx is not None and err.ctx is not ctx else command)
            ctx.exit(2)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except UserError as err:
            if debug:
                traceback.print_exc()
            click.echo(f"error: {bounded(str(err))}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt as err:  # Ctrl+C or SIGTERM; the message, if any, says what is left and how to go on
            after_bar = "\n" if redrawn_bars() else ""  # a progress bar's line on a terminal; none in a log
            click.echo(f"{after_bar}interrupted: {bounded(str(err))}" if str(err) else "interrupted", err=True)
            ctx.exit(143 if isinstance(err, Terminated) else 130)  # 128 + the signal, as the shell reports it
        except BrokenPipeError:  # the reader of the output left (`stanhop ... | head`): stop quietly
            _silence_stdout()
            ctx.exit(141)  # as a Unix tool stopped by SIGPIPE
        except Exception as err:  # an internal error (short unless --debug), or a write that failed
            told = _cannot_write(err) if isinstance(err, OSError) else None  # a full or read-only disk: one line
            if debug:
                traceback.print_exc()
            if told is not None:
                click.echo(f"error: {told}", err=True)
                ctx.exit(2)
            elif not debug:
                click.echo(f"internal error: {type(err).__name__}: {bounded(str(err))} (rerun with --debug for the traceback)", err=True)
            ctx.exit(1)

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as err:
            if parent is not None or isinstance(err, _NO_ARGS_IS_HELP):  # a subgroup's: its parent's invoke tells it
                raise
            _tell_usage_error(err, info_name or "stanhop")  # the top level's own options (stanhop --bogus)
            raise click.exceptions.Exit(2) from None


# what a write meets on a full or read-only disk, in another user's folder, or with a name too long,
# and what to do about it
_ELSEWHERE = "write somewhere else (another --out / --output, another folder)"
_WRITE_ERRORS = {errno.ENOSPC: f"free some space, or {_ELSEWHERE}", errno.EDQUOT: f"free some space, or {_ELSEWHERE}",
                 errno.EROFS: _ELSEWHERE, errno.EACCES: f"make it yours to write, or {_ELSEWHERE}",
                 errno.EPERM: f"make it yours to write, or {_ELSEWHERE}", errno.ENAMETOOLONG: "choose a shorter name"}


def _cannot_write(err: OSError) -> str | None:
    """The one-line message for an OSError of writing a file wherever the command writes (a
    full, read-only or another user's disk; a name too long); None for any other OSError, which
    stays an internal error. A write to stdout (`> /dev/full`) names no file: stdout then fails
    again, and is silenced, so that the exit does not fail once more."""
    if err.errno not in _WRITE_ERRORS:
        return None
    where = err.filename2 if err.errno == errno.ENAMETOOLONG and err.filename2 else err.filename
    if where is None:
        try:
            sys.stdout.flush()
        except OSError:
            _silence_stdout()
            where = "stdout"
        else:
            if err.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):  # naming nothing: not known to be a write
                return None
    if where is None:  # (the command's own files are named: stanhop.runs.atomic_file)
        return f"cannot write the output ({err.strerror}: where stdout goes?); {_WRITE_ERRORS[err.errno]}"
    verb = "access" if err.errno in (errno.EACCES, errno.EPERM) else "write"  # (reading, too, meets a permission)
    return f"cannot {verb} {where} ({err.strerror}); {_WRITE_ERRORS[err.errno]}"


def _tell_usage_error(err: click.UsageError, command: str) -> None:
    """click's usage error as one line on stderr, pointing to the command's help."""
    message = err.format_message().rstrip(".")
    click.echo(f"error: {bounded(message[:1].lower() + message[1:])} (see '{command} --help')", err=True)


def _silence_stdout() -> None:
    """Point stdout at the null device, so that flushing it at exit cannot fail again."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):  # no file descriptor (a test's captured output)
        pass


@click.group(cls=StanhopGroup, context_settings=CONTEXT, epilog="Example: stanhop train --config configs/quick.yaml")
@click.version_option(__version__, prog_name="stanhop")
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """stanhop: forecast time series with STanHop-Net (sparse tandem Hopfield networks)."""
    ctx.obj = "debug" if debug else None


# ---------------------------------------------------------------- data


@cli.group(cls=StanhopGroup, context_settings=CONTEXT, epilog="Example: stanhop data describe ETTh1 --split 12/4/4")
def data() -> None:
    """Inspect data sets (ETTh1 or any CSV)."""


@data.command("describe", context_settings=CONTEXT, epilog="Example: stanhop data describe ETTh1 --split 12/4/4 --json")
@click.argument("name_or_csv")
@click.option("--split", default="14/5/5", help="Months (14/5/5, 12/4/4) or fractions (0.7/0.1/0.2).")
@click.option("--in-len", default=168, type=int, help="Input window length.")
@click.option("--out-len", default=24, type=int, help="Forecast horizon.")
@click.option("--date-column", default="date", help="Column holding the timestamps.")
@click.option("--columns", default=None, help="Comma-separated channels to use (default: all numeric).")
@click.option("--fill", type=click.Choice(["ffill", "interpolate"]), default=None, help="Fill empty cells and missing timestamps instead of rejecting them.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def data_describe(name_or_csv, split, in_len, out_len, date_column, columns, fill, as_json) -> None:
    """Rows, columns, frequency, date range, missing values and split of a data set."""
    from stanhop.splits import describe, unused_rows_notice  # pandas only: no torch or lightning to import

    def described(path: str) -> dict:
        return describe(path, split=split, in_len=in_len, out_len=out_len, date_column=date_column,
                        columns=_split_list(columns), fill=fill)

    if (long := _long_csv(name_or_csv, fill)) is not None:  # neuralforecast's layout: described as its wide form
        from stanhop.frames import as_wide_csv

        with as_wide_csv(long, date_column, name_or_csv, keep_empty=True) as staged:  # empty cells: counted
            info = {**described(str(staged)), "name": name_or_csv}
    else:
        info = described(name_or_csv)
    if as_json:
        click.echo(json.dumps(info))
        return
    click.echo(f"data      {info['name']}")
    click.echo(f"rows      {info['rows']}")
    click.echo(f"columns   {listing(map(clipped, info['columns']))}")
    click.echo(f"freq      {info['freq']}")
    click.echo(f"dates     {info['start']} .. {info['end']}")
    by_column = listing(f"{clipped(k)} {v}" for k, v in info["missing_by_column"].items() if v)
    note = "before --fill" if fill else "train, forecast and plot need --fill ffill or --fill interpolate"
    if empty := [k for k, v in info["missing_by_column"].items() if v == info["rows"]]:  # nothing would fill them
        note = f"no values at all in {listing(empty)}: leave {'it' if len(empty) == 1 else 'them'} out with --columns"
    click.echo(f"missing   {info['missing']}" + (f" ({by_column}; {note})" if by_column else ""))
    click.echo(f"split     {info['split_spec']} (in_len {in_len}, out_len {out_len})")
    if info["split"] is None:  # the file is described all the same; training would refuse this split
        click.echo(f"  does not fit: {info['split_problem']}")
        return
    for part, s in info["split"].items():
        click.echo(f"  {part:<6} rows [{s['start']}, {s['end']})  {counted(s['rows'], 'row')}  {counted(s['windows'], 'window')}")
    if unused := unused_rows_notice(info["rows"], info["split"]["test"]["end"], info["split_spec"], name_or_csv):
        notice_to_stderr(unused)


# ---------------------------------------------------------------- train / evaluate


def _build_config(config_path, overrides: list[str], *, check_files: bool = True):
    """--config with the options' and --set's overrides; ``check_files``: a CSV file the config
    file names that is not there is told as the config's (not as a file the user gave)."""
    from stanhop.config import apply_overrides, check_named_files, load_config

    config = apply_overrides(load_config(config_path), overrides)
    if config_path is not None and check_files:
        check_named_files(config, config_path, {item.partition("=")[0].strip() for item in overrides})
    return config


def _option_overrides(pairs: dict[str, object]) -> list[str]:
    """CLI options given by the user -> `section.key=value` overrides (None = not given)."""
    return [f"{key}={json.dumps(value)}" for key, value in pairs.items() if value is not None]


def _refuse_twice_given(chosen: list[str], overrides) -> None:
    """A setting given by its own option and again by --set (the --set would win without a word)."""
    by_option = dict(item.split("=", 1) for item in chosen)
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key in by_option:
            raise UserError(f"{key} is given twice, by its own option ({json.loads(by_option[key])}) and by "
                            f"--set {item}; give it once")


def _print_metrics(metrics: dict) -> None:
    test, val, out = metrics["test"], metrics["val"], metrics["outliers"]
    rows = [
        ("test MSE", test["mse"]), ("test MAE", test["mae"]),
        ("test MSE (original units)", test["mse_original_units"]), ("test MAE (original units)", test["mae_original_units"]),
        *_baseline_rows(metrics.get("baselines", {})),
        ("val MSE", val["mse"]), ("val MAE", val["mae"]),
        ("kurtosis (avg)", out["kurtosis_avg"]), ("inf-norm (max)", out["inf_norm_max"]),
    ]
    for name, q in metrics.get("quantized", {}).items():
        rows += [(f"{name} test MSE", q["mse"]), (f"{name} MSE increase, %", 100 * q["mse_increase"])]  # as compare shows it
    width = max(len(name) for name, _ in rows)
    click.echo(f"{'metric':<{width}}  value")
    for name, value in rows:
        click.echo(f"{name:<{width}}  {metric_text(value)}")
    shown = {**metrics, "separation": metrics.get("separation", "") + ("+gate" if metrics.get("gate") else "")}
    facts = [f"{k.replace('_', '-')} {shown[k]}" if k == "cross_series" else f"{k} {shown[k]}"
             for k in ("separation", "cross_series", "split", "params", "epochs", "train_seconds") if k in shown]
    if metrics.get("instance_norm"):
        facts.insert(2, "instance norm (RevIN)")
    click.echo(", ".join(facts))
    if "memory" in metrics:
        _print_memory(metrics["memory"])


def _baseline_rows(baselines: dict) -> list[tuple[str, float]]:
    """The naive forecasts' test MSE, the yardstick for the model's (stanhop.baselines)."""
    rows = [("naive test MSE, last value", baselines["naive"]["mse"])] if "naive" in baselines else []
    if "seasonal_naive" in baselines:
        rows.append((f"naive test MSE, {baselines['seasonal_naive']['season']} steps back", baselines["seasonal_naive"]["mse"]))
    return rows


def _print_memory(memory: dict) -> None:
    """The memory plugin's MSE beside the plain model's (scaled units), then its settings."""
    rows = [(name, memory[f"{key}_mse"], memory[f"{key}_mse_plain"])
            for key, name in (("val", "val MSE"), ("test", "test MSE"),
                              ("sudden", f"test MSE, sudden events ({counted(memory.get('sudden_windows'), 'window')})"))
            if f"{key}_mse" in memory and f"{key}_mse_plain" in memory]
    if rows:
        width = max(len(name) for name, _, _ in rows)
        click.echo(f"\n{'memory plugin':<{width}}  with    without")
        for name, with_plugin, plain in rows:
            click.echo(f"{name:<{width}}  {with_plugin:.4f}  {plain:.4f}")
    shown = [f"{memory.get('kind')}: {counted(memory.get('size'), 'window')} ({memory.get('strategy')})"]
    shown += [form.format(memory[key]) for key, form in _MEMORY_SETTINGS.items() if memory.get(key) is not None]
    click.echo(", ".join(shown))


_MEMORY_SETTINGS = {"lambda": "λ {:.4g}", "beta": "β₀ {:.4g}", "beta_start": "β₀ at the start {:.4g}",
                    "tune_epochs": "tune epochs {}", "tune_loss": "final loss {:.4f}", "seconds": "{} s"}


@cli.command(context_settings=CONTEXT, epilog="Example: stanhop train --config configs/etth1-h24.yaml --separation softmax1 --out runs/h24-softmax1")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None, help="YAML config (default: configs/etth1.yaml's settings built in).")
@click.option("--data", default=None, help="ETTh1 or a CSV path: one column per series, or neuralforecast's long "
                                            "unique_id, ds, y. [default: from config]")
@click.option("--date-column", default=None, help="Timestamp column of the CSV. [default: from config, else date]")
@click.option("--columns", default=None, help="Comma-separated channels. [default: all numeric]")
@click.option("--split", default=None, help="14/5/5, 12/4/4 or fractions 0.7/0.1/0.2. [default: from config]")
@click.option("--in-len", type=int, default=None, help="Input length. [default: from config]")
@click.option("--out-len", type=int, default=None, help="Horizon. [default: from config]")
@click.option("--separation", type=click.Choice(["entmax", "softmax1", "softmax", "sparsemax", "entmax15", "clipped"]), default=None, help="Hopfield separation map. [default: from config, else entmax]")
@click.option("--gate", is_flag=True, default=None, help="Gated Attention on every retrieval.")
@click.option("--max-epochs", type=int, default=None, help="Most epochs (early stopping may end sooner).")
@click.option("--batch-size", type=int, default=None, help="Batch size.")
@click.option("--micro-batch-size", type=int, default=None,
              help="Windows per forward/backward pass: the same training with less memory (may change on --resume). [default: from config]")
@click.option("--seed", type=int, default=None, help="Random seed.")
@click.option("--deterministic", is_flag=True, default=None, help="Deterministic algorithms (slower).")
@click.option("--memory", type=click.Choice(["plug", "tune"]), default=None, help="External memory plugin.")
@click.option("--memory-size", type=click.IntRange(min=1), default=None, help="K memory windows.")
@click.option("--memory-strategy", default=None, metavar="random|all|extremes|csv:FILE",
              help=f"{MEMORY_STRATEGY_HELP}.")
@click.option("--accelerator", type=click.Choice(["auto", "cpu", "gpu"]), default=None, help="Device kind. [default: from config, else auto]")
@click.option("--devices", type=int, default=None, help="Devices (processes with --strategy ddp). [default: from config, else 1]")
@click.option("--strategy", type=click.Choice(["auto", "ddp"]), default=None, help="Distribution strategy (Lightning's). [default: from config, else auto]")
@click.option("--num-nodes", type=int, default=None, help="Machines for DDP. [default: from config, else 1]")
@click.option("--precision", type=click.Choice(["32", "bf16-mixed"]), default=None, help="Numeric precision. [default: from config, else 32]")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override any config field, e.g. --set model.d_model=128 (repeatable).")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Run directory. [default: runs/<data>-<separation>-<timestamp>]")
@click.option("--force", is_flag=True, help="Replace an existing run directory.")
@click.option("--resume", type=click.Path(file_okay=False), default=None, help="Continue an interrupted run from its last checkpoint (--max-epochs may change its limit).")
@click.option("--init-from", type=click.Path(file_okay=False), default=None,
              help="A new run whose model starts from this finished run's weights (fine-tuning, e.g. on newer --data); "
                   "its config is the default.")
@click.option("--fill", type=click.Choice(["ffill", "interpolate"]), default=None, help="Fill empty cells and missing timestamps instead of rejecting them.")
def train(config_path, data, date_column, columns, split, in_len, out_len, separation, gate, max_epochs, batch_size,
          micro_batch_size, seed,
          deterministic, memory, memory_size, memory_strategy, accelerator, devices, strategy, num_nodes, precision,
          overrides, out, force, resume, init_from, fill) -> None:
    """Train STanHop-Net on ETTh1 or a CSV; print test MSE/MAE and outlier statistics.

    The run directory receives the config, weights (safetensors), the scaler (JSON), the
    CSV log, checkpoints and metrics.json. With --init-from RUN the model starts from RUN's
    weights, and RUN's config.yaml stands in for --config: the same model and channels,
    the data, split and training settings as given (e.g. --data newer.csv --set train.lr=1e-5).
    """
    from stanhop.workflow import default_run_dir, train as train_run

    if resume is not None:
        _refuse_options_on_resume(click.get_current_context())
        from stanhop.runs import check_run_dir, run_config

        config = run_config(check_run_dir(resume))
        if max_epochs is not None:  # e.g. extend a finished run, or end an interrupted one sooner
            config.train.max_epochs = max_epochs
        if micro_batch_size is not None:  # e.g. after running out of memory: the same training
            config.train.micro_batch_size = micro_batch_size
    else:
        strategy_csv = None
        if memory_strategy and memory_strategy.startswith("csv:"):
            memory_strategy, strategy_csv = "csv", memory_strategy[4:]
        chosen = _option_overrides({
            "data.name": data, "data.date_column": date_column, "data.columns": _split_list(columns), "data.split": split,
            "data.fill": fill, "model.in_len": in_len, "model.out_len": out_len, "model.separation": separation,
            "model.gate": gate, "train.max_epochs": max_epochs, "train.batch_size": batch_size,
            "train.micro_batch_size": micro_batch_size, "train.seed": seed,
            "train.deterministic": deterministic, "memory.kind": memory, "memory.size": memory_size,
            "memory.strategy": memory_strategy, "memory.csv": strategy_csv, "train.accelerator": accelerator,
            "train.devices": devices, "train.strategy": strategy, "train.num_nodes": num_nodes, "train.precision": precision,
        })
        _refuse_twice_given(chosen, overrides)
        given_config = config_path is not None  # else --init-from's run's own (which says itself what is missing)
        if init_from is not None and config_path is None:  # the run's own settings, as far as it has them
            from stanhop.runs import CONFIG, check_run_dir

            own = check_run_dir(init_from) / CONFIG
            config_path = own if own.is_file() else None  # else the training says what is missing
        elif init_from is not None:
            from stanhop.workflow import check_starting_run

            check_starting_run(init_from, out)  # before the notice: a mistake is told alone
            notice_to_stderr(f"--config {config_path} stands in for {init_from}'s config: its data, split and training "
                             f"settings are used, and its model settings must be {init_from}'s; only the weights come "
                             f"from {init_from}")
        config = _build_config(config_path, chosen + list(overrides), check_files=given_config)
        if config.memory.kind is None and (memory_size is not None or memory_strategy is not None):
            raise UserError("--memory-size and --memory-strategy choose a memory plugin's windows: "
                            "add --memory plug or --memory tune")
        memory_sets = [item.partition("=")[0].strip() for item in overrides
                       if item.strip().startswith("memory.") and not item.strip().startswith("memory.kind")]
        if config.memory.kind is None and memory_sets:  # else saved in the run's config as if they had acted
            raise UserError(f"--set {memory_sets[0]} sets a memory plugin that this run has none of: add --memory plug "
                            "or --memory tune")
    if resume is None and out is None:
        out = default_run_dir(config)  # named here, to be told at the end
    long = _long_csv(data, config.data.fill) if resume is None else None
    retain_freed_memory()  # this process trains: no page faults on the activations every step (stanhop.allocator)
    if long is not None:  # a DataFrame, as in Python: kept as RUN/data.csv, one column per unique_id
        metrics = train_run(config, out, force=force, init_from=init_from, frame=long, frame_name=str(data))
    else:
        metrics = train_run(config, out, force=force, resume=resume, init_from=init_from)
    if metrics:
        _print_metrics(metrics)
        run_dir = resume or out
        click.echo(f"the run is in {run_dir}: {command('plot', run_dir)} draws its forecast "
                   f"(forecast, evaluate and tune take it too)", err=True)


def _long_csv(path, fill=None):
    """The rows of a CSV file in neuralforecast's long layout (unique_id, ds, y) as a DataFrame,
    None for any other --data / --input (a wide CSV, a data set's name); with a ``fill``, its
    infinite values are kept for it to fill."""
    from stanhop.datasets import looks_like_path

    if path is None or not looks_like_path(path):
        return None
    from stanhop.csvio import read_long

    return read_long(path, keep_infinite=fill is not None)


def _as_long(frame):
    """A wide frame (DatetimeIndex, a column per series) in neuralforecast's layout: unique_id, ds, y."""
    return frame.rename_axis("ds").reset_index().melt(id_vars="ds", var_name="unique_id", value_name="y")


@contextlib.contextmanager
def _input_file(path):
    """``path`` as a file to read: a stream (``-`` for stdin, /dev/stdin, a pipe, bash's
    <(...)) is copied to a temporary file first, gzip, bzip2 or xz as its first bytes say, and
    messages call that file by the name given."""
    from stanhop.errors import known_as
    from stanhop.forecast import is_stream

    if path is None or not is_stream(path):
        yield path
        return
    import shutil
    import tempfile

    from stanhop.csvio import compression_ending

    with (contextlib.nullcontext(sys.stdin.buffer) if path == "-" else open(path, "rb")) as source, \
            tempfile.TemporaryDirectory(prefix="stanhop-input-") as folder:
        head = source.read(6)
        copy = os.path.join(folder, f"input.csv{compression_ending(head)}")
        with open(copy, "wb") as f:
            f.write(head)
            shutil.copyfileobj(source, f)
        with known_as(copy, "stdin" if path == "-" else path):
            yield copy


def _opened_input(input_path):
    """(the --input to read, as a file for the rest of the command: ``_input_file``; what
    messages about its frame call it)."""
    source = {None: "the input", "-": "stdin"}.get(input_path, str(input_path))
    return click.get_current_context().with_resource(_input_file(input_path)), source


def _long_input(run, path, date_column, fill, last_rows=None, keep_empty=False):
    """An --input CSV in neuralforecast's long layout (unique_id, ds, y) as a long DataFrame, its
    gaps filled by ``fill`` where given (``last_rows``: the rows a forecast reads, as read_input
    takes them; ``keep_empty``: its missing timestamps inserted, their values and the empty ones
    left NaN); None for any other --input."""
    if (frame := _long_csv(path, fill)) is None:
        return None
    if date_column not in (None, "ds"):
        raise UserError(f"{path} is long (unique_id, ds, y): its timestamps are in ds; leave out --date-column")
    if fill:
        from stanhop.frames import filled_long

        frame = filled_long(frame, fill, run.data.freq, str(path), last_rows, keep_empty=keep_empty)
    return frame


def _backtest_input(run, input_path, date_column, fill):
    """(frame, truth) of a backtest's --input: the frame its windows read, filled by ``fill``, and
    the same before the fill (NaN where it made a value up: not scored), or None without a fill."""
    from stanhop.csvio import fill_missing
    from stanhop.forecast import read_input
    from stanhop.frames import filled_long

    if (truth := _long_input(run, input_path, date_column, fill, keep_empty=True)) is not None:
        return (filled_long(truth, fill, run.data.freq, str(input_path)), truth) if fill else (truth, None)
    truth = read_input(run, input_path, date_column=date_column, fill=fill, keep_empty=True)
    return (fill_missing(truth, fill, input_path), truth) if fill else (truth, None)


_RESUMABLE = ("resume", "max_epochs", "micro_batch_size")  # train's options that a resumed run may take


def _refuse_options_on_resume(ctx: click.Context) -> None:
    """A resumed run keeps its own config: any option given besides _RESUMABLE is an error,
    not silently ignored."""
    given = [p for p in ctx.command.params if p.name not in _RESUMABLE
             and ctx.get_parameter_source(p.name) is click.core.ParameterSource.COMMANDLINE]
    if given:
        names, them = ", ".join(p.opts[0] for p in given), "them" if len(given) > 1 else "it"
        raise UserError(f"--resume continues a run with its own config, so {names} cannot apply (only "
                        f"--max-epochs and --micro-batch-size can change): drop {them}, or start a new run with --out")


@cli.command(context_settings=CONTEXT, epilog="Example: stanhop evaluate runs/h24 --quantize w8a8 --range percentile:99.99")
@click.argument("run", type=click.Path())
@click.option("--data", default=None, help="Evaluate on another CSV with the same channels (wide, or long: unique_id, ds, y). [default: the run's data]")
@click.option("--date-column", default=None, help="Timestamp column of the --data CSV. [default: the run's]")
@click.option("--fill", type=click.Choice(["ffill", "interpolate"]), default=None,
              help="Fill the --data CSV's empty cells and missing timestamps instead of rejecting them (filled cells are never scored). [default: the run's data.fill]")
@click.option("--split", default=None, help="Another split. [default: the run's]")
@click.option("--quantize", type=click.Choice(["w8a8"]), default=None, help="Also report simulated W8A8 post-quantization MSE.")
@click.option("--range", "act_range", default=None, help="W8A8's activation range estimator: minmax or percentile:P. [default: minmax]")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as one JSON object.")
def evaluate(run, data, date_column, fill, split, quantize, act_range, as_json) -> None:
    """Recompute test/val MSE, MAE and outlier statistics of a finished run.

    The figures of the run's own data and split go into its metrics.json; those of another
    CSV (--data) or another split are only printed, and metrics.json keeps the run's own.
    """
    from stanhop.workflow import evaluate as evaluate_run

    if act_range is not None and quantize is None:
        raise UserError("--range sets how --quantize w8a8 measures activations; add --quantize w8a8 or leave it out")
    metrics = evaluate_run(run, data=data, split=split, quantize=quantize, act_range=act_range or "minmax",
                           date_column=date_column, fill=fill)
    if as_json:
        click.echo(json.dumps(metrics))
    else:
        _print_metrics(metrics)


@cli.command(context_settings=CONTEXT, epilog="Example: stanhop tune runs/h24 --memory-size 64 --memory-strategy extremes --epochs 3")
@click.argument("run", type=click.Path())
@click.option("--memory-size", type=click.IntRange(min=1), default=None, help="K memory windows. [default: the run's memory.size]")
@click.option("--memory-strategy", default=None, metavar="random|all|extremes|csv:FILE",
              help=f"{MEMORY_STRATEGY_HELP}. [default: the run's memory.strategy]")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Fine-tuning epochs. [default: the run's memory.tune_epochs]")
@click.option("--fill", type=click.Choice(["ffill", "interpolate"]), default=None,
              help="Fill empty cells of a csv:FILE memory instead of rejecting them (its gaps in time part its incidents). [default: the run's data.fill]")
@click.option("--plug", is_flag=True, help="Add Plug-and-Play instead: no training, its weight λ and β₀ chosen on the validation split.")
def tune(run, memory_size, memory_strategy, epochs, fill, plug) -> None:
    """Add a Tune-and-Play memory to a trained run (replacing any memory it has), or with --plug
    a Plug-and-Play one.

    The backbone stays frozen; only the plugin is fine-tuned on the training split. Prints the
    metrics, with test MSE with and without the plugin on all test windows and on the sudden
    events (the 10% of test windows with the largest one-step jump from the last input step
    through the horizon).
    """
    from stanhop.memory_runs import add_memory

    if plug and epochs is not None:
        raise UserError("--epochs is Tune-and-Play's: a Plug-and-Play memory (--plug) is not trained")
    csv = None
    if memory_strategy is not None and memory_strategy.startswith("csv:"):
        memory_strategy, csv = "csv", memory_strategy[4:]
        if not csv.strip():
            raise UserError("--memory-strategy csv: needs the file's name after the colon (csv:events.csv)")
    retain_freed_memory()  # this process trains (fine-tunes the memory): as stanhop train
    _print_metrics(add_memory(run, kind="plug" if plug else "tune", size=memory_size, strategy=memory_strategy, csv=csv,
                              epochs=epochs, fill=fill))


@cli.command(context_settings=CONTEXT, epilog="Example: stanhop runs studies/outliers --sort test_mse")
@click.argument("folder", type=click.Path(), default="runs")
@click.option("--sort", type=click.Choice(["name", "val_mse", "test_mse", "test_mae"]), default="name",
              help="Order of the rows: by path, or by a figure, smallest first.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as one JSON list.")
def runs(folder, sort, as_json) -> None:
    """List the runs in FOLDER (default: runs) and below it, a row each: data, separation,
    window lengths, parameters, epochs, and validation and test figures from metrics.json
    (beside the test MSE of the seasonal naive forecast on the same windows)."""
    from stanhop.catalog import list_runs  # YAML and JSON only: no torch

    rows = list_runs(folder, sort)
    if as_json:  # [] for a folder without runs yet (a script's first look at a study)
        click.echo(json.dumps(rows))
        return
    if not rows:
        raise UserError(f"no stanhop runs in {folder}; train one with '{command('train', '--out', os.path.join(folder, 'NAME'))}'")
    columns = [("run", "run"), ("data", "data"), ("separation", "separation"), ("in→out", "window"),
               ("params", "params"), ("epochs", "epochs"), ("val MSE", "val_mse"), ("test MSE", "test_mse"),
               ("test MAE", "test_mae")]
    columns += [(label, key) for label, key in (("seasonal naive", "seasonal_naive_mse"), ("W8A8 MSE", "w8a8_mse"),
                                                ("memory", "memory"))
                if any(row.get(key) is not None for row in rows)]
    if len({str(row.get("split")) for row in rows if "split" in row}) > 1:  # test figures of other windows side by side
        columns.insert(columns.index(("in→out", "window")), ("split", "split"))
    if {row.get("cross_series") for row in rows if "cross_series" in row} - {"router"}:  # the paper's stage, or a mix
        columns.insert(columns.index(("separation", "separation")) + 1, ("cross-series", "cross_series"))
    if any(row.get("instance_norm") for row in rows):  # RevIN: yes/no beside the model
        columns.insert(columns.index(("in→out", "window")), ("RevIN", "revin"))
    if any(row.get("w8a8_range") not in (None, "minmax") for row in rows):  # W8A8 figures of other ranges side by side
        columns.insert(columns.index(("W8A8 MSE", "w8a8_mse")) + 1, ("W8A8 range", "w8a8_range"))
    cells = [[label for label, _ in columns] + [""]]  # the last column: a note, left as it is
    for row in rows:
        row = {**row, "window": f"{row['in_len']}→{row['out_len']}" if "in_len" in row else None,
               "revin": {True: "yes", False: "no"}.get(row.get("instance_norm"))}
        cells.append([_cell(row.get(key)) for _, key in columns] + [bounded(row.get("note", ""))])
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    for *line, note in cells:
        text = "  ".join(cell.ljust(width) if i < 3 else cell.rjust(width) for i, (cell, width) in enumerate(zip(line, widths)))
        click.echo(f"{text}  {note}".rstrip())


def metric_text(value: float | None) -> str:
    """A metric to 4 decimals, or to 4 significant digits where those would hide it or run long
    (errors in original units may be 1e-24 or 1e+59); None (nothing scored): a dash."""
    if value is None:
        return "—"
    return f"{value:.4f}" if value == 0 or 1e-3 <= abs(value) < 1e7 or value != value else f"{value:.4g}"


def _cell(value) -> str:
    if value is None:
        return "—"
    return metric_text(value) if isinstance(value, float) else str(value)


# ---------------------------------------------------------------- forecast / plot


@cli.command(context_settings=CONTEXT, epilog="Examples: stanhop forecast runs/h24 --input recent.csv --output pred.csv\n\n"
             "stanhop forecast runs/h24 --input ETTh1.csv --backtest --stride 1 --output backtest.parquet\n\n"
             "stanhop forecast runs/h24 --backtest --horizon 48   # the test split, two passes of 24")
@click.argument("run", type=click.Path())
@click.option("--input", "input_path", default=None,
              help="CSV holding the run's channels (by name) and a date column, or neuralforecast's long unique_id, ds, y "
                   "(the tables come back long); - reads it from stdin. [default: the run's own data: all of it; with "
                   "--backtest, its test split]")
@click.option("--output", type=click.Path(dir_okay=False), default=None, help="File for the table; - (or /dev/stdout, a pipe) streams it, with a backtest's metrics on stderr when on stdout. "
                   "[default: CSV on stdout; backtest: metrics only]")
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet"]), default=None, help="Table format. [default: by --output's extension, else csv]")
@click.option("--force", is_flag=True, help="Replace existing output files.")
@click.option("--horizon", type=click.IntRange(min=1), default=None,
              help="Steps to forecast; past the run's out_len the forecast is fed back as input (recursive). [default: out_len]")
@click.option("--intervals", default=None, metavar="LEVELS",
              help="Prediction intervals at these levels in percent, e.g. 80,95: <channel>_lo80 and _hi80 columns "
                   "(split conformal, calibrated on the run's validation split); a backtest reports their coverage.")
@click.option("--backtest", is_flag=True, help="Forecast every window of the CSV beside the truth and report MSE/MAE.")
@click.option("--stride", type=click.IntRange(min=1), default=None, help="Rows between backtest windows. [default: the horizon]")
@click.option("--n-windows", type=click.IntRange(min=1), default=None,
              help="Backtest the last N windows only (neuralforecast's n_windows). [default: every window that fits]")
@click.option("--json", "as_json", is_flag=True, help="Print the backtest metrics as one JSON object.")
@click.option("--date-column", default=None, help="Timestamp column of the CSV. [default: the run's]")
@click.option("--fill", type=click.Choice(["ffill", "interpolate"]), default=None, help="Fill empty cells and missing timestamps instead of rejecting them.")
def forecast(run, input_path, output, fmt, force, horizon, intervals, backtest, stride, n_windows, as_json, date_column,
             fill) -> None:
    """Forecast the horizon after the end of a CSV with a trained run, or backtest every window.

    The last in_len rows are scaled with the run's scaler, forecast and scaled back: one row
    per future step, timestamps continuing the CSV's frequency, one column per channel.
    A --horizon past the run's out_len appends each forecast to the input and forecasts
    again (errors compound; a backtest with that horizon measures them).
    --backtest places its windows from the end, as neuralforecast's cross_validation does: the
    last one's horizon ends on the last row, each earlier one --stride rows before the next.
    It writes a long table (window_start and cutoff: the window's first and last input
    rows; timestamp, step: 1 is the first step after the cutoff; <channel>_pred, <channel>_true) and
    prints MSE/MAE per channel and overall; with --output the metrics
    also go to a JSON file beside it (bt.csv -> bt.metrics.json). A long --input (unique_id,
    ds, y) gets its tables in that layout: unique_id, ds, STanHop, … .
    """
    from stanhop.forecast import check_output, is_stdout, is_stream, metrics_path, output_format
    from stanhop.intervals import parse_levels

    parse_levels(intervals)  # a mistake is told before any work
    fmt = output_format(output, fmt)
    stream = output is not None and is_stream(output)  # written through, with no metrics file beside it
    if not backtest and (stride is not None or n_windows is not None or as_json):
        raise UserError("--stride, --n-windows and --json are for --backtest; add --backtest or leave them out")
    if input_path is None and (date_column or fill):
        raise UserError("--date-column and --fill are for an --input CSV; the run's own data is read with its own settings")
    if fmt == "parquet" and (output is None and not backtest or output is not None and is_stdout(output)) and sys.stdout.isatty():
        raise UserError("parquet is not for the terminal; give --output FILE.parquet, or send it into a pipe or file")
    if as_json and output is not None and is_stdout(output):
        raise UserError(f"--output {output} writes the table on stdout: leave out --json (the metrics then go to "
                        "stderr), or write the table to a file")
    if output is not None and not stream:
        from stanhop.runs import own_files

        kept = [*own_files(run), *([input_path] if input_path else [])]  # replaced by no --force
        check_output(output, force=force, keep=kept)
        if backtest:
            check_output(metrics_path(output), force=force, keep=kept)
    from stanhop.forecast import OWN_SOURCE, csv_date_format, own_data_and_truth, read_input, write_table
    from stanhop.runs import load_run

    loaded = load_run(run)
    input_path, source = _opened_input(input_path)  # stdin, a pipe: as a file
    long, truth = False, None  # a long --input: the tables come back long; truth: a backtest's before its fill
    if input_path is None:
        source = OWN_SOURCE
        frame, truth = own_data_and_truth(loaded, "test" if backtest else "all")
        truth = truth if backtest else None  # (a forecast past the end has none)
        rows = "its test split and the in_len rows before it" if backtest else "all of it"
        notice_to_stderr(f"{'backtesting' if backtest else 'forecasting'} on the run's own data, "
                         f"{loaded.config.data.name} ({rows}: {len(frame)} rows, {frame.index[0]} to {frame.index[-1]})")
        from stanhop.datasets import CSV_ENDINGS

        if str(loaded.metrics.get("data_source", "")).lower().endswith(CSV_ENDINGS):  # trained from a long CSV:
            frame, long = _as_long(frame), True  # its forecasts in that layout too
            truth = None if truth is None else _as_long(truth)
    elif backtest:
        frame, truth = _backtest_input(loaded, input_path, date_column, fill)
    elif (frame := _long_input(loaded, input_path, date_column, fill, loaded.config.model.in_len)) is not None:
        long = True  # neuralforecast's layout
    else:
        frame = read_input(loaded, input_path, date_column=date_column, fill=fill, last_rows=loaded.config.model.in_len)
    if backtest:
        _backtest(loaded, frame, truth, stride, n_windows, horizon, intervals, output, fmt, as_json, source)
        return
    table = loaded.forecast(frame, horizon=horizon, intervals=intervals, progress=True, source=source)
    if output is None and fmt == "csv":
        click.echo(table.to_csv(index=not long, date_format=csv_date_format(table, loaded.data.freq)), nl=False)
        return
    write_table([table], "-" if output is None else output, fmt, index=not long, freq=loaded.data.freq)
    if output is None or is_stdout(output):
        return
    dates = table["ds"] if long else table.index
    click.echo(f"wrote {output} ({len(table)} {'rows' if long else 'steps'} from {dates.min()} to {dates.max()})", err=True)


def _backtest(run, frame, truth, stride, n_windows, horizon, intervals, output, fmt, as_json, source) -> None:
    """Write the table to ``output`` (none: metrics only) and its metrics beside it; to a stream
    (``-``, a pipe, /dev/stdout) only the table, and the metrics go to stderr."""
    from stanhop.forecast import backtest_stream, is_stdout, is_stream, metrics_path, write_metrics, write_table

    stream = backtest_stream(run, frame, stride=stride, horizon=horizon, n_windows=n_windows, intervals=intervals,
                             progress=True, source=source, truth=truth)
    to_stream = output is not None and is_stream(output)
    if output is None:
        for _ in stream.chunks:  # metrics only: the tables are dropped batch by batch
            pass
    else:
        write_table(stream.chunks, output, fmt, freq=run.data.freq)
        if not to_stream:
            write_metrics(stream.metrics(), metrics_path(output))
            click.echo(f"wrote {output} and {metrics_path(output)}", err=True)
    metrics = stream.metrics()
    echo = functools.partial(click.echo, err=to_stream and is_stdout(output))  # stdout is the table's
    if as_json:
        echo(json.dumps(metrics))
        return
    horizon, out_len = metrics["horizon"], metrics["out_len"]
    ahead = "" if horizon == out_len else f", horizon {horizon}{' (recursive)' if horizon > out_len else ''}"
    echo(f"{counted(metrics['windows'], 'window')} (stride {metrics['stride']}, in_len {metrics['in_len']}, out_len {metrics['out_len']}{ahead}) "
         f"starting {metrics['first_window_start']} .. {metrics['last_window_start']}")

    first, left_out, last = abridged(list(metrics["per_channel"].items()))  # hundreds of series: where the rest are
    where = f"{metrics_path(output)} has" if output is not None and not to_stream else "--json prints"
    gap = [(f"… {left_out} more channels ({where} them all)", None)] if left_out else []
    rows = [*first, *gap, *last, ("all", metrics["overall"])]
    width = max(len(clipped(name)) for name, m in rows if m is not None)
    coverage = metrics.get("coverage", {})  # {level: {"overall", "per_channel"}}: the share inside each interval

    def inside(name: str) -> str:
        shares = (c["overall"] if name == "all" else c["per_channel"][name] for c in coverage.values())
        return "".join(f"  {'—' if share is None else f'{share:.1%}':>8}" for share in shares)

    echo(f"{'channel':<{width}}  {'MSE':>10}  {'MAE':>10}  {'MSE orig':>10}  {'MAE orig':>10}"
         + "".join(f"  {'in ' + level + '%':>8}" for level in coverage))
    for name, m in rows:
        echo(name if m is None else
             f"{clipped(name):<{width}}  {metric_text(m['mse']):>10}  {metric_text(m['mae']):>10}  {metric_text(m['mse_original_units']):>10}  "
             f"{metric_text(m['mae_original_units']):>10}{inside(name)}")
    from stanhop.baselines import describe

    echo("on the same windows (scaled): " + "; ".join(
        f"{label} MSE {b['mse']:.4f}, MAE {b['mae']:.4f}" for label, b in describe(metrics["baselines"])))


@cli.command(context_settings=CONTEXT, epilog="Examples: stanhop plot runs/h24 --channels OT,HUFL --output forecast.png\n\n"
             "stanhop plot runs/h24 --what training --output loss.svg")
@click.argument("run", type=click.Path())
@click.option("--input", "input_path", default=None, help="CSV to forecast from (wide, or long: unique_id, ds, y; - reads stdin). [default: the run's own data, up to its test end]")
@click.option("--channels", default=None, help="Comma-separated channels to draw. [default: the run's target]")
@click.option("--output", type=click.Path(dir_okay=False), default=None, help="Figure file, .png, .svg or .pdf. [default: RUN/plots/<what>.png, replaced]")
@click.option("--what", type=click.Choice(["forecast", "training", "outliers"]), default="forecast",
              help="forecast: history, forecast and truth; training: loss per epoch; outliers: kurtosis and inf-norm per module.")
@click.option("--force", is_flag=True, help="Replace an existing --output file.")
@click.option("--date-column", default=None, help="Timestamp column of the CSV. [default: the run's]")
@click.option("--fill", type=click.Choice(["ffill", "interpolate"]), default=None, help="Fill empty cells and missing timestamps instead of rejecting them.")
@click.option("--horizon", type=click.IntRange(min=1), default=None,
              help="Steps to forecast; past the run's out_len recursively, as forecast --horizon. [default: out_len]")
@click.option("--intervals", default=None, metavar="LEVELS", help="Prediction intervals to draw as bands, e.g. 80,95 (as forecast --intervals).")
def plot(run, input_path, channels, output, what, force, date_column, fill, horizon, intervals) -> None:
    """Draw a run's forecast against the truth, its training curves, or its outlier statistics.

    The forecast starts out_len (or --horizon) rows before the end of the data, so the truth
    is drawn beside it; a CSV shorter than in_len + that many rows is forecast past its end.
    """
    from pathlib import Path

    from stanhop.plot import figure_format, plot as make_figure, save_figure
    from stanhop.runs import check_run_dir

    check_run_dir(run)
    if what != "forecast" and (input_path or channels or date_column or fill or horizon or intervals):
        raise UserError(f"--input, --channels, --date-column, --fill, --horizon and --intervals are for --what forecast, not {what}")
    from stanhop.intervals import parse_levels

    parse_levels(intervals)  # a mistake is told before any work
    if output is None:  # the run's own plots/: never through a link out of the run (its folder may come from anyone)
        from stanhop.runs import own_place

        path = own_place(Path(run), f"plots/{what}.png", "remove it (a plots folder is made in its place), or give "
                                                         "--output")
    else:
        path = Path(output)
    figure_format(path)
    from stanhop.forecast import check_output

    check_output(path, force=force or output is None)
    if what == "forecast":
        from stanhop.forecast import read_input
        from stanhop.runs import load_run

        loaded = load_run(run)
        input_path, source = _opened_input(input_path)  # stdin, a pipe: as a file
        observed = None
        if fill and input_path is not None:  # the file's values before the fill are the truth (made-up ones: NaN)
            frame, observed = _backtest_input(loaded, input_path, date_column, fill)
        elif (frame := _long_input(loaded, input_path, date_column, fill,  # neuralforecast's layout, as forecast takes it
                                   loaded.config.model.in_len)) is None and input_path is not None:
            frame = read_input(loaded, input_path, date_column=date_column, fill=fill, last_rows=loaded.config.model.in_len)
        figure = make_figure(loaded, "forecast", frame=frame, channels=_split_list(channels), horizon=horizon,
                             intervals=intervals, progress=True, source=source, observed=observed)
    else:
        figure = make_figure(run, what)
    save_figure(figure, path, force=True)
    click.echo(f"wrote {path}", err=True)  # as forecast tells its files: stdout is for data


@cli.command(context_settings=CONTEXT, epilog="Example: stanhop compare --config configs/outlier-study-cpu.yaml --gated --seeds 3 --out studies/outliers")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None, help="YAML config every run shares (default: configs/etth1.yaml's settings built in).")
@click.option("--separations", default="softmax,softmax1,clipped,entmax", help="Comma-separated separation maps (name+gate for a gated one).")
@click.option("--gated", is_flag=True, help="Also the gated variant of each separation (softmax+gate, ...).")
@click.option("--seeds", type=int, default=3, help="Seeds per variant: train.seed 0 .. N-1.")
@click.option("--max-epochs", type=int, default=None, help="Most epochs per run (early stopping may end sooner). [default: from config]")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override any config field, e.g. --set model.d_model=64 (repeatable).")
@click.option("--range", "act_range", default="minmax", help="W8A8 activation range estimator: minmax or percentile:P.")
@click.option("--out", type=click.Path(file_okay=False), default="study", help="Study folder: one run per <variant>-seed<k>/, summary.csv, summary.png.")
@click.option("--progress-bars", is_flag=True, help="Show Lightning's progress bars while training.")
def compare(config_path, separations, gated, seeds, max_epochs, overrides, act_range, out, progress_bars) -> None:
    """Outlier-efficiency study: train each separation map (x seeds), compare FP32 and W8A8.

    Prints and writes (OUT/summary.csv, OUT/runs.csv, OUT/summary.png) test MSE/MAE, average
    kurtosis, max inf-norm, W8A8 MSE and its increase, mean ± std over seeds, and the change
    against softmax. Finished runs in OUT are reused: rerun the command to continue.
    """
    from stanhop.study import SET_PER_RUN, format_table, run_study, write_summary

    for key in (item.split("=", 1)[0].strip() for item in overrides):
        if key in SET_PER_RUN:
            raise UserError(f"--set {key}: the study sets it for each run; choose it with {SET_PER_RUN[key]}")
    chosen = _option_overrides({"train.max_epochs": max_epochs})
    _refuse_twice_given(chosen, overrides)
    config = _build_config(config_path, chosen + list(overrides))
    retain_freed_memory()  # this process trains: as stanhop train
    try:
        runs = run_study(config, _split_list(separations) or [], gated, seeds, out, act_range=act_range, log=click.echo,
                         progress_bars=progress_bars)
    except KeyboardInterrupt as stop:  # Ctrl+C or SIGTERM (Terminated), told alike
        raise type(stop)(f"the finished runs in {out} are kept: the same stanhop compare goes on from them "
                         "(the unfinished run trains again)") from None
    summary, paths = write_summary(runs, out)
    click.echo("")
    click.echo(format_table(summary))
    click.echo(f"\nwrote {paths['summary']}, {paths['runs']} and {paths['plot']}")


def _split_list(text: str | None) -> list[str] | None:
    """An option's comma-separated names (--columns OT,HUFL), as config.column_names splits them; None for none."""
    from stanhop.config import column_names

    return None if text is None else (column_names(text) or None)


def main() -> None:
    cli(prog_name="stanhop")


if __name__ == "__main__":
    sys.exit(main())
