"""One configuration object for a run: data, model, training and memory settings.

The defaults are configs/etth1.yaml: the OutEffHop paper's ETTh1 setting (see that file).

The YAML files in ``configs/`` are these dataclasses written out; ``--set key=value``
overrides reach any field (``model.d_model=128``). This module imports no torch, so the
CLI can read and check a config before loading anything heavy.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stanhop.errors import UserError, cited, likely_name, not_a_file

SEPARATIONS = ("entmax", "softmax1", "softmax", "sparsemax", "entmax15", "clipped")
CROSS_SERIES = ("router", "stanhop")  # the cross-series stage of a STanHop block (stanhop.model.STanHopBlock)
MEMORY_KINDS = (None, "plug", "tune")
MEMORY_STRATEGIES = ("random", "all", "extremes", "csv")
ACCELERATORS, STRATEGIES = ("auto", "cpu", "gpu"), ("auto", "ddp")  # as the CLI offers them
PRECISIONS = ("32", "bf16-mixed", "16-mixed", "64")  # Lightning's names; the CLI offers the first two


@dataclass
class DataConfig:
    name: str = "ETTh1"  # a registered data set (ETTh1) or a path to a CSV file
    date_column: str = "date"  # the column holding timestamps
    columns: list[str] | None = None  # channels to use; None = every numeric column
    target: str | None = None  # the column plots show first; None = data set's (OT) or last
    fill: str | None = None  # None rejects empty cells and missing timestamps; "ffill" or "interpolate" fills them
    split: str = "14/5/5"  # months of 30 days (14/5/5, 12/4/4) or fractions (0.7/0.1/0.2)
    num_workers: int = 0  # DataLoader worker processes


@dataclass
class ModelConfig:
    in_len: int = 384  # input window length (time steps)
    out_len: int = 24  # forecast horizon (time steps)
    seg_len: int = 32  # patch length; inputs not a multiple are padded at the front
    win_size: int = 4  # patches merged by each coarse-graining step
    d_model: int = 512  # pattern width
    d_ff: int = 1024  # hidden width of the MLPs
    n_heads: int = 4  # retrieval heads
    e_layers: int = 2  # encoder blocks (the decoder has e_layers + 1 layers)
    factor: int = 10  # learned state patterns of each GSHPooling
    dropout: float = 0.3
    separation: str = "entmax"  # entmax (GSH) | softmax1 (OutEffHop) | softmax | sparsemax | entmax15 | clipped
    gate: bool = False  # Gated Attention on every retrieval
    cross_series: str = "router"  # router: factor learned queries pool the series, which retrieve from them (Crossformer's; linear in series); stanhop: series retrieve from factor learned patterns and from each other (STanHop's paper and code)
    n_series: int = 7  # number of channels; set from the data at training time
    checkpoint: bool = False  # training keeps only block inputs, recomputes the rest: ~half the memory, ~30% slower
    instance_norm: bool = False  # RevIN: each input window's series standardised by its own mean and spread (learned affine), the forecast mapped back: for level shifts and trends beyond the training data


@dataclass
class MemoryConfig:
    kind: str | None = None  # None, "plug" (Plug-and-Play) or "tune" (Tune-and-Play)
    size: int = 64  # K memory windows
    strategy: str = "extremes"  # random | all | extremes | csv
    csv: str | None = None  # memory windows from this CSV when strategy is csv
    tune_epochs: int = 3  # Tune-and-Play fine-tuning epochs


@dataclass
class TrainConfig:
    lr: float = 1e-4
    batch_size: int = 512
    micro_batch_size: int | None = 64  # windows per forward/backward pass (None: the whole batch); less memory, the batch's gradient (dropout: other mask draws)
    max_epochs: int = 100
    patience: int = 5  # early stopping on validation MSE
    lr_halving_epochs: list[int] = field(default_factory=lambda: [2, 4, 6, 8, 10])
    grad_clip: float = 5.0
    seed: int = 0
    deterministic: bool = False
    limit_train_batches: float = 1.0  # batches per epoch: a fraction (1.0: all) or a whole number (1: one batch)
    accelerator: str = "auto"  # auto | cpu | gpu
    devices: int = 1
    strategy: str = "auto"  # auto | ddp
    num_nodes: int = 1
    precision: str = "32"  # one of PRECISIONS


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Config:
        if not isinstance(raw, dict):
            raise UserError("config must be a YAML mapping with sections data, model, train, memory")
        sections = {f.name: f.type for f in dataclasses.fields(cls)}
        unknown = set(raw) - set(sections)
        if unknown:
            raise UserError(f"unknown config section(s) {cited(sorted(unknown, key=str))}; known: {sorted(sections)}")
        parts = {}
        for f in dataclasses.fields(cls):
            section_cls = type(f.default_factory())
            values = raw.get(f.name) or {}
            if not isinstance(values, dict):
                raise UserError(f"config section '{f.name}' must hold its keys, one 'key: value' per indented line, "
                                f"got {cited(values)}")
            known = {g.name for g in dataclasses.fields(section_cls)}
            bad = set(values) - known
            if bad:
                raise UserError(f"unknown key(s) {cited(sorted(bad, key=str))} in config section '{f.name}'; known: {sorted(known)}")
            parts[f.name] = section_cls(**values)
        cfg = cls(**parts)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raise UserError on values no run could use."""
        m, t, mem = self.model, self.train, self.memory
        for name in ("in_len", "out_len", "seg_len", "win_size", "d_model", "d_ff", "n_heads", "e_layers", "factor", "n_series"):
            value = getattr(m, name)
            if not _positive_whole(value):
                raise UserError(f"model.{name} must be a positive whole number, got {cited(value)}")
        if m.d_model % m.n_heads:
            raise UserError(f"model.d_model ({m.d_model}) must be divisible by model.n_heads ({m.n_heads})")
        if not (_number(m.dropout) and 0.0 <= m.dropout < 1.0):
            raise UserError(f"model.dropout must be in [0, 1), got {cited(m.dropout)}")
        for name in ("gate", "checkpoint", "instance_norm"):
            if not isinstance(getattr(m, name), bool):
                raise UserError(f"model.{name} must be true or false, got {cited(getattr(m, name))}")
        if m.cross_series not in CROSS_SERIES:
            raise UserError(f"model.cross_series must be one of {', '.join(CROSS_SERIES)}, got {cited(m.cross_series)}")
        if m.separation not in SEPARATIONS:
            raise UserError(f"unknown separation '{m.separation}'; choose one of {', '.join(SEPARATIONS)}")
        if not (_number(t.lr) and t.lr > 0):
            raise UserError(f"train.lr must be a positive number, got {cited(t.lr)}")
        for name in ("batch_size", "max_epochs", "devices", "num_nodes"):
            value = getattr(t, name)
            if not _positive_whole(value):
                raise UserError(f"train.{name} must be a positive whole number, got {cited(value)}")
        # (torch's clipping would turn a negative bound into gradient ascent)
        if not (t.grad_clip is None or _number(t.grad_clip) and t.grad_clip >= 0):
            raise UserError(f"train.grad_clip must be a number ≥ 0 (0 or null: no clipping), got {cited(t.grad_clip)}")
        if not (_whole(t.seed) and 0 <= t.seed < 2**32):  # numpy's seed range
            raise UserError(f"train.seed must be a whole number from 0 to 2³² − 1, got {cited(t.seed)}")
        if not (_whole(t.patience) and t.patience >= 0):
            raise UserError(f"train.patience must be a whole number of epochs, 0 or more, got {cited(t.patience)}")
        limit = t.limit_train_batches
        if not (_number(limit) and (0 < limit <= 1 or _whole(limit) and limit > 1)):
            raise UserError(f"train.limit_train_batches must be a fraction in (0, 1] or a whole number of batches, "
                            f"got {cited(limit)}")
        if not isinstance(t.lr_halving_epochs, list):
            raise UserError(f"train.lr_halving_epochs must be a list of epochs (positive whole numbers), "
                            f"e.g. [2, 4], got {cited(t.lr_halving_epochs)}")
        if bad := [(i, e) for i, e in enumerate(t.lr_halving_epochs, 1) if not _positive_whole(e)]:
            (i, e), = bad[:1]  # named, as a long list is quoted abridged
            raise UserError(f"train.lr_halving_epochs must be a list of epochs (positive whole numbers), e.g. [2, 4]; "
                            f"its item {i} of {len(t.lr_halving_epochs)} is {cited(e)}")
        if not isinstance(t.deterministic, bool):
            raise UserError(f"train.deterministic must be true or false, got {cited(t.deterministic)}")
        for name, allowed in (("accelerator", ACCELERATORS), ("strategy", STRATEGIES)):
            if getattr(t, name) not in allowed:
                raise UserError(f"train.{name} must be one of {', '.join(allowed)}, got {cited(getattr(t, name))}")
        if t.micro_batch_size is not None and not _positive_whole(t.micro_batch_size):
            raise UserError(f"train.micro_batch_size must be a positive whole number or null, got {cited(t.micro_batch_size)}")
        t.precision = str(t.precision)  # YAML reads `precision: 32` as a number
        if t.precision not in PRECISIONS:
            raise UserError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {cited(t.precision)}")
        if mem.kind not in MEMORY_KINDS:
            raise UserError(f"memory.kind must be plug, tune or empty, got {cited(mem.kind)}")
        if mem.strategy not in MEMORY_STRATEGIES:
            raise UserError(f"memory.strategy must be one of {', '.join(MEMORY_STRATEGIES)}, got {cited(mem.strategy)}")
        for name in ("size", "tune_epochs"):  # checked without a plugin too: else saved, and refused only by a later tune
            if not _positive_whole(getattr(mem, name)):
                raise UserError(f"memory.{name} must be a positive whole number, got {cited(getattr(mem, name))}")
        if not (mem.csv is None or isinstance(mem.csv, str)):
            raise UserError(f"memory.csv must be the path of a CSV file, got {cited(mem.csv)}")
        for name in ("name", "date_column"):
            if not isinstance(getattr(self.data, name), str):
                raise UserError(f"data.{name} must be text, got {cited(getattr(self.data, name))}")
        if isinstance(self.data.columns, str):
            self.data.columns = column_names(self.data.columns)
        columns = self.data.columns
        if not (columns is None or isinstance(columns, list) and all(isinstance(c, str) for c in columns)):
            raise UserError(f"data.columns must name channels: a list such as [OT, HUFL], or OT,HUFL (null: every "
                            f"numeric column; quote a name that reads as a number: '2019'), got {cited(columns)}")
        if self.data.fill not in (None, "ffill", "interpolate"):
            raise UserError(f"data.fill must be ffill or interpolate, got {cited(self.data.fill)}")


