"""Simulated W8A8 quantization: levels, rounding error, ranges, and a quantized toy model."""

import numpy as np
import pytest
import torch
from torch import nn

from stanhop.errors import UserError
from stanhop.quantize import (RangeObserver, RangeSpec, fake_quantize, parse_range, quantize_model,
                              quantize_weight)


class Hopfield(nn.Module):
    """Toy retrieval module (class name as in hopfield-layers): self-attention of state patterns."""

    def __init__(self, d: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, num_heads=2, batch_first=True)

    def forward(self, x):
        return self.attn(x, x, x)[0]  # (b, t, d) -> (b, t, d)


class Toy(nn.Module):
    def __init__(self, d: int = 16):
        super().__init__()
        self.inp = nn.Linear(4, d)
        self.retrieval = Hopfield(d)
        self.head = nn.Sequential(nn.Linear(d, 32), nn.GELU(), nn.Linear(32, 3))

    def forward(self, x):  # (b, t, 4) -> (b, t, 3)
        return self.head(self.retrieval(self.inp(x)))


def relative_error(model, quantized, x):
    with torch.no_grad():
        ref, out = model.eval()(x), quantized(x)
    return ((out - ref).norm() / ref.norm()).item()


@pytest.mark.parametrize("symmetric", [False, True])
def test_fake_quantize_levels_and_half_step_error(symmetric):
    x = torch.randn(20_000, generator=torch.Generator().manual_seed(0)) * 3 + 1
    lo, hi = -2.0, 5.0
    xq = fake_quantize(x, n_bits=8, lo=lo, hi=hi, symmetric=symmetric)
    assert xq.unique().numel() <= 256
    step = (max(-lo, hi) / 127) if symmetric else (hi - lo) / 255
    inside = (x >= lo) & (x <= hi)
    assert inside.sum() > 10_000
    assert (xq - x)[inside].abs().max() <= step / 2 + 1e-6
    levels = xq.unique()
    assert torch.allclose(torch.diff(levels).min(), torch.tensor(step), rtol=1e-4)  # equally spaced
    assert fake_quantize(torch.zeros(3), n_bits=8, lo=lo, hi=hi, symmetric=symmetric).eq(0).all()


def test_asymmetric_range_always_contains_zero_and_clamps():
    x = torch.tensor([-1.0, 0.0, 2.0, 3.0, 10.0])
    xq = fake_quantize(x, n_bits=8, lo=2.0, hi=4.0, symmetric=False)  # range widened to [0, 4]
    step = 4 / 255
    assert xq[1] == 0 and xq[0] == 0  # −1 clamps to the lowest level, which is 0
    assert abs(xq[2] - 2.0) <= step / 2 and abs(xq[4] - 4.0) <= step / 2


def test_weight_quantization_is_symmetric_and_keeps_zero():
    w = torch.randn(64, 32, generator=torch.Generator().manual_seed(1))
    w[::3, ::5] = 0.0
    wq = quantize_weight(w)
    assert wq[::3, ::5].eq(0).all()
    assert wq.unique().numel() <= 255  # −127 … 127: symmetric min–max never needs −128
    scale = w.abs().max() / 127
    assert (wq - w).abs().max() <= scale / 2 + 1e-7
    assert torch.isclose(wq.abs().max(), w.abs().max())  # the largest weight is a level
    assert torch.equal(quantize_weight(-w), -wq)


def test_bits_order_the_error():
    torch.manual_seed(2)
    model = Toy()
    x = torch.randn(16, 10, 4)
    calibration = [torch.randn(8, 10, 4), x]  # x inside the ranges: rounding error only, no clipping
    err = {b: relative_error(model, quantize_model(model, calibration, weight_bits=b, act_bits=b), x)
           for b in (4, 8, 16)}
    assert err[16] < 1e-4
    assert err[4] > err[8] > err[16]
    assert err[4] > 3 * err[8]


