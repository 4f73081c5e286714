"""The main jobs, end to end: train a run directory, evaluate a finished run.

These functions are what the CLI's `train` and `evaluate` call; a notebook user can call
them the same way.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from stanhop.config import Config
from stanhop.errors import UserError
from stanhop.runs import (
    METRICS, DataInfo, check_run_dir, load_run, prepare_run_dir, read_json, save_run_files, save_weights, write_json,
)


def default_run_dir(config: Config) -> Path:
    """runs/<data>-<separation>-<timestamp> (the data's file stem when it is a path)."""
    data = Path(config.data.name).stem if config.data.name.endswith(".csv") else config.data.name
    return Path("runs") / f"{data}-{config.model.separation}{'-gated' if config.model.gate else ''}-{time.strftime('%Y%m%d-%H%M%S')}"


def _is_child_process() -> bool:
    """True in the processes Lightning's DDP launcher starts (they re-run the command)."""
    return os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0"


def make_data_module(config: Config, scaler=None):
    """The data module of a config, set up; ``scaler`` replaces the one fit on training rows."""
    from stanhop.data import ForecastDataModule

    m = config.model
    dm = ForecastDataModule(config.data, m.in_len, m.out_len, config.train.batch_size, scaler=scaler)
    dm.setup()
    return dm


def data_info(dm, config: Config) -> DataInfo:
    return DataInfo(
        columns=list(dm.columns), freq=dm.freq, date_column=config.data.date_column,
        mean=[float(v) for v in dm.scaler.mean], scale=[float(v) for v in dm.scaler.scale],
        target=config.data.target, borders={part: [int(start), int(end)] for part, (start, end) in dm.borders.items()},
    )


def train(config: Config, out: str | Path | None = None, *, force: bool = False, resume: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Train STanHop-Net into a run directory and return its metrics (also in metrics.json).

    ``resume``: continue the run in that directory from its last checkpoint (epoch,
    optimiser, schedule and early-stopping state).
    """
    import lightning as L
    import torch

    from stanhop.training import EpochTimer, Forecaster, make_trainer

    if resume is not None:
        run_dir = check_run_dir(resume)
        ckpt = run_dir / "checkpoints" / "last.ckpt"
        if not ckpt.is_file():
            raise UserError(f"run {run_dir} has no checkpoints/last.ckpt to resume from; start a new run instead")
    else:
        run_dir = Path(out) if out is not None else default_run_dir(config)
        if not _is_child_process():
            prepare_run_dir(run_dir, force=force)
        ckpt = None

    L.seed_everything(config.train.seed, workers=True, verbose=False)
    dm = make_data_module(config)
    config.model.n_series = dm.n_series
    config.validate()
    if not _is_child_process() and resume is None:
        save_run_files(run_dir, config, data_info(dm, config))

    module = Forecaster(config)
    timer = EpochTimer()
    trainer = make_trainer(config, run_dir, progress=progress, extra_callbacks=[timer])
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt, weights_only=True)
    if not trainer.is_global_zero:
        return {}

    best = trainer.checkpoint_callback.best_model_path or str(run_dir / "checkpoints" / "last.ckpt")
    state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    model = module.model.cpu()
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})
    save_weights(model, run_dir / "model.safetensors")

    facts = {
        "params": sum(p.numel() for p in model.parameters()),
        "epochs": trainer.current_epoch,
        "train_seconds": round(timer.seconds, 1),
        "best_checkpoint": Path(best).name,
    }
    return evaluate(run_dir, facts=facts, progress=progress)


def evaluate(run_path: str | Path, *, data: str | None = None, split: str | None = None, quantize: str | None = None,
             act_range: str = "minmax", facts: dict[str, Any] | None = None, progress: bool = True) -> dict[str, Any]:
    """Test and validation MSE/MAE, outlier statistics and (optionally) W8A8 MSE of a run.

    ``data``/``split`` evaluate on another CSV with the same columns or another split; the
    run's own scaler is used either way. Results are merged into the run's metrics.json.
    """
    from stanhop.evaluation import forecast_errors
    from stanhop.outliers import outlier_stats

    run = load_run(run_path)
    config = run.config
    if data is not None:
        config.data.name = data
    if split is not None:
        config.data.split = split
    from stanhop.data import Scaler

    config.data.columns = list(run.data.columns)
    dm = make_data_module(config, scaler=Scaler.from_dict({"mean": run.data.mean, "scale": run.data.scale}))

    test_loader, val_loader = dm.test_dataloader(), dm.val_dataloader()
    test = forecast_errors(run.model, test_loader, run.data.mean, run.data.scale)
    val = forecast_errors(run.model, val_loader, run.data.mean, run.data.scale)
    outliers = outlier_stats(run.model, (x for x, _ in test_loader))
    previous = read_json(run.path / METRICS) if (run.path / METRICS).is_file() else {}
    metrics = {
        **previous,
        "test": test,
        "val": {"mse": val["mse"], "mae": val["mae"]},
        "outliers": outliers,
        **(facts or {}),
        "separation": config.model.separation,
        "gate": config.model.gate,
        "split": config.data.split,
        "data": config.data.name,
        "in_len": config.model.in_len,
        "out_len": config.model.out_len,
    }
    if quantize is not None:
        metrics.setdefault("quantized", {})[quantize] = quantized_errors(run, dm, test["mse"], act_range)
    write_json(run.path / METRICS, metrics)
    return metrics


def quantized_errors(run, dm, fp32_mse: float, act_range: str) -> dict[str, float]:
    """W8A8 fake-quantized test MSE/MAE, calibrated on a few training batches."""
    from itertools import islice

    from stanhop.evaluation import forecast_errors
    from stanhop.quantize import quantize_model

    calibration = [x for x, _ in islice(iter(dm.train_dataloader()), 8)]
    quantized = quantize_model(run.model, calibration, weight_bits=8, act_bits=8, act_range=act_range)
    errors = forecast_errors(quantized, dm.test_dataloader(), run.data.mean, run.data.scale)
    return {"mse": errors["mse"], "mae": errors["mae"], "range": act_range,
            "mse_increase": errors["mse"] / fp32_mse - 1.0}
