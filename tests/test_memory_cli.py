"""Memory plugins end to end through the CLI on the smoke config: `train --memory plug`, the
side-by-side metrics, reattaching on load, `tune` on an existing run (also from a CSV memory),
and the one-line errors of bad memory options."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from cli import cli
from stanhop.memory import MemoryForecaster
from stanhop.runs import load_run

SMOKE = str(Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml")
REPORT_KEYS = {"test_mse", "test_mse_plain", "sudden_mse", "sudden_mse_plain", "sudden_windows", "val_mse", "val_mse_plain"}




def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def plug_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("memory") / "run"
    result = invoke("train", "--config", SMOKE, "--memory", "plug", "--memory-size", "16", "--set", "train.max_epochs=1",
                    "--accelerator", "cpu", "--out", str(run))
    assert result.exit_code == 0, result.output
    assert_printed_beside_each_other(result.output, json.loads((run / "metrics.json").read_text())["memory"])
    assert "plug: 16 windows (extremes), λ " in result.output
    return run


def side_by_side(output: str) -> dict[str, tuple[float, float]]:
    """The printed memory table: row name -> (MSE with the plugin, without it)."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("memory plugin"))
    rows = {}
    for line in lines[start + 1:]:  # up to the settings line after the table
        parts = line.rsplit(maxsplit=2)
        try:
            rows[parts[0]] = (float(parts[1]), float(parts[2]))
        except (IndexError, ValueError):
            break
    return rows


def assert_printed_beside_each_other(output: str, memory: dict) -> None:
    rows = side_by_side(output)
    assert rows["val MSE"] == pytest.approx((memory["val_mse"], memory["val_mse_plain"]), abs=5e-5)
    assert rows["test MSE"] == pytest.approx((memory["test_mse"], memory["test_mse_plain"]), abs=5e-5)
    sudden = f"test MSE, sudden events ({memory['sudden_windows']} windows)"
    assert rows[sudden] == pytest.approx((memory["sudden_mse"], memory["sudden_mse_plain"]), abs=5e-5)


def test_train_with_plug_and_play_reports_both_side_by_side_and_reloads(plug_run):
    metrics = json.loads((plug_run / "metrics.json").read_text())
    memory = metrics["memory"]
    assert memory["kind"] == "plug" and memory["size"] == 16 and memory["strategy"] == "extremes"
    assert REPORT_KEYS <= set(memory) and {"lambda", "beta"} <= set(memory)
    assert memory["test_mse"] == pytest.approx(metrics["test"]["mse"], rel=1e-6)  # the run's model is the plugged one
    assert memory["val_mse"] <= memory["val_mse_plain"] + 1e-12  # λ = 0 is on the grid
    run = load_run(plug_run)
    assert isinstance(run.model, MemoryForecaster) and run.model.kind == "plug"
    assert run.model.plugin.lam == memory["lambda"]
    modules = set(metrics["outliers"]["per_module"])  # named as in a plain run, so runs line up
    assert "encoder.blocks.0.temporal" in modules and not any(name.startswith("model.") for name in modules)
    again = invoke("evaluate", str(plug_run))  # reattached from safetensors: the same figures
    assert again.exit_code == 0, again.output
    assert json.loads((plug_run / "metrics.json").read_text())["memory"]["test_mse"] == pytest.approx(memory["test_mse"], rel=1e-6)


def test_tune_replaces_the_memory_with_tune_and_play(plug_run):
    quantized = invoke("evaluate", str(plug_run), "--quantize", "w8a8")
    assert quantized.exit_code == 0 and "quantized" in json.loads((plug_run / "metrics.json").read_text())
    result = invoke("tune", str(plug_run), "--epochs", "1", "--memory-size", "12", "--memory-strategy", "random")
    assert result.exit_code == 0, result.output
    assert "quantized" not in json.loads((plug_run / "metrics.json").read_text())  # the old model's W8A8, gone
    memory = json.loads((plug_run / "metrics.json").read_text())["memory"]
    assert_printed_beside_each_other(result.output, memory)
    assert "tune: 12 windows (random)" in result.output and f"final loss {memory['tune_loss']:.4f}" in result.output
    assert memory["kind"] == "tune" and memory["size"] == 12 and memory["strategy"] == "random" and memory["tune_epochs"] == 1
    assert REPORT_KEYS <= set(memory) and "lambda" not in memory
    assert json.loads((plug_run / "memory.json").read_text())["kind"] == "tune"
    run = load_run(plug_run)
    assert run.config.memory.kind == "tune" and run.config.memory.size == 12
    assert isinstance(run.model, MemoryForecaster) and run.model.kind == "tune"


