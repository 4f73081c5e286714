"""`stanhop train` / `stanhop evaluate` end to end on the smoke config, through the real CLI."""

import csv
import itertools
import json
import math
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import cli
from stanhop.runs import load_run

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")


def invoke(*args: str):
    return CliRunner().invoke(cli.cli, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "smoke"
    result = invoke("train", "--config", SMOKE, "--out", str(out), "--set", "model.d_model=12", "--set", "model.n_heads=3")
    assert result.exit_code == 0, result.output
    return out


def test_train_writes_a_complete_run_directory(smoke_run: Path):
    for name in ("stanhop.json", "config.yaml", "scaler.json", "model.safetensors", "metrics.json",
                 "logs/metrics.csv", "checkpoints/best.ckpt", "checkpoints/last.ckpt"):
        assert (smoke_run / name).is_file(), name
    metrics = json.loads((smoke_run / "metrics.json").read_text())
    for key in ("mse", "mae", "mse_original_units", "mae_original_units"):
        assert math.isfinite(metrics["test"][key]) and metrics["test"][key] > 0
    assert math.isfinite(metrics["val"]["mse"]) and math.isfinite(metrics["val"]["mae"])
    assert metrics["outliers"]["kurtosis_avg"] > 0 and metrics["outliers"]["inf_norm_max"] > 0
    assert metrics["outliers"]["per_module"]
    assert metrics["epochs"] == 2 and metrics["separation"] == "entmax" and metrics["split"] == "0.06/0.03/0.03"
    assert metrics["params"] == sum(p.numel() for p in load_run(smoke_run).model.parameters())
    assert not (Path.cwd() / "lightning_logs").exists()
    mask = os.umask(0)
    os.umask(mask)
    for name in ("stanhop.json", "config.yaml", "scaler.json", "model.safetensors", "metrics.json"):
        assert stat.S_IMODE((smoke_run / name).stat().st_mode) == 0o666 & ~mask, name  # as the umask allows, not private


@pytest.mark.parametrize("split, notice", [
    ("3/1/1", "notice: the split 3/1/1 (months of 30 days) uses the first 150 of the 400 rows"),
    ("0.5/0.1/0.1", "notice: the split 0.5/0.1/0.1 uses the first 280 of the 400 rows of"),  # 30% unused
    ("0.5/0.2/0.2", None),  # 10% unused: a margin the user chose
])
def test_train_on_a_daily_csv_says_when_a_split_leaves_rows_unused(tmp_path: Path, split, notice):
    days = pd.date_range("2020-01-01", periods=400, freq="D")
    t = np.arange(400)
    frame = pd.DataFrame({"a": np.sin(t / 7), "OT": np.cos(t / 30)}, index=pd.Index(days, name="date"))
    frame.to_csv(tmp_path / "daily.csv")
    result = invoke("train", "--config", SMOKE, "--data", str(tmp_path / "daily.csv"), "--split", split, "--out",
                    str(tmp_path / "run"), "--set", "train.max_epochs=1", "--set", "train.limit_train_batches=1")
    assert result.exit_code == 0, result.output
    if notice is None:
        assert "unused" not in result.stderr, result.stderr
    else:
        assert notice in result.stderr, result.stderr


def test_a_constant_channel_is_pointed_out(tmp_path: Path):
    days = pd.date_range("2020-01-01", periods=400, freq="D")
    t = np.arange(400)
    frame = pd.DataFrame({"a": np.sin(t / 7), "flat": 5.0, "OT": np.cos(t / 30)}, index=pd.Index(days, name="date"))
    frame.to_csv(tmp_path / "daily.csv")
    result = invoke("train", "--config", SMOKE, "--data", str(tmp_path / "daily.csv"), "--split", "0.7/0.1/0.2", "--out",
                    str(tmp_path / "run"), "--set", "train.max_epochs=1", "--set", "train.limit_train_batches=1")
    assert result.exit_code == 0, result.output
    told = [line for line in result.stderr.splitlines() if "hold one value all through the training rows" in line]
    assert len(told) == 1 and "column(s) flat hold" in told[0] and "--columns" in told[0], result.stderr


def test_a_channel_whose_scale_a_few_extreme_values_set_is_pointed_out(tmp_path: Path):
    days = pd.date_range("2020-01-01", periods=400, freq="D")
    t = np.arange(400)
    spiky = np.random.default_rng(0).normal(size=400)
    spiky[100] = 1e9  # a typo: the training rows' scale is set by it alone
    heavy = np.random.default_rng(1).standard_t(2, size=400)  # heavy tails of its own: no notice
    frame = pd.DataFrame({"spiky": spiky, "heavy": heavy, "OT": np.cos(t / 30)}, index=pd.Index(days, name="date"))
    frame.to_csv(tmp_path / "daily.csv")
    result = invoke("train", "--config", SMOKE, "--data", str(tmp_path / "daily.csv"), "--split", "0.7/0.1/0.2", "--out",
                    str(tmp_path / "run"), "--set", "train.max_epochs=1", "--set", "train.limit_train_batches=1")
    assert result.exit_code == 0, result.output
    told = [line for line in result.stderr.splitlines() if "a few extreme values set the scale of" in line]
    scale = frame["spiky"].iloc[:280].std(ddof=0)  # the training rows' (0.7 of 400)
    assert len(told) == 1 and f"of spiky (its scale {scale:.3g} against" in told[0], result.stderr
    assert "1e+09 at 2020-04-10" in told[0] and "heavy" not in told[0] and "OT" not in told[0], told


@pytest.mark.parametrize("magnitude, largest", [(1e-170, "1.5e-170"), (1e200, "1.5e+200")])
def test_values_too_far_from_1_to_standardise_are_refused(tmp_path: Path, magnitude, largest):
    days = pd.date_range("2020-01-01", periods=400, freq="D")
    t = np.arange(400)
    frame = pd.DataFrame({"x": magnitude * (1 + 0.5 * np.sin(t / 7)), "OT": np.cos(t / 30)},
                         index=pd.Index(days, name="date"))
    frame.to_csv(tmp_path / "daily.csv")
    result = invoke("train", "--config", SMOKE, "--data", str(tmp_path / "daily.csv"), "--split", "0.7/0.1/0.2", "--out",
                    str(tmp_path / "run"), "--set", "train.max_epochs=1")
    assert result.exit_code == 2 and not (tmp_path / "run").exists()
    assert result.output.strip() == (f"error: {tmp_path / 'daily.csv'}: column(s) x hold values too far from 1 to "
                                     f"standardise (largest magnitude {largest}); multiply or divide them by a power "
                                     "of ten first"), result.output


def test_a_notice_about_the_data_file_is_told_once_naming_it_as_given(tmp_path: Path, monkeypatch):
    days = pd.date_range("2020-01-01", periods=400, freq="D")
    t = np.arange(400)
    frame = pd.DataFrame({"a": np.sin(t / 7), "OT": np.cos(t / 30)}, index=pd.Index(days, name="date"))
    frame.to_csv(tmp_path / "export.csv", sep=";", decimal=",")  # a spreadsheet's export: a notice says how it is read
    monkeypatch.chdir(tmp_path)
    result = invoke("train", "--config", SMOKE, "--data", "export.csv", "--split", "0.7/0.1/0.2", "--out", "run",
                    "--set", "train.max_epochs=1", "--set", "train.limit_train_batches=1")
    assert result.exit_code == 0, result.output
    told = [line for line in result.stderr.splitlines() if "reading it as semicolon-separated" in line]
    assert told == ["notice: export.csv: reading it as semicolon-separated values with decimal commas"], result.stderr


@pytest.mark.parametrize("config", ["smoke.yaml", "quick.yaml"])
def test_a_shipped_config_trains_on_a_csv_of_other_columns(tmp_path: Path, config):
    """The shipped configs leave data.target to the data (ETTh1's OT, a CSV's last channel), so
    --data with other columns trains; a target asked for must be a channel."""
    t = np.arange(1000)
    frame = pd.DataFrame({"temp": np.sin(t / 7), "load": np.cos(t / 30)},
                         index=pd.Index(pd.date_range("2020-01-01", periods=1000, freq="h"), name="date"))
    frame.to_csv(tmp_path / "mine.csv")
    common = ["train", "--config", str(ROOT / "configs" / config), "--data", str(tmp_path / "mine.csv"),
              "--split", "0.6/0.2/0.2", "--set", "train.max_epochs=1", "--set", "train.limit_train_batches=1"]
    from stanhop.plot import target_of

    result = invoke(*common, "--out", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    assert target_of(load_run(tmp_path / "run")) == "load"
    chosen = invoke(*common, "--set", "data.target=temp", "--out", str(tmp_path / "chosen"))
    assert chosen.exit_code == 0 and target_of(load_run(tmp_path / "chosen")) == "temp"
    asked = CliRunner().invoke(cli.cli, [*common, "--set", "data.target=OT", "--out", str(tmp_path / "asked")])
    assert asked.exit_code == 2
    assert "data.target 'OT' is not a channel; channels: temp, load (choose one with --set data.target=NAME; Python: data.target)" in asked.stderr


def test_a_run_finds_its_csv_from_any_folder(tmp_path: Path, monkeypatch):
    t = np.arange(600)
    frame = pd.DataFrame({"a": np.sin(t / 7), "b": np.cos(t / 30)},
                         index=pd.Index(pd.date_range("2020-01-01", periods=600, freq="h"), name="date"))
    (tmp_path / "work").mkdir()
    frame.to_csv(tmp_path / "work" / "mine.csv")
    monkeypatch.chdir(tmp_path / "work")
    result = invoke("train", "--config", SMOKE, "--data", "mine.csv", "--split", "0.6/0.2/0.2", "--out", "run",
                    "--set", "train.max_epochs=1", "--set", "train.limit_train_batches=1")
    assert result.exit_code == 0, result.output
    run = tmp_path / "work" / "run"
    assert load_run(run).config.data.name == str(tmp_path / "work" / "mine.csv")  # saved absolute
    monkeypatch.chdir(tmp_path)
    assert invoke("evaluate", str(run)).exit_code == 0
    (tmp_path / "work" / "mine.csv").rename(tmp_path / "moved.csv")
    gone = CliRunner().invoke(cli.cli, ["evaluate", str(run)])
    assert gone.exit_code == 2
    assert f"the run's data file {tmp_path / 'work' / 'mine.csv'} is not found (moved or deleted?)" in gone.stderr
    assert "evaluate can read a copy with --data" in gone.stderr
    untuned = CliRunner().invoke(cli.cli, ["tune", str(run)])  # tune has no --data: its own remedy
    assert untuned.exit_code == 2 and "put it back there" in untuned.stderr and "--data" not in untuned.stderr
    assert CliRunner().invoke(cli.cli, ["evaluate", str(run), "--data", str(tmp_path / "moved.csv")]).exit_code == 0
    # the same rows at another path: the run's own windows, so metrics.json takes the new path
    assert json.loads((run / "metrics.json").read_text())["data"] == str(tmp_path / "moved.csv")


def test_evaluate_on_other_data_or_split_keeps_the_runs_own_figures(smoke_run: Path, tmp_path: Path):
    """metrics.json holds the run's own evaluation: another split, or a CSV with the same
    columns but other values, is printed (or given as JSON) and leaves it as it was."""
    own = (smoke_run / "metrics.json").read_bytes()
    saved = json.loads(own)
    saved_w8a8 = {**saved, "quantized": {"w8a8": {"mse": 1.0, "mae": 1.0, "range": "minmax", "mse_increase": 0.0}}}
    (smoke_run / "metrics.json").write_text(json.dumps(saved_w8a8))  # figures that must not leak into other data's
    own = (smoke_run / "metrics.json").read_bytes()

    other_split = CliRunner().invoke(cli.cli, ["evaluate", str(smoke_run), "--split", "0.5/0.2/0.2", "--json"])
    assert other_split.exit_code == 0, other_split.output
    figures = json.loads(other_split.stdout)
    assert figures["split"] == "0.5/0.2/0.2" and figures["params"] == saved["params"]
    assert "quantized" not in figures
    assert figures["test"]["mse"] != pytest.approx(saved["test"]["mse"], rel=1e-3)  # really the other split's windows
    assert "metrics.json is unchanged" in other_split.stderr
    assert (smoke_run / "metrics.json").read_bytes() == own

    frame = pd.read_csv(Path(os.environ["STANHOP_DATA_DIR"]) / "ETTh1.csv")
    frame[frame.columns[1:]] *= 1.5  # the same columns and dates, other values
    frame.to_csv(tmp_path / "other.csv", index=False)
    other_data = CliRunner().invoke(cli.cli, ["evaluate", str(smoke_run), "--data", str(tmp_path / "other.csv")])
    assert other_data.exit_code == 0, other_data.output
    assert "test MSE" in other_data.stdout and "w8a8" not in other_data.stdout
    assert f"these are of {tmp_path / 'other.csv'}, split {saved['split']}" in other_data.stderr
    assert (smoke_run / "metrics.json").read_bytes() == own

    start, end = json.loads((smoke_run / "scaler.json").read_text())["borders"]["test"]
    frame = pd.read_csv(Path(os.environ["STANHOP_DATA_DIR"]) / "ETTh1.csv")
    frame.loc[start : end - 1, "OT"] += 10  # the run's training and validation rows, other test rows
    frame.to_csv(tmp_path / "other_test.csv", index=False)
    other_test = CliRunner().invoke(cli.cli, ["evaluate", str(smoke_run), "--data", str(tmp_path / "other_test.csv")])
    assert other_test.exit_code == 0, other_test.output
    assert f"these are of {tmp_path / 'other_test.csv'}" in other_test.stderr
    assert (smoke_run / "metrics.json").read_bytes() == own

    again = invoke("evaluate", str(smoke_run))  # its own data and split: recomputed into metrics.json
    assert "is unchanged" not in again.stderr
    assert json.loads((smoke_run / "metrics.json").read_text())["quantized"] == saved_w8a8["quantized"]
    (smoke_run / "metrics.json").write_text(json.dumps(saved))


def test_set_overrides_reach_the_model(smoke_run: Path):
    run = load_run(smoke_run)
    assert run.config.model.d_model == 12 and run.config.model.n_heads == 3
    assert run.model.embedding.proj.out_features == 12


def test_bf16_mixed_precision_trains_with_gradient_clipping(tmp_path: Path, fast_smoke_args):
    """--precision bf16-mixed with the default clipping, through the CLI (the step itself:
    test_optimiser_step)."""
    out = tmp_path / "bf16"
    result = invoke("train", "--config", SMOKE, "--out", str(out), "--accelerator", "cpu", "--precision", "bf16-mixed",
                    *fast_smoke_args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    train = load_run(out).config.train
    assert train.precision == "bf16-mixed" and train.grad_clip > 0
    assert metrics["epochs"] == 2 and math.isfinite(metrics["test"]["mse"])


def test_the_best_checkpoint_is_the_one_evaluated(smoke_run: Path):
    with open(smoke_run / "logs" / "metrics.csv") as f:
        val = [float(row["val_mse"]) for row in csv.DictReader(f) if row.get("val_mse")]
    metrics = json.loads((smoke_run / "metrics.json").read_text())
    assert len(val) == 2
    assert metrics["val"]["mse"] == pytest.approx(min(val), rel=1e-4)


def test_outlier_statistics_are_those_of_the_test_split(smoke_run: Path):
    """evaluate takes them in its test pass, by hooks; a pass of their own gives the same."""
    from stanhop.outliers import outlier_stats
    from stanhop.workflow import run_data_module

    run = load_run(smoke_run)
    alone = outlier_stats(run.model, (x for x, _ in run_data_module(run).test_dataloader()))
    saved = json.loads((smoke_run / "metrics.json").read_text())["outliers"]
    assert saved["kurtosis_avg"] == pytest.approx(alone["kurtosis_avg"], rel=1e-6)
    assert saved["inf_norm_max"] == pytest.approx(alone["inf_norm_max"], rel=1e-6)
    assert saved["per_module"].keys() == alone["per_module"].keys()


def test_evaluate_recomputes_the_same_metrics(smoke_run: Path):
    before = json.loads((smoke_run / "metrics.json").read_text())
    result = invoke("evaluate", str(smoke_run))
    assert result.exit_code == 0, result.output
    after = json.loads((smoke_run / "metrics.json").read_text())
    assert after["test"]["mse"] == pytest.approx(before["test"]["mse"], rel=1e-6)
    assert after["outliers"]["kurtosis_avg"] == pytest.approx(before["outliers"]["kurtosis_avg"], rel=1e-6)
    assert "test MSE" in result.output


def test_evaluate_measures_anew_over_a_damaged_metrics_file_and_keeps_it(smoke_run: Path, tmp_path: Path):
    import shutil

    run = shutil.copytree(smoke_run, tmp_path / "run")
    before = json.loads((run / "metrics.json").read_text())
    damaged = (run / "metrics.json").read_text()[:40]  # cut short, as by a full disk
    (run / "metrics.json").write_text(damaged)
    result = CliRunner().invoke(cli.cli, ["evaluate", str(run)])
    assert result.exit_code == 0, result.output
    assert f"it is kept as {run / 'metrics.json.unreadable'}" in result.stderr
    assert (run / "metrics.json.unreadable").read_text() == damaged
    assert json.loads((run / "metrics.json").read_text())["test"]["mse"] == pytest.approx(before["test"]["mse"], rel=1e-6)


def test_a_second_run_into_an_existing_directory_is_refused_without_force(smoke_run: Path):
    before = (smoke_run / "model.safetensors").read_bytes()
    result = CliRunner().invoke(cli.cli, ["train", "--config", SMOKE, "--out", str(smoke_run)])
    assert result.exit_code == 2
    assert "already exists" in result.output and "--force" in result.output
    assert "Traceback" not in result.output
    assert (smoke_run / "model.safetensors").read_bytes() == before
    from stanhop.config import load_config
    from stanhop.errors import UserError
    from stanhop.workflow import train

    with pytest.raises(UserError, match=r"already exists; .* \(in Python: out=, force=True\)"):  # named for Python too
        train(load_config(SMOKE), smoke_run, progress=False)
    assert (smoke_run / "model.safetensors").read_bytes() == before


def test_an_unfinished_run_in_the_way_is_named_with_the_command_that_continues_it(smoke_run: Path, tmp_path: Path):
    import shutil

    stopped = tmp_path / "stopped"
    shutil.copytree(smoke_run, stopped)
    for name in ("metrics.json", "model.safetensors"):  # as a training interrupted after its first epoch leaves it
        (stopped / name).unlink()
    result = CliRunner().invoke(cli.cli, ["train", "--config", SMOKE, "--out", str(stopped)])
    assert result.exit_code == 2 and result.output.strip().endswith(
        f"it is unfinished: stanhop train --resume {stopped} continues it"), result.output


def test_force_refuses_to_replace_a_folder_of_another_tool(tmp_path: Path):
    (tmp_path / "precious.txt").write_text("keep me")
    result = CliRunner().invoke(cli.cli, ["train", "--config", SMOKE, "--out", str(tmp_path)])
    assert result.exit_code == 2 and result.output.strip() == (
        f"error: {tmp_path} already exists and is not a stanhop run directory; choose another --out (in Python: out=)")
    result = CliRunner().invoke(cli.cli, ["train", "--config", SMOKE, "--out", str(tmp_path), "--force"])
    assert result.exit_code == 2 and "not a stanhop run directory" in result.output
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_invalid_config_value_is_a_one_line_error():
    result = CliRunner().invoke(cli.cli, ["train", "--config", SMOKE, "--set", "model.in_len=-5"])
    assert result.exit_code == 2 and "model.in_len must be a positive whole number" in result.output


ALL_COMMANDS = [[]] + [[name] for name in sorted(cli.cli.commands)] + [["data", "describe"]]


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=lambda c: " ".join(c) or "stanhop")
def test_help_imports_no_torch_or_lightning(command):
    code = "import sys, cli; sys.argv = ['stanhop', *sys.argv[1:], '--help']; cli.main()"
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code, *command], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Example" in done.stdout  # every help shows a worked example
    imported = {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.splitlines() if "|" in line}
    assert not imported & {"torch", "lightning", "pandas", "matplotlib"}


def test_train_says_where_the_run_is(tmp_path: Path, monkeypatch, fast_smoke_args):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli.cli, ["train", "--config", SMOKE, *fast_smoke_args])
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs").iterdir()  # runs/ETTh1-entmax-<time>, named when no --out is given
    assert run.name.startswith("ETTh1-entmax-") and (run / "model.safetensors").is_file()
    assert f"the run is in runs/{run.name}: stanhop plot runs/{run.name} draws its forecast" in result.stderr
    # stderr is no terminal here (as a log file): a line per epoch, no redrawn progress bars
    lines = re.findall(r"^epoch (\d+)/\d+, train_loss [\d.]+, val_mse ([\d.]+) \(best ([\d.]+)\), \d+ s$",
                       result.stderr, flags=re.M)
    with open(run / "logs" / "metrics.csv") as f:
        logged = [float(row["val_mse"]) for row in csv.DictReader(f) if row.get("val_mse")]
    assert [int(epoch) for epoch, _, _ in lines] == list(range(1, len(logged) + 1))
    assert [float(v) for _, v, _ in lines] == pytest.approx(logged, abs=1e-4)
    assert [float(b) for _, _, b in lines] == pytest.approx(list(itertools.accumulate(logged, min)), abs=1e-4)
    assert "it/s" not in result.stderr and "batch/s" not in result.stderr


