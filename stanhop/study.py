"""The outlier-efficiency study: one config, several separation maps, several seeds.

After OutEffHop (Hu et al., ICML 2024, §5 and its STanHop-Net study): train one run per
(variant, seed) with everything else equal, evaluate each in FP32 and W8A8, and compare

    test MSE, MAE,  Kurt = mean over modules of the per-sample kurtosis,
    ‖x‖_∞ = max over modules of the per-sample ∞-norm  (stanhop.outliers),
    W8A8 test MSE and its increase  MSE_W8A8 / MSE_FP32 − 1  (stanhop.quantize),

as mean ± sample standard deviation over seeds, and the change of each against the
``softmax`` variant: relative, m_variant / m_softmax − 1, except for the quantization
increase (itself a ratio), whose change is the difference in percentage points.

A variant is a separation map name, with ``+gate`` for Gated Attention on every retrieval
(``softmax1+gate``). Run directories are OUT/<variant>-seed<k>/ with train.seed = k. A run
is finished when its metrics.json has test results and W8A8 results of the asked range;
finished runs are reused, so an interrupted study continues where it stopped.
"""

from __future__ import annotations

import copy
import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stanhop.config import SEPARATIONS, Config, make_paths_absolute
from stanhop.errors import UserError, cited, counted, notice_to_stderr, one_job, writable_folder

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

DEFAULT_SEPARATIONS = ("softmax", "softmax1", "clipped", "entmax")
BASELINE = "softmax"
GATE_SUFFIX = "+gate"
# config keys that the study sets for each run, and compare's options that choose them
SET_PER_RUN = {"model.separation": "--separations", "model.gate": "--gated (or name+gate in --separations)",
               "train.seed": "--seeds"}
QUANTIZE = "w8a8"
# (column, label in the table and plot): the per-run numbers the summary aggregates
METRICS = (
    ("test_mse", "test MSE"),
    ("test_mae", "test MAE"),
    ("kurtosis", "kurtosis"),
    ("inf_norm", "inf-norm"),
    ("w8a8_mse", "W8A8 MSE"),
    ("mse_increase", "W8A8 incr."),
)
RELATIVE_CHANGE = ("test_mse", "test_mae", "kurtosis", "inf_norm", "w8a8_mse")  # the others: difference
PLOTTED = ("kurtosis", "inf_norm", "w8a8_mse")
# config keys that may differ between a reused run and the study (where and how it ran, not what it learned)
_IGNORED_KEYS = {("model", "n_series"), ("model", "checkpoint"), ("data", "num_workers"), ("train", "accelerator"),
                 ("train", "devices"), ("train", "strategy"), ("train", "num_nodes"), ("train", "micro_batch_size")}


@dataclass(frozen=True)
class Variant:
    """A separation map with or without Gated Attention; ``name`` is e.g. ``softmax1+gate``."""

    separation: str
    gate: bool = False

    @property
    def name(self) -> str:
        return self.separation + (GATE_SUFFIX if self.gate else "")


def parse_variant(name: str) -> Variant:
    """``softmax`` -> Variant("softmax"), ``clipped+gate`` -> Variant("clipped", gate=True)."""
    text = name.strip().lower()
    gate = text.endswith(GATE_SUFFIX)
    separation = text.removesuffix(GATE_SUFFIX)
    if separation not in SEPARATIONS:
        raise UserError(f"unknown separation {cited(name.strip())} in --separations; choose from "
                        f"{', '.join(SEPARATIONS)} (add {GATE_SUFFIX} for the gated variant)")
    return Variant(separation, gate)


def variants(separations: Iterable[str], gated: bool = False) -> list[Variant]:
    """The study's variants in the given order, each followed by its gated one when ``gated``."""
    chosen: list[Variant] = []
    for name in separations:
        base = parse_variant(name)
        for v in (base, Variant(base.separation, True)) if gated else (base,):
            if v not in chosen:
                chosen.append(v)
    if not chosen:
        raise UserError("no separations to compare; give e.g. --separations softmax,softmax1")
    return chosen


