"""Where one STanHop-Net training step's time goes: matrix products against the rest.

Takes ``--steps`` training steps (after three untimed ones) of an h24 or h720 model on ETTh1
windows, as train_step.py takes them, first plainly (the step time), then with every aten
operator timed on its own (a TorchDispatchMode that reads the clock around each call, forward
and backward). It prints for each kind of matrix product (mm, addmm, bmm) its GFLOP per step
(FlopCounterMode), its time per step and the rate that gives; the time of every other
operator; what is left of the plain step (Python, autograd's bookkeeping, dispatch); the
largest other operators; and the matmul rate at the model's typical shape measured in the
same process (train_step.matmul_rate).

The last lines bound train_step.py's ``efficiency`` (achieved GFLOP/s ÷ that rate): even
with everything else taking no time, the products alone at their measured rates give at
most ``bound``. torch.profiler is not used: its bookkeeping per operator (thousands a step)
made "the rest" look nearly twice as long as it is.

    python benchmarks/step_profile.py [--config h24|h720] [--separation entmax] [--steps 3] [--top 8]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from stanhop.allocator import retain_freed_memory
from stanhop.config import SEPARATIONS, ModelConfig
from stanhop.model import STanHopNet, n_segments
from stanhop.optimisation import adam
from train_step import BATCH, CONFIGS, WIDTHS, etth1_batch, matmul_rate, training_step

PRODUCTS = ("mm", "addmm", "bmm")


class OperatorClock(TorchDispatchMode):
    """Seconds spent inside each aten operator, and its calls, by name while the mode is on
    (an operator's own calls to others are not seen again: the mode is off inside it)."""

    def __init__(self):
        super().__init__()
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        start = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        self.seconds[name] += time.perf_counter() - start
        self.calls[name] += 1
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="h24", choices=sorted(CONFIGS))
    parser.add_argument("--separation", default="entmax", choices=SEPARATIONS)
    parser.add_argument("--steps", type=int, default=3, help="timed steps, after three untimed ones")
    parser.add_argument("--top", type=int, default=8, help="how many of the other operators to list")
    args = parser.parse_args()
    retain_freed_memory()  # as stanhop train does
    torch.manual_seed(0)
    cfg = ModelConfig(**WIDTHS, **CONFIGS[args.config], separation=args.separation)
    model = STanHopNet(cfg).train()
    opt = adam(model.parameters(), 1e-4, "32")
    x, y = etth1_batch(cfg, BATCH)
    for _ in range(3):
        training_step(model, opt, x, y)

    start = time.perf_counter()
    for _ in range(args.steps):
        training_step(model, opt, x, y)
    step_s = (time.perf_counter() - start) / args.steps
    clock = OperatorClock()
    with clock:
        for _ in range(args.steps):
            training_step(model, opt, x, y)
    seconds = {name: s / args.steps for name, s in clock.seconds.items()}
    counter = FlopCounterMode(display=False)
    with counter:
        torch.nn.functional.mse_loss(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    rate = max(matmul_rate(BATCH * cfg.n_series * n_segments(cfg.in_len, cfg.seg_len), cfg.d_model, torch.device("cpu"))
               for _ in range(3))

    flops = {str(op).split(".")[-1]: n for op, n in counter.get_flop_counts()["Global"].items()}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.config}, {args.separation}, "
          f"batch {BATCH}: {step_s:.3f} s per step (mean of {args.steps})")
    product_s, product_gflop = 0.0, 0.0
    for name in PRODUCTS:
        gflop = flops.get(name, 0) / 1e9
        product_s, product_gflop = product_s + seconds.get(name, 0.0), product_gflop + gflop
        print(f"  {name:6s} {gflop:7.1f} GFLOP  {seconds.get(name, 0.0):6.3f} s  "
              f"{gflop / seconds[name] if seconds.get(name) else 0:6.1f} GFLOP/s")
    others = sorted(((s, name) for name, s in seconds.items() if name not in PRODUCTS), reverse=True)
    ops_s = sum(s for s, _ in others)
    outside_s = step_s - product_s - ops_s
    print(f"  other operators        {ops_s:6.3f} s  ({ops_s / step_s:.0%} of the step): "
          + ", ".join(f"{name} {s * 1e3:.0f} ms" for s, name in others[:args.top]))
    print(f"  outside operators      {outside_s:6.3f} s  ({outside_s / step_s:.0%}; Python, autograd, dispatch)")
    achieved, bound = product_gflop / step_s / rate, product_gflop / product_s / rate
    print(f"matmul rate at the typical shape: {rate:.1f} GFLOP/s (best of 3); efficiency {achieved:.3f}, "
          f"bound with no other work {bound:.3f}")
    print(json.dumps({"s_per_step": round(step_s, 3), "product_s": round(product_s, 3), "other_ops_s": round(ops_s, 3),
                      "outside_ops_s": round(outside_s, 3), "gflop_per_step": round(product_gflop, 1),
                      "matmul_gflop_s": round(rate, 1), "efficiency": round(achieved, 3), "bound": round(bound, 3)}))


if __name__ == "__main__":
    main()