def test_limit_train_batches_counts_batches_when_whole_and_shares_them_when_a_fraction(tmp_path: Path):
    """As Lightning reads it: `--set train.limit_train_batches=1` is one batch an epoch (it was
    taken for 1.0, the whole epoch), 0.5 half of them, 1.0 all."""
    from stanhop.training import batches_per_epoch

    assert [batches_per_epoch(v) for v in (1, 3, 3.0, 0.5, 1.0)] == [1, 3, 3, 0.5, None]
    result = invoke("train", "--config", SMOKE, "--out", str(tmp_path / "run"), "--set", "train.max_epochs=1",
                    "--set", "train.limit_train_batches=1")
    assert result.exit_code == 0, result.output
    with open(tmp_path / "run" / "logs" / "metrics.csv") as f:
        steps = [int(row["step"]) for row in csv.DictReader(f) if row.get("val_mse")]
    assert steps == [0]  # the one epoch's validation, logged after its one training step (step 0)


def test_init_from_is_recorded_as_a_path_found_from_any_folder(run_dir: Path, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(run_dir.parent)
    tiny = ["--max-epochs", "1", "--set", "train.limit_train_batches=1"]
    result = invoke("train", "--init-from", run_dir.name, "--out", str(tmp_path / "tuned"), *tiny)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "tuned" / "metrics.json").read_text())["init_from"] == str(run_dir.resolve())


