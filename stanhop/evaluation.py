"""Forecast error of a model over a window loader: MSE and MAE, scaled and in original units.

Errors are accumulated as sums over every forecast element, so the result does not depend
on the batch size and the last partial batch counts fully. A target that is NaN (a cell the
data's fill made up: stanhop.data.WindowDataset) is not scored.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn


class ErrorSums:
    """Running sums of squared and absolute errors, scaled and in original units."""

    def __init__(self, mean: Tensor, scale: Tensor):
        self.mean, self.scale = mean, scale  # (c,)
        self.n = 0
        self.sums = torch.zeros(4, dtype=torch.float64)  # se, ae, se original, ae original

    def update(self, prediction: Tensor, truth: Tensor) -> None:  # (b, t, c) each, scaled
        scored = ~truth.isnan()  # (a NaN forecast stays NaN: a model gone wrong shows)
        error = (prediction - truth).double().where(scored, 0.0)
        error_original = error * self.scale.double()
        self.sums += torch.stack([error.square().sum(), error.abs().sum(), error_original.square().sum(), error_original.abs().sum()])
        self.n += int(scored.sum())

    def result(self) -> dict[str, float]:
        se, ae, se_o, ae_o = (self.sums / max(self.n, 1)).tolist()
        return {"mse": se, "mae": ae, "mse_original_units": se_o, "mae_original_units": ae_o}


@torch.no_grad()
def forecast_errors(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], mean, scale, device: str | torch.device = "cpu") -> dict[str, float]:
    """MSE/MAE of ``model`` on (input, target) batches of scaled data.

    Original units: the error is multiplied by the scaler's per-channel scale (the mean cancels).
    """
    was_training = model.training
    model.eval()
    sums = ErrorSums(torch.as_tensor(mean, dtype=torch.float64), torch.as_tensor(scale, dtype=torch.float64))
    for x, y in batches:
        sums.update(model(x.to(device)).float().cpu(), y)
    model.train(was_training)
    return sums.result()