def test_tune_from_a_csv_memory(plug_run, tmp_path, etth1_path, monkeypatch):
    rows = pd.read_csv(etth1_path, nrows=300).iloc[200:]  # any stretch of the same channels
    path = tmp_path / "events.csv"
    rows.to_csv(path, index=False)
    monkeypatch.chdir(tmp_path)  # named relative to here; saved absolute, so a later tune finds it from anywhere
    result = invoke("tune", str(plug_run), "--epochs", "1", "--memory-size", "8", "--memory-strategy", "csv:events.csv")
    assert result.exit_code == 0, result.output
    run = load_run(plug_run)
    assert run.config.memory.csv == str(path) and len(run.model.windows) == 8
    assert (run.model.starts == -1).all()
    torch.testing.assert_close(run.model.windows[0, 0], (torch.tensor(rows.iloc[0, 1:].to_numpy(dtype="float32"))
                                                         - torch.tensor(run.data.mean)) / torch.tensor(run.data.scale))
    assert "far from the run's training data" not in result.output  # the same units: no notice
    assert "validation and test period" not in result.output  # rows 200-300: training rows

    run = load_run(plug_run)
    val_start, test_end = run.data.borders["val"][0], run.data.borders["test"][1]
    tested = tmp_path / "tested.csv"  # rows of the run's validation and test period, and some after it
    pd.read_csv(etth1_path).iloc[test_end - 100:test_end + 200].to_csv(tested, index=False)
    assert val_start < test_end - 100
    result = invoke("tune", str(plug_run), "--epochs", "1", "--memory-size", "8", "--memory-strategy", f"csv:{tested}")
    assert result.exit_code == 0, result.output
    told = [line for line in result.output.splitlines() if "validation and test period" in line]
    assert len(told) == 1 and told[0].startswith(f"notice: memory CSV {tested}: 100 of its rows lie in the run's "), told
    offsets = tmp_path / "offsets.csv"  # the same rows with UTC offsets, against a run without them: told too
    frame = pd.read_csv(tested)
    frame.assign(date=pd.to_datetime(frame["date"]).dt.strftime("%Y-%m-%dT%H:%M:%S+00:00")).to_csv(offsets, index=False)
    result = invoke("tune", str(plug_run), "--plug", "--memory-size", "8", "--memory-strategy", f"csv:{offsets}")
    assert result.exit_code == 0, result.output
    assert f"notice: memory CSV {offsets}: 100 of its rows lie in the run's " in result.output
    assert json.loads((plug_run / "memory.json").read_text())["kind"] == "plug"  # --plug: Plug-and-Play on a finished run

    watts = tmp_path / "watts.csv"
    rows.assign(OT=rows["OT"] * 1000).to_csv(watts, index=False)  # OT in other units
    result = invoke("tune", str(plug_run), "--epochs", "1", "--memory-size", "8", "--memory-strategy", f"csv:{watts}")
    assert result.exit_code == 0, result.output
    told = [line for line in result.output.splitlines() if "far from the run's training data" in line]
    assert len(told) == 1 and f"notice: memory CSV {watts}: OT (mean " in told[0] and "HUFL" not in told[0], told


def test_tune_refuses_a_data_file_that_no_longer_holds_the_runs_rows(plug_run, tmp_path, etth1_path):
    import shutil

    from stanhop.config import load_config, save_config

    run = tmp_path / "copy"
    shutil.copytree(plug_run, run)
    shorter = tmp_path / "shorter.csv"  # the same split's fractions of fewer rows reach into the run's test rows
    pd.read_csv(etth1_path, nrows=8000).to_csv(shorter, index=False)
    config = load_config(run / "config.yaml")
    config.data.name = str(shorter)
    save_config(config, run / "config.yaml")
    before = {path.name: path.read_bytes() for path in run.iterdir() if path.is_file()}
    result = CliRunner().invoke(cli, ["tune", str(run), "--epochs", "1", "--memory-size", "4"])
    assert result.exit_code == 2 and f"error: {shorter} no longer holds the rows {run} was trained on" in result.output
    assert {path.name: path.read_bytes() for path in run.iterdir() if path.is_file()} == before  # nothing written