def test_init_from_starts_a_new_run_from_a_finished_runs_weights(run_dir: Path, tmp_path: Path):
    """With a learning rate too small to move a float32 weight, the new run's model is the
    old one: the same weights and test MSE. Trained from scratch alike, it is not."""
    from safetensors.torch import load_file

    tiny = ["--max-epochs", "1", "--set", "train.lr=1e-30", "--set", "train.limit_train_batches=2"]
    result = invoke("train", "--init-from", str(run_dir), "--out", str(tmp_path / "tuned"), *tiny)
    assert result.exit_code == 0, result.output
    assert f"the model starts from the weights of {run_dir}" in result.stderr
    tuned, source = (json.loads((d / "metrics.json").read_text()) for d in (tmp_path / "tuned", run_dir))
    assert tuned["init_from"] == str(run_dir) and tuned["epochs"] == 1
    assert tuned["test"]["mse"] == pytest.approx(source["test"]["mse"], rel=1e-6)
    old, new = (load_file(str(d / "model.safetensors")) for d in (run_dir, tmp_path / "tuned"))
    assert all(torch_equal(old[k], new[k]) for k in old)
    assert load_run(tmp_path / "tuned").config.model == load_run(run_dir).config.model  # its config stood in
    elsewhere = invoke("evaluate", str(tmp_path / "tuned"), "--split", "0.5/0.2/0.2", "--json")
    assert json.loads(elsewhere.stdout)["init_from"] == str(run_dir)  # it describes the model, on any data

    fresh = invoke("train", "--config", str(run_dir / "config.yaml"), "--out", str(tmp_path / "fresh"), *tiny)
    assert fresh.exit_code == 0, fresh.output
    scratch = json.loads((tmp_path / "fresh" / "metrics.json").read_text())["test"]["mse"]
    assert abs(scratch - source["test"]["mse"]) > 0.01 * source["test"]["mse"]


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_init_from_refuses_another_model_other_channels_and_its_own_folder(run_dir: Path, tmp_path: Path, etth1):
    d_model = load_run(run_dir).config.model.d_model
    wider = CliRunner().invoke(cli.cli, ["train", "--init-from", str(run_dir), "--out", str(tmp_path / "a"),
                                         "--set", f"model.d_model={2 * d_model}"])
    assert wider.exit_code == 2 and f"d_model ({2 * d_model} here, {d_model} there)" in wider.stderr
    renamed = tmp_path / "renamed.csv"
    etth1.rename(columns={"OT": "oil"}).to_csv(renamed, index_label="date")
    other = CliRunner().invoke(cli.cli, ["train", "--init-from", str(run_dir), "--out", str(tmp_path / "b"),
                                         "--data", str(renamed)])
    assert other.exit_code == 2 and "lacks the channel(s) OT" in other.stderr
    before = sorted(p.name for p in run_dir.iterdir())
    same = CliRunner().invoke(cli.cli, ["train", "--init-from", str(run_dir), "--out", str(run_dir), "--force"])
    assert same.exit_code == 2 and "is kept" in same.stderr
    assert sorted(p.name for p in run_dir.iterdir()) == before
    both = CliRunner().invoke(cli.cli, ["train", "--resume", str(run_dir), "--init-from", str(run_dir)])
    assert both.exit_code == 2 and "--init-from" in both.stderr
    assert not any((tmp_path / name).exists() for name in ("a", "b"))
    gone = CliRunner().invoke(cli.cli, ["train", "--init-from", str(tmp_path / "nowhere"), "--out", str(tmp_path / "c")])
    assert gone.exit_code == 2 and "nowhere" in gone.stderr and "Traceback" not in gone.output
    quick = str(ROOT / "configs" / "quick.yaml")  # another model's config: told whose settings are used, then refused
    mixed = CliRunner().invoke(cli.cli, ["train", "--init-from", str(run_dir), "--config", quick, "--out", str(tmp_path / "d")])
    assert f"--config {quick} stands in for {run_dir}'s config" in mixed.stderr and mixed.exit_code == 2
    into_itself = CliRunner().invoke(cli.cli, ["train", "--init-from", str(run_dir), "--config", quick, "--out", str(run_dir)])
    assert into_itself.exit_code == 2 and into_itself.stderr.strip().splitlines() == [
        f"error: --init-from {run_dir} is the run to start from and is kept: give the new run another --out"]  # alone


