"""Long work survives interruption, checkpoints load safely, errors are one line, DDP works."""

import csv
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from click.testing import CliRunner

import cli
from stanhop.config import load_config

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")
STANHOP = str(Path(sys.executable).with_name("stanhop"))


def val_epochs(run: Path) -> list[int]:
    with open(run / "logs" / "metrics.csv") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f) if row.get("val_mse")]


KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import lightning as L
    from stanhop.config import apply_overrides, load_config
    from stanhop.workflow import train

    config_path, run, kill_epoch, resume = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "resume"

    class KillMidEpoch(L.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if trainer.current_epoch == kill_epoch and batch_idx == 3:
                os.kill(os.getpid(), signal.SIGKILL)  # no clean-up, like a machine going away

    config = apply_overrides(load_config(config_path), ["train.max_epochs=3"])
    if resume:
        train(config, resume=run, progress=False, callbacks=[KillMidEpoch()])
    else:
        train(config, run, progress=False, callbacks=[KillMidEpoch()])
    """
)


def test_resume_after_a_kill_mid_epoch_finishes_all_epochs(tmp_path: Path):
    run = tmp_path / "run"
    killed = subprocess.run([sys.executable, "-c", KILL_SCRIPT, SMOKE, str(run), "1", "new"], capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (run / "checkpoints" / "last.ckpt").is_file() and not (run / "metrics.json").exists()
    assert val_epochs(run) == [0]
    # the resume is itself killed: the history logged so far must survive it
    killed = subprocess.run([sys.executable, "-c", KILL_SCRIPT, SMOKE, str(run), "2", "resume"], capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]

    # as after running out of memory: the rest in micro-batches, which does not change the training
    result = CliRunner().invoke(cli.cli, ["train", "--resume", str(run), "--micro-batch-size", "16"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 3  # as many as an uninterrupted run of max_epochs=3
    assert val_epochs(run) == [0, 1, 2]
    assert load_config(run / "config.yaml").train.micro_batch_size == 16


@pytest.mark.parametrize("stop, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_or_sigterm_during_training_says_how_to_go_on(tmp_path: Path, etth1_path, stop, status):
    """Lightning ends a Ctrl+C with a silent exit 1 (SIGTERM, as `kill` and job schedulers send:
    at the next batch's end); stanhop says what is left, exits 128 + the signal, and the command
    it names continues the run."""
    run = tmp_path / "run"
    env = {**os.environ, "STANHOP_DATA_DIR": str(etth1_path.parent)}
    # as from a terminal: a shell's background job (`make test &`) starts with SIGINT ignored, and the
    # training would never see the Ctrl+C
    proc = subprocess.Popen([STANHOP, "train", "--config", SMOKE, "--out", str(run), "--max-epochs", "1000",
                             "--set", "train.patience=1000"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 300
        while not (run / "checkpoints" / "last.ckpt").is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        proc.send_signal(stop)
        stderr = proc.communicate(timeout=120)[1].decode()
    finally:  # a training that did not stop is not left running (1000 epochs)
        proc.kill()
        proc.wait()
    assert proc.returncode == status, stderr[-2000:]
    assert f"interrupted: continue from the last checkpoint with: stanhop train --resume {run}" in stderr
    epochs = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] + 1
    result = CliRunner().invoke(cli.cli, ["train", "--resume", str(run), "--max-epochs", str(epochs + 1)])
    assert result.exit_code == 0, result.output
    assert json.loads((run / "metrics.json").read_text())["epochs"] == epochs + 1


def test_sigterm_before_the_first_checkpoint_says_what_is_left(tmp_path: Path, etth1_path):
    """A SIGTERM as soon as the run's folder is made (before Lightning's handler is in place, or
    just after): exit 143 and a line saying what to do, not a silent death."""
    run = tmp_path / "run"
    env = {**os.environ, "STANHOP_DATA_DIR": str(etth1_path.parent)}
    proc = subprocess.Popen([STANHOP, "train", "--config", SMOKE, "--out", str(run), "--max-epochs", "1000",
                             "--set", "train.patience=1000"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 300
        while not (run / "stanhop.json").is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        stderr = proc.communicate(timeout=120)[1].decode()
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 143, stderr[-2000:]
    told = stderr.strip().splitlines()[-1]
    assert told in (f"interrupted: {run} holds no checkpoint yet (the first epoch did not end); train again with "
                    "--force to replace it", f"interrupted: continue from the last checkpoint with: stanhop train --resume {run}")


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_training_waiting_for_other_machines_stops_on_ctrl_c_and_sigterm(tmp_path: Path, etth1_path, sig, status):
    """--num-nodes 2 waits inside torch's rendezvous (C++) for a machine that never comes: the
    signal ends it at once with the usual line, where it was not heard at all."""
    import socket

    with socket.socket() as free:  # a port of its own, as MASTER_PORT
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    run = tmp_path / "run"
    env = {**os.environ, "STANHOP_DATA_DIR": str(etth1_path.parent), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    proc = subprocess.Popen([STANHOP, "train", "--config", SMOKE, "--out", str(run), "--max-epochs", "1", "--num-nodes", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # a terminal's job: not a
    # shell's background one, which starts with SIGINT ignored (as this suite may have been started)
    try:
        told = ""
        while "Initializing distributed" not in told and proc.poll() is None:  # waiting now
            told += proc.stderr.readline()
        time.sleep(2)
        proc.send_signal(sig)
        stderr = told + proc.communicate(timeout=60)[1]
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == status, stderr[-2000:]
    assert stderr.strip().splitlines()[-1] == (f"interrupted: {run} holds no checkpoint yet (the first epoch did not "
                                               "end); train again with --force to replace it")


def test_a_run_being_trained_is_not_replaced_resumed_or_tuned_meanwhile(run_dir, tmp_path: Path):
    import shutil

    from stanhop.runs import training_lock

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    busy = f"{run} is being trained now (by process {os.getpid()}); wait for that training to end, or stop it"
    with training_lock(run):  # as a training in another process holds it
        for args in (["train", "--config", SMOKE, "--out", str(run), "--force"], ["train", "--resume", str(run)],
                     ["tune", str(run)], ["evaluate", str(run)]):  # evaluate: its metrics.json would mix two models
            result = CliRunner().invoke(cli.cli, args)
            assert result.exit_code == 2 and busy in result.output, (args, result.output)
        listed = CliRunner().invoke(cli.cli, ["runs", str(tmp_path), "--json"]).output
        assert json.loads(listed)[0]["note"] == f"training now (process {os.getpid()})"
        (run / "model.safetensors").unlink()  # before the training saves it
        result = CliRunner().invoke(cli.cli, ["forecast", str(run)])
        assert result.exit_code == 2 and f"{busy}: its model is saved when the training ends" in result.output
    assert not (run / ".training").exists()
    assert "training now" not in CliRunner().invoke(cli.cli, ["runs", str(tmp_path)]).output


def test_quantized_figures_are_not_written_over_a_training_that_began_meanwhile(run_dir, tmp_path: Path, monkeypatch):
    """compare's W8A8 pass on a run (quantize_run) that a training takes over while it computes:
    its figures are of the replaced model, so metrics.json is left to the training."""
    from contextlib import ExitStack

    from stanhop import workflow
    from stanhop.errors import UserError
    from stanhop.runs import training_lock

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    CliRunner().invoke(cli.cli, ["evaluate", str(run)])
    before = (run / "metrics.json").read_bytes()
    computed = workflow.quantized_errors
    with ExitStack() as held:
        def training_begins(*args, **kwargs):
            figures = computed(*args, **kwargs)
            held.enter_context(training_lock(run))  # as a training in another process takes it
            return figures

        monkeypatch.setattr(workflow, "quantized_errors", training_begins)
        with pytest.raises(UserError, match="is being trained now"):
            workflow.quantize_run(run)
    assert (run / "metrics.json").read_bytes() == before


def test_damaged_weights_are_told_with_the_command_that_writes_them_anew(run_dir, tmp_path: Path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "model.safetensors").write_bytes((run_dir / "model.safetensors").read_bytes()[:100])  # cut short
    result = CliRunner().invoke(cli.cli, ["evaluate", str(run)])
    assert result.exit_code == 2 and "the file is damaged or cut short" in result.output
    assert result.output.strip().endswith(f"its checkpoint is there: stanhop train --resume {run} writes them anew")
    assert CliRunner().invoke(cli.cli, ["train", "--resume", str(run)]).exit_code == 0
    assert CliRunner().invoke(cli.cli, ["evaluate", str(run)]).exit_code == 0


@pytest.mark.parametrize("name", ["metrics.json", "scaler.json", "stanhop.json"])
def test_a_run_file_of_deeply_nested_json_is_told_as_damaged(run_dir, tmp_path: Path, name):
    """JSON nested 100 000 deep (an internal RecursionError before): one line naming the file."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / name).write_text("[" * 100_000 + "]" * 100_000)
    told = f"error: cannot read {run / name}: it is damaged (arrays or objects nested thousands of levels deep)"
    forecast = CliRunner().invoke(cli.cli, ["forecast", str(run)])
    assert forecast.exit_code == 2 and forecast.stderr.splitlines()[-1].startswith(told), forecast.output[-500:]
    evaluated = CliRunner().invoke(cli.cli, ["evaluate", str(run)])
    if name != "metrics.json":
        assert evaluated.exit_code == 2 and evaluated.stderr.splitlines() == [told], evaluated.output[-500:]
        return
    assert forecast.stderr.splitlines()[-1].endswith(f"; stanhop evaluate {run} measures its figures anew (keeping it "
                                                     "aside)")
    assert evaluated.exit_code == 0, evaluated.output[-500:]  # measured anew, the damaged file kept aside
    assert f"notice: cannot read {run / name}: it is damaged" in evaluated.stderr
    assert (run / "metrics.json.unreadable").read_text() == "[" * 100_000 + "]" * 100_000
    assert json.loads((run / "metrics.json").read_text())["test"]["mse"] > 0


def test_evaluate_keeps_a_metrics_file_that_holds_no_object_aside(run_dir, tmp_path: Path):
    """metrics.json holding a list was an internal error after both evaluation passes."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "metrics.json").write_text("[1, 2]\n")
    evaluated = CliRunner().invoke(cli.cli, ["evaluate", str(run)])
    assert evaluated.exit_code == 0, evaluated.output[-500:]
    assert f"notice: {run / 'metrics.json'} does not hold a JSON object; it is kept as" in evaluated.stderr
    assert (run / "metrics.json.unreadable").read_text() == "[1, 2]\n"
    assert json.loads((run / "metrics.json").read_text())["test"]["mse"] > 0


def test_resume_of_a_run_whose_csv_was_moved_says_where_it_was(tmp_path: Path, etth1_path):
    data = tmp_path / "cut.csv"
    data.write_text("".join(etth1_path.read_text().splitlines(keepends=True)[:3000]))
    trained = CliRunner().invoke(cli.cli, ["train", "--config", SMOKE, "--data", str(data), "--split", "0.7/0.1/0.2",
                                           "--max-epochs", "1", "--out", str(tmp_path / "run")])
    assert trained.exit_code == 0, trained.output
    data.rename(tmp_path / "elsewhere.csv")
    result = CliRunner().invoke(cli.cli, ["train", "--resume", str(tmp_path / "run")])
    assert result.exit_code == 2 and f"the run's data file {data} is not found (moved or deleted?); put it back there" \
        in result.output, result.output


def test_resume_needs_a_run_with_a_checkpoint(tmp_path: Path):
    result = CliRunner().invoke(cli.cli, ["train", "--resume", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "does not exist" in result.output


class PlantFile:
    """Unpickling this creates a file: what a malicious checkpoint would do."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def test_a_malicious_pickle_is_never_executed(tmp_path: Path):
    run = tmp_path / "run"
    result = CliRunner().invoke(cli.cli, ["train", "--config", SMOKE, "--out", str(run), "--set", "train.max_epochs=1"])
    assert result.exit_code == 0, result.output
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"state_dict": PlantFile(marker)})
    # as a resumable checkpoint, as the weights file, and as the best checkpoint
    (run / "checkpoints" / "last.ckpt").write_bytes(payload)
    resumed = CliRunner().invoke(cli.cli, ["train", "--resume", str(run)])
    assert resumed.exit_code == 2 and "unsafe to unpickle" in resumed.output
    (run / "model.safetensors").write_bytes(payload)
    for command in (["evaluate", str(run)], ["forecast", str(run), "--input", os.environ["STANHOP_DATA_DIR"] + "/ETTh1.csv"]):
        loaded = CliRunner().invoke(cli.cli, command)
        assert loaded.exit_code == 2, loaded.output
        assert "Traceback" not in loaded.output
    assert not marker.exists()


