"""Training with Lightning: a thin LightningModule around STanHopNet and the Trainer factory.

The LightningModule holds only the loss (MSE), the optimiser (Adam), the papers' schedule
(learning rate halved at fixed epochs), gradient clipping and logging; windowing and scaling
live in the data module, the mathematics in the model.

A training step may run its batch through the model in micro-batches (``train.micro_batch_size``
windows per forward and backward pass), accumulating the gradient: windows do not interact in
STanHop-Net (no statistic is taken across the batch), so the step's gradient is the whole
batch's, while only one micro-batch's activations are kept at a time.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import Tensor
from torch.nn import functional as F

from stanhop.config import Config
from stanhop.errors import redrawn_bars
from stanhop.model import STanHopNet
from stanhop.optimisation import TrainingDiverged, accumulate_gradients, adam
from stanhop.randomness import random_states, restore_random_states


class Forecaster(L.LightningModule):
    """MSE training of a STanHopNet with Adam, a step-halving learning rate and gradient-norm
    clipping. The optimisation is written out (Lightning's manual optimisation) because a step
    may take several backward passes (``accumulate_gradients``)."""

    def __init__(self, config: Config):
        super().__init__()
        self.config = config
        self.model = STanHopNet(config.model)
        self.automatic_optimization = False

    def forward(self, x: Tensor) -> Tensor:  # (b, in_len, c) -> (b, out_len, c)
        return self.model(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        t = self.config.train
        optimizer = self.optimizers()
        optimizer.zero_grad(set_to_none=True)
        try:
            loss = accumulate_gradients(self, x, y, t.micro_batch_size, self.manual_backward, self._unsynced)
        except TrainingDiverged as diverged:  # epochs and steps counted from 1, as the progress lines count them
            kept = (f"the last good checkpoint (epoch {self.current_epoch}) is kept in checkpoints/" if self.current_epoch
                    else "no epoch ended, so there is no checkpoint")
            raise TrainingDiverged(
                f"{diverged} at epoch {self.current_epoch + 1} step {batch_idx + 1}; {kept}: lower train.lr or check "
                "the data for extreme values"
            ) from None
        optimizer.step()  # clips first: on_before_optimizer_step
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(x), sync_dist=True)
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Clip the gradient's norm, here because under 16-mixed Lightning unscales the gradients
        just before this hook (clipped earlier, the scaled ones would be). torch's function,
        not Lightning's clip_gradients, which refuses a fused optimiser under bf16-mixed."""
        if self.config.train.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.parameters(), self.config.train.grad_clip)

    def on_train_epoch_end(self) -> None:
        self.lr_schedulers().step()  # the halving schedule counts epochs

    def _unsynced(self) -> AbstractContextManager:
        """Under DDP, keep a backward pass's gradients local (they are exchanged with the last
        micro-batch's); otherwise nothing."""
        block = getattr(self.trainer.strategy, "block_backward_sync", None)
        return block() if block is not None else nullcontext()

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        prediction = self(x)
        dm = self._trainer.datamodule if self._trainer is not None else None
        if dm is None or getattr(dm, "truth", None) is not getattr(dm, "series", None):  # a fill may have made targets
            scored = ~y.isnan()  # up (stanhop.data): scored where the file has a value; checked only then (a host sync)
            if not scored.all():
                if not scored.any():  # a stretch the fill made up whole: nothing to score in this batch
                    return
                prediction, y = prediction[scored], y[scored]
        self.log("val_mse", F.mse_loss(prediction, y), prog_bar=True, on_epoch=True, batch_size=len(x), sync_dist=True)
        self.log("val_mae", F.l1_loss(prediction, y), on_epoch=True, batch_size=len(x), sync_dist=True)

    def configure_optimizers(self):
        t = self.config.train
        optimizer = adam(self.parameters(), t.lr, t.precision)
        schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(t.lr_halving_epochs), gamma=0.5)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "epoch"}}