def test_evaluate_drops_a_deleted_plugins_figures_and_rebuilds_a_lost_metrics_file(plug_run, tmp_path):
    import shutil

    lost = tmp_path / "lost"
    shutil.copytree(plug_run, lost)
    kept = json.loads((lost / "metrics.json").read_text())
    (lost / "metrics.json").unlink()
    result = invoke("evaluate", str(lost))
    assert result.exit_code == 0, result.output
    rebuilt = json.loads((lost / "metrics.json").read_text())
    assert rebuilt["params"] == kept["params"]
    described = [key for key in ("kind", "size", "strategy", "lambda", "beta") if key in kept["memory"]]  # tune: no λ
    assert [rebuilt["memory"][key] for key in described] == [kept["memory"][key] for key in described]
    for key in ("val_mse", "val_mse_plain", "test_mse", "test_mse_plain"):
        assert rebuilt["memory"][key] == pytest.approx(kept["memory"][key], rel=1e-6), key
    assert_printed_beside_each_other(result.output, rebuilt["memory"])
    assert "None" not in result.output

    gone = tmp_path / "gone"
    shutil.copytree(plug_run, gone)
    for name in ("memory.json", "memory.safetensors"):  # as the message of a plugin that cannot be reattached says
        (gone / name).unlink()
    result = invoke("evaluate", str(gone))
    assert result.exit_code == 0 and "memory plugin" not in result.output.replace("has no memory plugin now", "")
    assert f"{gone} has no memory plugin now (memory.json is gone)" in result.output
    assert "memory" not in json.loads((gone / "metrics.json").read_text())
    listed = invoke("runs", str(tmp_path)).output.splitlines()
    assert next(line for line in listed if line.split()[0].endswith("gone")).split()[-1] == "—"  # memory: none


def test_a_read_only_run_is_evaluated_with_a_notice_and_refused_by_tune_before_any_work(plug_run, monkeypatch):
    import errno

    import stanhop.runs
    import stanhop.workflow

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    before = (plug_run / "metrics.json").read_bytes()
    monkeypatch.setattr(stanhop.workflow, "write_json", read_only)  # as on a read-only mount (tests run as root)
    result = invoke("evaluate", str(plug_run))
    assert result.exit_code == 0 and "test MSE" in result.output  # the figures, though not saved
    assert f"cannot write metrics.json in {plug_run} (Read-only file system); these figures are not saved" in result.output
    monkeypatch.setattr(stanhop.runs.tempfile, "TemporaryFile", read_only)  # the probe of a writable run
    result = CliRunner().invoke(cli, ["tune", str(plug_run), "--epochs", "1"])
    assert result.exit_code == 2 and f"error: cannot write in {plug_run} (Read-only file system)" in result.output
    assert (plug_run / "metrics.json").read_bytes() == before


def test_add_memory_takes_a_csv_as_the_memory_asked_for_and_refuses_what_it_would_ignore(plug_run, tmp_path,
                                                                                          etth1_path):
    import shutil

    from stanhop.errors import UserError
    from stanhop.memory_runs import add_memory

    run = tmp_path / "copy"
    shutil.copytree(plug_run, run)
    events = tmp_path / "events.csv"
    pd.read_csv(etth1_path, nrows=300).iloc[200:].to_csv(events, index=False)
    with pytest.raises(UserError, match="csv= names the memory windows' file, for strategy='csv'"):
        add_memory(run, kind="plug", size=4, strategy="random", csv=events, progress=False)
    with pytest.raises(UserError, match="epochs= is Tune-and-Play's"):
        add_memory(run, kind="plug", size=4, epochs=5, progress=False)
    with pytest.raises(UserError, match="kind must be 'plug' \\(Plug-and-Play\\) or 'tune'"):
        add_memory(run, kind=None, size=4, progress=False)  # it attached Tune-and-Play, the config saying none
    add_memory(run, kind="plug", size=4, csv=events, progress=False)  # no strategy: the file is the memory
    loaded = load_run(run)
    assert loaded.config.memory.strategy == "csv" and (loaded.model.starts == -1).all()


def test_tune_holds_the_runs_lock_while_it_works(plug_run, tmp_path, monkeypatch):
    import os
    import shutil

    import stanhop.memory as M
    from stanhop.runs import training_pid

    run = shutil.copytree(plug_run, tmp_path / "copy")
    seen, select = [], M.select_memory

    def watched(*args, **kwargs):  # while tune chooses the memory: is the run locked, and by whom?
        seen.append(training_pid(run))
        return select(*args, **kwargs)

    monkeypatch.setattr(M, "select_memory", watched)
    result = invoke("tune", str(run), "--epochs", "1", "--memory-size", "4")
    assert result.exit_code == 0, result.output
    assert seen == [os.getpid()] and training_pid(run) is None and not (run / ".training").exists()


