"""Speed and memory of one STanHop-Net training step at the ETTh1 benchmark settings.

For each separation map, in a fresh process of its own (so that its peak RSS is its own):
seconds per training step (forward, MSE loss, backward, gradient clipping at 5, Adam step as ``stanhop train``'s;
with ``--micro-batch N``, forward and backward N windows at a time with the gradient
accumulated, as ``stanhop train`` does with train.micro_batch_size), training and
forward-only (eval mode, inference_mode, the whole batch) samples per second, peak RSS
(ru_maxrss), parameter count, GFLOP of matrix products per training step (torch's
FlopCounterMode), and ``efficiency`` = achieved GFLOP/s ÷ this machine's matmul rate at the
model's typical shape ((b·c·s) × d by d × d, in the run's precision), measured in the same
process between the timed steps, so that load from other processes falls on both alike.
Freed memory stays mapped, as in ``stanhop train`` (stanhop.allocator).

``--device cuda`` runs on the GPU (steps timed between synchronisations; the matmul rate
from a run of products between two) and adds ``peak_gpu_mib``
(torch.cuda.max_memory_allocated). ``--precision bf16-mixed`` runs forward and loss under
bf16 autocast, as ``stanhop train --precision bf16-mixed``; ``32`` is plain float32 (on
CUDA without TF32, torch's default).

Times are medians over ``--steps`` timed steps after ``--warmup`` untimed ones; peak RSS is
read before the FLOPs are counted (one more forward + backward under FlopCounterMode). The
machine may be shared: ``--rounds R`` runs every separation's process R times, in turns, and
keeps the fastest round's step time, the fastest forward and the largest peak RSS; the JSON
line's efficiency is the fastest step's against the highest matmul rate of all the run's
processes (each printed line keeps its own process's rate). The batch is ``--batch`` windows of ETTh1 (standardised with the first 12 months'
statistics) when this machine has the file ($STANHOP_DATA_DIR, then the cache of
``stanhop train``, e.g. ~/.cache/stanhop/ETTh1.csv), N(0, 1) otherwise (the header line says which).

Configs (the OutEffHop/STanHop ETTh1 settings; widths d_model 256, d_ff 512, 4 heads,
factor 10, dropout 0.3, 7 series, batch 128):
    h24:  in 168, out 24,  seg 12, win 4, e_layers 2
    h720: in 720, out 720, seg 24, win 2, e_layers 3
or a YAML config file (configs/*.yaml): its model, batch size and micro-batch size, with
each separation in turn (ETTh1 windows of its lengths).

One line per separation; the last line is one JSON object keyed by separation:
    {sep: {"s_per_step", "train_samples_per_s", "fwd_samples_per_s", "peak_rss_mib",
           "params", "gflop_per_step", "efficiency"[, "peak_gpu_mib"]}, ...}

    python benchmarks/train_step.py [--separations entmax,softmax1,softmax] [--config h24|h720|FILE]
                                    [--steps N] [--warmup N] [--rounds R] [--threads N] [--compile]
                                    [--compile-mode MODE] [--checkpoint] [--micro-batch N] [--device cpu|cuda]
                                    [--precision 32|bf16-mixed]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from stanhop import datasets
from stanhop.allocator import retain_freed_memory
from stanhop.config import SEPARATIONS, ModelConfig, load_config
from stanhop.model import STanHopNet, n_segments
from stanhop.optimisation import accumulate_gradients, adam

WIDTHS = dict(d_model=256, d_ff=512, n_heads=4, factor=10, dropout=0.3, n_series=7)
CONFIGS = {
    "h24": dict(in_len=168, out_len=24, seg_len=12, win_size=4, e_layers=2),
    "h720": dict(in_len=720, out_len=720, seg_len=24, win_size=2, e_layers=3),
}
BATCH = 128
TRAIN_ROWS = 12 * 30 * 24  # the 12/4/4 split's training months: the scaler's statistics


# ------------------------------------------------------------------ inputs


def settings(config: str, separation: str, checkpoint: bool = False) -> tuple[ModelConfig, int, int | None]:
    """(model config, batch size, micro-batch size) of a named config (h24, h720: the whole batch
    at once) or of a YAML config file, with this separation."""
    if config in CONFIGS:
        return ModelConfig(**WIDTHS, **CONFIGS[config], separation=separation, checkpoint=checkpoint), BATCH, None
    full = load_config(config)
    model = dataclasses.replace(full.model, separation=separation, checkpoint=checkpoint or full.model.checkpoint)
    return model, full.train.batch_size, full.train.micro_batch_size


def resolved(args: argparse.Namespace, separation: str) -> tuple[ModelConfig, int, int | None]:
    """settings() with --batch and --micro-batch (0: the whole batch) applied."""
    cfg, batch, micro = settings(args.config, separation, args.checkpoint)
    return cfg, args.batch or batch, micro if args.micro_batch is None else (args.micro_batch or None)


def etth1_batch(cfg: ModelConfig, batch: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``batch`` random (input, target) windows of standardised ETTh1, or N(0, 1) without it."""
    gen = torch.Generator().manual_seed(seed)
    path = datasets.local_copy("ETTh1")
    if path is None:
        return torch.randn(batch, cfg.in_len, cfg.n_series, generator=gen), torch.randn(
            batch, cfg.out_len, cfg.n_series, generator=gen)
    values = np.loadtxt(path, delimiter=",", skiprows=1, usecols=range(1, 1 + cfg.n_series), dtype=np.float32)
    train = values[:TRAIN_ROWS]
    series = torch.from_numpy((values - train.mean(0)) / train.std(0))
    span = cfg.in_len + cfg.out_len
    starts = torch.randint(0, TRAIN_ROWS - span + 1, (batch,), generator=gen)
    windows = torch.stack([series[s : s + span] for s in starts.tolist()])  # (b, in + out, c)
    return windows[:, : cfg.in_len].contiguous(), windows[:, cfg.in_len :].contiguous()