def seed_list(seeds: int | Sequence[int]) -> list[int]:
    """``3`` -> [0, 1, 2]; a sequence of seeds is taken as it is."""
    if isinstance(seeds, int):
        if seeds < 1:
            raise UserError(f"--seeds must be at least 1, got {seeds}")
        return list(range(seeds))
    chosen = list(dict.fromkeys(int(s) for s in seeds))
    if not chosen:
        raise UserError("no seeds given; use e.g. --seeds 3")
    return chosen


def run_name(variant: Variant, seed: int) -> str:
    return f"{variant.name}-seed{seed}"


def run_config(config: Config, variant: Variant, seed: int) -> Config:
    """A copy of ``config`` with the variant's separation and gate and train.seed = seed."""
    cfg = copy.deepcopy(config)
    cfg.model.separation, cfg.model.gate, cfg.train.seed = variant.separation, variant.gate, seed
    return cfg


def replaced_settings(config: Config, chosen: list[Variant], seeds: list[int]) -> list[str]:
    """The config's own choices (not defaults) of what the study sets for each run (SET_PER_RUN)
    that none of its runs has: ['model.gate true', 'train.seed 7']."""
    studied = {"model.separation": {v.separation for v in chosen}, "model.gate": {v.gate for v in chosen},
               "train.seed": set(seeds)}
    default, replaced = Config(), []
    for key, values in studied.items():
        section, name = key.split(".")
        value = getattr(getattr(config, section), name)
        if value not in values and value != getattr(getattr(default, section), name):
            replaced.append(f"{key} {json.dumps(value) if not isinstance(value, str) else value}")
    return replaced


def _config_differences(saved: Config, wanted: Config) -> list[str]:
    a, b = saved.to_dict(), wanted.to_dict()
    return [f"{section}.{key} {cited(a[section][key])} (asked {cited(b[section][key])})"
            for section in b for key in b[section]
            if (section, key) not in _IGNORED_KEYS and a[section].get(key) != b[section][key]]


STUDY_MARKER = "stanhop-study.json"  # marks a folder compare writes into (its summary files are replaced)
SUMMARY_FILES = ("runs.csv", "summary.csv", "summary.png")


def check_study_folder(out: Path) -> None:
    """Refuse an --out whose files the study would replace but did not write: a training run's
    folder, or a folder holding a summary file of the user's (a study's folder has its marker,
    or, from before the marker, run folders)."""
    from stanhop.errors import listing
    from stanhop.runs import MARKER

    if not out.is_dir():
        return
    if (out / MARKER).is_file():
        raise UserError(f"--out {out} is a training run's folder; give the study a folder of its own")
    runs = [p for p in out.iterdir() if p.is_dir() and (p / MARKER).is_file()]
    ours = (out / STUDY_MARKER).is_file() or (  # a study from before the marker: its runs, and only those
        bool(runs) and all(re.fullmatch(r".+-seed\d+", p.name) for p in runs))
    theirs = [name for name in SUMMARY_FILES if (out / name).exists()]
    if theirs and not ours:
        raise UserError(f"--out {out} holds {listing(theirs)}, which the study would replace; choose another --out")


def check_not_long(config: Config) -> None:
    """A long CSV (neuralforecast's unique_id, ds, y) is refused before the study starts: each
    run reads data.name as a wide file."""
    from stanhop.csvio import header_of
    from stanhop.datasets import looks_like_path
    from stanhop.frames import LONG_COLUMNS

    name = str(config.data.name)
    if looks_like_path(name) and Path(name).expanduser().is_file() and set(LONG_COLUMNS) <= set(header_of(name)):
        raise UserError(f"{name} is long (unique_id, ds, y); the study's runs read a wide file, a column per series: "
                        "write it wide, e.g. frame.pivot(index='ds', columns='unique_id', values='y').to_csv(...)")


