"""The data side of training: a checked series, its split, a scaler and windowed datasets.

    CSV ──► load_series (csvio) ──► split_borders (splits) ──► Scaler fit on train rows
        ──► one scaled float32 tensor ──► WindowDataset per part ──► DataLoaders

Reading and checking the CSV lives in :mod:`stanhop.csvio`, the split arithmetic and
``describe`` in :mod:`stanhop.splits`, the registry of known data sets in
:mod:`stanhop.datasets`; this module re-exports what the rest of the code needs.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from stanhop import datasets
from stanhop.config import DataConfig
from stanhop.csvio import infer_freq, load_observed, load_series
from stanhop.errors import UserError, cited, listing
from stanhop.scaling import Scaler, refuse_unscalable
from stanhop.splits import PARTS, describe, split_borders, window_range

__all__ = [
    "ForecastDataModule", "Scaler", "WindowDataset", "describe", "infer_freq", "load_series", "split_borders",
]


class WindowDataset(Dataset):
    """Windows sliced from one series tensor (no copies): item i is (x, y) with t = first + i,

    x = series[t : t + in_len]  (in_len, c),   y = truth[t + in_len : t + in_len + out_len]  (out_len, c),

    ``truth`` (default: ``series``) the same series with NaN at the cells a fill made up: such
    a target is not scored (stanhop.evaluation).
    """

    def __init__(self, series: Tensor, first: int, count: int, in_len: int, out_len: int, truth: Tensor | None = None):
        if first < 0 or first + count - 1 + in_len + out_len > len(series):
            raise ValueError(f"windows [{first}, {first + count}) do not fit a series of {len(series)} rows")
        self.series, self.first, self.count, self.in_len, self.out_len = series, first, count, in_len, out_len
        self.truth = series if truth is None else truth

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        if not -self.count <= i < self.count:
            raise IndexError(f"window {i} out of range ({self.count} windows)")
        t = self.first + i % self.count
        return self.series[t : t + self.in_len], self.truth[t + self.in_len : t + self.in_len + self.out_len]

    def target_start(self, i: int) -> int:
        """The series row of window i's first target (the row right after its input)."""
        return self.first + i + self.in_len


class ForecastDataModule(LightningDataModule):
    """Train/val/test windows of one data set, scaled by a Scaler fit on the train rows.

    After ``setup()``: ``frame`` (validated, original units), ``columns``, ``n_series``,
    ``freq``, ``target``, ``borders`` ({part: (start, end)} rows, end exclusive), ``scaler``,
    ``series`` (the scaled float32 tensor, rows x channels), ``truth`` (``series`` with NaN at
    the cells ``data.fill`` filled: validation and test targets, scored where the file has a
    value only) and ``dataset(part)``.
    A given ``scaler`` (a trained run's) is used instead of fitting one. Validation and test
    batches hold ``eval_batch_size`` windows (``batch_size`` until set: stanhop.workflow sets
    it after setup); evaluation sums errors over windows, so its figures do not depend on it,
    but its peak memory does.
    """

    def __init__(self, data_cfg: DataConfig, in_len: int, out_len: int, batch_size: int, *,
                 scaler: Scaler | None = None):
        super().__init__()
        if not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise UserError(f"batch_size must be a positive whole number, got {cited(batch_size)}")
        if not isinstance(data_cfg.num_workers, numbers.Integral) or data_cfg.num_workers < 0:
            raise UserError(f"data.num_workers must be a whole number >= 0, got {cited(data_cfg.num_workers)}")
        self.cfg, self.in_len, self.out_len, self.batch_size = data_cfg, in_len, out_len, batch_size
        self.eval_batch_size = batch_size
        self.frame = self.columns = self.freq = self.target = self.borders = self.series = self.truth = None
        self.scaler = scaler
        self._datasets: dict[str, WindowDataset] = {}

    @property
    def n_series(self) -> int:
        return len(self.columns)

    def prepare_data(self) -> None:
        """Download a registered data set once (Lightning runs this on one process)."""
        datasets.resolve(self.cfg.name)

    def setup(self, stage: str | None = None) -> None:
        """Load, check, split and scale; later calls do nothing."""
        if self.series is not None:
            return
        cfg = self.cfg
        frame, observed = load_observed(cfg.name, cfg.date_column, cfg.columns, cfg.fill)
        freq = infer_freq(frame.index)
        borders = split_borders(len(frame), cfg.split, freq, self.in_len, self.out_len)
        values = frame.to_numpy(dtype=np.float64)
        train_start, train_end = borders["train"]
        scaler = self.scaler or Scaler.fit(values[train_start:train_end])
        if self.scaler is None:
            refuse_unscalable(frame.iloc[train_start:train_end], scaler, cfg.name)
        self.series = torch.from_numpy(scaler.transform(values).astype(np.float32))  # (rows, c)
        self.truth = self.series if observed is None else self.series.masked_fill(torch.from_numpy(~observed), torch.nan)
        self.frame, self.columns, self.freq, self.borders, self.scaler = frame, list(frame.columns), freq, borders, scaler
        self.target = self._target()
        for part in PARTS:  # training learns the filled targets too; validation and test score the file's values alone
            first, count = window_range(part, borders, self.in_len, self.out_len)
            truth = self.series if part == "train" else self.truth
            self._datasets[part] = WindowDataset(self.series, first, count, self.in_len, self.out_len, truth)

    def dataset(self, part: str) -> WindowDataset:
        if part not in PARTS:
            raise ValueError(f"part must be one of {', '.join(PARTS)}, got {cited(part)}")
        self.setup()
        return self._datasets[part]

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)

    def _loader(self, part: str, batch_size: int, shuffle: bool) -> DataLoader:
        workers = self.cfg.num_workers
        return DataLoader(
            self.dataset(part), batch_size=batch_size, shuffle=shuffle, drop_last=False,
            num_workers=workers, persistent_workers=workers > 0,
        )

    def _target(self) -> str:
        """The configured target, else the registered data set's, else the last channel."""
        if self.cfg.target is not None:
            if self.cfg.target not in self.columns:
                raise UserError(f"data.target '{self.cfg.target}' is not a channel; channels: {listing(self.columns)} "
                                "(choose one with --set data.target=NAME; Python: data.target)")
            return self.cfg.target
        info = None if datasets.looks_like_path(str(self.cfg.name)) else datasets.lookup(str(self.cfg.name))
        return info.target if info and info.target in self.columns else self.columns[-1]
