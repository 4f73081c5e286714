"""Activation outlier statistics collected by forward hooks.

As the OutEffHop code measures them (Hu et al., "Outlier-Efficient Hopfield Layers for Large
Transformer-Based Models", ICML 2024; after Bondarenko et al., "Quantizable Transformers",
NeurIPS 2023): each selected module's output x is reshaped to (b, n) and, per sample,

    ‖x‖_∞ = max_j |x_j|,        Kurt(x) = E[(x − μ)⁴] / (σ⁴ + 1e-6),

with μ and the population σ taken over the sample's n elements. Both are averaged over all
samples seen (so batches weigh by their size). The summary reports, as the papers' tables do,
the mean over modules of their average kurtosis and the max over modules of their average
∞-norm; each module also keeps its largest single ∞-norm.

Hooks exist only inside ``with OutlierMonitor(model):``; outside it nothing is registered.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor, nn

# class names: retrieval outputs and block outputs
DEFAULT_MODULE_TYPES = (
    "Hopfield", "HopfieldPooling", "HopfieldLayer", "STanHopBlock", "DecoderLayer",
)

_EPS = 1e-6


def _per_sample(x: Tensor) -> Tensor:
    return rearrange(x.detach(), "b ... -> b (...)")  # (b, ...) -> (b, n)


def kurtosis(x: Tensor) -> Tensor:
    """Kurt(x) = E[(x − μ)⁴] / (σ⁴ + 1e-6) per sample, in float64: (b, ...) -> (b,)."""
    x = _per_sample(x).to(torch.float64)  # (b, n)
    squares = (x - x.mean(dim=1, keepdim=True)).square_()  # (x − μ)², in one buffer: hooks run on every batch
    var = squares.mean(dim=1)  # population σ²
    return squares.square_().mean(dim=1) / (var.square() + _EPS)


def inf_norm(x: Tensor) -> Tensor:
    """‖x‖_∞ = max_j |x_j| per sample, in float64: (b, ...) -> (b,). Exact in x's own precision,
    from its largest and smallest elements (no copy of |x|)."""
    x = _per_sample(x)  # (b, n)
    return torch.maximum(x.amax(dim=1), -x.amin(dim=1)).to(torch.float64)


def _first_tensor(output: object) -> Tensor | None:
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)):
        return next((o for o in output if isinstance(o, Tensor)), None)
    return None


@dataclass
class _Running:
    """Sums kept as device tensors so that hooks never synchronise with the host."""

    count: int = 0
    kurtosis_sum: Tensor | float = 0.0
    inf_norm_sum: Tensor | float = 0.0
    inf_norm_max: Tensor | float = 0.0  # ∞-norms are ≥ 0

    def update(self, x: Tensor) -> None:
        norms = inf_norm(x)
        self.count += x.shape[0]
        self.kurtosis_sum = self.kurtosis_sum + kurtosis(x).sum()
        self.inf_norm_sum = self.inf_norm_sum + norms.sum()
        self.inf_norm_max = norms.max().clamp(min=self.inf_norm_max)


# wrappers whose output is their inner ``hopfield``'s output, unchanged
_WRAPPERS = ("HopfieldPooling", "HopfieldLayer")


def _default_select(modules: list[tuple[str, nn.Module]]) -> list[tuple[str, nn.Module]]:
    """Modules of DEFAULT_MODULE_TYPES, each output counted once: the ``hopfield`` inside a
    HopfieldPooling or HopfieldLayer returns the wrapper's output, so only the wrapper is kept.
    Every leaf module when none is of those types."""
    wrappers = {n for n, m in modules if type(m).__name__ in _WRAPPERS}
    chosen = [(n, m) for n, m in modules if type(m).__name__ in DEFAULT_MODULE_TYPES
              and n.rpartition(".")[0] not in wrappers]
    return chosen or [(n, m) for n, m in modules if next(m.children(), None) is None]


class OutlierMonitor:
    """Context manager that records kurtosis and ∞-norm of the selected modules' outputs.

    ``select(name, module) -> bool`` picks modules; by default those whose class name is in
    DEFAULT_MODULE_TYPES, or every leaf module when none is. Tuple outputs: the first tensor.
    """

    def __init__(self, model: nn.Module, select: Callable[[str, nn.Module], bool] | None = None):
        modules = list(model.named_modules())
        if select is None:
            self.modules = _default_select(modules)
        else:
            self.modules = [(n, m) for n, m in modules if select(n, m)]
        self._stats: dict[str, _Running] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _hook(self, name: str) -> Callable:
        def record(module: nn.Module, args: tuple, output: object) -> None:
            x = _first_tensor(output)
            if x is not None and x.dim() > 0 and x.numel() > 0:
                self._stats.setdefault(name, _Running()).update(x)

        return record

    def __enter__(self) -> OutlierMonitor:
        self._remove()
        for name, module in self.modules:
            self._handles.append(module.register_forward_hook(self._hook(name or "(model)")))
        return self

    def __exit__(self, *exc: object) -> None:
        self._remove()

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def summary(self) -> dict:
        """Averages and maxima so far: ``kurtosis_avg`` is the mean over modules of their average
        kurtosis, ``inf_norm_max`` the max over modules of their average ∞-norm (the papers'
        "max ∞-norm"); per module, ``inf_norm_max`` is its largest single sample's.

        {"kurtosis_avg": float, "inf_norm_max": float,
         "per_module": {name: {"kurtosis": float, "inf_norm_max": float, "inf_norm_avg": float}}}
        """
        if not self._stats:
            raise RuntimeError("no activations recorded: run the model inside the monitor first")
        per_module = {
            name: {
                "kurtosis": float(s.kurtosis_sum) / s.count,
                "inf_norm_max": float(s.inf_norm_max),
                "inf_norm_avg": float(s.inf_norm_sum) / s.count,
            }
            for name, s in self._stats.items()
        }
        kurt = [m["kurtosis"] for m in per_module.values()]
        return {
            "kurtosis_avg": sum(kurt) / len(kurt),
            "inf_norm_max": max(m["inf_norm_avg"] for m in per_module.values()),
            "per_module": per_module,
        }


def outlier_stats(model: nn.Module, batches: Iterable[Tensor],
                  select: Callable[[str, nn.Module], bool] | None = None) -> dict:
    """Run ``model(x)`` for each batch in eval mode without gradients; return the summary.

    The model's training flag is restored afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), OutlierMonitor(model, select) as monitor:
            for x in batches:
                model(x)
    finally:
        model.train(was_training)
    return monitor.summary()