class StoppableWhileWaiting(Callback):
    """Ctrl+C and SIGTERM end the process at once while a training on several machines waits
    for the others, until Lightning's set-up ends (the ``setup`` hook): that wait is inside
    torch's C++ (the process group's rendezvous), where Python's signal handlers do not run,
    so the signals went unheard. Python's C-level handler writes each signal's number to the
    wakeup fd (signal.set_wakeup_fd); a thread reading it prints "interrupted: " + ``told()``
    and exits 130 (SIGINT) or 143 (SIGTERM), as the CLI does. Made in the main thread; elsewhere
    (no wakeup fd there) it does nothing."""

    def __init__(self, told):
        import signal
        import socket
        import threading

        self.told, self._previous = told, None
        self._reader, self._writer = socket.socketpair()
        self._writer.setblocking(False)
        try:
            self._previous = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        except ValueError:  # not the main thread
            self.stop()
            return
        threading.Thread(target=self._watch, name="stanhop-wait-for-nodes", daemon=True).start()

    def _watch(self) -> None:
        import signal

        while received := self._reader.recv(1):  # b"": closed, the set-up ended
            if received[0] in (signal.SIGINT, signal.SIGTERM):
                sys.stderr.write(f"\ninterrupted: {self.told()}\n")
                sys.stderr.flush()
                os._exit(130 if received[0] == signal.SIGINT else 143)  # 128 + the signal, as the CLI's

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.stop()

    def stop(self) -> None:
        import signal

        if self._writer is None:
            return
        if self._previous is not None:
            signal.set_wakeup_fd(self._previous)
        self._writer.close()  # the reader sees the end: the thread ends
        self._writer = None


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


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint for a run folder that may have been moved or copied since its last
    checkpoint: the paths the checkpoint recorded (its best, its last) are read as the same
    files in this folder. Lightning would keep the best one's old path, so a resumed copy
    would evaluate, and save as its weights, the original folder's best checkpoint (or fail
    when that folder is gone)."""

    # Lightning (2.6) writes last.ckpt only in an epoch that also wrote the best: after epochs
    # without improvement last.ckpt was the best epoch's, and --resume trained those epochs again.
    # last.ckpt is written after every epoch here.

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_every_epoch(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_every_epoch(trainer)

    def _save_last_every_epoch(self, trainer: L.Trainer) -> None:
        if not self._should_skip_saving_checkpoint(trainer):  # (skipped where this step's is saved already)
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def load_state_dict(self, state_dict: dict) -> None:
        old, new = state_dict.get("dirpath"), self.dirpath
        if old and new and old != new:
            paths = {key: _moved(state_dict[key], old, new)
                     for key in ("best_model_path", "kth_best_model_path", "last_model_path") if key in state_dict}
            best_k = {_moved(path, old, new): score for path, score in state_dict.get("best_k_models", {}).items()}
            state_dict = {**state_dict, **paths, "dirpath": new, "best_k_models": best_k}
        super().load_state_dict(state_dict)


class RunCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint files, written as the run's other files are (runs.atomic_file): a
    temp file in checkpoints/ renamed over the checkpoint. Lightning's own staged each one in
    $TMPDIR and moved it across file systems (not atomic: a full disk left last.ckpt cut
    short; a small $TMPDIR, as in a container, failed the training naming no file). Beside
    last.ckpt, LAST_EPOCHS (checkpoints/last.json) says how many epochs it holds, for
    ``stanhop runs`` to tell an unfinished resume without torch (file times do not survive
    every copy)."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("storage_options is not supported by RunCheckpointIO")
        from stanhop.runs import LAST_EPOCHS, atomic_file, write_json

        os.makedirs(os.path.dirname(path), exist_ok=True)
        with atomic_file(path, "wb") as f:  # straight to the file: no second copy in memory
            torch.save(checkpoint, f)
        if os.path.basename(path) == "last.ckpt" and "epoch" in checkpoint:
            write_json(Path(path).with_name(LAST_EPOCHS), {"epochs": int(checkpoint["epoch"]) + 1})


def _moved(path: str, old: str, new: str) -> str:
    """``path`` inside folder ``old`` as the same path inside ``new``; any other path as it is."""
    if not path or os.path.commonpath([os.path.abspath(path), os.path.abspath(old)]) != os.path.abspath(old):
        return path
    return os.path.join(new, os.path.relpath(path, old))


class RandomStates(Callback):
    """The random generators' states (Python's, NumPy's, torch's on CPU and CUDA) in every
    checkpoint, put back on --resume: a resumed run shuffles and drops out as the uninterrupted
    run would have from that epoch on (the training seeds them once, at its start; resumed, it
    drew the first epoch's numbers again). In one process only: the ranks of a DDP training
    draw each their own, and rank 0's are the ones saved."""

    def __init__(self):
        self.single_process = True

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.single_process = trainer.world_size == 1

    def state_dict(self) -> dict:
        return random_states()

    def load_state_dict(self, state_dict: dict) -> None:
        if self.single_process and state_dict:
            restore_random_states(state_dict)


class EpochLines(Callback):
    """One line per epoch on stderr, for a log file (errors.redrawn_bars false), where a progress
    bar would write hundreds of redrawn lines: the epoch, the training loss, the validation
    MSE, the best validation MSE so far and the epoch's seconds."""

    def __init__(self):
        self.started, self.best = time.perf_counter(), float("inf")

    def on_train_epoch_start(self, trainer, module) -> None:
        self.started = time.perf_counter()

    def on_train_epoch_end(self, trainer, module) -> None:
        if trainer.global_rank != 0:
            return
        metrics = trainer.callback_metrics
        parts = [f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"]
        if "train_loss_epoch" in metrics:
            parts.append(f"train_loss {float(metrics['train_loss_epoch']):.4f}")
        if "val_mse" in metrics:
            earlier = trainer.checkpoint_callback.best_model_score  # before this epoch's (on --resume, the run's)
            self.best = min(self.best, float(metrics["val_mse"]), float("inf") if earlier is None else float(earlier))
            parts.append(f"val_mse {float(metrics['val_mse']):.4f} (best {self.best:.4f})")
        parts.append(f"{time.perf_counter() - self.started:.0f} s")
        print(", ".join(parts), file=sys.stderr, flush=True)


LIGHTNING_CHATTER = ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda",
                     "lightning.fabric.utilities.seed")  # tips, device banners, seed lines


@contextmanager
def quiet_lightning():
    """Within the block, keep the terminal for the progress bar and our results: no tips, device
    banners or deprecation chatter from Lightning's own loggers (warnings about the user's setup
    stay). On the way out the loggers' levels and the warnings filters are as they were: a
    notebook's own Lightning calls still say what they say."""
    import logging
    import warnings

    levels = {name: logging.getLogger(name).level for name in LIGHTNING_CHATTER}
    try:
        with warnings.catch_warnings():
            for name in LIGHTNING_CHATTER:
                logging.getLogger(name).setLevel(logging.WARNING)
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
            warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
            # a small data set has fewer batches an epoch than log_every_n_steps: its epochs are still logged
            warnings.filterwarnings("ignore", message=r".*smaller than the logging interval.*")
            # on --resume the run's log and checkpoint folders exist by design
            warnings.filterwarnings("ignore", message=r".*(Experiment logs|Checkpoint) directory .* exists and is not empty.*")
            # a checkpoint saved as a bare pickle: torch's note on its protocol says nothing a user can act on
            warnings.filterwarnings("ignore", message=r"Detected pickle protocol")
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def batches_per_epoch(limit: float) -> int | float | None:
    """train.limit_train_batches as Lightning's Trainer takes it: a whole number counts batches
    (1 is one batch), a fraction below 1.0 is a share of them; 1.0 (the default) is all (None)."""
    if isinstance(limit, int) or limit > 1:
        return int(limit)
    return None if limit == 1.0 else float(limit)


def make_trainer(config: Config, run_dir: Path, *, progress: bool = True, extra_callbacks: list[Callback] | None = None) -> L.Trainer:
    """A Trainer writing checkpoints and the CSV log inside ``run_dir`` (no lightning_logs/).
    Build and fit it within :func:`quiet_lightning`, and within randomness.kept_determinism
    where train.deterministic is true (the Trainer sets torch's determinism for the process)."""
    t = config.train
    callbacks: list[Callback] = [
        EarlyStopping(monitor="val_mse", mode="min", patience=t.patience),
        RunCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor="val_mse", mode="min", save_last=True),
        RandomStates(),
        *(extra_callbacks or []),
    ]
    bars = progress and redrawn_bars()  # in a log file, a line per epoch instead of a redrawn bar
    if progress:
        callbacks.append(TQDMProgressBar(leave=True) if bars else EpochLines())
    return L.Trainer(
        default_root_dir=run_dir,
        max_epochs=t.max_epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        num_nodes=t.num_nodes,
        precision=t.precision,
        deterministic=t.deterministic or None,  # not False: that would switch off a caller's own deterministic setting
        limit_train_batches=batches_per_epoch(t.limit_train_batches),
        logger=CSVLogger(save_dir=run_dir, name="logs", version=""),
        callbacks=callbacks,
        plugins=[RunCheckpointIO()],
        enable_progress_bar=bars,
        enable_model_summary=False,
        log_every_n_steps=10,
    )
