"""`stanhop runs`: a row per run in a folder and below it, from the runs' own files."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

import cli


def invoke(*args):
    return CliRunner().invoke(cli.cli, ["runs", *map(str, args)])


def copy_run(run_dir: Path, to: Path, *, test_mse: float | None = None) -> Path:
    shutil.copytree(run_dir, to)
    if test_mse is not None:
        metrics = json.loads((to / "metrics.json").read_text())
        metrics["test"]["mse"] = test_mse
        (to / "metrics.json").write_text(json.dumps(metrics))
    return to


def test_runs_lists_every_run_below_a_folder_with_its_figures(run_dir, tmp_path):
    saved = json.loads((run_dir / "metrics.json").read_text())
    copy_run(run_dir, tmp_path / "b-good", test_mse=0.25)
    copy_run(run_dir, tmp_path / "study" / "softmax-seed0", test_mse=0.5)  # a study's runs, one level down
    unfinished = copy_run(run_dir, tmp_path / "a-stopped")
    (unfinished / "metrics.json").unlink()
    (unfinished / "model.safetensors").unlink()
    (tmp_path / "notes").mkdir()  # not a run: skipped
    (tmp_path / "notes" / "todo.txt").write_text("x")

    result = invoke(tmp_path)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["run", "data", "separation", "in→out", "params", "epochs", "val", "MSE", "test", "MSE",
                                "test", "MAE", "seasonal", "naive"]
    names = [line.split()[0] for line in lines[1:]]
    assert names == [str(tmp_path / "a-stopped"), str(tmp_path / "b-good"), str(tmp_path / "study" / "softmax-seed0")]
    assert lines[1].endswith(f"unfinished: stanhop train --resume {tmp_path / 'a-stopped'}")
    good = lines[2].split()
    assert good[1:4] == ["ETTh1", "entmax", "24→8"] and good[4] == str(saved["params"])
    assert good[6:9] == [f"{saved['val']['mse']:.4f}", "0.2500", f"{saved['test']['mae']:.4f}"]
    assert good[9] == f"{saved['baselines']['seasonal_naive']['mse']:.4f}"  # the yardstick on the same windows

    by_mse = json.loads(invoke(tmp_path, "--sort", "test_mse", "--json").stdout)
    assert [row["test_mse"] for row in by_mse] == [0.25, 0.5, None]  # smallest first, no figure last
    assert by_mse[2]["note"].startswith("unfinished")
    assert by_mse[0]["naive_mse"] == saved["baselines"]["naive"]["mse"]


def test_runs_says_why_a_run_cannot_be_read_and_goes_on(run_dir, tmp_path):
    copy_run(run_dir, tmp_path / "fine")
    broken = copy_run(run_dir, tmp_path / "broken")
    (broken / "config.yaml").write_text("model: [unclosed")
    not_evaluated = copy_run(run_dir, tmp_path / "trained")
    (not_evaluated / "metrics.json").unlink()
    rows = {Path(row["run"]).name: row for row in json.loads(invoke(tmp_path, "--json").stdout)}
    assert rows["broken"]["note"].startswith("unreadable: config file") and "not valid YAML" in rows["broken"]["note"]
    assert rows["trained"]["note"] == f"not evaluated: stanhop train --resume {not_evaluated}"  # keeps epochs, time
    shutil.rmtree(not_evaluated / "checkpoints")
    rows = {Path(row["run"]).name: row for row in json.loads(invoke(tmp_path, "--json").stdout)}
    assert rows["trained"]["note"] == f"not evaluated: stanhop evaluate {not_evaluated}"
    spaced = not_evaluated.rename(tmp_path / "my run")  # a command to paste into a shell: the path quoted
    rows = {Path(row["run"]).name: row for row in json.loads(invoke(tmp_path, "--json").stdout)}
    assert rows["my run"]["note"] == f"not evaluated: stanhop evaluate '{spaced}'"
    assert rows["fine"]["test_mse"] is not None and "note" not in rows["fine"]
    (broken / "config.yaml").unlink()  # a run whose config is gone: incomplete, not `--config` advice
    short = copy_run(run_dir, tmp_path / "short")  # a scaler.json edited to one mean too few: damaged, as loading says
    facts = json.loads((short / "scaler.json").read_text())
    (short / "scaler.json").write_text(json.dumps({**facts, "mean": facts["mean"][:-1]}))
    rows = {Path(row["run"]).name: row for row in json.loads(invoke(tmp_path, "--json").stdout)}
    assert rows["broken"]["note"] == "incomplete: config.yaml is missing (did its training finish?)"
    assert f"{short / 'scaler.json'} is damaged: mean must be" in rows["short"]["note"], rows["short"]


def test_runs_names_the_run_a_fine_tuned_one_started_from(run_dir, tmp_path):
    tuned = copy_run(run_dir, tmp_path / "tuned")
    metrics = json.loads((tuned / "metrics.json").read_text())
    (tuned / "metrics.json").write_text(json.dumps({**metrics, "init_from": str(run_dir)}))
    result = invoke(tmp_path)
    assert result.exit_code == 0 and result.stdout.splitlines()[1].endswith(f"from {run_dir}")
    assert json.loads(invoke(tmp_path, "--json").stdout)[0]["init_from"] == str(run_dir)  # metrics.json's key, for scripts


def test_runs_refuses_a_folder_without_runs_in_one_line(tmp_path):
    for folder, message in ((tmp_path / "missing", "is not a folder"), (tmp_path, "no stanhop runs in")):
        result = invoke(folder)
        assert result.exit_code == 2 and message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    listed = invoke(tmp_path, "--json")  # a script's first look, before any run: an empty list
    assert listed.exit_code == 0 and json.loads(listed.stdout) == []


def test_runs_imports_neither_torch_nor_lightning(run_dir, tmp_path):
    copy_run(run_dir, tmp_path / "r")
    code = ("import sys, cli; from click.testing import CliRunner; "
            f"r = CliRunner().invoke(cli.cli, ['runs', {str(tmp_path)!r}]); assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_runs_shows_which_activation_range_a_w8a8_figure_was_measured_with(run_dir, tmp_path):
    for name, act_range in (("a-minmax", "minmax"), ("b-percentile", "percentile:99.9")):
        run = copy_run(run_dir, tmp_path / name)
        metrics = json.loads((run / "metrics.json").read_text())
        metrics["quantized"] = {"w8a8": {"mse": 0.5, "mae": 0.5, "range": act_range, "mse_increase": 0.1}}
        (run / "metrics.json").write_text(json.dumps(metrics))
    lines = invoke(tmp_path).stdout.splitlines()
    assert "W8A8 range" in lines[0]
    assert lines[1].split()[-1] == "minmax" and lines[2].split()[-1] == "percentile:99.9"
    rows = json.loads(invoke(tmp_path, "--json").stdout)
    assert [row["w8a8_range"] for row in rows] == ["minmax", "percentile:99.9"]


def test_a_linked_run_is_listed_once_and_a_damaged_metrics_file_keeps_the_settings(run_dir, tmp_path):
    real = copy_run(run_dir, tmp_path / "real")
    (tmp_path / "latest").symlink_to(real)
    rows = json.loads(invoke(tmp_path, "--json").stdout)
    assert [Path(row["run"]).name for row in rows] == ["real"]
    (real / "metrics.json").write_text('{"test": ')  # cut short
    row = json.loads(invoke(tmp_path, "--json").stdout)[0]
    assert row["separation"] == "entmax" and row["test_mse"] is None
    assert row["note"].startswith("unreadable: cannot read") and row["note"].endswith(
        f"stanhop evaluate {real} measures its figures anew")


def test_runs_shows_the_split_where_runs_differ_in_it_and_a_run_whose_weights_are_gone(run_dir, tmp_path):
    import re

    def with_split(run: Path, split: str) -> None:
        config = run / "config.yaml"
        config.write_text(re.sub(r"split: .*", f"split: {split}", config.read_text()))

    with_split(copy_run(run_dir, tmp_path / "a"), "0.06/0.03/0.03")
    other = copy_run(run_dir, tmp_path / "b")
    with_split(other, "0.3/0.1/0.1")
    lines = invoke(tmp_path).stdout.splitlines()
    assert lines[0].split()[:4] == ["run", "data", "separation", "split"]  # test figures of other windows: told apart
    assert [line.split()[3] for line in lines[1:]] == ["0.06/0.03/0.03", "0.3/0.1/0.1"]
    (other / "model.safetensors").unlink()
    rows = {Path(row["run"]).name: row for row in json.loads(invoke(tmp_path, "--json").stdout)}
    assert rows["a"]["split"] == "0.06/0.03/0.03" and "note" not in rows["a"]
    assert rows["b"]["note"] == f"model.safetensors is missing: stanhop train --resume {other} writes it"
    with_split(other, "0.06/0.03/0.03")
    assert "split" not in invoke(tmp_path).stdout.splitlines()[0].split()  # one split: no column


def test_a_resume_stopped_before_its_figures_is_unfinished_however_the_run_was_copied(run_dir, tmp_path):
    """An extended resume stopped before its final evaluation leaves metrics.json of fewer
    epochs than its last checkpoint (checkpoints/last.json says how many): listed as
    unfinished. File times are not used: a copy that does not keep them is listed as it is."""
    import os

    run = copy_run(run_dir, tmp_path / "run")
    figures = json.loads((run / "metrics.json").read_text())
    assert json.loads((run / "checkpoints" / "last.json").read_text()) == {"epochs": figures["epochs"]}
    later = (run / "metrics.json").stat().st_mtime + 60
    for name in ("checkpoints/last.ckpt", "model.safetensors"):  # as tar xm or a file-by-file copy leaves them
        os.utime(run / name, (later, later))
    assert "note" not in json.loads(invoke(tmp_path, "--json").stdout)[0]

    kept = (run / "metrics.json").read_bytes()
    resumed = CliRunner().invoke(cli.cli, ["train", "--resume", str(run), "--max-epochs", str(figures["epochs"] + 1)])
    assert resumed.exit_code == 0, resumed.output
    (run / "metrics.json").write_bytes(kept)  # as if stopped during its final evaluation
    row = json.loads(invoke(tmp_path, "--json").stdout)[0]
    assert row["note"] == (f"unfinished: stanhop train --resume {run} (its last checkpoint holds "
                           f"{figures['epochs'] + 1} epochs, its figures {figures['epochs']})")


def test_runs_lists_every_other_run_when_one_is_damaged_in_any_way(run_dir, tmp_path, monkeypatch):
    """Each damaged run's row says what is wrong; the listing goes on (it ended in an internal
    RecursionError or MemoryError, listing nothing)."""
    deep = "[" * 100_000 + "]" * 100_000
    copy_run(run_dir, tmp_path / "fine")
    for name in ("metrics.json", "scaler.json", "stanhop.json"):
        (copy_run(run_dir, tmp_path / f"deep-{name}") / name).write_text(deep)
    laughs = copy_run(run_dir, tmp_path / "laughs")
    items = ["&a0 [lol,lol,lol,lol,lol,lol,lol,lol,lol]"] + [f"&a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]"
                                                             for i in range(1, 7)]
    text = (laughs / "config.yaml").read_text()
    (laughs / "config.yaml").write_text(text.replace("  columns: null", f"  columns: [{', '.join(items)}]"))
    odd = copy_run(run_dir, tmp_path / "odd")
    (odd / "metrics.json").write_text(json.dumps({"test": {"mse": 1.0}, "params": "P" * 300_000, "init_from": [[1]]}))
    copy_run(run_dir, tmp_path / "unforeseen")
    import stanhop.catalog

    def training_pid(path):  # damage no check foresees: an error of any kind
        if path.name == "unforeseen":
            raise MemoryError("out of memory")

    monkeypatch.setattr(stanhop.catalog, "training_pid", training_pid)
    result = invoke(tmp_path)
    assert result.exit_code == 0, result.output[:500]
    assert max(map(len, result.output.splitlines())) < 1000
    rows = {Path(row["run"]).name: row for row in json.loads(invoke(tmp_path, "--json").stdout)}
    assert "note" not in rows["fine"] and rows["fine"]["test_mse"] is not None
    for name in ("metrics.json", "scaler.json", "stanhop.json"):
        assert f"unreadable: cannot read {tmp_path / f'deep-{name}' / name}: it is damaged" in rows[f"deep-{name}"]["note"]
    assert rows["deep-metrics.json"]["note"].endswith(f"stanhop evaluate {tmp_path / 'deep-metrics.json'} measures "
                                                      "its figures anew")
    assert rows["laughs"]["note"].startswith(f"unreadable: config file {laughs / 'config.yaml'}: its anchors and aliases")
    assert rows["odd"]["params"] == "P" * 100 + "… (300000 characters)" and rows["odd"]["note"] == "from [[1]]"
    assert rows["unforeseen"]["note"] == "unreadable: MemoryError: out of memory"