def test_the_built_in_default_is_configs_etth1_yaml():
    """train without --config uses "configs/etth1.yaml's settings built in", as its help says."""
    from stanhop.config import Config, load_config

    assert Config() == load_config(ROOT / "configs" / "etth1.yaml")


@pytest.mark.parametrize("data, label", [("ETTh1", "ETTh1"), ("/data/sales.csv.gz", "sales"), ("rel/x.csv.xz", "x"),
                                         ("/data/y.csv", "y")])
def test_a_run_without_out_goes_under_runs_named_by_its_data(data, label):
    from stanhop.config import load_config
    from stanhop.workflow import default_run_dir

    config = load_config(SMOKE)
    config.data.name = data
    run_dir = default_run_dir(config)  # a compressed file's run went beside the file, named by its whole path
    assert run_dir.parent == Path("runs") and run_dir.name.startswith(f"{label}-entmax-")


def test_evaluate_tells_a_log_each_pass_and_names_a_copy_by_its_absolute_path(smoke_run: Path, tmp_path: Path, monkeypatch):
    import shutil

    before = json.loads((smoke_run / "metrics.json").read_text())
    shutil.copy(Path(os.environ["STANHOP_DATA_DIR"]) / "ETTh1.csv", tmp_path / "copy.csv")
    monkeypatch.chdir(tmp_path)
    result = invoke("evaluate", str(smoke_run), "--data", "copy.csv")  # a copy of the run's own file: its figures saved
    assert result.exit_code == 0, result.output
    after = json.loads((smoke_run / "metrics.json").read_text())
    assert after["data"] == str(tmp_path / "copy.csv") and after["test"] == pytest.approx(before["test"])  # absolute
    (smoke_run / "metrics.json").write_text(json.dumps(before))
    # stderr is a log here, not a terminal: a line for each pass, where a terminal gets bars
    assert re.search(r"^evaluating the test split: \d+ windows$", result.stderr, flags=re.M), result.stderr
    assert re.search(r"^evaluating the validation split: \d+ windows$", result.stderr, flags=re.M)