def tell_what_changes(out: Path, act_range: str, runs: set[str]) -> None:
    """Notices, before a rerun in ``out`` changes it: W8A8 figures of another range replaced, and
    finished runs there that the summary now leaves out (another choice of separations or seeds)."""
    from stanhop.errors import listing
    from stanhop.runs import MARKER

    try:
        before = json.loads((out / STUDY_MARKER).read_text()).get("w8a8_range", "minmax")
    except (OSError, ValueError, AttributeError, RecursionError):
        before = None
    if before is not None and before != act_range:
        notice_to_stderr(f"{out}'s W8A8 figures were measured with --range {before}; with {act_range} they are measured "
                         f"again, replacing them in its runs' metrics.json and its summary")
    left_out = sorted(p.name for p in out.iterdir() if p.is_dir() and (p / MARKER).is_file() and p.name not in runs) \
        if out.is_dir() else []
    if left_out:
        notice_to_stderr(f"{out} holds {counted(len(left_out), 'finished run')} that this study leaves out of its summary "
                         f"({listing(left_out)}): its separations and seeds are another choice")


def run_state(run_dir: Path, config: Config, act_range: str = "minmax") -> str:
    """What a run directory needs: "finished", "quantize" (trained and tested, no W8A8 result of
    this range yet) or "train" (missing, or interrupted before its test results).

    A trained run whose config differs from ``config`` (beyond where it ran) is a UserError:
    mixing settings in one study would make the comparison meaningless.
    """
    from stanhop.config import load_config
    from stanhop.runs import CONFIG, METRICS, WEIGHTS, read_json

    metrics_path = run_dir / METRICS
    if not (metrics_path.is_file() and (run_dir / WEIGHTS).is_file() and (run_dir / CONFIG).is_file()):
        return "train"
    try:
        metrics = read_json(metrics_path)
    except UserError:
        return "train"  # a damaged metrics.json: the run cannot be trusted
    if not isinstance(metrics, dict) or not isinstance(metrics.get("test"), dict):
        return "train"
    saved, asked = make_paths_absolute(load_config(run_dir / CONFIG)), make_paths_absolute(copy.deepcopy(config))
    differences = _config_differences(saved, asked)  # a CSV's path compared as a file, however it was typed
    if differences:
        raise UserError(f"{run_dir} was trained with other settings: {'; '.join(differences[:3])}; "
                        "use another --out for these settings, or delete that run to retrain it")
    quantized = metrics.get("quantized", {}).get(QUANTIZE)
    if isinstance(quantized, dict) and "mse" in quantized and _same_range(quantized.get("range"), act_range):
        return "finished"
    return "quantize"


def _same_range(saved: Any, asked: str) -> bool:
    """Whether a run's W8A8 figures were measured with the range ``asked`` (however either was
    spelt: "MINMAX", " minmax ")."""
    from stanhop.quantize import parse_range

    try:
        return str(parse_range(str(saved))) == str(parse_range(asked))
    except UserError:  # an unreadable record: measured again
        return False


def run_row(variant: Variant, seed: int, run_dir: Path, metrics: dict[str, Any], status: str) -> dict[str, Any]:
    """The per-run numbers of a finished run's metrics.json."""
    q = metrics["quantized"][QUANTIZE]
    return {
        "variant": variant.name, "separation": variant.separation, "gate": variant.gate,
        "cross_series": metrics.get("cross_series", "router"), "instance_norm": metrics.get("instance_norm", False),
        "seed": seed,
        "run": str(run_dir), "status": status,
        "test_mse": metrics["test"]["mse"], "test_mae": metrics["test"]["mae"],
        "kurtosis": metrics["outliers"]["kurtosis_avg"], "inf_norm": metrics["outliers"]["inf_norm_max"],
        "w8a8_mse": q["mse"], "w8a8_mae": q["mae"], "mse_increase": q["mse_increase"], "w8a8_range": q.get("range"),
        "epochs": metrics.get("epochs"), "train_seconds": metrics.get("train_seconds"),
    }