# ------------------------------------------------------------------ measurements


def matmul_rate(m: int, d: int, device: torch.device, dtype: torch.dtype = torch.float32, repeats: int = 8) -> float:
    """GFLOP/s of an (m × d) @ (d × d) product in ``dtype`` on ``device``, median of ``repeats``
    (on a GPU each repeat times 20 products between two synchronisations: one is too short)."""
    gen = torch.Generator().manual_seed(1)
    a, w = (torch.randn(n, d, generator=gen).to(device, dtype) for n in (m, d))
    out = torch.empty(m, d, device=device, dtype=dtype)
    inner = 1 if device.type == "cpu" else 20
    torch.mm(a, w, out=out)
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(inner):
            torch.mm(a, w, out=out)
        synchronize(device)
        times.append((time.perf_counter() - start) / inner)
    return 2 * m * d * d / statistics.median(times) / 1e9


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on CPU), so that host clocks time it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def in_precision(model: Callable[[Tensor], Tensor], device: torch.device, precision: str) -> Callable[[Tensor], Tensor]:
    """model itself (precision 32), or model run under bf16 autocast with a float32 output."""
    if precision == "32":
        return model

    def forward(x: Tensor) -> Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return model(x).float()

    return forward


def training_step(model: Callable[[Tensor], Tensor], opt: torch.optim.Optimizer, x: Tensor, y: Tensor,
                  micro_batch_size: int | None = None) -> None:
    """One step as ``stanhop train`` takes it (stanhop.training.Forecaster.training_step)."""
    opt.zero_grad(set_to_none=True)
    accumulate_gradients(model, x, y, micro_batch_size)
    torch.nn.utils.clip_grad_norm_([p for group in opt.param_groups for p in group["params"]], 5.0)
    opt.step()


