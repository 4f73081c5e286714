"""Per-channel standardisation as a run keeps it, and what lies far from it.

Light to import (numpy, torch; scikit-learn only when fitting): a forecast needs the run's
scaler, not the training's data module and Lightning (stanhop.data, which re-exports Scaler).
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from stanhop.errors import UserError, clipped, listing

FAR_MEAN, FAR_SPREAD = 3.0, 5.0  # on the run's scale, where the training split has mean 0 and spread 1
# inputs to forecast or score: a trend may carry a series a few spreads away (ETTh1's OT, a year
# on: -4.6 on a run trained on its first months); other units carry it orders of magnitude away
INPUT_FAR_MEAN = INPUT_FAR_SPREAD = 10.0


def far_from_training(frame, scaler: Scaler, far_mean: float = FAR_MEAN, far_spread: float = FAR_SPREAD) -> str | None:
    """What to tell of the channels of ``frame`` (a DataFrame in original units) whose values,
    on the run's scale (``scaler``), have a mean beyond ±far_mean or a spread above far_spread:
    data in other units (W for kW, a shifted baseline) than the run was trained on; None when
    there are none. E.g. "OT (mean 5.64e+03, spread 946) lies far from the run's training
    data, whose values the run's scaler maps to mean 0 and spread 1 (the figures are on that
    scale)"."""
    z = scaler.transform(frame.to_numpy(dtype=np.float64))  # (rows, c)
    mean, spread = np.nanmean(z, axis=0), np.nanstd(z, axis=0)
    far = [f"{clipped(name)} (mean {m:.3g}, spread {sd:.3g})" for name, m, sd in zip(frame.columns, mean, spread)
           if abs(m) > far_mean or sd > far_spread]
    if not far:
        return None
    return (f"{listing(far)} {'lies' if len(far) == 1 else 'lie'} far from the run's training data, whose values the "
            "run's scaler maps to mean 0 and spread 1 (the figures are on that scale)")


def refuse_unscalable(rows, scaler: Scaler, name: str) -> None:
    """A UserError naming the channels of ``rows`` (a DataFrame, the training rows) that hold
    more than one value but that ``scaler`` (fit on them) does not map to spread 1: values
    beyond about 1e±154, whose squares over- or underflow float64."""
    values = rows.to_numpy(dtype=np.float64)  # (rows, c)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns of z where the scale overflowed
        varying = np.nanmax(values, axis=0) > np.nanmin(values, axis=0)
        spread = np.nanstd(scaler.transform(values), axis=0)
    bad = [str(c) for c, v, sd in zip(rows.columns, varying, spread) if v and not 0.5 < sd < 2.0]
    if bad:
        largest = np.nanmax(np.abs(rows[bad].to_numpy(dtype=np.float64)))
        raise UserError(f"{name}: column(s) {listing(bad)} hold values too far from 1 to standardise (largest magnitude "
                        f"{largest:.3g}); multiply or divide them by a power of ten first")


@dataclass
class Scaler:
    """Per-channel standardisation z = (x - mean) / scale, fit on the training rows only.

    ``scale`` is the population standard deviation (1 for a constant channel), as
    scikit-learn's StandardScaler computes it. Works on numpy arrays and torch tensors whose
    last axis is the channels; stored as JSON through ``to_dict``/``from_dict``.
    """

    mean: list[float]
    scale: list[float]

    @classmethod
    def fit(cls, values: np.ndarray) -> Scaler:
        """Fit on ``values`` of shape (rows, channels)."""
        from sklearn.preprocessing import StandardScaler

        with warnings.catch_warnings(), np.errstate(all="ignore"):  # values beyond 1e±154: refuse_unscalable tells
            warnings.simplefilter("ignore", RuntimeWarning)
            fitted = StandardScaler().fit(np.asarray(values, dtype=np.float64))
        return cls(mean=[float(v) for v in fitted.mean_], scale=[float(v) for v in fitted.scale_])

    def transform(self, x: np.ndarray | Tensor) -> np.ndarray | Tensor:
        mean, scale = self._params(x)
        return (x - mean) / scale

    def inverse_transform(self, z: np.ndarray | Tensor) -> np.ndarray | Tensor:
        mean, scale = self._params(z)
        return z * scale + mean

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": list(self.mean), "scale": list(self.scale)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Scaler:
        if not isinstance(raw, dict) or not isinstance(raw.get("mean"), list) or not isinstance(raw.get("scale"), list):
            raise UserError("a scaler must be a mapping with lists 'mean' and 'scale'; the run's scaler file is damaged")
        mean, scale = raw["mean"], raw["scale"]
        numbers_ok = all(isinstance(v, numbers.Real) and np.isfinite(v) for v in [*mean, *scale])
        if not numbers_ok or len(mean) != len(scale) or not mean or any(s <= 0 for s in scale):
            raise UserError("a scaler needs equally long lists of finite 'mean' and positive 'scale'; the run's scaler file is damaged")
        return cls(mean=[float(v) for v in mean], scale=[float(v) for v in scale])

    def _params(self, x: np.ndarray | Tensor) -> tuple:
        if x.shape[-1] != len(self.mean):
            raise UserError(f"the scaler was fit on {len(self.mean)} channels but the data has {x.shape[-1]}")
        if isinstance(x, Tensor):
            dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
            return (torch.tensor(self.mean, dtype=dtype, device=x.device), torch.tensor(self.scale, dtype=dtype, device=x.device))
        dtype = x.dtype if np.issubdtype(np.asarray(x).dtype, np.floating) else np.float64
        return np.asarray(self.mean, dtype=dtype), np.asarray(self.scale, dtype=dtype)