def test_bad_memory_options_are_one_line_errors(plug_run, tmp_path):
    out = tmp_path / "never"
    result = CliRunner().invoke(cli, ["train", "--config", SMOKE, "--memory", "plug", "--set", f"memory.csv={SMOKE}",
                                      "--out", str(out)])  # recorded as read, and never read: refused
    assert result.exit_code == 2 and "memory.csv names a memory CSV, which only strategy csv reads" in result.output
    result = CliRunner().invoke(cli, ["tune", str(plug_run), "--plug", "--epochs", "2"])
    assert result.exit_code == 2 and "--epochs is Tune-and-Play's" in result.output
    result = CliRunner().invoke(cli, ["tune", str(plug_run), "--memory-strategy", "csv:"])
    assert result.exit_code == 2 and "needs the file's name after the colon" in result.output
    result = CliRunner().invoke(cli, ["train", "--config", SMOKE, "--memory", "plug", "--memory-strategy", "csv", "--out", str(out)])
    assert result.exit_code == 2 and "error: memory strategy csv needs a file" in result.output
    result = CliRunner().invoke(cli, ["tune", str(plug_run), "--memory-size", "0"])
    assert result.exit_code == 2 and "invalid value for '--memory-size': 0 is not in the range x>=1" in result.output
    result = CliRunner().invoke(cli, ["train", "--config", SMOKE, "--memory", "tune", "--memory-strategy", "csv:missing.csv",
                                      "--out", str(out)])
    assert result.exit_code == 2 and "memory CSV missing.csv not found" in result.output
    assert not out.exists()  # refused before any work


def test_a_memory_csv_without_the_runs_date_column_or_channels_is_refused_before_any_work(plug_run, tmp_path,
                                                                                           etth1_path):
    rows = pd.read_csv(etth1_path, nrows=300)
    renamed, short, holed, few, daily = (tmp_path / f"{name}.csv" for name in ("renamed", "short", "holed", "few", "daily"))
    rows.rename(columns={"date": "time"}).to_csv(renamed, index=False)
    rows.drop(columns=["OT"]).to_csv(short, index=False)
    rows.assign(OT=rows["OT"].where(rows.index != 5)).to_csv(holed, index=False)  # an empty cell
    rows.iloc[:10].to_csv(few, index=False)
    rows.assign(date=pd.date_range("2016-07-01", periods=len(rows), freq="D")).to_csv(daily, index=False)
    out = tmp_path / "never"
    for path, message in ((renamed, "has no date column 'date' (columns: time, HUFL"),
                          (short, "lacks the channel(s) OT the run was trained on"),
                          (holed, "1 empty cell(s), first in column 'OT'"),
                          (few, f"memory CSV {few} has 10 rows, too few for one window"),
                          (daily, f"memory CSV {daily} has time step 'D' but the run's data has 'h'")):
        trained = CliRunner().invoke(cli, ["train", "--config", SMOKE, "--memory", "plug", "--memory-strategy",
                                           f"csv:{path}", "--out", str(out)])
        tuned = CliRunner().invoke(cli, ["tune", str(plug_run), "--memory-strategy", f"csv:{path}"])
        for result in (trained, tuned):
            assert result.exit_code == 2 and message in result.output, result.output
            assert "--date-column" not in result.output  # neither command has that option
        assert not out.exists()  # train: refused before training
    filled = CliRunner().invoke(cli, ["tune", str(plug_run), "--memory-strategy", f"csv:{holed}", "--fill", "ffill",
                                      "--epochs", "1", "--memory-size", "4"])  # as the empty-cell message says
    assert filled.exit_code == 0, filled.output
    assert f"{holed}: 1 empty cell(s) filled by ffill" in filled.output


def test_a_memory_csv_of_separate_incidents_gives_windows_within_each(plug_run, tmp_path, etth1_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(plug_run, run)
    rows = pd.read_csv(etth1_path)
    incidents = pd.concat([rows.iloc[200:240], rows.iloc[500:540], rows.iloc[800:810]])  # the last shorter than a window
    path = tmp_path / "incidents.csv"
    incidents.to_csv(path, index=False)
    result = invoke("tune", str(run), "--plug", "--memory-size", "64", "--memory-strategy", f"csv:{path}")
    assert result.exit_code == 0, result.output  # it was refused as 'timestamps missing', and --fill made lines
    assert f"memory CSV {path}: 3 stretches without gaps (incidents); windows are taken within each, leaving out 1 " \
           "shorter than a window (32 rows)" in result.output
    loaded = load_run(run)
    scaled = (torch.tensor(incidents.iloc[:, 1:].to_numpy(dtype="float32")) - torch.tensor(loaded.data.mean)) \
        / torch.tensor(loaded.data.scale)
    whole = torch.cat([loaded.model.windows, loaded.model.futures], dim=1)  # (K, 32, c)
    assert len(whole) == 2 * (40 - 32 + 1)  # 9 windows in each incident, none across the gap
    firsts = [next(i for i in range(len(scaled)) if torch.allclose(scaled[i], w[0], atol=1e-5)) for w in whole]
    for w, first in zip(whole, firsts):
        assert first + 32 <= 40 or 40 <= first and first + 32 <= 80  # inside one incident
        torch.testing.assert_close(w, scaled[first : first + 32], atol=1e-5, rtol=0)
