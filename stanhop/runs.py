"""The run directory: everything a finished training leaves, loadable without unpickling.

    RUN/
      stanhop.json      marker: tool name, stanhop version, run format
      config.yaml       the Config (dataclasses written out)
      scaler.json       columns, frequency, date column, and the scaler's mean and scale
      model.safetensors weights of the best checkpoint (by validation MSE)
      metrics.json      test/val metrics, outlier statistics, run facts
      logs/metrics.csv  train/val loss per epoch (Lightning's CSV logger)
      checkpoints/      Lightning checkpoints (best.ckpt, last.ckpt) for --resume
      memory.json       optional: the external memory plugin's kind and settings (stanhop.memory),
      memory.safetensors  its memory windows and tensors; load_run reattaches it
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stanhop import __version__
from stanhop.config import Config, _number, _whole, load_config, save_config
from stanhop.errors import UserError, clipped, command, listing, not_a_file, one_job, writable_folder
from stanhop.randomness import kept_random_state

RUN_FORMAT = 1
MARKER, CONFIG, SCALER, WEIGHTS, METRICS = "stanhop.json", "config.yaml", "scaler.json", "model.safetensors", "metrics.json"
LAST_EPOCHS = "last.json"  # checkpoints/last.json: {"epochs": N}, the epochs checkpoints/last.ckpt holds
FRAME_DATA = "data.csv"  # a run trained on a DataFrame keeps it here
MEMORY_WEIGHTS, MEMORY_SETTINGS = "memory.safetensors", "memory.json"  # a memory plugin's files (stanhop.memory)
LOG_BACKUP = "metrics.before-resume.csv"  # logs/: the history a resume merges back (workflow.protect_log)
DAMAGED = "copy the run again, or train it again"  # what to do about a run whose files are damaged


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Give a finished temp file the usual permissions (mkstemp makes it private) and rename it
    into place (atomically)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)
    os.replace(tmp, path)


@contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w", **open_args):
    """A file to write ``path`` through: a temp file in its folder, renamed over it once written
    (publish), so that ``path`` is always whole; removed if the writing fails. Its name is short
    and random (.XXXXXXXX.tmp), so it fits beside a name as long as the system allows. An
    OSError of the writing (a full or read-only disk) names ``path``, not the temp file."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    except OSError as err:
        raise naming(err, path) from None
    try:
        with os.fdopen(fd, mode, **open_args) as f:
            yield f
        publish(tmp, path)
    except BaseException as err:  # nothing half-written left beside the file
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.filename in (None, tmp):
            raise naming(err, path) from None
        raise


def naming(err: OSError, path: str | os.PathLike) -> OSError:
    """``err`` (of the same kind: PermissionError, ...) as raised on ``path``: a write through a
    file object names no file, and the user knows no temp file."""
    return OSError(err.errno, err.strerror, str(path)) if err.errno is not None else err


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (atomic_file)."""
    with atomic_file(path) as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def read_json(path: Path) -> Any:
    """The value a run's JSON file holds; a UserError where it is damaged: not JSON, not a file
    (never opened: a FIFO would wait for a writer forever), not readable, or nested too deeply
    for Python's parser."""
    path = Path(path)
    if (what := not_a_file(path)) is not None:
        raise UserError(f"cannot read {path}: it is {what}, not a file")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read {path}: {clipped(err)}") from None
    except RecursionError:
        raise UserError(f"cannot read {path}: it is damaged (arrays or objects nested thousands of levels deep)") from None


LOCK = ".training"  # held (flock) by the process training into the run: training_pid

# the files a run reads, below its folder: where anything else than a file stands (a FIFO, a device), the run is damaged
TRAINING_WRITES = ("checkpoints/last.ckpt", "checkpoints/best.ckpt", f"checkpoints/{LAST_EPOCHS}", "logs/metrics.csv",
                   f"logs/{LOG_BACKUP}")  # below the run's folder, as a training (a resume too) writes them
RUN_FILES = (MARKER, CONFIG, SCALER, WEIGHTS, METRICS, FRAME_DATA, MEMORY_WEIGHTS, MEMORY_SETTINGS, LOCK, *TRAINING_WRITES)

