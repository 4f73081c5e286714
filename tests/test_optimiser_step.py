"""The optimiser step of `stanhop train`: Adam on the clipped, unscaled gradient in every precision."""

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins import MixedPrecision
from torch.utils.data import DataLoader, TensorDataset

from stanhop.config import Config, ModelConfig
from stanhop.training import Forecaster
from test_micro_batches import TINY  # the training tests' tiny model

CLIP = 1e-3  # far below the gradient's norm at the start, so clipping acts at every step


class StepGradients(Callback):
    """The norm of the gradient each optimiser step used (read after the step, which leaves
    the gradients as it found them), and whether the optimiser is fused."""

    def __init__(self):
        self.norms: list[float] = []
        self.fused: bool | None = None

    def on_train_start(self, trainer, module) -> None:
        optimizer = trainer.optimizers[0]
        self.fused = optimizer.defaults["fused"]
        optimizer.register_step_post_hook(lambda opt, args, kwargs: self.norms.append(self.norm(opt)))

    @staticmethod
    def norm(optimizer: torch.optim.Optimizer) -> float:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])).item()


def clipped_steps(precision: str, accelerator: str = "cpu", plugins: list | None = None) -> StepGradients:
    """One epoch of Forecaster (3 steps, clipping at CLIP) in ``precision``; what its steps used."""
    config = Config()
    config.model = ModelConfig(**TINY, dropout=0.0)
    for key, value in dict(lr=1e-3, batch_size=8, max_epochs=1, grad_clip=CLIP, precision=precision).items():
        setattr(config.train, key, value)
    config.validate()
    gen = torch.Generator().manual_seed(1)
    windows = TensorDataset(torch.randn(24, 12, 3, generator=gen), torch.randn(24, 6, 3, generator=gen))
    record = StepGradients()
    trainer = L.Trainer(accelerator=accelerator, devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[record],
                        plugins=plugins or [], **({} if plugins else {"precision": precision}))
    L.seed_everything(0, verbose=False)
    trainer.fit(Forecaster(config), DataLoader(windows, batch_size=8))
    return record


@pytest.mark.parametrize("precision", ["32", "bf16-mixed", "16-mixed"])
def test_adam_steps_with_the_clipped_gradient_unscaled(precision):
    """Under 16-mixed the loss is scaled (here by 2¹⁶ at first) and Lightning unscales the
    gradients only just before the optimiser step: clipped before that, their norm at the step
    was CLIP / 2¹⁵. Fused Adam wherever the precision allows it (not under 16-mixed, whose
    scaler would leave the unscaling to the fused step). On a GPU: tests/test_cuda.py."""
    # Lightning turns 16-mixed into bf16-mixed on a CPU; its plugin with a CPU scaler does the real thing
    fp16 = [MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))] if precision == "16-mixed" else None
    record = clipped_steps(precision, plugins=fp16)
    assert record.fused == (precision != "16-mixed")
    assert len(record.norms) >= 2  # under 16-mixed, a first step with overflowing gradients is skipped
    assert record.norms == pytest.approx([CLIP] * len(record.norms), rel=1e-4)
