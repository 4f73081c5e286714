"""How sharply a trained run's retrievals associate: the figures behind the outlier study.

Outliers in attention models come from heads that learn to do nothing by putting almost all
their weight on one uninformative pattern (Bondarenko et al. 2023); Softmax₁ (OutEffHop) lets
a head give weight to nothing instead. This script shows whether a run's retrievals do
either. Over the first ``--batches`` test batches, per retrieval module (mean over every
query of every head):

- ``max_weight``: the largest association weight (1/k when the weights are uniform over k
  stored patterns; near 1 for a head that picks one pattern);
- ``uniform``: 1/k for that module, to compare with;
- ``null_mass``: 1 − Σ weights, the weight given to nothing (0 for maps that sum to 1);
- ``p_null_over_half``: the share of queries that give more than half to nothing.

    python benchmarks/retrieval_weights.py RUN [RUN ...] [--batches 8]

One table per run, then one JSON object {run: {module: {...}}}.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import torch

from stanhop.runs import load_run
from stanhop.workflow import run_data_module


def retrieval_weights(run, batches: int) -> dict[str, dict[str, float]]:
    """The figures of a loaded run (stanhop.runs.load_run), per retrieval module."""
    dm = run_data_module(run)
    sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0, 0.0, 0.0])  # max, null, >½, 1/k, rows

    def record(name: str):
        def hook(module, args, weights):  # weights (..., q, k)
            w = weights.detach().flatten(0, -2)  # (rows, k)
            null = 1.0 - w.sum(-1)
            s = sums[name]
            s[0] += w.amax(-1).sum().item()
            s[1] += null.sum().item()
            s[2] += (null > 0.5).sum().item()
            s[3] += w.shape[0] / w.shape[1]
            s[4] += w.shape[0]
        return hook

    handles = [m.register_forward_hook(record(n.removesuffix(".separation")))
               for n, m in run.model.named_modules() if n.endswith("separation")]
    run.model.eval()
    try:
        with torch.no_grad():
            for i, (x, _) in enumerate(dm.test_dataloader()):
                if i == batches:
                    break
                run.model(x)
    finally:
        for h in handles:
            h.remove()
    return {name: {"max_weight": s[0] / s[4], "uniform": s[3] / s[4], "null_mass": s[1] / s[4],
                   "p_null_over_half": s[2] / s[4]} for name, s in sums.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories")
    parser.add_argument("--batches", type=int, default=8, help="test batches to look at")
    args = parser.parse_args()
    results = {}
    for path in args.runs:
        run = load_run(path)
        results[path] = figures = retrieval_weights(run, args.batches)
        print(f"{path} ({run.config.model.separation})")
        print(f"  {'module':<42} {'max weight':>10} {'uniform':>8} {'null mass':>9} {'P(null>½)':>9}")
        for name, f in figures.items():
            print(f"  {name:<42} {f['max_weight']:>10.3f} {f['uniform']:>8.3f} {round(f['null_mass'], 3) + 0.0:>9.3f} "
                  f"{f['p_null_over_half']:>9.3f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
