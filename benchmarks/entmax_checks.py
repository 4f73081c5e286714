"""Entmax's convergence checks against a fixed number of Newton steps, in one process.

On an accelerator each check of entmax's Newton iteration (from its fifth step on) is a host
synchronisation; a fixed number of steps with no check (as under torch.compile) needs none
but runs more steps. This times an h24 training step and a forward pass (eval,
inference_mode) with each, taken in turns, on ETTh1 windows (as train_step.py), and prints
the medians and their ratio.

    python benchmarks/entmax_checks.py [--device cuda] [--steps 20] [--fixed 10]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from stanhop import separation
from stanhop.config import ModelConfig
from stanhop.model import STanHopNet
from stanhop.optimisation import adam
from train_step import BATCH, CONFIGS, WIDTHS, etth1_batch, synchronize, training_step


def timed(fn, device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=20, help="timed steps of each, after a quarter as many untimed")
    parser.add_argument("--fixed", type=int, default=separation.COMPILED_NEWTON_STEPS, help="Newton steps without checks")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    cfg = ModelConfig(**WIDTHS, **CONFIGS["h24"])
    model = STanHopNet(cfg).to(device)
    opt = adam(model.parameters(), 1e-4, "32")
    x, y = (t.to(device) for t in etth1_batch(cfg, BATCH))

    checked = separation._entmax_newton

    def fixed(x, alpha, **kw):
        return checked(x, alpha, steps=args.fixed)

    def forward() -> None:
        with torch.inference_mode():
            model(x)

    variants = {"checked": checked, f"fixed {args.fixed}": fixed}
    step_s = {name: [] for name in variants}
    fwd_s = {name: [] for name in variants}
    warmup = max(1, args.steps // 4)
    try:
        for i in range(warmup + args.steps):
            for name, newton in variants.items():
                separation._entmax_newton = newton
                model.train()
                s = timed(lambda: training_step(model, opt, x, y), device)
                model.eval()
                f = timed(forward, device)
                if i >= warmup:
                    step_s[name].append(s)
                    fwd_s[name].append(f)
    finally:
        separation._entmax_newton = checked
    print(f"torch {torch.__version__}, {args.device}, h24 entmax, batch {BATCH}, medians of {args.steps} after {warmup}, in turns")
    medians = {name: (statistics.median(step_s[name]), statistics.median(fwd_s[name])) for name in variants}
    for name, (s, f) in medians.items():
        print(f"  {name}: {s * 1e3:.1f} ms per training step, {f * 1e3:.1f} ms per forward")
    (s0, f0), (s1, f1) = medians.values()
    print(f"  fixed / checked: step {s1 / s0:.3f}, forward {f1 / f0:.3f}")


if __name__ == "__main__":
    main()
