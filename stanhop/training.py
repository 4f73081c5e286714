"""Training with Lightning: a thin LightningModule around STanHopNet and the Trainer factory.

The LightningModule holds only the loss (MSE), the optimiser (Adam), the papers' schedule
(learning rate halved at fixed epochs) and logging; windowing and scaling live in the data
module, the mathematics in the model.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from torch import Tensor
from torch.nn import functional as F

from stanhop.config import Config
from stanhop.errors import UserError
from stanhop.model import STanHopNet


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


class Forecaster(L.LightningModule):
    """MSE training of a STanHopNet with Adam and a step-halving learning rate."""

    def __init__(self, config: Config):
        super().__init__()
        self.config = config
        self.model = STanHopNet(config.model)

    def forward(self, x: Tensor) -> Tensor:  # (b, in_len, c) -> (b, out_len, c)
        return self.model(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = F.mse_loss(self(x), y)
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"loss became {loss.item()} at epoch {self.current_epoch} step {self.global_step}; "
                "the last good checkpoint is kept in checkpoints/: lower train.lr or check the data for extreme values"
            )
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(x), sync_dist=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        prediction = self(x)
        self.log("val_mse", F.mse_loss(prediction, y), prog_bar=True, on_epoch=True, batch_size=len(x), sync_dist=True)
        self.log("val_mae", F.l1_loss(prediction, y), on_epoch=True, batch_size=len(x), sync_dist=True)

    def configure_optimizers(self):
        t = self.config.train
        optimizer = torch.optim.Adam(self.parameters(), lr=t.lr)
        schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(t.lr_halving_epochs), gamma=0.5)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "epoch"}}


class EpochTimer(Callback):
    """Counts finished training epochs and their wall time (for metrics.json)."""

    def __init__(self):
        self.seconds = 0.0
        self._start = 0.0

    def on_train_epoch_start(self, trainer, module) -> None:
        import time

        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, module) -> None:
        import time

        self.seconds += time.perf_counter() - self._start

    def state_dict(self) -> dict:
        return {"seconds": self.seconds}

    def load_state_dict(self, state: dict) -> None:
        self.seconds = float(state.get("seconds", 0.0))


def quiet_lightning() -> None:
    """Keep the terminal for the progress bar and our results: no tips, device banners or
    deprecation chatter from Lightning's own loggers (warnings about the user's setup stay)."""
    import logging
    import warnings

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda", "lightning.fabric.utilities.seed"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    # on --resume the run's log and checkpoint folders exist by design
    warnings.filterwarnings("ignore", message=r".*(Experiment logs|Checkpoint) directory .* exists and is not empty.*")


def make_trainer(config: Config, run_dir: Path, *, progress: bool = True, extra_callbacks: list[Callback] | None = None) -> L.Trainer:
    """A Trainer writing checkpoints and the CSV log inside ``run_dir`` (no lightning_logs/)."""
    t = config.train
    callbacks: list[Callback] = [
        EarlyStopping(monitor="val_mse", mode="min", patience=t.patience),
        ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor="val_mse", mode="min", save_last=True),
        *(extra_callbacks or []),
    ]
    if progress:
        callbacks.append(TQDMProgressBar(leave=True))
    quiet_lightning()
    limit = t.limit_train_batches
    return L.Trainer(
        default_root_dir=run_dir,
        max_epochs=t.max_epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        num_nodes=t.num_nodes,
        precision=t.precision,
        gradient_clip_val=t.grad_clip,
        deterministic=t.deterministic,
        limit_train_batches=None if limit == 1.0 else int(limit) if limit > 1 else float(limit),
        logger=CSVLogger(save_dir=run_dir, name="logs", version=""),
        callbacks=callbacks,
        enable_progress_bar=progress,
        enable_model_summary=False,
        log_every_n_steps=10,
    )