# what a run's folder holds (the module docstring), plots/ of `stanhop plot`, a damaged
# metrics.json kept aside by evaluate, the lock; and files cut short by an interrupted write (.NAME.….tmp)
RUN_ENTRIES = frozenset({MARKER, CONFIG, SCALER, WEIGHTS, METRICS, f"{METRICS}.unreadable", FRAME_DATA, MEMORY_WEIGHTS,
                         MEMORY_SETTINGS, "logs", "checkpoints", "plots", LOCK})


def damaged_file(run_dir: Path) -> str | None:
    """What is wrong where a file of the run at ``run_dir`` (RUN_FILES) is something else (a FIFO,
    a device, a folder: never opened, see not_a_file) and what to do; None where none is."""
    for name in RUN_FILES:
        if (what := not_a_file(run_dir / name)) is not None:
            return f"{run_dir / name} is {what}, not a file: the run is damaged; remove it, or {DAMAGED}"
    return None


def own_place(run_dir: Path, relative: str, remedy: str) -> Path:
    """``run_dir / relative`` (plots/forecast.png, logs/metrics.csv) as a place to write: a
    UserError where a link stands on the way there (the subfolder or the file), which would lead
    the writing out of the run (a run's folder may come from anyone), or where something else
    than a file is there (a FIFO, a device: never written over); ``remedy`` ends the message."""
    place = Path(run_dir)
    for part in Path(relative).parts:
        place = place / part
        if place.is_symlink():
            raise UserError(f"{place} is a link (to {os.readlink(place)}): stanhop writes a run's files only in its own "
                            f"folder, never through a link out of it; {remedy}")
    if (what := not_a_file(place)) is not None:
        raise UserError(f"{place} is {what}, not a file, and is not written over; {remedy}")
    return place