def gflop_per_step(model: Callable[[Tensor], Tensor], x: Tensor, y: Tensor) -> float:
    """GFLOP of matrix products in one forward + backward (FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        torch.nn.functional.mse_loss(model(x), y).backward()
    return counter.get_total_flops() / 1e9


def worker(args: argparse.Namespace) -> dict:
    """Every figure for one separation, in this (fresh) process."""
    retain_freed_memory()  # as stanhop train does (cli.py)
    torch.manual_seed(0)
    device = torch.device(args.device)
    cfg, batch, micro = resolved(args, args.worker)
    model = STanHopNet(cfg).to(device)
    params = sum(p.numel() for p in model.parameters())
    x, y = (t.to(device) for t in etth1_batch(cfg, batch))
    typical_rows = batch * cfg.n_series * n_segments(cfg.in_len, cfg.seg_len)
    dtype = torch.bfloat16 if args.precision == "bf16-mixed" else torch.float32
    compiled = torch.compile(model, mode=args.compile_mode) if args.compile else model
    step_model = in_precision(compiled, device, args.precision)
    opt = adam(model.parameters(), 1e-4, args.precision)  # as Forecaster's

    model.train()
    step_s, rates, first_s = [], [], 0.0
    for i in range(args.warmup + args.steps):
        rates.append(matmul_rate(typical_rows, cfg.d_model, device, dtype))
        synchronize(device)
        start = time.perf_counter()
        training_step(step_model, opt, x, y, micro)
        synchronize(device)
        if i >= args.warmup:
            step_s.append(time.perf_counter() - start)
        elif i == 0:
            first_s = time.perf_counter() - start  # with --compile: compiling included

    model.eval()
    fwd_s = []
    with torch.inference_mode():
        for i in range(args.warmup + args.steps):
            synchronize(device)
            start = time.perf_counter()
            step_model(x)
            synchronize(device)
            if i >= args.warmup:
                fwd_s.append(time.perf_counter() - start)

    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before counting FLOPs
    peak_gpu = {"peak_gpu_mib": round(torch.cuda.max_memory_allocated(device) / 2**20)} if device.type == "cuda" else {}
    model.train()
    gflop = gflop_per_step(in_precision(model, device, args.precision), x, y)
    model.zero_grad(set_to_none=True)
    s_step, s_fwd, rate = statistics.median(step_s), statistics.median(fwd_s), statistics.median(rates)
    return {
        "s_per_step": round(s_step, 4 if device.type == "cuda" else 3),
        "train_samples_per_s": round(batch / s_step, 1),
        "fwd_samples_per_s": round(batch / s_fwd, 1),
        "peak_rss_mib": round(peak_rss_mib),
        "params": params,
        "gflop_per_step": round(gflop, 1),
        "efficiency": round(gflop / s_step / rate, 3),
        **peak_gpu,
        "_matmul_gflop_s": round(rate, 1),
        "_achieved_gflop_s": round(gflop / s_step, 1),
        "_first_step_s": round(first_s, 1),
        "_device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    }


# ------------------------------------------------------------------ driver


def run_worker(args: argparse.Namespace, separation: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", separation, "--config", args.config, "--steps", str(args.steps),
           "--warmup", str(args.warmup)]
    cmd += ["--batch", str(args.batch)] if args.batch else []
    cmd += ["--threads", str(args.threads)] if args.threads else []
    cmd += ["--compile"] if args.compile else []
    cmd += ["--compile-mode", args.compile_mode] if args.compile_mode else []
    cmd += ["--checkpoint"] if args.checkpoint else []
    cmd += ["--micro-batch", str(args.micro_batch)] if args.micro_batch is not None else []
    cmd += ["--device", args.device, "--precision", args.precision]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"worker for {separation} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--separations", default="entmax,softmax1,softmax")
    parser.add_argument("--config", default="h24",
                        help="h24, h720, or a YAML config file (its model, batch_size and micro_batch_size)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (median)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--rounds", type=int, default=1, help="processes per separation (best kept)")
    parser.add_argument("--batch", type=int, default=None, help=f"windows per step (default: {BATCH}, or the file's)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (compile time excluded)")
    parser.add_argument("--compile-mode", default=None, help="torch.compile's mode (implies --compile), "
                        "e.g. reduce-overhead (CUDA graphs), max-autotune-no-cudagraphs")
    parser.add_argument("--checkpoint", action="store_true",
                        help="model.checkpoint: recompute blocks in the backward pass (less memory, more time)")
    parser.add_argument("--micro-batch", type=int, default=None,
                        help="train.micro_batch_size: windows per forward/backward pass, 0 the whole batch "
                             "(default: the whole batch, or the file's)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the model runs (default: cpu)")
    parser.add_argument("--precision", default="32", choices=["32", "bf16-mixed"],
                        help="train.precision: float32, or forward and loss under bf16 autocast (default: 32)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.compile = args.compile or bool(args.compile_mode)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(worker(args)))
        return
    separations = args.separations.split(",")
    unknown = [s for s in separations if s not in SEPARATIONS]
    if unknown:
        parser.error(f"unknown separation(s) {unknown}; choose from {', '.join(SEPARATIONS)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA GPU here")
    if args.config not in CONFIGS and not Path(args.config).is_file():
        parser.error(f"--config: {args.config} is neither {' nor '.join(CONFIGS)} nor a config file")
    cfg, batch, micro = resolved(args, separations[0])
    shown = {k: getattr(cfg, k) for k in ("in_len", "out_len", "seg_len", "win_size", "e_layers", "d_model", "d_ff")}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, config {args.config} "
          f"({shown}, batch {batch}), median of {args.steps} steps after {args.warmup}"
          f", {args.device}, precision {args.precision}"
          f"{', torch.compile' if args.compile else ''}"
          f"{f' ({args.compile_mode})' if args.compile_mode else ''}{', model.checkpoint' if args.checkpoint else ''}"
          f"{f', micro-batches of {micro}' if micro else ''}; load average {os.getloadavg()[0]:.1f}")
    data = datasets.local_copy("ETTh1")
    print(f"windows of {data}" if data else "N(0, 1) windows: no ETTh1.csv in $STANHOP_DATA_DIR or the cache")
    shape = f"{batch * cfg.n_series * n_segments(cfg.in_len, cfg.seg_len)}x{cfg.d_model}x{cfg.d_model}"
    runs: dict[str, list[dict]] = {s: [] for s in separations}
    for _ in range(args.rounds):
        for separation in separations:
            r = run_worker(args, separation)
            runs[separation].append(r)
            first = f", first step {r['_first_step_s']} s" if args.compile else ""
            print(f"{separation:>9}: {r['s_per_step']:.3f} s/step, {r['train_samples_per_s']} train samples/s, "
                  f"{r['fwd_samples_per_s']} fwd samples/s, peak RSS {r['peak_rss_mib']} MiB, "
                  f"{f'peak GPU memory {gpu} MiB, ' if (gpu := r.get('peak_gpu_mib')) is not None else ''}"
                  f"{r['params'] / 1e6:.2f}M params, {r['gflop_per_step']} GFLOP/step, "
                  f"{r['_achieved_gflop_s']} GFLOP/s vs matmul {r['_matmul_gflop_s']} GFLOP/s at {shape} "
                  f"-> efficiency {r['efficiency']}{first} ({r['_device']})", flush=True)
    top_rate = max(r["_matmul_gflop_s"] for rounds in runs.values() for r in rounds)
    print(json.dumps({s: best(r, top_rate) for s, r in runs.items()}))


def best(rounds: list[dict], top_rate: float) -> dict:
    """The fastest round's step figures, the fastest forward, the largest peak RSS, and
    ``efficiency`` against ``top_rate``, the highest matmul rate any process of the run measured
    (the machine's rate drifts by minutes: against its own process's rate, a round whose
    reference happened to be slow printed a higher efficiency at the same step time)."""
    fastest = min(rounds, key=lambda r: r["s_per_step"])
    out = {k: v for k, v in fastest.items() if not k.startswith("_")}
    out["efficiency"] = round(fastest["_achieved_gflop_s"] / top_rate, 3)
    out["fwd_samples_per_s"] = max(r["fwd_samples_per_s"] for r in rounds)
    out["peak_rss_mib"] = max(r["peak_rss_mib"] for r in rounds)
    if "peak_gpu_mib" in fastest:
        out["peak_gpu_mib"] = max(r["peak_gpu_mib"] for r in rounds)
    return out


if __name__ == "__main__":
    main()
