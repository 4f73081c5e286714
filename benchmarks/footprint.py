"""A training step's activation memory: stanhop.footprint's estimate against the RSS it adds.

    python benchmarks/footprint.py --config configs/etth1.yaml --series 321 --windows 8

Builds the config's model for that many series (random windows: memory does not depend on
the values), prints the estimate `stanhop train` uses to choose the micro-batch, then runs one
forward and backward pass of that many windows and prints how much the process's peak RSS
grew. Run one row per process: the peak RSS of a process only grows.
"""

from __future__ import annotations

import argparse
import resource
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stanhop import footprint  # noqa: E402
from stanhop.allocator import retain_freed_memory  # noqa: E402
from stanhop.config import load_config  # noqa: E402
from stanhop.model import STanHopNet  # noqa: E402


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="a YAML config (its model section is used)")
    parser.add_argument("--series", type=int, required=True, help="number of series")
    parser.add_argument("--windows", type=int, required=True, help="windows in the forward/backward pass")
    args = parser.parse_args()

    retain_freed_memory()  # as stanhop train does
    model_cfg = load_config(args.config).model
    model_cfg.n_series = args.series
    model = STanHopNet(model_cfg).train()
    measured = footprint.activations(model, model_cfg.in_len, args.series)
    estimate = measured.step_peak(args.windows)
    x = torch.randn(args.windows, model_cfg.in_len, args.series)
    y = torch.randn(args.windows, model_cfg.out_len, args.series)
    before = peak_rss()
    torch.nn.functional.mse_loss(model(x), y).backward()
    after = peak_rss()
    gib = footprint.GiB
    print(f"{args.config}, {args.series} series, {args.windows} windows: per window {measured.per_window / 2**20:.1f} MiB, "
          f"estimate {estimate / gib:.2f} GiB, measured {(after - before) / gib:.2f} GiB "
          f"(peak RSS {after / gib:.2f} GiB)")


if __name__ == "__main__":
    main()
