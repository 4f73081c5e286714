"""Micro-batches (train.micro_batch_size): the same training step with less memory.

Windows do not interact in STanHop-Net, so accumulating the gradient over micro-batches must
give the whole batch's loss and gradient, and training with them the same weights.
"""

import math
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from stanhop.config import Config, ModelConfig
from stanhop.errors import UserError
from stanhop.model import STanHopNet
from stanhop.optimisation import TrainingDiverged, accumulate_gradients
from stanhop.training import Forecaster, make_trainer, quiet_lightning

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
TINY = dict(in_len=12, out_len=6, seg_len=3, win_size=2, d_model=8, d_ff=16, n_heads=2, e_layers=2,
            factor=2, n_series=3)


def gradients(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("separation", ["entmax", "softmax1"])
def test_micro_batches_give_the_whole_batchs_loss_and_gradient(separation):
    torch.manual_seed(0)
    model = STanHopNet(ModelConfig(**TINY, separation=separation, dropout=0.0))
    x, y = torch.randn(10, 12, 3), torch.randn(10, 6, 3)
    whole = accumulate_gradients(model, x, y, None)
    expected = gradients(model)
    model.zero_grad(set_to_none=True)
    parts = accumulate_gradients(model, x, y, 4)  # 4 + 4 + 2 windows: unequal parts weigh by size
    assert torch.allclose(parts, whole, rtol=1e-5)
    assert torch.allclose(whole, torch.nn.functional.mse_loss(model(x), y).detach(), rtol=1e-6)
    for name, grad in gradients(model).items():
        assert torch.allclose(grad, expected[name], rtol=1e-4, atol=1e-7), name


def test_the_step_needs_no_lightning():
    """The benchmarks time and measure the step in a process that holds no Lightning."""
    import subprocess
    import sys

    code = ("import sys, torch; from stanhop.optimisation import accumulate_gradients, adam; "
            "from stanhop.model import STanHopNet; print('lightning' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_only_the_last_backward_pass_synchronises():
    from contextlib import contextmanager

    model = STanHopNet(ModelConfig(**TINY, dropout=0.0))
    passes: list[bool] = []  # per backward pass: inside unsynced()?
    held = [False]

    @contextmanager
    def unsynced():
        held[0] = True
        yield
        held[0] = False

    def backward(loss):
        passes.append(held[0])
        loss.backward()

    accumulate_gradients(model, torch.randn(7, 12, 3), torch.randn(7, 6, 3), 3, backward, unsynced)
    assert passes == [True, True, False]  # 3 + 3 + 1 windows: gradients exchanged once, with the last


def test_a_diverged_micro_batch_stops_before_its_backward_pass():
    model = STanHopNet(ModelConfig(**TINY, dropout=0.0))
    x, y = torch.randn(6, 12, 3), torch.randn(6, 6, 3)
    x[4, 0, 0] = math.nan  # in the last micro-batch
    with pytest.raises(TrainingDiverged, match="loss became nan"):
        accumulate_gradients(model, x, y, 2)
    assert all(p.grad is not None for p in model.parameters())  # the earlier parts went backward ...
    model.zero_grad(set_to_none=True)
    with pytest.raises(TrainingDiverged):
        accumulate_gradients(model, x, y, None)
    assert all(p.grad is None for p in model.parameters())  # ... the diverged one did not


def fit(tmp_path, name: str, **train) -> tuple[dict[str, torch.Tensor], float]:
    """Two epochs of Forecaster on a fixed synthetic set: the final weights and learning rate."""
    config = Config()
    config.model = ModelConfig(**TINY, dropout=0.0)
    for key, value in dict(lr=1e-2, batch_size=8, max_epochs=2, lr_halving_epochs=[1], **train).items():
        setattr(config.train, key, value)
    config.validate()
    gen = torch.Generator().manual_seed(1)
    windows = TensorDataset(torch.randn(20, 12, 3, generator=gen), torch.randn(20, 6, 3, generator=gen))
    L.seed_everything(0, verbose=False)
    module = Forecaster(config)
    with quiet_lightning():  # as workflow.train builds and fits it
        trainer = make_trainer(config, tmp_path / name, progress=False)
        trainer.fit(module, DataLoader(windows, batch_size=8), DataLoader(windows, batch_size=8))
    assert trainer.global_step == 2 * 3  # one optimiser step per batch (8 + 8 + 4 windows), not per micro-batch
    return {k: v.clone() for k, v in module.state_dict().items()}, trainer.optimizers[0].param_groups[0]["lr"]


def test_training_in_micro_batches_reaches_the_same_weights(tmp_path):
    whole, lr = fit(tmp_path, "whole", grad_clip=0.05)
    parts, lr_parts = fit(tmp_path, "parts", grad_clip=0.05, micro_batch_size=3)
    unclipped, _ = fit(tmp_path, "unclipped", grad_clip=0.0, micro_batch_size=3)
    assert lr == lr_parts == pytest.approx(1e-2 / 2)  # halved once, after the first epoch

    def largest_difference(a: dict[str, torch.Tensor]) -> float:
        return max((a[k] - v).abs().max().item() for k, v in whole.items())

    # Adam moves every weight by up to lr a step, whatever its gradient's size, so rounding in a
    # near-zero gradient can show at that scale: the same path means well within one step's size
    assert largest_difference(parts) < 0.1 * 1e-2
    assert largest_difference(unclipped) > 1e-2  # while the clipping, which acted, moves them by more


@pytest.mark.parametrize("value", [0, -4, 2.5, True, "32"])
def test_micro_batch_size_must_be_a_positive_whole_number_or_null(value):
    config = Config()
    config.train.micro_batch_size = value
    with pytest.raises(UserError, match="train.micro_batch_size"):
        config.validate()


def test_evaluation_goes_inference_windows_at_a_time_with_the_same_figures_as_in_small_batches():
    """Without gradients a pass holds no activations for a backward pass: evaluation takes
    footprint.inference_windows windows at once (256 of ETTh1's), whatever a training step's
    micro-batch, and its figures are those of small batches (errors are summed per element)."""
    from stanhop.config import load_config
    from stanhop.evaluation import forecast_errors
    from stanhop.footprint import inference_windows
    from stanhop.workflow import make_data_module

    config = load_config(SMOKE)
    config.train.micro_batch_size = 5
    dm = make_data_module(config)
    assert dm.val_dataloader().batch_size == dm.test_dataloader().batch_size == inference_windows(7) == 256
    assert dm.train_dataloader().batch_size == config.train.batch_size  # a step still sees the whole batch
    config.model.n_series = dm.n_series
    torch.manual_seed(0)
    model = STanHopNet(config.model)
    figures = [forecast_errors(model, loader, dm.scaler.mean, dm.scaler.scale)
               for loader in (dm.test_dataloader(), dm._loader("test", 5, shuffle=False))]
    assert figures[0] == pytest.approx(figures[1], rel=1e-6)
