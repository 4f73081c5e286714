"""The outlier-efficiency study: quantized STanHop-Net, variants, aggregation, and `stanhop compare`
end to end (train, reuse, continue after an interruption) through the real CLI."""

import json
import math
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from cli import cli
from stanhop import workflow
from stanhop.config import ModelConfig, load_config
from stanhop.errors import UserError
from stanhop.model import STanHopNet
from stanhop.quantize import quantize_model
from stanhop.runs import save_run_files, write_json, DataInfo
from stanhop.study import (
    Variant, format_table, plot_summary, replaced_settings, run_config, run_row, run_state, seed_list, summarise, variants,
)

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")
# 1 epoch of 3 batches on ETTh1's first 8% of rows: each run trains in a few seconds
QUICK = ["--max-epochs", "1", "--set", "train.limit_train_batches=3", "--set", "data.split=0.04/0.02/0.02"]


# ---------------------------------------------------------------- quantized STanHop-Net


@pytest.mark.parametrize("separation, gate", [("entmax", False), ("softmax1", True)])
def test_quantized_stanhopnet_close_at_16_bits_and_degraded_at_4(separation, gate):
    torch.manual_seed(0)
    cfg = ModelConfig(in_len=24, out_len=8, seg_len=4, win_size=2, d_model=16, d_ff=32, n_heads=2, e_layers=2,
                      factor=3, dropout=0.0, n_series=3, separation=separation, gate=gate)
    model = STanHopNet(cfg).eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(16, 24, 3, generator=gen)
    calibration = [torch.randn(16, 24, 3, generator=gen) for _ in range(3)] + [x]  # x inside the ranges
    with torch.no_grad():
        reference = model(x)
        error = {bits: ((quantize_model(model, calibration, weight_bits=bits, act_bits=bits)(x) - reference).norm()
                        / reference.norm()).item() for bits in (4, 8, 16)}
    assert error[16] < 5e-4  # 16 bits: indistinguishable from FP32 for forecasting
    assert error[4] > 0.05 and error[4] > 5 * error[8] > 5 * error[16]  # 4 bits: clearly worse
    assert not any(m._forward_hooks for m in model.modules())  # the FP32 model is untouched


# ---------------------------------------------------------------- variants and seeds


def test_variants_keep_order_add_gates_and_reject_unknown_names():
    assert [v.name for v in variants(["softmax", "Entmax "])] == ["softmax", "entmax"]
    assert [v.name for v in variants(["softmax", "softmax1"], gated=True)] == [
        "softmax", "softmax+gate", "softmax1", "softmax1+gate"]
    assert variants(["clipped+gate", "clipped+gate"]) == [Variant("clipped", True)]
    with pytest.raises(UserError, match="unknown separation 'relu'"):
        variants(["softmax", "relu"])
    with pytest.raises(UserError, match="no separations"):
        variants([])
    assert seed_list(3) == [0, 1, 2] and seed_list([4, 2, 4]) == [4, 2]
    with pytest.raises(UserError, match="--seeds"):
        seed_list(0)
    config = load_config(SMOKE)
    cfg = run_config(config, Variant("softmax1", True), 2)
    assert (cfg.model.separation, cfg.model.gate, cfg.train.seed) == ("softmax1", True, 2)
    assert (config.model.separation, config.model.gate, config.train.seed) == ("entmax", False, 0)  # a copy


# ---------------------------------------------------------------- aggregation


def fake_runs() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for variant, base in [("softmax1", 1.0), ("softmax", 2.0), ("softmax1+gate", 3.0)]:
        for seed in range(3):
            values = base + rng.normal(size=6) * 0.1
            rows.append({"variant": variant, "separation": variant.removesuffix("+gate"), "gate": "+gate" in variant,
                         "seed": seed, "test_mse": values[0], "test_mae": values[1], "kurtosis": values[2],
                         "inf_norm": values[3], "w8a8_mse": values[4], "mse_increase": values[5] / 100})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("revin", [False, True])