def test_nan_loss_stops_training_with_a_message_naming_epoch_and_step(tmp_path: Path):
    result = CliRunner().invoke(cli.cli, ["train", "--config", SMOKE, "--out", str(tmp_path / "run"), "--set", "train.lr=1e30", "--set", "train.grad_clip=0"])
    assert result.exit_code == 2, result.output
    assert "loss became" in result.output and "at epoch 1 step " in result.output  # counted as the progress lines count
    assert "no epoch ended, so there is no checkpoint:" in result.output
    assert not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()


def test_internal_errors_are_short_unless_debug(monkeypatch):
    import stanhop.workflow

    def broken(*args, **kwargs):
        raise RuntimeError("something inside broke")

    monkeypatch.setattr(stanhop.workflow, "train", broken)
    short = CliRunner().invoke(cli.cli, ["train", "--config", SMOKE])
    assert short.exit_code == 1 and "internal error: RuntimeError: something inside broke" in short.output
    assert "Traceback" not in short.output
    loud = CliRunner().invoke(cli.cli, ["--debug", "train", "--config", SMOKE])
    assert loud.exit_code == 1 and "Traceback" in loud.output


def test_a_reader_that_stops_early_ends_the_command_quietly(etth1_path):
    """`stanhop data describe ETTh1 | head -1`: stdout is closed before anything is written."""
    proc = subprocess.Popen([STANHOP, "data", "describe", "ETTh1", "--split", "12/4/4"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "STANHOP_DATA_DIR": str(etth1_path.parent)})
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and stderr == ""  # no "internal error", no "Exception ignored"