def test_a_run_keeps_its_cross_series_stage_and_older_runs_read_as_the_router(tmp_path: Path, fast_smoke_args, run_dir):
    """model.cross_series=stanhop (STanHop's own stage) is saved with the run and rebuilt on
    loading; --init-from another stage is refused (other weights); a config.yaml written before
    the key existed reads as the router, which every run was then."""
    from stanhop.config import load_config
    from stanhop.hopfield import HopfieldLayer

    out = tmp_path / "paper"
    result = invoke("train", "--config", SMOKE, "--out", str(out), *fast_smoke_args, "--set", "model.cross_series=stanhop")
    assert result.exit_code == 0, result.output
    assert "cross-series stanhop" in result.output
    assert json.loads((out / "metrics.json").read_text())["cross_series"] == "stanhop"
    alone = invoke("runs", str(out))  # every run listed the paper's: still told apart from router runs
    assert "cross-series" in alone.stdout.splitlines()[0] and "stanhop" in alone.stdout.splitlines()[1]
    (tmp_path / "router").symlink_to(run_dir)  # a router run beside it: runs shows the stage of each
    listed = invoke("runs", str(tmp_path))
    assert "cross-series" in listed.stdout.splitlines()[0]
    assert {"router", "stanhop"} <= {cell for line in listed.stdout.splitlines()[1:] for cell in line.split()}
    run = load_run(out)
    assert run.config.model.cross_series == "stanhop"
    assert all(isinstance(b.pooling, HopfieldLayer) for b in run.model.encoder.blocks)
    assert np.isfinite(run.forecast().drop(columns="date", errors="ignore").select_dtypes("number").to_numpy()).all()
    other = CliRunner().invoke(cli.cli, ["train", "--init-from", str(out), "--out", str(tmp_path / "b"),
                                         "--set", "model.cross_series=router"])
    assert other.exit_code == 2 and "cross_series" in other.stderr
    config = out / "config.yaml"
    config.write_text("".join(line for line in config.read_text().splitlines(keepends=True)
                              if not line.strip().startswith("cross_series:")))
    assert load_config(config).model.cross_series == "router"