def test_runs_and_summary_say_whether_the_runs_used_instance_norm(revin):
    """RevIN (model.instance_norm) changes the figures as cross_series does: both tables name it."""
    metrics = {"test": {"mse": 0.5, "mae": 0.6}, "outliers": {"kurtosis_avg": 3.0, "inf_norm_max": 9.0},
               "quantized": {"w8a8": {"mse": 0.51, "mae": 0.61, "mse_increase": 0.02, "range": "minmax"}},
               "cross_series": "router", "instance_norm": revin}
    rows = [run_row(variant, seed, Path(f"r{seed}"), metrics, "reused") for variant in variants(["softmax", "softmax1"])
            for seed in range(2)]
    assert all(row["instance_norm"] is revin for row in rows)
    summary = summarise(pd.DataFrame(rows))
    assert summary["instance_norm"].tolist() == [revin, revin]


def test_summarise_means_sample_stds_and_changes_against_softmax():
    runs = fake_runs()
    summary = summarise(runs)
    assert list(summary["variant"]) == ["softmax1", "softmax", "softmax1+gate"]  # order of appearance
    assert list(summary["seeds"]) == [3, 3, 3] and list(summary["gate"]) == [False, False, True]
    for column in ("test_mse", "test_mae", "kurtosis", "inf_norm", "w8a8_mse", "mse_increase"):
        for row in summary.itertuples():
            values = runs.loc[runs["variant"] == row.variant, column].to_numpy()
            base = runs.loc[runs["variant"] == "softmax", column].to_numpy().mean()
            assert getattr(row, f"{column}_mean") == pytest.approx(values.sum() / 3)
            assert getattr(row, f"{column}_std") == pytest.approx(math.sqrt(((values - values.mean()) ** 2).sum() / 2))
            change = values.mean() - base if column == "mse_increase" else values.mean() / base - 1
            assert getattr(row, f"{column}_change") == pytest.approx(change)
    assert summary.loc[summary["variant"] == "softmax", "kurtosis_change"].item() == 0


def test_table_and_plot_show_every_variant():
    summary = summarise(fake_runs())
    table = format_table(summary)
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["variant", "seeds", "test", "MSE"]
    softmax1 = next(line for line in lines if line.startswith("softmax1 "))
    row = summary.iloc[0]
    assert f"{row.test_mse_mean:.4f}±{row.test_mse_std:.4f}" in softmax1
    assert f"{row.mse_increase_mean * 100:.2f}±{row.mse_increase_std * 100:.2f}%" in softmax1
    change_lines = lines[lines.index(next(l for l in lines if l.startswith("change against softmax"))):]
    assert any(l.startswith("softmax1 ") and f"{row.kurtosis_change * 100:+.1f}%" in l for l in change_lines)
    assert not any(l.startswith("softmax ") for l in change_lines)

    fig = plot_summary(summary)
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes] == ["kurtosis", "inf-norm", "W8A8 MSE"]
    heights = [bar.get_height() for bar in axes[2].patches]
    assert heights == pytest.approx(list(summary["w8a8_mse_mean"]))
    assert [t.get_text() for t in axes[0].get_xticklabels()] == list(summary["variant"])

    one_seed = summarise(fake_runs().query("seed == 0 and variant != 'softmax'"))
    assert one_seed["test_mse_std"].isna().all() and one_seed["test_mse_change"].isna().all()
    table = format_table(one_seed)
    assert "±" not in table and "no softmax variant" in table


# ---------------------------------------------------------------- run states


def test_run_state_train_quantize_finished_and_other_settings(tmp_path):
    config = run_config(load_config(SMOKE), Variant("softmax"), 0)
    run = tmp_path / "softmax-seed0"
    assert run_state(run, config) == "train"  # missing
    run.mkdir()
    save_run_files(run, config, DataInfo(columns=["a"], freq="h", date_column="date", mean=[0.0], scale=[1.0]))
    (run / "model.safetensors").write_bytes(b"weights")
    assert run_state(run, config) == "train"  # interrupted: no metrics.json
    write_json(run / "metrics.json", {"val": {"mse": 1.0}})
    assert run_state(run, config) == "train"  # interrupted during its evaluation
    (run / "metrics.json").write_text("{not json")
    assert run_state(run, config) == "train"
    write_json(run / "metrics.json", {"test": {"mse": 1.0, "mae": 0.8}})
    assert run_state(run, config) == "quantize"  # trained and tested, W8A8 missing
    write_json(run / "metrics.json", {"test": {"mse": 1.0}, "quantized": {"w8a8": {"mse": 1.1, "range": "minmax"}}})
    assert run_state(run, config) == "finished"
    assert run_state(run, config, act_range="percentile:99.9") == "quantize"  # another range: recompute W8A8
    assert run_state(run, config, act_range=" MINMAX ") == "finished"  # the same range, however it is spelt
    config.train.accelerator = "gpu"  # where it runs does not matter
    config.train.micro_batch_size = 8  # nor how many windows go through the model at a time
    assert run_state(run, config) == "finished"
    config.train.max_epochs = 7
    with pytest.raises(UserError, match="train.max_epochs 2 .asked 7.*another --out"):
        run_state(run, config)