def test_original_model_unchanged_and_copy_is_quantized():
    torch.manual_seed(3)
    model = Toy().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    quantized = quantize_model(model, [torch.randn(4, 6, 4)])
    assert model.training and not quantized.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert quantized.inp.weight.unique().numel() <= 255
    assert not torch.equal(quantized.inp.weight, model.inp.weight)

    outputs = {}
    quantized.retrieval.register_forward_hook(lambda m, a, out: outputs.setdefault("r", out))
    with torch.no_grad():
        y = quantized(torch.randn(5, 6, 4))
    assert outputs["r"].unique().numel() <= 256  # retrieval outputs are quantized
    assert y.unique().numel() <= 256  # so is the last Linear's output


def test_minmax_range_is_overall_min_and_max():
    batches = [torch.randn(100, generator=torch.Generator().manual_seed(s)) * (s + 1) for s in range(4)]
    observer = RangeObserver(parse_range("minmax"))
    for b in batches:
        observer.update(b)
    lo, hi = observer.range()
    assert lo == torch.cat(batches).min() and hi == torch.cat(batches).max()


def test_percentile_range_is_mean_over_batches_and_narrower_than_minmax():
    gen = torch.Generator().manual_seed(5)
    batches = [torch.randn(50_000, generator=gen) for _ in range(3)]
    batches[1][123] = 1000.0  # one outlier
    spec = parse_range("percentile:99.99")
    assert spec == RangeSpec("percentile", 99.99)
    pct, mm = RangeObserver(spec), RangeObserver(parse_range("minmax"))
    for b in batches:
        pct.update(b)
        mm.update(b)
    (p_lo, p_hi), (m_lo, m_hi) = pct.range(), mm.range()
    expected_hi = np.mean([np.percentile(b.numpy(), 99.99) for b in batches])
    expected_lo = np.mean([np.percentile(b.numpy(), 0.01) for b in batches])
    assert p_hi.item() == pytest.approx(expected_hi, rel=1e-4)
    assert p_lo.item() == pytest.approx(expected_lo, rel=1e-4)
    assert m_hi == 1000.0 and p_hi < 5  # the outlier sets min–max but not the percentile range
    assert m_lo < p_lo < p_hi < m_hi


def test_percentile_on_a_tensor_too_big_for_quantile_uses_a_subsample():
    x = torch.rand(3_000_000, generator=torch.Generator().manual_seed(6))  # uniform on [0, 1)
    observer = RangeObserver(parse_range("percentile:99"))
    observer.update(x)
    lo, hi = observer.range()
    assert lo.item() == pytest.approx(0.01, abs=2e-3) and hi.item() == pytest.approx(0.99, abs=2e-3)


def test_percentile_model_quantizes_and_differs_from_minmax():
    torch.manual_seed(7)
    model = Toy()
    calibration = [torch.randn(8, 10, 4) for _ in range(2)]
    x = torch.randn(8, 10, 4)
    err_pct = relative_error(model, quantize_model(model, calibration, act_range="percentile:99.9"), x)
    err_mm = relative_error(model, quantize_model(model, calibration), x)
    assert 0 < err_pct < 0.2 and err_pct != err_mm


@pytest.mark.parametrize("spec", ["", "max", "percentile", "percentile:", "percentile:abc",
                                  "percentile:101", "percentile:50", "minmax:3", "percentile:nan"])
def test_bad_range_spec_raises_user_error(spec):
    with pytest.raises(UserError, match="percentile:P"):
        parse_range(spec)


def test_bad_bits_and_empty_calibration_raise_user_error():
    model = Toy()
    with pytest.raises(UserError, match="weight bits"):
        quantize_model(model, [torch.randn(2, 3, 4)], weight_bits=1)
    with pytest.raises(UserError, match="activation bits"):
        quantize_model(model, [torch.randn(2, 3, 4)], act_bits=8.0)
    with pytest.raises(UserError, match="calibration"):
        quantize_model(model, [])