def column_names(text: str) -> list[str]:
    """data.columns given as one text, in a config file or --set: names split on commas, as
    --columns OT,HUFL is ("OT, HUFL" -> ["OT", "HUFL"])."""
    return [part.strip() for part in text.split(",") if part.strip()]


def _positive_whole(value: Any) -> bool:
    return _whole(value) and value >= 1


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    """A finite number (YAML reads .inf and .nan as floats)."""
    return _whole(value) or isinstance(value, float) and math.isfinite(value)


class _Loader(yaml.SafeLoader):
    """YAML's safe loader, also reading 1e-4 as a number (YAML 1.1 wants 1.0e-4), and refusing a
    key written twice in one mapping (PyYAML's would keep the last without a word: a second
    ``model:`` section appended to a file would replace the first)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            lines = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: its keys may be written again
                    continue
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, Hashable):  # (refused as YAML's loader refuses it)
                    continue
                if key in lines:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {cited(key)} is written twice, on lines {lines[key]} and "
                        f"{key_node.start_mark.line + 1} (the second would replace the first); write it once")
                lines[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)

    def construct_document(self, node):
        refuse_expansion(node)
        return super().construct_document(node)


MAX_YAML_VALUES = 100_000  # values of one YAML text with its aliases written out; a config holds about 60


def refuse_expansion(root: yaml.Node) -> None:
    """A UserError where YAML anchors and aliases (&a, *a) make ``root`` stand for more than
    MAX_YAML_VALUES values, or for a collection inside itself: 10 levels of lists of 9 aliases
    each ("billion laughs") read as a few objects, but anything that walks them (a message
    quoting the value, a copy) meets 9**10 items. Counted on the composed nodes, each once."""
    sizes: dict[int, int | None] = {}  # id(node) -> its values written out; None while being counted

    def size(node: yaml.Node) -> int:
        if id(node) in sizes:
            if sizes[id(node)] is None:
                raise UserError(f"the value at line {node.start_mark.line + 1} holds itself (an alias *name inside its "
                                "own &name); write the values out")
            return sizes[id(node)]
        sizes[id(node)] = None
        inner = (node.value if isinstance(node, yaml.SequenceNode)
                 else [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else [])
        total = 1 + sum(size(n) for n in inner)
        if total > MAX_YAML_VALUES:
            raise UserError(f"its anchors and aliases (&name, *name) make the value at line {node.start_mark.line + 1} "
                            f"more than {MAX_YAML_VALUES:,} values long; write the values out")
        sizes[id(node)] = total
        return total

    size(root)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|\.[0-9_]+(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+|\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."),
)


def parse_yaml(text: str):
    """The value of a YAML text; a UserError for one nested too deeply for the parser, or an
    absurd size (refuse_expansion)."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:  # (PyYAML's parser recurses for each level)
        raise UserError("its values are nested too deeply (lists or mappings inside each other hundreds of levels "
                        "deep); a config holds sections of keys") from None
    except ValueError as err:  # not a YAMLError: an integer of over 4300 digits
        why = str(err).split(":")[0]
        raise UserError(f"a value cannot be read ({why[:1].lower()}{why[1:]}); write it with fewer digits") from None