# ---------------------------------------------------------------- the CLI, end to end


def compare(out: Path, *extra: str):
    args = ["compare", "--config", SMOKE, "--separations", "softmax,softmax1", "--seeds", "1", *QUICK,
            "--out", str(out), *extra]
    return CliRunner().invoke(cli, args)


def test_a_study_on_a_csv_named_relative_to_the_folder_reuses_its_runs(tmp_path, monkeypatch, etth1):
    etth1.iloc[:2000].to_csv(tmp_path / "mine.csv")
    monkeypatch.chdir(tmp_path)
    args = ["compare", "--config", SMOKE, "--separations", "softmax", "--seeds", "1", *QUICK, "--set", "data.name=mine.csv",
            "--out", "study"]
    assert CliRunner().invoke(cli, args).exit_code == 0
    assert load_config(tmp_path / "study" / "softmax-seed0" / "config.yaml").data.name == str(tmp_path / "mine.csv")
    again = CliRunner().invoke(cli, args)  # the saved absolute path is the same file as the asked relative one
    assert again.exit_code == 0 and "[1/1] softmax-seed0: reused" in again.output, again.output


def test_ctrl_c_during_a_study_says_the_same_compare_goes_on(tmp_path, monkeypatch):
    def interrupted(cfg, run_dir, **kwargs):  # as workflow.train ends on Ctrl+C
        raise KeyboardInterrupt(f"continue from the last checkpoint with: stanhop train --resume {run_dir}")

    monkeypatch.setattr(workflow, "train", interrupted)
    result = compare(tmp_path / "study")
    assert result.exit_code == 130
    assert result.stderr.strip().endswith(f"interrupted: the finished runs in {tmp_path / 'study'} are kept: the same "
                                          "stanhop compare goes on from them (the unfinished run trains again)")


def test_compare_tells_the_config_settings_that_none_of_its_runs_has(tmp_path, monkeypatch):
    """The study sets separation, gate and seed for each run: a config file's own choice of them
    that no run has is told, not dropped without a word (--set of them is refused)."""
    config = tmp_path / "mine.yaml"
    config.write_text(Path(SMOKE).read_text().replace("gate: false", "gate: true").replace("seed: 0", "seed: 7"))

    def interrupted(cfg, run_dir, **kwargs):  # the notice comes before any training
        raise KeyboardInterrupt()

    monkeypatch.setattr(workflow, "train", interrupted)
    args = ["compare", "--config", str(config), "--separations", "softmax", "--out", str(tmp_path / "study")]
    told = CliRunner().invoke(cli, [*args, "--seeds", "2"])
    assert told.exit_code == 130
    assert ("notice: the study sets model.gate and train.seed for each run: the config's model.gate true and "
            "train.seed 7 are in none of its runs; choose with --gated (or name+gate in --separations) and --seeds"
            in told.stderr), told.stderr
    quiet = CliRunner().invoke(cli, [*args, "--gated", "--seeds", "8"])  # both are among the runs
    assert quiet.exit_code == 130 and "notice: the study sets" not in quiet.stderr
    smoke = load_config(SMOKE)  # separation: entmax, the default: not a choice of the config's to tell
    assert replaced_settings(smoke, variants(["softmax"]), [0]) == []
    smoke.model.separation = "sparsemax"
    assert replaced_settings(smoke, variants(["softmax"]), [0]) == ["model.separation sparsemax"]