@contextmanager
def training_lock(run_dir: Path):
    """Held while this process trains into ``run_dir``: another training into the same folder
    (replacing it, resuming it) or a tune of it is refused meanwhile. An advisory lock (flock)
    on RUN/.training, which names the process; the system releases it when the process ends, by
    any means. A no-op where there is no flock (Windows) or the file system refuses it (some
    network mounts)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    path = Path(run_dir) / LOCK
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(_busy(run_dir, _pid_in(path))) from None
        except OSError:  # no locks here (ENOLCK): train without one, as where there is no flock
            yield
            return
        f.truncate(0)
        try:
            os.write(f.fileno(), str(os.getpid()).encode())  # unbuffered: nothing left to fail again at close
        except OSError as err:  # a full disk
            raise naming(err, path) from None
        try:
            yield
        finally:
            path.unlink(missing_ok=True)


def training_pid(run_dir: str | Path) -> int | None:
    """The process training into ``run_dir`` now (training_lock), or None."""
    try:
        import fcntl
    except ImportError:
        return None
    path = Path(run_dir) / LOCK
    if not path.is_file():  # none; or a FIFO, never opened (its open would wait for a writer)
        return None
    try:
        with open(path) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return _pid_in(path) or -1
            return None  # left behind by a process that ended: its lock went with it
    except OSError:
        return None


def _pid_in(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def refuse_if_training(run_dir: str | Path) -> None:
    """A UserError while a training writes into ``run_dir``."""
    if (pid := training_pid(run_dir)) is not None:
        raise UserError(_busy(run_dir, pid))


def refuse_unwritable_run(run_dir: str | Path, why: str, then: str) -> None:
    """A UserError unless a file can be created in ``run_dir`` (a run on a read-only disk, another
    user's): ``why`` the job writes there, ``then`` what to do with a writable copy."""
    try:
        tempfile.TemporaryFile(dir=run_dir).close()
    except OSError as err:
        raise UserError(f"cannot write in {run_dir} ({err.strerror}); {why}: copy the run to a folder you can "
                        f"write, and {then}") from None


def _busy(run_dir, pid: int | None) -> str:
    who = f"process {pid}" if pid and pid > 0 else "another process"
    return f"{run_dir} is being trained now (by {who}); wait for that training to end, or stop it"


def check_new_run_dir(path: str | Path, *, force: bool = False) -> Path:
    """Raise UserError unless a new run may go to ``path``: nothing there, an empty directory,
    or with ``force`` a stanhop run to replace: never a file, another folder, a link, a run
    holding files it did not write (they would be lost), or one the current folder lies in."""
    path = Path(path)
    try:
        path.lstat()
    except (FileNotFoundError, NotADirectoryError):  # not there (yet): writable_folder tells a file in the way
        pass
    except OSError as err:  # a name too long ...
        raise UserError(f"{path} cannot be a run's folder ({err.strerror}); choose another --out (in Python: out=)") from None
    if path.is_symlink():
        raise UserError(f"{path} is a link to {path.resolve()}; give that folder itself as --out (in Python: out=)")
    if path.exists() and not path.is_dir():
        raise UserError(f"{path} is a file, not a run directory; choose another --out (in Python: out=)")
    if path.exists() and any(path.iterdir()):
        refuse_if_training(path)
        if not (path / MARKER).is_file():  # never replaced: --force is no way out
            how = "choose another --out (in Python: out=)" if not force else "refusing to replace it even with --force"
            raise UserError(f"{path} already exists and is not a stanhop run directory; {how}")
        if not force:
            unfinished = (path / "checkpoints" / "last.ckpt").is_file() and not (path / METRICS).is_file()
            go_on = f"; it is unfinished: {command('train', '--resume', path)} continues it" if unfinished else ""
            raise UserError(f"run directory {path} already exists; choose another --out or pass --force to replace it "
                            f"(in Python: out=, force=True){go_on}")
        if others := sorted(entry.name for entry in path.iterdir() if not _written_by_a_run(entry.name)):
            raise UserError(f"{path} holds files a run does not write ({listing(others)}); --force replaces only the "
                            "run's own files: move those out of it first, or choose another --out")
        if path.resolve() in Path.cwd().resolve().parents:
            raise UserError(f"the current folder lies inside {path}, whose files --force would replace; run the "
                            "command from outside it")
        refuse_unremovable(path)
    return path


def refuse_unremovable(path: Path) -> None:
    """A UserError unless every file of the run at ``path`` can be removed: each folder of its
    tree takes changes (a read-only file system, or a subfolder written by another user such
    as a container's root, would stop --force half-way, the run half gone)."""
    folders = [path] + [Path(top) / name for top, names, _ in os.walk(path) for name in names
                        if not (Path(top) / name).is_symlink()]  # a link is removed, not entered
    for folder in folders:
        if not os.access(folder, os.W_OK | os.X_OK):
            read_only = hasattr(os, "statvfs") and os.statvfs(folder).f_flag & os.ST_RDONLY
            why = "read-only file system" if read_only else "permission denied"
            raise UserError(f"cannot write in {folder} ({why}), so --force cannot replace the run in {path}; nothing "
                            "was removed: make it writable, or choose another --out (in Python: out=)")


def _written_by_a_run(name: str) -> bool:
    return name in RUN_ENTRIES or (name.startswith(".") and name.endswith(".tmp"))


def prepare_run_dir(path: str | Path, *, force: bool = False) -> Path:
    """Create a fresh run directory where check_new_run_dir allows one; with ``force`` the
    previous run's files are removed first (the user asked for it): only those, so the folder
    itself stays (it may be the current folder)."""
    path = check_new_run_dir(path, force=force)
    if (path / MARKER).is_file():  # the run to replace (check_new_run_dir); an empty folder stays as it is
        for entry in path.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    made = not path.exists()
    writable_folder(path, "--out")
    try:
        write_json(path / MARKER, {"tool": "stanhop", "version": __version__, "format": RUN_FORMAT})
    except OSError:  # a full disk: no empty folder left behind
        if made:
            path.rmdir()
        raise
    return path


def check_run_dir(path: str | Path) -> Path:
    """Raise UserError unless ``path`` (or a loaded Run's) is a stanhop run this version can read."""
    if isinstance(path, Run):
        path = path.path
    if not isinstance(path, (str, os.PathLike)):
        raise UserError(f"a run is named by the path of its folder, got {type(path).__name__}")
    path = Path(path)
    if path.is_file():
        raise UserError(f"{path} is a file; give the folder of a run (the --out of 'stanhop train')")
    if not path.is_dir():
        raise UserError(f"run directory {path} does not exist; train one with '{command('train', '--out', path)}' (Python: "
                        f"stanhop.workflow.train(config, out=...))")
    if not (path / MARKER).exists():
        raise UserError(f"{path} is not a stanhop run directory (no {MARKER}); point to the folder a training wrote "
                        "(the --out of 'stanhop train', the out= of stanhop.workflow.train)")
    if (damage := damaged_file(path)) is not None:  # before any of its files is read
        raise UserError(damage)
    marker = read_json(path / MARKER)
    if not isinstance(marker, dict) or marker.get("tool") != "stanhop":
        raise UserError(f"{path} belongs to another tool ({MARKER} does not name stanhop)")
    if marker.get("format") != RUN_FORMAT:
        raise UserError(
            f"{path} was written by stanhop {marker.get('version')} in run format {marker.get('format')}; "
            f"this stanhop {__version__} reads format {RUN_FORMAT}: retrain or use that version"
        )
    return path


@dataclass
class DataInfo:
    """What a run knows about its data: enough to scale a new CSV the same way."""

    columns: list[str]
    freq: str
    date_column: str
    mean: list[float]
    scale: list[float]
    target: str | None = None
    borders: dict[str, list[int]] = field(default_factory=dict)
    fingerprint: str | None = None  # of the rows the windows use (rows_fingerprint); runs before it have none
    timezone: str | None = None  # its timestamps' zone ("Europe/Berlin", "UTC"), "" for none; None: not recorded (older runs)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str | Path = SCALER) -> DataInfo:
        """The facts of ``raw`` (read from the file ``source``), checked: a UserError naming the
        field where one is not what a run writes (a file edited, or damaged)."""
        if not isinstance(raw, dict):
            raise UserError(f"{source} is damaged: it holds no JSON object; {DAMAGED}")
        try:
            info = cls(**raw)
        except TypeError as err:
            raise UserError(f"{source} is not valid: {err}; {DAMAGED}") from None
        if (problem := info._problem()) is not None:
            raise UserError(f"{source} is damaged: {problem}; {DAMAGED}")
        return info

    def _problem(self) -> str | None:
        """Which field is not what a run writes, and what it should be; None where all are."""
        def text(value) -> str:
            shown = repr(value)
            return shown if len(shown) <= 60 else shown[:57] + "..."

        def numbers(values) -> bool:
            return isinstance(values, list) and all(_number(v) for v in values)

        columns = self.columns
        if not (isinstance(columns, list) and columns and all(isinstance(c, str) for c in columns)):
            return f"columns must be a list of names (strings), got {text(columns)}"
        if len(set(columns)) < len(columns):
            return f"columns names a column twice: {text(columns)}"
        for name in ("mean", "scale"):
            values = getattr(self, name)
            if not (numbers(values) and len(values) == len(columns)):
                return f"{name} must be {len(columns)} finite numbers, one per column, got {text(values)}"
        if any(v <= 0 for v in self.scale):
            return f"scale must be positive numbers, got {text(self.scale)}"
        for name in ("date_column", "freq"):
            if not isinstance(getattr(self, name), str):
                return f"{name} must be a string, got {text(getattr(self, name))}"
        from pandas.tseries.frequencies import to_offset

        try:
            to_offset(self.freq)
        except ValueError:
            return f"freq must be a pandas frequency ('h', '15min', 'D', 'MS'), got {text(self.freq)}"
        if self.target is not None and self.target not in columns:
            return f"target must be one of the columns or null, got {text(self.target)}"
        for name in ("fingerprint", "timezone"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                return f"{name} must be a string or null, got {text(getattr(self, name))}"
        return _borders_problem(self.borders)


def _borders_problem(borders) -> str | None:
    """What is wrong with scaler.json's borders (none in runs older than them): each part of
    train, val and test two whole numbers, its first and its end row, in order, none before
    row 0 nor overlapping the part before it."""
    if borders == {}:
        return None
    if not isinstance(borders, dict) or sorted(borders) != sorted(("train", "val", "test")):
        return f"borders must hold the parts train, val and test, got {str(borders)[:60]}"
    end_before = 0
    for part in ("train", "val", "test"):
        rows = borders[part]
        if not (isinstance(rows, list) and len(rows) == 2
                and all(_whole(v) for v in rows)):
            return f"borders.{part} must be two whole numbers (its first row and its end), got {str(rows)[:60]}"
        if not end_before <= rows[0] <= rows[1]:
            return (f"borders.{part} must be rows in order, from {end_before} on (the end of the part before it), got "
                    f"{rows}")
        end_before = rows[1]
    return None


def save_weights(model, path: Path) -> None:
    save_tensors(model.state_dict(), path, {"stanhop_version": __version__})


def save_tensors(state: dict, path: Path, metadata: dict[str, str]) -> None:
    """``state``'s tensors as a safetensors file at ``path``, written atomically (atomic_file)."""
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    with atomic_file(path, "wb") as f:  # written by Python: a full disk is an OSError naming the file
        f.write(save(state, metadata=metadata))


def load_weights(model, path: Path) -> None:
    """``model``'s weights from the safetensors file at ``path``, its tensors' names and shapes
    checked first (check_weights)."""
    from safetensors.torch import load_file

    check_weights(model, path)
    try:
        model.load_state_dict(load_file(str(path)))
    except RuntimeError as err:
        raise UserError(f"weights {path} do not fit the model of {CONFIG}: {str(err).splitlines()[-1].strip()}") from None


def check_weights(model, path: Path) -> None:
    """A UserError unless the safetensors file at ``path`` holds ``model``'s tensors at their
    shapes, read from its JSON header alone (nothing loaded): ``model`` may be one on torch's
    meta device, so that a config edited to a huge model (d_model: 100000) is refused before
    that model is allocated."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            shapes = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except (SafetensorError, OSError) as err:
        resume = (f"; its checkpoint is there: {command('train', '--resume', path.parent)} writes them anew"
                  if (path.parent / "checkpoints" / "last.ckpt").is_file() else "")
        raise UserError(f"cannot read weights {path} ({str(err).splitlines()[0]}): the file is damaged or cut short "
                        f"(copy the run again, or train it again){resume}") from None
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    missing, unexpected = set(expected) - set(shapes), set(shapes) - set(expected)
    if missing or unexpected:
        raise UserError(f"weights {path} do not match this model (missing {len(missing)}, unexpected {len(unexpected)} tensors): was it written by another model or config?")
    if wrong := [name for name in expected if shapes[name] != expected[name]]:
        raise UserError(f"weights {path} do not fit the model of {CONFIG}: {wrong[0]} is {list(shapes[wrong[0]])} in them "
                        f"and {list(expected[wrong[0]])} in the model{f' ({len(wrong) - 1} more such tensors)' if len(wrong) > 1 else ''}: "
                        f"was {CONFIG} edited since the training? put back the settings it was trained with")


@dataclass
class Run:
    """A finished run: its directory, config, data facts and model (eval mode, on CPU)."""

    path: Path
    config: Config
    data: DataInfo
    model: Any
    calibration: dict = field(default_factory=dict, compare=False)  # intervals' half-widths by (horizon, level)

    def __repr__(self) -> str:  # not the dataclass's, which would print every module of the model
        m = self.config.model
        return (f"Run({str(self.path)!r}: {m.separation}, {len(self.data.columns)} series of {self.config.data.name}, "
                f"in_len {m.in_len}, out_len {m.out_len})")

    @property
    def metrics(self) -> dict[str, Any]:
        try:
            return read_json(self.path / METRICS) if (self.path / METRICS).exists() else {}
        except UserError as err:
            raise UserError(f"{err}; {command('evaluate', self.path)} measures its figures anew (keeping it aside)") from None

    @one_job()
    def forecast(self, frame=None, horizon=None, intervals=None, **kwargs):
        """Forecast ``horizon`` steps (default out_len) past the end of ``frame`` (default: the
        run's own data, as `stanhop forecast RUN` does), with conformal ``intervals`` (levels in
        percent) if given; see :func:`stanhop.forecast.forecast`."""
        _no_neuralforecast_names("forecast", kwargs)
        from stanhop.forecast import forecast, own_data

        if frame is None:
            frame = own_data(self, "all", remedy="pass the data to forecast from as a DataFrame")
        return forecast(self, frame, horizon=horizon, intervals=intervals, **kwargs)

    @one_job()
    def backtest(self, frame=None, **kwargs):
        """Forecast every window of ``frame`` (default: the run's test split and the in_len rows
        before it, as `stanhop forecast RUN --backtest` does) beside the truth, the last window
        ending on the last row (``n_windows=N``: the last N windows only); see
        :func:`stanhop.forecast.backtest`."""
        _no_neuralforecast_names("backtest", kwargs)
        from stanhop.forecast import OWN_SOURCE, backtest, own_data_and_truth

        if frame is None:
            frame, truth = own_data_and_truth(self, "test", remedy="pass the data to backtest on as a DataFrame")
            kwargs.setdefault("source", OWN_SOURCE)
            if truth is not None:  # the values the fill made up: not scored
                kwargs.setdefault("truth", truth)
        return backtest(self, frame, **kwargs)


# neuralforecast's argument names, and what stanhop calls them
_NEURALFORECAST_NAMES = {
    "h": "horizon=", "level": "intervals=[80, 95]", "step_size": "stride=",
}


def _no_neuralforecast_names(method: str, given: dict[str, Any]) -> None:
    """A TypeError that names stanhop's word for a neuralforecast argument given to ``method``."""
    for name in given:
        if name in _NEURALFORECAST_NAMES:
            raise TypeError(f"{method}() got an unexpected keyword argument {name!r}: neuralforecast's {name}; here "
                            f"give {_NEURALFORECAST_NAMES[name]}")


def own_files(path: str | Path) -> list[Path]:
    """The files of the run at ``path`` that a command must never replace: its own, and the
    CSV its config reads (a registered data set's cached file is not listed)."""
    path = Path(path)
    files = [path / name for name in (MARKER, CONFIG, SCALER, WEIGHTS, METRICS, FRAME_DATA, MEMORY_WEIGHTS, MEMORY_SETTINGS)]
    try:
        data = str(run_config(path).data.name)
    except UserError:  # no readable config: the command says so itself
        return files
    from stanhop.datasets import looks_like_path

    return files + ([Path(data)] if looks_like_path(data) else [])


def build_model(config: Config):
    from stanhop.model import STanHopNet

    return STanHopNet(config.model)


def run_config(path: str | Path) -> Config:
    """The config of the run at ``path``. A run trained on a DataFrame keeps it as RUN/data.csv,
    and its config names that file by the absolute path it had then: a run moved or copied
    since reads its own copy, not the file at the old place (gone, or another run's data)."""
    path = Path(path)
    config = load_config(path / CONFIG)
    named, own = Path(str(config.data.name)), path / FRAME_DATA
    if (named.name == FRAME_DATA and own.is_file() and named.resolve() != own.resolve()
            and ((named.parent / MARKER).is_file() or not named.exists())):
        config.data.name = str(own.resolve())
    return config


@kept_random_state()  # the model's initial weights, replaced by the run's, draw from the caller's generators
def load_run(path: str | Path) -> Run:
    """Load a run directory: config and scaler from YAML/JSON, weights from safetensors. The
    process's random generators are left as they were."""
    path = check_run_dir(path)
    for name in (CONFIG, SCALER, WEIGHTS):
        if not (path / name).is_file():
            if (pid := training_pid(path)) is not None:
                raise UserError(f"{_busy(path, pid)}: its model is saved when the training ends")
            unfinished = (path / "checkpoints" / "last.ckpt").is_file() and name == WEIGHTS
            remedy = f"its training stopped early: {command('train', '--resume', path)}" if unfinished else "did its training finish?"
            raise UserError(f"run {path} is incomplete: {name} is missing ({remedy})")
    config = run_config(path)
    data = DataInfo.from_dict(read_json(path / SCALER), path / SCALER)
    import torch

    with torch.device("meta"):  # shapes only: a config that does not fit the weights is refused before allocating
        check_weights(build_model(config), path / WEIGHTS)
    model = build_model(config)
    load_weights(model, path / WEIGHTS)
    model.eval()
    from stanhop.memory import load_memory  # a run with a memory plugin (memory.json) gets it back

    model = load_memory(model, path)
    return Run(path=path, config=config, data=data, model=model)


def save_run_files(path: Path, config: Config, data: DataInfo) -> None:
    save_config(config, path / CONFIG)
    write_json(path / SCALER, data.to_dict())