ONE_STEP = ["data.split=0.03/0.01/0.01", "train.limit_train_batches=1", "train.max_epochs=1"]


@pytest.mark.parametrize("deterministic", [False, True])
def test_train_leaves_torchs_determinism_as_the_caller_set_it(tmp_path: Path, monkeypatch, deterministic):
    # Lightning's Trainer(deterministic=...) sets it for the whole process: False switched off a caller's
    # True (and its warn_only), True stayed on afterwards with CUBLAS_WORKSPACE_CONFIG set
    import torch

    from stanhop.config import apply_overrides, load_config
    from stanhop.workflow import train

    def settings():
        return (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
                torch.backends.cudnn.benchmark, os.environ.get("CUBLAS_WORKSPACE_CONFIG"))

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = settings()
    try:
        torch.use_deterministic_algorithms(not deterministic, warn_only=not deterministic)  # the other way round
        torch.backends.cudnn.benchmark = True
        callers = settings()
        config = apply_overrides(load_config(SMOKE), [*ONE_STEP, f"train.deterministic={str(deterministic).lower()}"])
        train(config, tmp_path / "run", progress=False)
        assert settings() == callers
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.benchmark = before[2]


def test_train_quiets_lightning_only_while_it_trains(tmp_path: Path):
    # the loggers stayed at WARNING and four warnings filters stayed in the caller's process for good
    import logging
    import warnings

    from stanhop.config import apply_overrides, load_config
    from stanhop.workflow import train

    names = ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda", "lightning.fabric.utilities.seed")
    levels, filters = {name: logging.getLogger(name).level for name in names}, list(warnings.filters)
    train(apply_overrides(load_config(SMOKE), ONE_STEP), tmp_path / "run", progress=False)
    assert {name: logging.getLogger(name).level for name in names} == levels
    assert warnings.filters == filters