@one_job()
def run_study(config: Config, separations: Iterable[str] = DEFAULT_SEPARATIONS, gated: bool = False,
              seeds: int | Sequence[int] = 3, out: str | Path = "study", *, act_range: str = "minmax",
              log: Callable[[str], None] | None = print, progress_bars: bool = False) -> pd.DataFrame:
    """Train, evaluate (FP32 and W8A8) or reuse every (variant, seed) run; one row per run.

    Rows are in order variant, then seed; columns: variant, separation, gate, cross_series, instance_norm, seed, run,
    status (trained | quantized | reused), test_mse, test_mae, kurtosis, inf_norm, w8a8_mse,
    w8a8_mae, mse_increase, epochs, train_seconds. ``log`` receives one line per step.
    """
    import pandas as pd

    from stanhop import workflow
    from stanhop.quantize import parse_range
    from stanhop.runs import read_json

    act_range = str(parse_range(act_range))  # one spelling: "percentile:99.9", not "Percentile:99.90"
    chosen, seed_values = variants(separations, gated), seed_list(seeds)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for the study")
    check_study_folder(out)
    check_not_long(config)
    say = log or (lambda line: None)
    # seed-major: an interrupted study has every variant for its first seeds
    jobs = [(v, s, out / run_name(v, s), run_config(config, v, s)) for s in seed_values for v in chosen]
    states = [run_state(run_dir, cfg, act_range) for _, _, run_dir, cfg in jobs]  # settings checked before any work
    tell_what_changes(out, act_range, {run_dir.name for _, _, run_dir, _ in jobs})
    writable_folder(out, "--out")
    (out / STUDY_MARKER).write_text(json.dumps({"tool": "stanhop compare", "w8a8_range": act_range}) + "\n")
    if replaced := replaced_settings(config, chosen, seed_values):  # (--set of them is refused)
        options = " and ".join(SET_PER_RUN[item.split()[0]] for item in replaced)
        notice_to_stderr(f"the study sets {' and '.join(item.split()[0] for item in replaced)} for each run: the "
                         f"config's {' and '.join(replaced)} {'is' if len(replaced) == 1 else 'are'} in none of its "
                         f"runs; choose with {options}")
    say(f"study {out}: {counted(len(jobs), 'run')} ({states.count('train')} to train, {states.count('quantize')} to quantize, "
        f"{states.count('finished')} finished)")
    rows = []
    for i, ((variant, seed, run_dir, cfg), state) in enumerate(zip(jobs, states), 1):
        head = f"[{i}/{len(jobs)}] {run_name(variant, seed)}"
        start = time.perf_counter()
        if state == "train":
            say(f"{head}: training")
            workflow.train(cfg, run_dir, force=True, progress=progress_bars)
            workflow.quantize_run(run_dir, quantize=QUANTIZE, act_range=act_range)
        elif state == "quantize":
            say(f"{head}: trained, computing W8A8")
            workflow.quantize_run(run_dir, quantize=QUANTIZE, act_range=act_range)
        status = {"train": "trained", "quantize": "quantized", "finished": "reused"}[state]
        row = run_row(variant, seed, run_dir, read_json(run_dir / "metrics.json"), status)
        took = f" in {time.perf_counter() - start:.0f} s" if state != "finished" else ""
        say(f"{head}: {status}{took}; test MSE {row['test_mse']:.4f}, W8A8 MSE {row['w8a8_mse']:.4f}")
        rows.append(row)
    return pd.DataFrame(rows)


def summarise(runs: pd.DataFrame, baseline: str = BASELINE) -> pd.DataFrame:
    """One row per variant (in order of appearance): for each metric m of METRICS, m_mean,
    m_std (sample std over seeds; NaN with one seed) and m_change against ``baseline`` —
    relative (mean / baseline mean − 1) for RELATIVE_CHANGE, a difference for the others;
    NaN when the baseline is not in the study. Also variant, separation, gate, cross_series, instance_norm, seeds.
    """
    import pandas as pd

    if runs.empty:
        raise UserError("no runs to summarise")
    order = list(dict.fromkeys(runs["variant"]))
    groups = runs.groupby("variant")
    summary = pd.DataFrame({
        "variant": order,
        "separation": groups["separation"].first().reindex(order).to_numpy(),
        "gate": groups["gate"].first().reindex(order).to_numpy(),
        **{name: groups[name].first().reindex(order).to_numpy() for name in ("cross_series", "instance_norm") if name in runs},
        "seeds": groups["seed"].count().reindex(order).to_numpy(),
    })
    for column, _ in METRICS:
        summary[f"{column}_mean"] = groups[column].mean().reindex(order).to_numpy()
        summary[f"{column}_std"] = groups[column].std(ddof=1).reindex(order).to_numpy()
    base = summary[summary["variant"] == baseline]
    for column, _ in METRICS:
        mean = summary[f"{column}_mean"]
        if base.empty:
            summary[f"{column}_change"] = float("nan")
        elif column in RELATIVE_CHANGE:
            summary[f"{column}_change"] = mean / base[f"{column}_mean"].iloc[0] - 1.0
        else:
            summary[f"{column}_change"] = mean - base[f"{column}_mean"].iloc[0]
    return summary


