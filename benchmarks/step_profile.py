"""Where one STanHop-Net training step's time goes: matrix products against the rest.

Profiles ``--steps`` training steps (after two untimed ones) of an h24 or h720 model on
ETTh1 windows, as train_step.py takes them, and prints for each kind of matrix product
(mm, addmm, bmm) its GFLOP per step (FlopCounterMode), its self time per step
(torch.profiler) and the rate that gives; then the time of everything else, and the matmul
rate at the model's typical shape measured in the same process (train_step.matmul_rate).

The last lines bound train_step.py's ``efficiency`` (achieved GFLOP/s ÷ that rate): even
with everything else taking no time, the products alone at their measured rates give at
most ``bound``. Times are under the profiler, a few percent slower than without it.

    python benchmarks/step_profile.py [--config h24|h720] [--separation entmax] [--steps 3]
"""

from __future__ import annotations

import argparse
import json

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from stanhop.allocator import retain_freed_memory
from stanhop.config import SEPARATIONS, ModelConfig
from stanhop.model import STanHopNet, n_segments
from stanhop.training import adam
from train_step import BATCH, CONFIGS, WIDTHS, etth1_batch, matmul_rate, training_step

PRODUCTS = ("mm", "addmm", "bmm")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="h24", choices=sorted(CONFIGS))
    parser.add_argument("--separation", default="entmax", choices=SEPARATIONS)
    parser.add_argument("--steps", type=int, default=3, help="profiled steps, after two untimed ones")
    args = parser.parse_args()
    retain_freed_memory()  # as stanhop train does
    torch.manual_seed(0)
    cfg = ModelConfig(**WIDTHS, **CONFIGS[args.config], separation=args.separation)
    model = STanHopNet(cfg).train()
    opt = adam(model.parameters(), 1e-4, "32")
    x, y = etth1_batch(cfg, BATCH)
    for _ in range(2):
        training_step(model, opt, x, y)

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            training_step(model, opt, x, y)
    counter = FlopCounterMode(display=False)
    with counter:
        torch.nn.functional.mse_loss(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    rate = max(matmul_rate(BATCH * cfg.n_series * n_segments(cfg.in_len, cfg.seg_len), cfg.d_model, torch.device("cpu"))
               for _ in range(3))

    events = prof.key_averages()
    step_s = sum(e.self_cpu_time_total for e in events) / 1e6 / args.steps
    flops = {str(op).split(".")[-1]: n for op, n in counter.get_flop_counts()["Global"].items()}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.config}, {args.separation}, "
          f"batch {BATCH}, {args.steps} profiled steps: {step_s:.3f} s per step under the profiler")
    product_s, product_gflop = 0.0, 0.0
    for name in PRODUCTS:
        seconds = sum(e.self_cpu_time_total for e in events if e.key == f"aten::{name}") / 1e6 / args.steps
        gflop = flops.get(name, 0) / 1e9
        product_s, product_gflop = product_s + seconds, product_gflop + gflop
        print(f"  {name:6s} {gflop:7.1f} GFLOP  {seconds:6.3f} s  {gflop / seconds if seconds else 0:6.1f} GFLOP/s")
    rest_s = step_s - product_s
    print(f"  other  {rest_s:22.3f} s  ({rest_s / step_s:.0%} of the step)")
    achieved, bound = product_gflop / step_s / rate, product_gflop / product_s / rate
    print(f"matmul rate at the typical shape: {rate:.1f} GFLOP/s (best of 3); efficiency {achieved:.3f}, "
          f"bound with no other work {bound:.3f}")
    print(json.dumps({"s_per_step": round(step_s, 3), "product_s": round(product_s, 3), "other_s": round(rest_s, 3),
                      "gflop_per_step": round(product_gflop, 1), "matmul_gflop_s": round(rate, 1),
                      "efficiency": round(achieved, 3), "bound": round(bound, 3)}))


if __name__ == "__main__":
    main()
