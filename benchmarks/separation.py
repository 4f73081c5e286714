"""Speed and accuracy of the separation maps at STanHop-Net's ETTh1 score shapes.

Times forward + backward of every map of stanhop.separation (the learnable-α ``entmax`` with
its α requiring a gradient, as in training) against the baseline the public STanHop code
uses: α-entmax by bisection on τ with 50 halvings, reimplemented here in the style of the
entmax package's EntmaxBisectFunction that it calls (the loop runs without autograd; the
backward is the closed form, including ∂/∂α), with one α per head expanded to (b, h, q, 1)
as its EntmaxAlpha does. Both run in the same process, on the same scores.

Scores are 2·N(0, 1) (fixed seed); the upstream gradient is N(0, 1). ``ms`` is the best
of ``--repeats`` timed rounds after two warm-up rounds (the machine is shared: the minimum
is the cost of the code, a median would also measure the neighbours); in each round every
map runs once, so that load from other processes falls on all maps alike. ``max_abs_err`` compares the float32
weights with a float64 reference solution of the same map: closed forms for the softmax
family, and 200-halving float64 bisection for every α-entmax (sparsemax α = 2, entmax15
α = 1.5, entmax/bisect50 at α = 1.5) — an algorithm independent of ours.

One line per shape; the last line is the JSON object for (896, 4, 14, 14):
    {map: {"ms": ..., "speedup_vs_bisect50": ..., "max_abs_err": ...}, ...}

    python benchmarks/separation.py [--repeats 10] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch
from torch import Tensor

from stanhop.separation import SEPARATIONS, make_separation

SHAPES = [(896, 4, 14, 14), (1792, 4, 7, 10), (896, 4, 2, 14)]  # temporal, cross-series, pooling
ALPHA = 1.5  # the learnable α's initial value (a = 0)


# ------------------------------------------------------------------ the baseline


def _bisect_forward(x: Tensor, alpha: Tensor, n_iter: int) -> Tensor:
    """α-entmax by bisection on τ in [max − 1, max − n^(1−α)] (Peters et al. 2019)."""
    z = x * (alpha - 1)
    q = 1 / (alpha - 1)
    z_max = z.amax(-1, keepdim=True)
    tau_lo = z_max - 1.0
    tau_hi = z_max - (1.0 / x.shape[-1]) ** (alpha - 1)
    f_lo = (z - tau_lo).clamp_min(0).pow(q).sum(-1, keepdim=True) - 1
    width = tau_hi - tau_lo
    for _ in range(n_iter):
        width = width / 2
        tau_m = tau_lo + width
        p_m = (z - tau_m).clamp_min(0).pow(q)
        f_m = p_m.sum(-1, keepdim=True) - 1
        tau_lo = torch.where(f_m * f_lo >= 0, tau_m, tau_lo)
    return p_m / p_m.sum(-1, keepdim=True)


class Bisect(torch.autograd.Function):
    """The baseline: bisection forward, closed-form backward in scores and α."""

    @staticmethod
    def forward(ctx, x: Tensor, alpha: Tensor, n_iter: int) -> Tensor:
        p = _bisect_forward(x, alpha, n_iter)
        ctx.save_for_backward(p, alpha)
        return p

    @staticmethod
    def backward(ctx, dp: Tensor):
        p, alpha = ctx.saved_tensors
        g = torch.where(p > 0, p.pow(2 - alpha), 0.0)
        g_hat = g / g.sum(-1, keepdim=True)
        gdp = g * dp
        dx = gdp - g_hat * gdp.sum(-1, keepdim=True)
        plogp = torch.where(p > 0, p * torch.log(p), 0.0)
        ent = plogp.sum(-1, keepdim=True)
        am1 = alpha - 1
        d_alpha = (dp * ((p - g_hat) / am1**2 - (plogp - g_hat * ent) / am1)).sum(-1, keepdim=True)
        return dx, d_alpha, None


# ------------------------------------------------------------------ references


def reference(name: str, scores: Tensor) -> Tensor:
    """float64 weights of map ``name``, computed independently of stanhop.separation."""
    x = scores.double()
    if name == "softmax":
        return torch.softmax(x, -1)
    if name == "softmax1":
        e = x.exp()
        return e / (1 + e.sum(-1, keepdim=True))
    if name == "clipped":
        return (1.2 * torch.softmax(x, -1) - 0.1).clamp(0, 1)
    alpha = {"sparsemax": 2.0, "entmax15": 1.5}.get(name, ALPHA)
    return _bisect_forward(x, torch.tensor(alpha, dtype=torch.float64), 200)


# ------------------------------------------------------------------ timing


def time_all(fns: dict[str, Callable[[Tensor], Tensor]], scores: Tensor, grad: Tensor,
             repeats: int) -> dict[str, float]:
    """Best ms of forward + backward of each fn at scores over the rounds, the maps taking
    turns in every round so that load from other processes falls on all of them alike."""
    x = scores.clone().requires_grad_()
    runs: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(repeats + 2):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn(x).backward(grad)
            if i >= 2:
                runs[name].append((time.perf_counter() - start) * 1e3)
            x.grad = None
    return {name: min(r) for name, r in runs.items()}


def maps() -> dict[str, Callable[[Tensor], Tensor]]:
    fns = {name: make_separation(name) for name in SEPARATIONS}
    alpha_heads = torch.full((4,), ALPHA, requires_grad=True)  # one α per head, as the public code
    fns["bisect50"] = lambda s: Bisect.apply(s, alpha_heads[:, None, None].expand(*s.shape[:-1], 1), 50)
    return fns


def bench_shape(shape: tuple[int, ...], repeats: int, with_errors: bool) -> dict[str, dict]:
    gen = torch.Generator().manual_seed(0)
    scores = 2 * torch.randn(shape, generator=gen)
    grad = torch.randn(shape, generator=gen)
    fns = maps()
    ms = time_all(fns, scores, grad, repeats)
    out = {}
    for name, fn in fns.items():
        err = None
        if with_errors:
            with torch.no_grad():
                err = (fn(scores).double() - reference(name, scores)).abs().max().item()
        out[name] = {"ms": round(ms[name], 3), "speedup_vs_bisect50": round(ms["bisect50"] / ms[name], 2),
                     "max_abs_err": None if err is None else float(f"{err:.3g}")}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, forward+backward")
    for shape in SHAPES[1:]:
        print(f"{shape}: " + json.dumps(bench_shape(shape, args.repeats, with_errors=True)))
    print(json.dumps(bench_shape(SHAPES[0], args.repeats, with_errors=True)))


if __name__ == "__main__":
    main()