@pytest.mark.parametrize("value, shown", [(0.40291, "0.4029"), (0.0, "0.0000"), (2174311.068, "2174311.0680"), (21743110.68, "2.174e+07"),
                                          (2.17431e13, "2.174e+13"), (5.093e-25, "5.093e-25"), (0.00042, "0.00042")])
def test_metrics_keep_their_digits_in_any_units(value, shown):
    """Errors in original units may be 1e-25 or 1e+59: 4 decimals would show 0.0000 or 60 digits."""
    assert cli.metric_text(value) == shown


def test_cells_a_fill_made_up_are_not_scored(tmp_path: Path):
    """A series that ends early, filled by ffill: its carried-forward values are learned from but
    never scored as truth — test MSE and the naive baseline count the file's values alone."""
    import torch

    hours = pd.date_range("2021-01-01", periods=400, freq="h", name="date")
    t = np.arange(400)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": np.sin(t / 5) + 0.1 * rng.normal(size=400), "b": np.cos(t / 7),
                          "c": np.sin(t / 3) + 0.1 * rng.normal(size=400)}, index=hours)
    frame.loc[frame.index[-50:], "c"] = np.nan  # c ends 50 rows early, inside the test split
    frame.to_csv(tmp_path / "ragged.csv")
    result = invoke("train", "--config", SMOKE, "--data", str(tmp_path / "ragged.csv"), "--split", "0.7/0.1/0.2",
                    "--fill", "ffill", "--out", str(tmp_path / "run"), "--set", "train.max_epochs=1")
    assert result.exit_code == 0, result.output
    run = load_run(tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    mean, scale = np.array(run.data.mean), np.array(run.data.scale)
    observed = (frame.to_numpy() - mean) / scale  # NaN where the file has no value
    filled = (frame.ffill().to_numpy() - mean) / scale
    in_len, out_len = run.config.model.in_len, run.config.model.out_len
    start, end = run.data.borders["test"]
    starts = np.arange(start - in_len, end - in_len - out_len + 1)
    inputs = torch.tensor(np.stack([filled[s : s + in_len] for s in starts]), dtype=torch.float32)
    with torch.no_grad():
        forecast = run.model.eval()(inputs).double().numpy()
    truth = np.stack([observed[s + in_len : s + in_len + out_len] for s in starts])
    made_up = np.stack([filled[s + in_len : s + in_len + out_len] for s in starts])
    assert np.isnan(truth).any()
    assert metrics["test"]["mse"] == pytest.approx(np.nanmean((forecast - truth) ** 2), rel=1e-6)
    assert abs(metrics["test"]["mse"] - np.mean((forecast - made_up) ** 2)) > 1e-3  # what it scored before
    last = np.stack([filled[s + in_len - 1] for s in starts])[:, None]
    assert metrics["baselines"]["naive"]["mse"] == pytest.approx(np.nanmean((last - truth) ** 2), rel=1e-6)
    # backtests too: the run's own test split (its data.fill), and an --input filled by --fill
    own = run.backtest(stride=1)
    assert own.metrics["overall"]["mse"] == pytest.approx(metrics["test"]["mse"], rel=1e-6)
    table = tmp_path / "backtest.csv"
    result = invoke("forecast", str(tmp_path / "run"), "--input", str(tmp_path / "ragged.csv"), "--backtest", "--fill",
                    "ffill", "--stride", "1", "--output", str(table))
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(table)
    assert rows["c_true"].isna().sum() > 0 and rows["a_true"].notna().all()
    scored = rows.dropna(subset=["c_true"])
    told = json.loads((tmp_path / "backtest.metrics.json").read_text())["per_channel"]["c"]["mse_original_units"]
    assert told == pytest.approx(((scored["c_pred"] - scored["c_true"]) ** 2).mean(), rel=1e-6)
    last = run.backtest(frame.ffill(), truth=frame, n_windows=1).metrics  # c has no value in its targets: no figure
    assert last["per_channel"]["c"] == dict.fromkeys(last["per_channel"]["a"]) and last["per_channel"]["a"]["mse"] > 0
    frame.loc[frame.index[-90:]] = np.nan  # the file's last rows empty (as for future dates): no test to score
    frame.to_csv(tmp_path / "empty-end.csv")
    result = invoke("train", "--config", SMOKE, "--data", str(tmp_path / "empty-end.csv"), "--split", "0.7/0.1/0.2",
                    "--fill", "ffill", "--out", str(tmp_path / "nothing"))
    assert result.exit_code == 2 and not (tmp_path / "nothing").exists()
    assert "the test split's 80 target rows hold no value of the file" in result.output, result.output


def test_instance_norm_forecasts_a_series_whose_level_moved_after_training(tmp_path: Path):
    """A level 50 higher in the test rows than anything trained on: without RevIN the forecast
    stays near the training level; with model.instance_norm each window keeps its own."""
    hours = pd.date_range("2020-01-01", periods=600, freq="h", name="date")
    t = np.arange(600)
    rng = np.random.default_rng(0)
    moved = np.sin(2 * np.pi * t / 24) + rng.normal(0, 0.3, 600)
    moved[480:] += 50
    frame = pd.DataFrame({"a": np.sin(2 * np.pi * t / 24) + rng.normal(0, 0.3, 600), "s": moved}, index=hours)
    frame.to_csv(tmp_path / "moved.csv")
    mse = {}
    for revin in (False, True):
        out = tmp_path / f"revin-{revin}"
        result = invoke("train", "--config", SMOKE, "--data", str(tmp_path / "moved.csv"), "--split", "0.7/0.1/0.2",
                        "--out", str(out), "--set", "train.max_epochs=3", "--set", f"model.instance_norm={str(revin).lower()}")
        assert result.exit_code == 0, result.output
        assert ("instance norm (RevIN)" in result.output) == revin
        mse[revin] = json.loads((out / "metrics.json").read_text())["test"]["mse"]
    assert mse[True] < mse[False] / 5, mse
    listed = invoke("runs", str(tmp_path)).stdout.splitlines()
    assert "RevIN" in listed[0] and {"yes", "no"} <= {cell for line in listed[1:] for cell in line.split()}