def printed_table(output: str) -> str:
    """The summary tables and the `wrote` line of compare's output (without any warnings)."""
    start = output.index("variant ")
    return output[start:output.index("\n", output.index("wrote ", start))]


def mtimes(out: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.parent != out}


def test_compare_trains_writes_summary_reuses_and_continues(tmp_path, monkeypatch):
    out = tmp_path / "study"
    first = compare(out)
    assert first.exit_code == 0, first.output
    assert "[1/2] softmax-seed0: training" in first.output and "[2/2] softmax1-seed0: trained in" in first.output

    summary = pd.read_csv(out / "summary.csv")
    runs = pd.read_csv(out / "runs.csv")
    assert list(summary["variant"]) == ["softmax", "softmax1"] and list(summary["seeds"]) == [1, 1]
    assert (out / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for row in runs.itertuples():
        metrics = json.loads((Path(row.run) / "metrics.json").read_text())
        saved = load_config(Path(row.run) / "config.yaml")
        assert (saved.model.separation, saved.train.seed, saved.train.max_epochs) == (row.separation, 0, 1)
        assert row.test_mse == metrics["test"]["mse"] and row.kurtosis == metrics["outliers"]["kurtosis_avg"]
        assert row.instance_norm == metrics["instance_norm"] == saved.model.instance_norm
        q = metrics["quantized"]["w8a8"]
        assert (row.w8a8_mse, q["range"]) == (q["mse"], "minmax")
        assert q["mse_increase"] == pytest.approx(q["mse"] / metrics["test"]["mse"] - 1)
        assert abs(q["mse_increase"]) < 0.2  # 8 bits: a small change, not a broken model
    table = printed_table(first.output)
    for row in summary.itertuples():
        assert any(l.startswith(row.variant + " ") and f"{row.w8a8_mse_mean:.4f}" in l for l in table.splitlines())
    assert "change against softmax" in table and "summary.png" in table

    # the study's W8A8 numbers are reproducible: `evaluate --quantize` on a run gives the same
    run = out / "softmax1-seed0"
    again = CliRunner().invoke(cli, ["evaluate", str(run), "--quantize", "w8a8"])
    assert again.exit_code == 0, again.output
    assert f"{runs.loc[1, 'w8a8_mse']:.4f}" in again.output
    increase = f"{100 * runs.loc[1, 'mse_increase']:.4f}"
    assert re.search(rf"w8a8 MSE increase, %\s+{re.escape(increase)}\n", again.output)  # in %, as the study's table
    bad = CliRunner().invoke(cli, ["evaluate", str(run), "--quantize", "w8a8", "--range", "p99"])
    assert bad.exit_code == 2 and "error: bad activation range" in bad.output

    # a rerun trains and quantizes nothing and leaves every run file untouched
    before = mtimes(out)

    def refuse(*args, **kwargs):
        raise AssertionError("a finished run was recomputed")

    monkeypatch.setattr(workflow, "train", refuse)
    monkeypatch.setattr(workflow, "quantize_run", refuse)
    second = compare(out)
    assert second.exit_code == 0, second.output
    assert second.output.count(": reused;") == 2 and mtimes(out) == before
    assert printed_table(second.output) == table
    monkeypatch.undo()

    # interrupted runs: one lost its W8A8 result (only that is recomputed), one its metrics (retrained)
    metrics = json.loads((out / "softmax-seed0" / "metrics.json").read_text())
    del metrics["quantized"]
    write_json(out / "softmax-seed0" / "metrics.json", metrics)
    os.remove(out / "softmax1-seed0" / "metrics.json")
    trained = []
    real_train = workflow.train

    def counting_train(config, out_dir, **kwargs):
        trained.append((Path(out_dir).name, kwargs.get("force")))
        return real_train(config, out_dir, **kwargs)

    monkeypatch.setattr(workflow, "train", counting_train)
    third = compare(out)
    assert third.exit_code == 0, third.output
    assert trained == [("softmax1-seed0", True)]
    assert "[1/2] softmax-seed0: quantized" in third.output
    final = pd.read_csv(out / "runs.csv")
    assert list(final["status"]) == ["quantized", "trained"]
    assert final["w8a8_mse"].to_numpy() == pytest.approx(runs["w8a8_mse"].to_numpy(), rel=1e-9)  # same numbers


def test_compare_rejects_bad_input_before_training(tmp_path):
    bad = compare(tmp_path / "a", "--separations", "softmax,relu")
    assert bad.exit_code == 2 and "error: unknown separation 'relu'" in bad.output
    result = CliRunner().invoke(cli, ["compare", "--config", SMOKE, "--seeds", "0", "--out", str(tmp_path / "b")])
    assert result.exit_code == 2 and "error: --seeds must be at least 1" in result.output
    result = CliRunner().invoke(cli, ["compare", "--config", SMOKE, "--range", "max", "--out", str(tmp_path / "c")])
    assert result.exit_code == 2 and "error: bad activation range" in result.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_compare_never_replaces_files_it_did_not_write(tmp_path, run_dir):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "summary.csv").write_text("my,data\n")
    told = compare(mine, "--separations", "softmax")
    assert told.exit_code == 2 and "holds summary.csv, which the study would replace" in told.output
    assert (mine / "summary.csv").read_text() == "my,data\n" and sorted(p.name for p in mine.iterdir()) == ["summary.csv"]
    before = sorted(p.name for p in run_dir.iterdir())
    into_run = compare(run_dir, "--separations", "softmax")
    assert into_run.exit_code == 2 and "is a training run's folder" in into_run.output
    assert sorted(p.name for p in run_dir.iterdir()) == before
    runs = tmp_path / "runs"  # stanhop train's folder of the user's runs, and their own summary
    shutil.copytree(run_dir, runs / "my-entmax")
    (runs / "summary.csv").write_text("my,notes\n")
    into_runs = compare(runs, "--separations", "softmax")
    assert into_runs.exit_code == 2 and "holds summary.csv, which the study would replace" in into_runs.output
    assert (runs / "summary.csv").read_text() == "my,notes\n"


