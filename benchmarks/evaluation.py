"""An evaluation pass (forward only, the test split) at a training step's windows per pass
against footprint.inference_windows', taken in turns in one process.

    python benchmarks/evaluation.py [--config configs/quick.yaml] [--rounds 3] [--threads N]

Prints the median seconds of each and their ratio; the last line is one JSON object. The model
is the config's, untrained (a pass's time does not depend on what its weights learned).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from stanhop.config import load_config
from stanhop.evaluation import forecast_errors
from stanhop.footprint import inference_windows
from stanhop.model import STanHopNet
from stanhop.workflow import make_data_module

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "quick.yaml"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_config(args.config)
    dm = make_data_module(config)
    config.model.n_series = dm.n_series
    model = STanHopNet(config.model).eval()
    t = config.train
    sizes = {"training pass": min(t.micro_batch_size or t.batch_size, t.batch_size),
             "inference_windows": inference_windows(dm.n_series)}
    loaders = {name: dm._loader("test", size, shuffle=False) for name, size in sizes.items()}
    seconds: dict[str, list[float]] = {name: [] for name in sizes}
    for _ in range(args.rounds):
        for name, loader in loaders.items():
            started = time.perf_counter()
            forecast_errors(model, loader, dm.scaler.mean, dm.scaler.scale)
            seconds[name].append(time.perf_counter() - started)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    windows = len(dm.dataset("test"))
    for name, size in sizes.items():
        print(f"{name:>18}: {size:4d} windows a pass, {medians[name]:.2f} s for {windows} test windows "
              f"({windows / medians[name]:.0f} windows/s)")
    ratio = medians["training pass"] / medians["inference_windows"]
    print(f"ratio {ratio:.2f}")
    print(json.dumps({"config": Path(args.config).name, "windows": windows,
                      **{name.replace(" ", "_"): {"batch": sizes[name], "s": round(medians[name], 3)} for name in sizes},
                      "ratio": round(ratio, 2)}))


if __name__ == "__main__":
    main()