def load_config(path: str | Path | None) -> Config:
    """Read a YAML config; None gives the defaults."""
    if path is None:
        return Config()
    path = Path(path)
    if (what := not_a_file(path)) is not None:  # (a FIFO would wait for a writer forever)
        raise UserError(f"config file {path} is {what}, not a file; give the path of a YAML file")
    if not path.is_file():
        raise UserError(f"config file {path} not found; see configs/ for examples")
    try:
        raw = parse_yaml(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        line = err.object[:err.start].count(b"\n") + 1
        raise UserError(f"config file {path} is not UTF-8 text (byte {err.object[err.start]:#04x} on line {line}); "
                        "save it as UTF-8") from None
    except OSError as err:  # no permission, a folder in its place ...
        raise UserError(f"cannot read config file {path} ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise UserError(f"config file {path} is not valid YAML: {_yaml_problem(err)}") from None
    except UserError as err:  # (parse_yaml's)
        raise UserError(f"config file {path}: {err}") from None
    if raw is None:  # not the built-in defaults without a word: a file cut short, or written over
        raise UserError(f"config file {path} is empty; see configs/ for examples (no --config: the built-in defaults)")
    try:
        return Config.from_dict(raw)
    except UserError as err:  # said with the file: a run's config.yaml, or the --config given
        raise UserError(f"config file {path}: {err}") from None


def _yaml_problem(err: yaml.YAMLError) -> str:
    """What is wrong and where, in one line: 'expected ',' or ']' ... (line 3, column 5)'."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else problem


def make_paths_absolute(cfg: Config) -> Config:
    """``cfg`` with its CSV files (data.name when it is a path, memory.csv) made absolute, in place,
    so that a run's saved config finds them from any folder; data set names stay as they are."""
    cfg.data.name = absolute_data_name(cfg.data.name)
    if cfg.memory.csv is not None:
        cfg.memory.csv = absolute_data_name(cfg.memory.csv)
    return cfg


def absolute_data_name(name) -> str:
    """A CSV file's path made absolute, one spelling per file ("../x/data.csv" as
    "/.../x/data.csv"); a registered data set's name as it is."""
    from stanhop.datasets import looks_like_path

    return os.path.abspath(Path(name).expanduser()) if looks_like_path(str(name)) else name


def check_named_files(cfg: Config, path: str | Path, given: set[str] | frozenset[str] = frozenset()) -> None:
    """Raise UserError when the config file ``path`` names a CSV file that is not there (data.name;
    memory.csv when a plugin reads it), saying so: a relative path in it is taken from the current
    folder, not the config file's. ``given``: keys set anew (by an option or --set), not checked."""
    from stanhop.datasets import looks_like_path

    named = {"data.name": cfg.data.name, "memory.csv": cfg.memory.csv if cfg.memory.kind is not None else None}
    for key, name in named.items():
        if key in given or name is None or not looks_like_path(name) or Path(name).expanduser().exists():
            continue
        where = ""
        if not Path(name).expanduser().is_absolute():
            where = f", relative to the current folder {Path.cwd()}" + (
                ", not to the config file's" if Path(path).resolve().parent != Path.cwd().resolve() else "")
        raise UserError(f"file {name} not found ({key} in config file {path}{where}); correct it there, or give "
                        f"another with --set {key}=FILE")


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def apply_overrides(cfg: Config, overrides: list[str] | tuple[str, ...]) -> Config:
    """Return a new config with ``section.key=value`` overrides applied (values parsed as YAML);
    one override may be given as a string."""
    if isinstance(overrides, str):
        overrides = [overrides]
    if not isinstance(overrides, (list, tuple)):
        raise UserError(f"overrides must be a list of 'section.key=value' strings, got {type(overrides).__name__}")
    raw, given = cfg.to_dict(), {}
    for item in overrides:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot:
            raise UserError(f"--set expects section.key=value (e.g. model.d_model=128), got '{item}'")
        if key.strip() in given:  # else the last would win without a word
            raise UserError(f"--set {key.strip()} is given twice ({given[key.strip()]} and {item.strip()}); give it once")
        given[key.strip()] = item.strip()
        if key.strip() == "model.n_series":  # else silently replaced by the data's count
            raise UserError("--set model.n_series: the number of series is the data's, set from its channels; choose "
                            "them with --columns (Python: data.columns)")
        if section not in raw or name not in raw[section]:
            likely = likely_name(key.strip(), [f"{part}.{field}" for part, fields in raw.items() for field in fields])
            raise UserError(f"--set: unknown config key '{key}'" + (f"; did you mean {likely}?" if likely else ""))
        try:
            raw[section][name] = parse_yaml(value) if value.strip() else None
        except UserError as err:  # (parse_yaml's)
            raise UserError(f"--set {key.strip()}: {err}") from None
        except yaml.YAMLError as err:
            raise UserError(f"--set {key.strip()}: {cited(value.strip())} is not a value ({_yaml_problem(err)}); write e.g. "
                            f"model.d_model=128, train.lr_halving_epochs=[2,4] or data.name='my file.csv'") from None
    return Config.from_dict(raw)
