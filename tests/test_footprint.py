"""A training step's activation memory, measured, and the micro-batch lowered to fit the free memory."""

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import cli
from stanhop import footprint
from stanhop.config import ModelConfig, load_config
from stanhop.errors import UserError
from stanhop.model import STanHopNet
from stanhop.runs import load_run

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")


def saved_bytes(model, windows: int, in_len: int, n_series: int) -> int:
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(torch.randn(windows, in_len, n_series))
    return sum(storages.values())


@pytest.mark.parametrize("n_series, dropout", [(3, 0.0), (9, 0.2)])
def test_the_activations_of_many_windows_follow_from_one_and_two(n_series, dropout):
    cfg = ModelConfig(in_len=24, out_len=8, seg_len=4, win_size=2, d_model=16, d_ff=32, n_heads=2, e_layers=2,
                      factor=3, dropout=dropout, n_series=n_series)
    model = STanHopNet(cfg).train()
    state = torch.random.get_rng_state()
    measured = footprint.activations(model, cfg.in_len, n_series)
    assert torch.equal(torch.random.get_rng_state(), state)  # the run's random draws are not moved
    assert measured.per_window > 0
    for windows in (6, 40):
        assert measured.fixed + windows * measured.per_window == pytest.approx(
            saved_bytes(model, windows, cfg.in_len, n_series), rel=0.02)


def test_the_micro_batch_is_the_most_windows_that_fit():
    measured = footprint.Activations(fixed=100 * 2**20, per_window=50 * 2**20)
    free = footprint.Memory(4 * 2**30, "free")
    assert footprint.fit_micro_batch(32, measured, free, 7) == 32  # 32 windows fit: unchanged
    fitting = footprint.fit_micro_batch(512, measured, free, 7)
    budget = footprint.USABLE * free.bytes
    assert measured.step_peak(fitting) <= budget < measured.step_peak(fitting + 1)
    with pytest.raises(UserError, match=r"one window of 7 series holds ≈ 0\.2 GiB .* more than this machine has \(0\.1 GiB free\)"):
        footprint.fit_micro_batch(8, measured, footprint.Memory(100 * 2**20, "free"), 7)


def test_free_memory_is_memavailable_on_linux_else_the_physical_memory(tmp_path, monkeypatch):
    if not footprint.MEMINFO.exists():
        pytest.skip("not Linux")
    free = footprint.free_memory()
    available = next(int(line.split()[1]) * 1024 for line in footprint.MEMINFO.read_text().splitlines()
                     if line.startswith("MemAvailable:"))
    assert free.kind == "free" and 0 < free.bytes <= available
    monkeypatch.setattr(footprint, "MEMINFO", tmp_path / "no-meminfo")  # as on macOS
    physical = footprint.free_memory()
    assert physical.kind == "in all" and physical.bytes >= available


def train(out: Path, *extra: str):
    return CliRunner().invoke(cli.cli, ["train", "--config", SMOKE, "--out", str(out), "--accelerator", "cpu",
                                        "--set", "data.split=0.03/0.01/0.01", "--set", "train.limit_train_batches=3",
                                        "--set", "train.max_epochs=1", *extra])


def test_train_lowers_the_micro_batch_to_fit_the_free_memory(tmp_path: Path, monkeypatch):
    plain = train(tmp_path / "plain")
    assert plain.exit_code == 0, plain.output
    assert "notice: a training step" not in plain.stderr  # the smoke model fits anywhere

    cfg = load_run(tmp_path / "plain").config.model
    measured = footprint.activations(STanHopNet(cfg), cfg.in_len, cfg.n_series)
    # room for 10½ of the batch's 64 windows: a few bytes of the measurement vary from one to the next (small
    # saved tensors counted by address), and a budget of exactly 10 went 9 windows by chance
    free = footprint.Memory(int((measured.step_peak(10) + measured.step_peak(11)) / 2 / footprint.USABLE), "free")
    monkeypatch.setattr(footprint, "free_memory", lambda: free)
    lowered = train(tmp_path / "lowered")
    assert lowered.exit_code == 0, lowered.output
    assert ("notice: a training step of 64 windows of 7 series would hold ≈ 0.0 GiB of activations, and this machine "
            "has 0.0 GiB free: training goes 10 windows at a time (train.micro_batch_size 10") in lowered.stderr
    assert load_run(tmp_path / "lowered").config.train.micro_batch_size == 10

    monkeypatch.setattr(footprint, "free_memory", lambda: None)  # not Linux: nothing measured, nothing changed
    unmeasured = train(tmp_path / "unmeasured")
    assert unmeasured.exit_code == 0 and load_run(tmp_path / "unmeasured").config.train.micro_batch_size is None
    # the measurement draws nothing from the run's random state: the same training as without it
    before, after = (json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("plain", "unmeasured"))
    assert after["test"] == before["test"] and after["val"] == before["val"]

    monkeypatch.setattr(footprint, "free_memory", lambda: footprint.Memory(int(measured.step_peak(1) / 2), "in all"))
    refused = train(tmp_path / "refused")
    assert refused.exit_code == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "one window of 7 series holds" in refused.stderr and "GiB in all)" in refused.stderr and "--columns" in refused.stderr
    assert not (tmp_path / "refused").exists()


def test_a_batch_larger_than_the_training_windows_is_planned_as_those_windows(tmp_path: Path, monkeypatch):
    cfg = load_config(SMOKE).model
    measured = footprint.activations(STanHopNet(cfg), cfg.in_len, cfg.n_series)
    free = footprint.Memory(int(measured.step_peak(2000) / footprint.USABLE) + 1, "free")  # room for 2000 windows
    monkeypatch.setattr(footprint, "free_memory", lambda: free)
    result = train(tmp_path / "run", "--set", "train.batch_size=100000")  # far more than the ~500 windows there are
    assert result.exit_code == 0, result.output
    assert "notice: train.batch_size 100000 is more than the " in result.stderr
    assert "a training step" not in result.stderr  # planned as the windows there are: they fit
    assert load_run(tmp_path / "run").config.train.micro_batch_size is None
