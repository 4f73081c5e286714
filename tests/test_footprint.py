"""A training step's activation memory, measured, and the micro-batch lowered to fit the free memory."""

import json
from pathlib import Path

import lightning
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
    """Bytes of the tensors saved for backward, the parameters aside (held anyway: training_state)."""
    storages, parameters = {}, {p.untyped_storage().data_ptr() for p in model.parameters()}

    def pack(t):
        if t.untyped_storage().data_ptr() not in parameters:
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
    with pytest.raises(UserError, match=r"one window of 7 series holds ≈ 0\.2 GiB .* more than the 0\.1 GiB \(70% of the 0\.1 GiB free\) that may be taken"):
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
    model = STanHopNet(cfg)
    measured, state = footprint.activations(model, cfg.in_len, cfg.n_series), footprint.training_state(model)
    # room for 10½ of the batch's 64 windows beside the parameters: a few bytes of the measurement vary from one to the
    # next (small saved tensors counted by address), and a budget of exactly 10 went 9 windows by chance
    free = footprint.Memory(int(((measured.step_peak(10) + measured.step_peak(11)) / 2 + state) / footprint.USABLE), "free")
    monkeypatch.setattr(footprint, "free_memory", lambda: free)
    lowered = train(tmp_path / "lowered")
    assert lowered.exit_code == 0, lowered.output
    assert ("notice: a training step of 64 windows of 7 series would hold ≈ 0.0 GiB of activations, more than fit beside "
            "the parameters in the 0.0 GiB (70% of the 0.0 GiB free) that may be taken: training goes 10 windows at a "
            "time (train.micro_batch_size 10") in lowered.stderr
    assert load_run(tmp_path / "lowered").config.train.micro_batch_size == 10

    monkeypatch.setattr(footprint, "free_memory", lambda: None)  # not Linux: nothing measured, nothing changed
    unmeasured = train(tmp_path / "unmeasured")
    assert unmeasured.exit_code == 0 and load_run(tmp_path / "unmeasured").config.train.micro_batch_size is None
    # the measurement draws nothing from the run's random state: the same training as without it
    before, after = (json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("plain", "unmeasured"))
    assert after["test"] == before["test"] and after["val"] == before["val"]

    monkeypatch.setattr(footprint, "free_memory", lambda: footprint.Memory(int((measured.step_peak(1) / 2 + state) / footprint.USABLE),
                                                                          "in all"))  # the parameters fit, a window not
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


def test_a_model_whose_parameters_do_not_fit_is_refused_before_it_is_made(tmp_path: Path, monkeypatch):
    cfg = load_config(SMOKE).model
    cfg.d_model = 256
    state = 4 * 4 * sum(p.numel() for p in STanHopNet(cfg).parameters())  # float32 parameters, gradients, Adam's 2 moments
    free = footprint.Memory(int(state / footprint.USABLE) - 1, "free")
    monkeypatch.setattr(footprint, "free_memory", lambda: free)
    made, init = [], STanHopNet.__init__

    def counted(self, *args, **kwargs):  # the device each model is made on
        made.append(torch.empty(0).device.type)
        init(self, *args, **kwargs)

    monkeypatch.setattr(STanHopNet, "__init__", counted)
    refused = train(tmp_path / "refused", "--set", "model.d_model=256")
    assert refused.exit_code == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.output
    assert (f"the model's {state // 16:,} parameters hold ≈ {state / 2**30:.1f} GiB in training (with their gradients and "
            f"Adam's moments), more than the {footprint.USABLE * free.bytes / 2**30:.1f} GiB (70% of the "
            f"{free.bytes / 2**30:.1f} GiB free) that may be taken: choose a smaller model "
            "(--set model.d_model=") in refused.stderr
    assert made == ["meta"]  # no model with storage was made
    assert not (tmp_path / "refused").exists()


def test_the_memory_left_under_ulimit_v_is_the_memory_there_is(monkeypatch):
    if not footprint.MEMINFO.exists():
        pytest.skip("not Linux")
    import resource

    status = Path("/proc/self/status").read_text()
    mapped = next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmSize:"))
    real = resource.getrlimit
    monkeypatch.setattr(resource, "getrlimit", lambda which: (mapped + 64 * 2**20, resource.RLIM_INFINITY)
                        if which == resource.RLIMIT_AS else real(which))  # as after ulimit -v: 64 MiB more than it maps
    left = footprint.free_memory()
    assert left.kind == "usable under ulimit -v"
    assert 32 * 2**20 * footprint.ADDRESS_SPACE_SHARE < left.bytes <= 64 * 2**20 * footprint.ADDRESS_SPACE_SHARE
    monkeypatch.setattr(resource, "getrlimit", lambda which: (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    assert footprint.free_memory().kind == "free"


class EvalWindows(lightning.Callback):
    """The windows of each validation and test batch."""

    def __init__(self):
        self.seen = []

    def on_validation_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0):
        self.seen.append(len(batch[0]))

    on_test_batch_start = on_validation_batch_start


def test_validation_takes_no_more_windows_than_fit_in_memory(tmp_path: Path, monkeypatch):
    from stanhop.workflow import train as train_run

    config = load_config(SMOKE)
    config.train.batch_size, config.train.max_epochs, config.train.accelerator = 8, 1, "cpu"
    config.train.limit_train_batches, config.data.split = 3, "0.03/0.01/0.01"
    model = STanHopNet(config.model)
    measured, state = footprint.activations(model, config.model.in_len, 7), 16 * sum(p.numel() for p in model.parameters())
    # room for 20½ windows: a training step of 8 fits, a validation pass of 256 (inference_windows) might not
    free = footprint.Memory(int(((measured.step_peak(20) + measured.step_peak(21)) / 2 + state) / footprint.USABLE), "free")
    monkeypatch.setattr(footprint, "free_memory", lambda: free)
    seen = EvalWindows()
    train_run(config, tmp_path / "run", progress=False, callbacks=[seen])
    assert seen.seen and max(seen.seen) == 20
    assert load_run(tmp_path / "run").config.train.micro_batch_size is None  # the training step was not lowered