def _cell(mean: float, std: float, percent: bool) -> str:
    """0.1234±0.0012, or 1.23±0.45% for a ratio; no ± part when std is NaN (one seed)."""
    if percent:
        return f"{mean * 100:.2f}%" if std != std else f"{mean * 100:.2f}±{std * 100:.2f}%"
    return f"{mean:.4f}" if std != std else f"{mean:.4f}±{std:.4f}"


def _change(value: float, relative: bool) -> str:
    if value != value:
        return "-"
    return f"{value * 100:+.1f}%" if relative else f"{value * 100:+.2f} pp"


def format_table(summary: pd.DataFrame, baseline: str = BASELINE) -> str:
    """Two plain-text tables: mean ± std over seeds per variant, then the change against ``baseline``."""
    labels = [label for _, label in METRICS]
    values = [[row.variant, str(row.seeds)] + [
        _cell(getattr(row, f"{c}_mean"), getattr(row, f"{c}_std"), percent=c == "mse_increase") for c, _ in METRICS]
        for row in summary.itertuples()]
    lines = _columns(["variant", "seeds", *labels], values)
    if baseline in set(summary["variant"]):
        changes = [[row.variant] + [_change(getattr(row, f"{c}_change"), c in RELATIVE_CHANGE) for c, _ in METRICS]
                   for row in summary.itertuples() if row.variant != baseline]
        if changes:
            lines += ["", f"change against {baseline} (relative; W8A8 incr.: difference in percentage points)"]
            lines += _columns(["variant", *labels], changes)
    else:
        lines += ["", f"(no {baseline} variant in this study: no changes against it)"]
    return "\n".join(lines)


def _columns(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths))).rstrip()
            for r in [header, *rows]]


def plot_summary(summary: pd.DataFrame) -> Figure:
    """Bars of kurtosis, max ∞-norm and W8A8 test MSE per variant (mean, ± std whiskers)."""
    from matplotlib.figure import Figure

    names = list(summary["variant"])
    fig = Figure(figsize=(4 + 1.1 * len(names), 3.6), layout="constrained")
    axes = fig.subplots(1, len(PLOTTED))
    labels = dict(METRICS)
    colors = [f"C{i}" for i in range(len(names))]
    for ax, column in zip(axes, PLOTTED):
        std = summary[f"{column}_std"]
        yerr = std.fillna(0.0) if std.notna().any() else None  # no whiskers with one seed
        ax.bar(range(len(names)), summary[f"{column}_mean"], yerr=yerr, color=colors, capsize=3)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set_title(labels[column])
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"outlier efficiency per variant (mean over {int(summary['seeds'].max())} seed(s))")
    return fig


def write_summary(runs: pd.DataFrame, out: str | Path, baseline: str = BASELINE) -> tuple[pd.DataFrame, dict[str, Path]]:
    """Write OUT/runs.csv (one row per run), OUT/summary.csv (per variant) and OUT/summary.png."""
    out = Path(out)
    summary = summarise(runs, baseline)
    paths = {"runs": out / "runs.csv", "summary": out / "summary.csv", "plot": out / "summary.png"}
    runs.to_csv(paths["runs"], index=False)
    summary.to_csv(paths["summary"], index=False)
    plot_summary(summary).savefig(paths["plot"], dpi=120)
    return summary, paths
