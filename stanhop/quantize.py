"""Simulated W8A8 post-training quantization: fake-quantize (quantize, then dequantize) in float.

The setting of the post-quantization studies in Bondarenko et al., "Quantizable Transformers"
(NeurIPS 2023) and Hu et al., "Outlier-Efficient Hopfield Layers" (OutEffHop, ICML 2024):

* Weights of every nn.Linear, per tensor, symmetric, min–max range (biases stay in float, as
  they are int32 accumulators in real kernels):
      s = max|w| / (2^(b−1) − 1),   ŵ = s · clamp(round(w / s), −2^(b−1), 2^(b−1) − 1)
* Activations — inputs and outputs of every nn.Linear, outputs of the retrieval modules
  (RETRIEVAL_TYPES) — per tensor, asymmetric, with the range widened to contain 0:
      s = (hi − lo) / (2^b − 1),   z = round(−lo / s),
      x̂ = s · (clamp(round(x / s) + z, 0, 2^b − 1) − z)
  so 0 is exact and at most 2^b levels exist.
* Activation ranges are calibrated on a few batches with the weights already quantized and
  activations in float (all quantizers observe in one pass):
      "minmax"          — running range = overall min and max over all calibration batches;
      "percentile:P"    — per batch the (100 − P)th and Pth percentiles (of a fixed random
                          subsample of 2^20 elements when the tensor is bigger, because
                          torch.quantile limits its input size), averaged over batches.
Only weights and activations of nn.Linear modules (and retrieval outputs) are touched: a
Linear whose weight is used without calling it (nn.MultiheadAttention's out_proj) gets its
weight quantized but no activation quantizers, and raw Parameters (in_proj_weight) stay float.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from stanhop.errors import UserError, cited

RETRIEVAL_TYPES = ("Hopfield", "HopfieldPooling", "HopfieldLayer")
_QUANTILE_SAMPLE = 2**20


def fake_quantize(x: Tensor, *, n_bits: int, lo: Tensor | float, hi: Tensor | float,
                  symmetric: bool) -> Tensor:
    """Quantize x to n_bits integers over [lo, hi] and map back to float (equations above)."""
    lo = torch.as_tensor(lo, dtype=x.dtype, device=x.device)
    hi = torch.as_tensor(hi, dtype=x.dtype, device=x.device)
    if symmetric:
        q_max = 2 ** (n_bits - 1) - 1
        scale = torch.maximum(lo.abs(), hi.abs()) / q_max
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        return torch.clamp(torch.round(x / scale), -q_max - 1, q_max) * scale
    lo, hi = torch.clamp(lo, max=0), torch.clamp(hi, min=0)  # the range always holds 0
    q_max = 2**n_bits - 1
    scale = (hi - lo) / q_max
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    zero = torch.round(-lo / scale)
    return (torch.clamp(torch.round(x / scale) + zero, 0, q_max) - zero) * scale


def quantize_weight(w: Tensor, n_bits: int = 8) -> Tensor:
    """Symmetric per-tensor min–max fake quantization: s = max|w| / (2^(b−1) − 1)."""
    w_max = w.detach().abs().max()
    return fake_quantize(w, n_bits=n_bits, lo=-w_max, hi=w_max, symmetric=True)


@dataclass(frozen=True)
class RangeSpec:
    """How activation ranges are estimated: "minmax", or "percentile" with P in (50, 100]."""

    method: str
    percentile: float = 100.0

    def __str__(self) -> str:  # as metrics.json records it: "minmax", "percentile:99.9"
        return "minmax" if self.method == "minmax" else f"percentile:{self.percentile:g}"


def parse_range(spec: str) -> RangeSpec:
    """Parse "minmax" or "percentile:P" (e.g. "percentile:99.99"); anything else is a UserError."""
    text = spec.strip().lower()
    if text == "minmax":
        return RangeSpec("minmax")
    method, _, value = text.partition(":")
    try:
        p = float(value)
    except ValueError:
        p = float("nan")
    if method != "percentile" or not 50 < p <= 100:
        raise UserError(f"bad activation range {cited(spec)}: use 'minmax' or 'percentile:P' "
                        "with 50 < P <= 100, e.g. 'percentile:99.99'")
    return RangeSpec("percentile", p)


def _batch_range(x: Tensor, spec: RangeSpec) -> tuple[Tensor, Tensor]:
    flat = x.detach().flatten().float()
    if spec.method == "minmax":
        return flat.min(), flat.max()
    if flat.numel() > _QUANTILE_SAMPLE:
        gen = torch.Generator(device=flat.device).manual_seed(0)
        idx = torch.randint(flat.numel(), (_QUANTILE_SAMPLE,), generator=gen, device=flat.device)
        flat = flat[idx]
    p = spec.percentile / 100
    lo, hi = torch.quantile(flat, torch.tensor([1 - p, p], device=flat.device))
    return lo, hi


class RangeObserver:
    """An activation range over calibration batches: overall min–max or mean percentiles."""

    def __init__(self, spec: RangeSpec):
        self.spec = spec
        self.batches = 0
        self._lo: Tensor | None = None
        self._hi: Tensor | None = None

    def update(self, x: Tensor) -> None:
        lo, hi = _batch_range(x, self.spec)
        if self._lo is None:
            self._lo, self._hi = lo, hi
        elif self.spec.method == "minmax":
            self._lo, self._hi = torch.minimum(self._lo, lo), torch.maximum(self._hi, hi)
        else:  # sums; range() divides by the number of batches
            self._lo, self._hi = self._lo + lo, self._hi + hi
        self.batches += 1

    def range(self) -> tuple[Tensor, Tensor] | None:
        if self._lo is None:
            return None
        if self.spec.method == "minmax":
            return self._lo, self._hi
        return self._lo / self.batches, self._hi / self.batches


class _ActQuantizer:
    """One quantization point: observes while calibrating, then fake-quantizes (asymmetric)."""

    def __init__(self, spec: RangeSpec, n_bits: int):
        self.observer = RangeObserver(spec)
        self.n_bits = n_bits
        self.calibrating = True

    def __call__(self, x: Tensor) -> Tensor:
        if self.calibrating:
            self.observer.update(x)
            return x
        bounds = self.observer.range()
        if bounds is None:  # never ran during calibration (e.g. a Linear used only by weight)
            return x
        return fake_quantize(x, n_bits=self.n_bits, lo=bounds[0], hi=bounds[1], symmetric=False)

    def pre_hook(self, module: nn.Module, args: tuple) -> tuple | None:
        if args and isinstance(args[0], Tensor):
            return (self(args[0]), *args[1:])
        return None

    def hook(self, module: nn.Module, args: tuple, output: object) -> object:
        if isinstance(output, Tensor):
            return self(output)
        if isinstance(output, tuple) and output and isinstance(output[0], Tensor):
            return (self(output[0]), *output[1:])
        return output


def _check_bits(name: str, bits: int) -> None:
    if not isinstance(bits, int) or not 2 <= bits <= 16:
        raise UserError(f"{name} must be an integer from 2 to 16, got {cited(bits)}")


def quantize_model(model: nn.Module, calibration: Iterable[Tensor], *, weight_bits: int = 8,
                   act_bits: int = 8, act_range: str = "minmax") -> nn.Module:
    """A fake-quantized deep copy of ``model`` in eval mode, ranges calibrated by ``model(x)``.

    The original model is untouched. The copy keeps its quantization hooks for its lifetime.
    """
    spec = parse_range(act_range)
    _check_bits("weight bits", weight_bits)
    _check_bits("activation bits", act_bits)
    quantized = copy.deepcopy(model).eval()
    quantizers = []
    with torch.no_grad():
        for module in quantized.modules():
            if isinstance(module, nn.Linear):
                module.weight.copy_(quantize_weight(module.weight, weight_bits))
                quantizers.append(q_in := _ActQuantizer(spec, act_bits))
                module.register_forward_pre_hook(q_in.pre_hook)
            if isinstance(module, nn.Linear) or type(module).__name__ in RETRIEVAL_TYPES:
                quantizers.append(q_out := _ActQuantizer(spec, act_bits))
                module.register_forward_hook(q_out.hook)
        batches = 0
        for x in calibration:
            quantized(x)
            batches += 1
    if batches == 0:
        raise UserError("no calibration batches: give at least one batch of inputs to quantize")
    for q in quantizers:
        q.calibrating = False
    return quantized