def test_a_study_records_its_w8a8_range_and_says_what_a_rerun_changes(tmp_path, monkeypatch, etth1):
    etth1.iloc[:2000].to_csv(tmp_path / "mine.csv")
    monkeypatch.chdir(tmp_path)
    args = ["compare", "--config", SMOKE, "--separations", "softmax", "--seeds", "1", *QUICK, "--out", "study"]
    first = CliRunner().invoke(cli, [*args, "--set", "data.name=mine.csv", "--range", "MINMAX"])
    assert first.exit_code == 0, first.output
    assert json.loads((tmp_path / "study" / "stanhop-study.json").read_text())["w8a8_range"] == "minmax"
    assert pd.read_csv(tmp_path / "study" / "runs.csv")["w8a8_range"].tolist() == ["minmax"]
    again = CliRunner().invoke(cli, [*args, "--set", "data.name=../" + tmp_path.name + "/mine.csv"])  # the same file
    assert again.exit_code == 0 and "reused" in again.output, again.output
    other = CliRunner().invoke(cli, [*args, "--set", "data.name=mine.csv", "--range", "percentile:99.90"])
    assert other.exit_code == 0, other.output
    assert "W8A8 figures were measured with --range minmax; with percentile:99.9 they are measured again" in other.stderr
    assert pd.read_csv(tmp_path / "study" / "runs.csv")["w8a8_range"].tolist() == ["percentile:99.9"]
    fewer = CliRunner().invoke(cli, ["compare", "--config", SMOKE, "--separations", "softmax1", "--seeds", "1", *QUICK,
                                     "--out", "study", "--set", "data.name=mine.csv", "--range", "percentile:99.9"])
    assert fewer.exit_code == 0, fewer.output
    assert "holds 1 finished run that this study leaves out of its summary (softmax-seed0)" in fewer.stderr

    long = etth1.iloc[:300, :2].reset_index().melt(id_vars="date", var_name="unique_id", value_name="y")
    long.rename(columns={"date": "ds"}).to_csv(tmp_path / "long.csv", index=False)
    refused = CliRunner().invoke(cli, [*args[:-1], "long-study", "--set", "data.name=long.csv"])
    assert refused.exit_code == 2 and "is long (unique_id, ds, y)" in refused.output
    assert not (tmp_path / "long-study").exists()  # refused before the study's folder is made
