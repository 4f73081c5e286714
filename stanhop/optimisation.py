"""One optimisation step's pieces, in plain torch (no Lightning): the loss and its gradient
over a batch taken in micro-batches, the optimiser, and the error for a diverged loss.

stanhop.training's LightningModule takes its steps with them, and so do the benchmarks,
whose processes then hold the model's step and not a training framework they do not use.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import Tensor
from torch.nn import functional as F

from stanhop.errors import UserError

__all__ = ["TrainingDiverged", "accumulate_gradients", "adam"]


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


def accumulate_gradients(model: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, micro_batch_size: int | None,
                         backward: Callable[[Tensor], None] = Tensor.backward,
                         unsynced: Callable[[], AbstractContextManager] = nullcontext) -> Tensor:
    """MSE(model(x), y) over the whole batch, its gradient accumulated into the parameters'
    ``.grad`` by ``backward`` one micro-batch of ``micro_batch_size`` windows at a time (the
    whole batch at once when None): x (b, in_len, c), y (b, out_len, c) -> the loss (detached).

    Each micro-batch's mean is weighted by its share of the windows, so the losses, and their
    gradients, add up to the whole batch's mean. Every backward pass but the last runs inside
    ``unsynced()`` (under data-parallel training: no gradient exchange until the last one).
    Raises TrainingDiverged on a NaN or infinite loss, before its backward pass.
    """
    size = micro_batch_size or len(x)
    parts = list(zip(x.split(size), y.split(size)))
    total = torch.zeros((), device=x.device)
    for i, (xs, ys) in enumerate(parts):
        loss = F.mse_loss(model(xs), ys) * (len(xs) / len(x))
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"loss became {loss.item()}")
        with unsynced() if i < len(parts) - 1 else nullcontext():
            backward(loss)
        total += loss.detach()
    return total


def adam(parameters, lr: float, precision: str) -> torch.optim.Adam:
    """Training's optimiser: Adam, fused (one kernel over all parameters: on CPU 6 ms against
    16 ms a step at 8.5M parameters) except under 16-mixed, whose gradient scaler would leave
    the unscaling to a fused step, after the gradients are clipped."""
    return torch.optim.Adam(parameters, lr=lr, fused=precision != "16-mixed")