@pytest.mark.parametrize("command", [["evaluate"], ["forecast"], ["plot"], ["train", "--resume"]])
def test_run_directories_that_do_not_exist_or_belong_to_another_tool(tmp_path: Path, command):
    missing = CliRunner().invoke(cli.cli, [*command, str(tmp_path / "missing"), *(["--input", "x.csv"] if command == ["forecast"] else [])])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    other = tmp_path / "other"
    other.mkdir()
    (other / "model.ckpt").write_bytes(b"\x00")
    foreign = CliRunner().invoke(cli.cli, [*command, str(other), *(["--input", "x.csv"] if command == ["forecast"] else [])])
    assert foreign.exit_code == 2 and "not a stanhop run directory" in foreign.output


def test_ddp_on_two_cpu_processes_matches_a_single_process_run(tmp_path: Path):
    common = ["train", "--config", SMOKE, "--accelerator", "cpu", "--set", "train.max_epochs=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # half the batch on each of two processes: the same global batch and number of steps (and each
    # process's half in two micro-batches: gradients summed over backward passes, then synchronised)
    ddp = subprocess.run([STANHOP, *common, "--devices", "2", "--strategy", "ddp", "--batch-size", "32", "--micro-batch-size", "16",
                          "--out", str(tmp_path / "ddp")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert ddp.stdout.count("kurtosis (avg)") == 1  # rank 0 alone reports and writes
    single = subprocess.run([STANHOP, *common, "--out", str(tmp_path / "single")], capture_output=True, text=True, env=env, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    m_ddp = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    m_single = json.loads((tmp_path / "single" / "metrics.json").read_text())
    assert m_ddp["epochs"] == m_single["epochs"] == 2
    assert m_ddp["test"]["mse"] == pytest.approx(m_single["test"]["mse"], rel=0.25)
    assert val_epochs(tmp_path / "ddp") == [0, 1]


def test_a_moved_run_resumes_from_its_own_checkpoints(tmp_path: Path, fast_smoke_args):
    """Checkpoints record absolute paths; a run folder moved (or copied) since then must not
    evaluate, or save as its weights, checkpoints of the folder it came from."""
    from safetensors.torch import load_file

    one_epoch = [arg.replace("train.max_epochs=2", "train.max_epochs=1") for arg in fast_smoke_args]  # (--set once)
    first = CliRunner().invoke(cli.cli, ["train", "--config", SMOKE, *one_epoch,
                                         "--out", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # b, a copy; then a moves away
    (tmp_path / "a").rename(tmp_path / "a-moved")
    resumed = CliRunner().invoke(cli.cli, ["train", "--resume", str(tmp_path / "b"), "--max-epochs", "2"])
    assert resumed.exit_code == 0, resumed.output
    assert "dirpath has changed" not in resumed.output
    assert sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt", "last.json"]
    weights = load_file(str(tmp_path / "b" / "model.safetensors"))
    again = CliRunner().invoke(cli.cli, ["train", "--resume", str(tmp_path / "b"), "--max-epochs", "2"])  # nothing to train
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["epochs"] == 2
    kept = load_file(str(tmp_path / "b" / "model.safetensors"))
    assert all(torch.equal(weights[k], kept[k]) for k in weights)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pseudo-terminals as Linux makes them")
def test_a_terminal_that_tells_no_width_gets_lines_not_bars():
    """A new pseudo-terminal is 0 × 0 (`script`, `docker run -t`, `ssh -tt` give such): progress
    bars drawn on it were empty lines, so it gets the log's lines; once it has a size, bars."""
    import fcntl
    import pty
    import struct
    import termios

    code = "from stanhop.errors import redrawn_bars; print(redrawn_bars())"
    controller, terminal = pty.openpty()
    try:
        def bars() -> str:
            done = subprocess.run([sys.executable, "-c", code], stderr=terminal, capture_output=False,
                                  stdout=subprocess.PIPE, text=True, cwd=ROOT, timeout=60)
            return done.stdout.strip()

        assert bars() == "False"
        fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        assert bars() == "True"
    finally:
        os.close(controller)
        os.close(terminal)


class ValMseSequence(L.Callback):
    """Reports the given validation MSE for each epoch, so which epochs improve is known."""

    def __init__(self, values: list[float]):
        self.values = values

    def on_validation_end(self, trainer, module):  # after the logged figures, before the checkpoint's turn
        if not trainer.sanity_checking:
            trainer.callback_metrics["val_mse"] = torch.tensor(self.values[trainer.current_epoch])


def test_resume_goes_on_from_the_last_epoch_as_the_uninterrupted_run_would(tmp_path: Path):
    """last.ckpt is the last epoch's, also after epochs that did not improve (Lightning wrote it
    only with a new best, so --resume trained those again), and it holds the random generators'
    states: 2 epochs and a resume to 4 end with the weights of 4 epochs at once."""
    from safetensors.torch import load_file

    from stanhop.config import apply_overrides
    from stanhop.workflow import train

    four = apply_overrides(load_config(SMOKE), ["train.max_epochs=4", "train.patience=10", "train.limit_train_batches=4"])
    worse = [1.0, 0.5, 0.7, 0.9]  # the best after epoch 2 of 4
    train(four, tmp_path / "whole", progress=False, callbacks=[ValMseSequence(worse)])
    last = torch.load(tmp_path / "whole" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 3  # the fourth epoch's, not the best one's (1)

    train(apply_overrides(four, ["train.max_epochs=2"]), tmp_path / "cut", progress=False,
          callbacks=[ValMseSequence(worse)])
    train(four, resume=tmp_path / "cut", progress=False, callbacks=[ValMseSequence(worse)])
    resumed = torch.load(tmp_path / "cut" / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["epoch"] == 3
    for name, weights in last["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][name], weights, rtol=0, atol=0, msg=name)
    assert load_file(tmp_path / "cut" / "model.safetensors").keys() == load_file(tmp_path / "whole" / "model.safetensors").keys()

    config = (tmp_path / "cut" / "config.yaml").read_bytes()
    log = (tmp_path / "cut" / "logs" / "metrics.csv").read_bytes()
    fewer = CliRunner().invoke(cli.cli, ["train", "--resume", str(tmp_path / "cut"), "--max-epochs", "2"])
    assert fewer.exit_code == 2 and "has trained 4 epochs, more than --max-epochs 2: give at least 4" in fewer.stderr
    assert (tmp_path / "cut" / "config.yaml").read_bytes() == config  # nothing changed before the refusal
    assert (tmp_path / "cut" / "logs" / "metrics.csv").read_bytes() == log


def test_the_package_imports_where_the_os_cannot_fork():
    """Windows has no os.register_at_fork (nor fcntl): the model and the CLI still import (torch
    first, which on Windows does without it)."""
    code = ("import os, sys, torch; del os.register_at_fork, os.fork; sys.modules['fcntl'] = None; "
            "import stanhop.dropout, stanhop.model, stanhop.runs, cli; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_a_notice_or_log_line_is_one_write_so_lines_from_threads_stay_whole(monkeypatch):
    # print wrote the message and its newline apart: notices of forecasts in threads interleaved
    from stanhop.errors import log_line, notice_to_stderr

    writes = []

    class Stderr:
        def write(self, text):
            writes.append(text)

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stderr", Stderr())
    notice_to_stderr("the first")
    log_line("evaluating the test split: 3 windows")
    assert writes == ["notice: the first\n", "evaluating the test split: 3 windows\n"]


def test_force_removes_nothing_where_it_cannot_remove_everything(run_dir, tmp_path: Path, monkeypatch):
    """A subfolder the user cannot change (a read-only mount, or written by a container's root)
    stopped --force half-way: the run's marker and figures gone, the rest left, no command
    taking the folder any more. Now nothing is removed and the folder is named."""
    import errno
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    locked = run / "checkpoints"
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    real_access, real_unlink = os.access, os.unlink

    def access(path, mode, **kwargs):  # what a read-only checkpoints/ answers (chmod does not stop root)
        return False if Path(path) == locked and mode & os.W_OK else real_access(path, mode, **kwargs)

    def unlink(path, *args, **kwargs):  # and what removing its files meets
        if str(path).endswith(".ckpt"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr(os, "unlink", unlink)
    result = CliRunner().invoke(cli.cli, ["train", "--config", SMOKE, "--out", str(run), "--force"])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: cannot write in {locked} (permission denied)"), result.output
    assert "nothing was removed" in result.output
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before


def test_a_damaged_last_checkpoint_says_how_to_go_on_from_the_best(run_dir, tmp_path: Path):
    """A full disk cut last.ckpt short (Lightning staged it in $TMPDIR and copied it over):
    --resume was an internal error. Now the file is named, with the command that goes on."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    last = run / "checkpoints" / "last.ckpt"
    whole = last.read_bytes()
    for cut in (whole[:len(whole) // 3], b""):
        last.write_bytes(cut)
        result = CliRunner().invoke(cli.cli, ["train", "--resume", str(run)])
        assert result.exit_code == 2, result.output
        told = result.output.strip()
        assert told.startswith(f"error: cannot read checkpoint {last} (") and "it is damaged or cut short" in told
        assert told.endswith(f"with: cp {run}/checkpoints/best.ckpt {last} && stanhop train --resume {run}, or train "
                             "the run again with --force"), told
    shutil.copyfile(run / "checkpoints" / "best.ckpt", last)  # as the message says
    assert CliRunner().invoke(cli.cli, ["train", "--resume", str(run)]).exit_code == 0


def test_checkpoints_are_written_beside_themselves_and_renamed_into_place(tmp_path: Path, fast_smoke_args, monkeypatch):
    """Lightning staged each checkpoint in $TMPDIR and moved it over (not atomic across file
    systems; a small $TMPDIR failed the training). Each is now a temp file in checkpoints/,
    renamed over the checkpoint."""
    published = []
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        published.append((Path(src), Path(dst)))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    run = tmp_path / "run"
    result = CliRunner().invoke(cli.cli, ["train", "--config", SMOKE, *fast_smoke_args, "--out", str(run)])
    assert result.exit_code == 0, result.output
    checkpoints = [(src, dst) for src, dst in published if dst.suffix == ".ckpt"]
    assert {dst.name for _, dst in checkpoints} == {"best.ckpt", "last.ckpt"}
    assert all(src.parent == run / "checkpoints" and src.name.startswith(".") for src, _ in checkpoints)
    assert not [p for p in (run / "checkpoints").iterdir() if p.suffix == ".tmp"]


@pytest.mark.parametrize("error, exit_code, told", [
    (OSError(28, "No space left on device"), 2, "error: cannot write the output (No space left on device"),
    (OSError(30, "Read-only file system", "out/x.csv"), 2, "error: cannot write out/x.csv (Read-only file system); "),
    (OSError(13, "Permission denied", "out/x.csv"), 2, "error: cannot access out/x.csv (Permission denied); "),
    (OSError(2, "No such file or directory", "x.csv"), 1, "internal error: FileNotFoundError"),  # a mistake of ours
    (OSError(9, "Bad file descriptor"), 1, "internal error: OSError"),
    (OSError(13, "Permission denied"), 1, "internal error: PermissionError"),  # naming nothing: not known a write
])
def test_an_os_error_of_writing_is_one_line_and_any_other_stays_internal(monkeypatch, error, exit_code, told):
    import stanhop.workflow

    def failing(*args, **kwargs):
        raise error

    monkeypatch.setattr(stanhop.workflow, "evaluate", failing)
    result = CliRunner().invoke(cli.cli, ["evaluate", "somewhere"])
    assert result.exit_code == exit_code and result.output.startswith(told), result.output
    assert "Traceback" not in result.output


def disk_full_at(monkeypatch, name: str) -> None:
    """A full disk where ``name`` is published (every file is written to a temp file, then
    renamed over its name: runs.atomic_file)."""
    import errno

    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if Path(dst).name == name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


def test_train_onto_a_full_disk_is_one_line_and_leaves_no_folder(tmp_path: Path, fast_smoke_args, monkeypatch):
    disk_full_at(monkeypatch, "stanhop.json")  # the first file a new run writes
    run = tmp_path / "new"
    result = CliRunner().invoke(cli.cli, ["train", "--config", SMOKE, *fast_smoke_args, "--out", str(run)])
    assert result.exit_code == 2, result.output
    assert f"error: cannot write {run / 'stanhop.json'} (No space left on device); free some space" in result.output
    assert list(tmp_path.iterdir()) == []


def test_a_training_that_cannot_write_its_figures_fails(tmp_path: Path, fast_smoke_args, monkeypatch):
    """The run had no metrics.json, and train said so in a notice and exited 0."""
    disk_full_at(monkeypatch, "metrics.json")
    run = tmp_path / "run"
    result = CliRunner().invoke(cli.cli, ["train", "--config", SMOKE, *fast_smoke_args, "--out", str(run)])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1] == (
        f"error: cannot write metrics.json in {run} (No space left on device): the run has its model but no figures; "
        f"free some space or make it writable, then stanhop train --resume {run} writes them")
    monkeypatch.undo()
    assert CliRunner().invoke(cli.cli, ["train", "--resume", str(run)]).exit_code == 0
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 2


def test_a_resume_stopped_before_its_figures_leaves_no_stale_figures(run_dir, tmp_path: Path, monkeypatch):
    """An extended resume stopped during its final evaluation left new weights beside the old
    figures, and `stanhop runs` listed it as finished."""
    import shutil

    import stanhop.workflow

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt()

    monkeypatch.setattr(stanhop.workflow, "evaluate", stopped)
    result = CliRunner().invoke(cli.cli, ["train", "--resume", str(run), "--max-epochs", "3"])
    assert result.exit_code == 130, result.output
    monkeypatch.undo()
    assert not (run / "metrics.json").exists()  # none rather than those of the weights replaced
    row = json.loads(CliRunner().invoke(cli.cli, ["runs", str(tmp_path), "--json"]).output)[0]
    assert row["note"] == f"not evaluated: stanhop train --resume {run}"


@pytest.fixture
def no_hang():
    """A test that would wait forever (opening a FIFO) fails after 60 s instead."""
    def stop(*_):
        raise TimeoutError("waited 60 s: something opened a FIFO")

    before = signal.signal(signal.SIGALRM, stop)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, before)


def test_a_fifo_or_device_in_a_run_is_never_opened_nor_written_over(run_dir, tmp_path: Path, no_hang):
    """A FIFO at checkpoints/last.json hung `stanhop runs` forever; one at metrics.json was
    replaced by evaluate; a link to a device as the weights was "missing". Now such a run is
    damaged: one line from every command, a note in `runs`, and the FIFO is left where it was."""
    run = tmp_path / "runs" / "run"
    shutil.copytree(run_dir, run)
    os.remove(run / "checkpoints" / "last.json")
    os.mkfifo(run / "checkpoints" / "last.json")
    listed = CliRunner().invoke(cli.cli, ["runs", str(tmp_path / "runs")])
    assert listed.exit_code == 0 and "last.json is a FIFO (named pipe), not a file: the run is damaged" in listed.output
    os.remove(run / "checkpoints" / "last.json")
    os.remove(run / "metrics.json")
    os.mkfifo(run / "metrics.json")
    for command in (["evaluate", str(run)], ["train", "--resume", str(run), "--max-epochs", "3"]):
        result = CliRunner().invoke(cli.cli, command)
        assert result.exit_code == 2 and result.output.startswith(f"error: {run / 'metrics.json'} is a FIFO"), result.output
    assert (run / "metrics.json").is_fifo()
    os.remove(run / "metrics.json")
    (run / "model.safetensors").unlink()
    (run / "model.safetensors").symlink_to("/dev/zero")
    result = CliRunner().invoke(cli.cli, ["forecast", str(run), "--output", str(tmp_path / "f.csv")])
    assert result.exit_code == 2 and "model.safetensors is a device, not a file: the run is damaged" in result.output


@pytest.mark.parametrize("field, value, told", [
    ("borders", {"train": [0, 100], "val": [100, 200], "test": [-5, "x"]}, "borders.test must be two whole numbers"),
    ("borders", {"train": [0, 100], "val": [300, 200], "test": [300, 400]}, "borders.val must be rows in order"),
    ("freq", "notafreq", "freq must be a pandas frequency"),
    ("columns", [1, 2, 3, 4, 5, 6, 7], "columns must be a list of names"),
    ("mean", [0.0] * 3, "mean must be 7 finite numbers"),
])
def test_a_run_whose_data_facts_were_edited_is_refused_naming_the_field(run_dir, tmp_path: Path, field, value, told):
    """Wrong types in scaler.json's borders were `internal error: TypeError` in forecast, and
    evaluate (or a freq pandas does not know) went on without a word."""
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    facts = json.loads((run / "scaler.json").read_text())
    (run / "scaler.json").write_text(json.dumps({**facts, field: value}))
    for command in (["forecast", str(run), "--output", str(tmp_path / "f.csv")], ["evaluate", str(run)]):
        result = CliRunner().invoke(cli.cli, command)
        assert result.exit_code == 2, result.output
        assert result.output.startswith(f"error: {run / 'scaler.json'} is damaged: {told}"), result.output


def test_plot_and_resume_never_write_through_a_link_out_of_the_run(run_dir, tmp_path: Path):
    """plots/ as a link to another folder: `stanhop plot RUN` wrote (and would replace) files
    there; a resume followed logs/ likewise. Now both refuse, and the link is left as it was."""
    run, outside = tmp_path / "run", tmp_path / "outside"
    shutil.copytree(run_dir, run)
    shutil.rmtree(run / "plots", ignore_errors=True)  # (drawn by an earlier test of the shared run)
    outside.mkdir()
    (run / "plots").symlink_to(outside)
    result = CliRunner().invoke(cli.cli, ["plot", str(run), "--what", "training"])
    assert result.exit_code == 2 and result.output.startswith(f"error: {run / 'plots'} is a link"), result.output
    shutil.move(run / "logs", outside / "logs")
    (run / "logs").symlink_to(outside / "logs")
    before = (outside / "logs" / "metrics.csv").read_bytes()
    result = CliRunner().invoke(cli.cli, ["train", "--resume", str(run), "--max-epochs", "3"])
    assert result.exit_code == 2 and result.output.startswith(f"error: {run / 'logs'} is a link"), result.output
    assert sorted(p.name for p in outside.iterdir()) == ["logs"]
    assert (outside / "logs" / "metrics.csv").read_bytes() == before and (run / "plots").is_symlink()


@pytest.mark.parametrize("as_zip", [True, False])
def test_an_unsafe_checkpoint_is_refused_in_our_words(run_dir, tmp_path: Path, as_zip):
    """torch's message, cut short, ended '... Re-running `torch.load` with `weights_only` set to
    `False`': advice to do the unsafe thing; and a bare pickle came with torch's two-line
    warning on its protocol."""
    run, marker = tmp_path / "run", tmp_path / "pwned"
    shutil.copytree(run_dir, run)
    last = run / "checkpoints" / "last.ckpt"
    if as_zip:  # torch's own format, its data.pkl a malicious pickle
        torch.save({"epoch": 1, "state_dict": PlantFile(marker)}, last)
    else:
        last.write_bytes(pickle.dumps({"epoch": 1, "state_dict": PlantFile(marker)}, protocol=4))
    result = CliRunner().invoke(cli.cli, ["train", "--resume", str(run), "--max-epochs", "3"])
    assert result.exit_code == 2 and not marker.exists()
    assert result.output.count("\n") == 1 and "Warning" not in result.output, result.output
    assert result.output.startswith(f"error: checkpoint {last} was not loaded"), result.output
    assert "weights_only" not in result.output and "train the run again with --force" in result.output
