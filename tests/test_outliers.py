"""Outlier statistics: kurtosis and ∞-norm against numpy, batch averaging, hook hygiene."""

import numpy as np
import pytest
import torch
from torch import nn

from stanhop.outliers import DEFAULT_MODULE_TYPES, OutlierMonitor, inf_norm, kurtosis, outlier_stats


def numpy_kurtosis(x: np.ndarray) -> np.ndarray:
    x = x.reshape(x.shape[0], -1).astype(np.float64)
    c = x - x.mean(axis=1, keepdims=True)
    return (c**4).mean(axis=1) / ((c**2).mean(axis=1) ** 2 + 1e-6)


class Hopfield(nn.Module):
    """Toy retrieval: softmax attention of state patterns over themselves (named as in hopfield-layers)."""

    def __init__(self, d: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, num_heads=2, batch_first=True)

    def forward(self, x):
        return self.attn(x, x, x)[0]  # (b, t, d) -> (b, t, d)


class Toy(nn.Module):
    def __init__(self, d: int = 8):
        super().__init__()
        self.inp = nn.Linear(3, d)
        self.retrieval = Hopfield(d)
        self.head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, 1))

    def forward(self, x):  # (b, t, 3) -> (b, t, 1)
        return self.head(self.retrieval(self.inp(x)))


def test_kurtosis_and_inf_norm_match_numpy():
    x = torch.randn(5, 4, 7, generator=torch.Generator().manual_seed(0)) * 3 + 1
    np.testing.assert_allclose(kurtosis(x).numpy(), numpy_kurtosis(x.numpy()), rtol=1e-10)
    np.testing.assert_allclose(inf_norm(x).numpy(), np.abs(x.numpy()).reshape(5, -1).max(1))
    assert kurtosis(x).dtype == torch.float64 and kurtosis(x).shape == (5,)


def test_gaussian_kurtosis_is_three():
    x = torch.randn(4, 200_000, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(kurtosis(x), torch.full((4,), 3.0, dtype=torch.float64), atol=0.05)


def test_single_spike_has_kurtosis_about_n():
    n = 1000
    x = torch.randn(2, n, generator=torch.Generator().manual_seed(2)) * 1e-3
    x[:, 17] = 100.0
    k = kurtosis(x)
    np.testing.assert_allclose(k.numpy(), numpy_kurtosis(x.numpy()), rtol=1e-10)
    # one spike among n near-zeros: Bernoulli(1/n) kurtosis = (1 − 3p + 3p²)/(p − p²) ≈ n − 3
    assert torch.all((k > n - 10) & (k < n + 1))
    assert torch.allclose(inf_norm(x), torch.full((2,), 100.0, dtype=torch.float64))


def test_batches_of_different_sizes_average_like_one_batch():
    torch.manual_seed(3)
    model = Toy().double()  # float64 so that kernels for different batch sizes agree exactly
    x = torch.randn(10, 6, 3, dtype=torch.float64)
    x[4, 2] = 50.0  # an outlier sample makes the per-sample weighting matter
    whole = outlier_stats(model, [x])
    split = outlier_stats(model, [x[:1], x[1:7], x[7:]])
    assert whole["per_module"].keys() == split["per_module"].keys()
    for name, stats in whole["per_module"].items():
        for key, value in stats.items():
            assert split["per_module"][name][key] == pytest.approx(value, rel=1e-9)
    assert split["kurtosis_avg"] == pytest.approx(whole["kurtosis_avg"], rel=1e-9)
    assert split["inf_norm_max"] == pytest.approx(whole["inf_norm_max"], rel=1e-12)


def test_summary_matches_direct_computation_and_restores_mode():
    torch.manual_seed(4)
    model = Toy().train()
    x = torch.randn(4, 5, 3)
    stats = outlier_stats(model, [x])
    assert model.training
    assert list(stats["per_module"]) == ["retrieval"]  # only the class named Hopfield
    model.eval()
    with torch.no_grad():
        out = model.retrieval(model.inp(x))
    assert stats["kurtosis_avg"] == pytest.approx(kurtosis(out).mean().item(), rel=1e-9)
    assert stats["per_module"]["retrieval"]["inf_norm_max"] == pytest.approx(inf_norm(out).max().item(), rel=1e-9)
    assert stats["per_module"]["retrieval"]["inf_norm_avg"] == pytest.approx(inf_norm(out).mean().item())
    assert stats["inf_norm_max"] == pytest.approx(inf_norm(out).mean().item())  # the papers' max ∞-norm


def all_hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_hooks_removed_after_context_even_on_error():
    model = Toy()
    with OutlierMonitor(model) as monitor:
        assert all_hooks(model) == 1
        model(torch.randn(2, 4, 3))
    assert all_hooks(model) == 0
    assert monitor.summary()["kurtosis_avg"] > 0
    with pytest.raises(ValueError):
        with OutlierMonitor(model, select=lambda n, m: True):
            assert all_hooks(model) == len(list(model.modules()))
            raise ValueError("boom")
    assert all(not m._forward_hooks for m in model.modules())


def test_selection_by_name_and_fallback_to_leaves():
    model = Toy()
    x = [torch.randn(3, 4, 3)]
    chosen = outlier_stats(model, x, select=lambda name, m: isinstance(m, nn.Linear))
    assert set(chosen["per_module"]) == {"inp", "head.0", "head.2"}
    assert chosen["inf_norm_max"] == max(s["inf_norm_avg"] for s in chosen["per_module"].values())

    mlp = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))  # no Hopfield class: leaves
    assert not any(type(m).__name__ in DEFAULT_MODULE_TYPES for m in mlp.modules())
    leaves = outlier_stats(mlp, [torch.randn(5, 3)])
    assert set(leaves["per_module"]) == {"0", "1", "2"}
    means = [s["kurtosis"] for s in leaves["per_module"].values()]
    assert leaves["kurtosis_avg"] == pytest.approx(sum(means) / 3)
    assert list(outlier_stats(nn.Linear(3, 2), x)["per_module"]) == ["(model)"]  # a leaf root


class SelfAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.mha = nn.MultiheadAttention(4, 1, batch_first=True)

    def forward(self, x):  # (b, t, 4) -> ((b, t, 4), (b, t, t))
        return self.mha(x, x, x)


def test_tuple_outputs_use_first_tensor():
    torch.manual_seed(5)
    model = SelfAttention().eval()
    x = torch.randn(3, 5, 4)
    stats = outlier_stats(model, [x], select=lambda n, m: m is model.mha)
    with torch.no_grad():
        out = model(x)[0]
    assert stats["per_module"]["mha"]["kurtosis"] == pytest.approx(kurtosis(out).mean().item())


def test_summary_without_data_raises():
    with pytest.raises(RuntimeError):
        OutlierMonitor(Toy()).summary()


def test_stanhop_net_counts_each_output_once():
    """A pooling's inner Hopfield returns the pooling's output: only the pooling is measured."""
    from stanhop.config import ModelConfig
    from stanhop.model import STanHopNet

    torch.manual_seed(0)
    cfg = ModelConfig(in_len=24, out_len=12, seg_len=6, win_size=2, d_model=16, d_ff=32, n_heads=2,
                      e_layers=2, factor=3, dropout=0.0, n_series=3)
    stats = outlier_stats(STanHopNet(cfg), [torch.randn(4, 24, 3)])
    names = set(stats["per_module"])
    per_block = {"temporal", "pooling", "cross_series", ""}
    expected = {f"encoder.blocks.{i}{'.' + p if p else ''}" for i in range(2) for p in per_block}
    expected |= {f"decoder.layers.{i}{suffix}" for i in range(3)
                 for suffix in ("", ".cross", *(f".block{'.' + p if p else ''}" for p in per_block))}
    assert names == expected
    assert not any(n.endswith(".hopfield") for n in names)


def test_the_summarys_max_inf_norm_is_the_papers_max_over_modules_of_the_sample_average():
    """PAPERS.md (OutEffHop's code): per module, the ∞-norm averaged over test samples; the
    reported max ∞-norm is the largest of those averages, not the largest single sample's."""

    class Hopfield(nn.Module):  # measured by class name; passes its input on
        def forward(self, x):
            return x

    model = nn.Sequential(Hopfield())
    x = torch.ones(4, 3, 2)
    x[0, 1, 1] = 100.0  # one sample far out; the others' ∞-norm is 1
    stats = outlier_stats(model, [x])
    assert stats["per_module"]["0"]["inf_norm_max"] == 100.0
    assert stats["inf_norm_max"] == pytest.approx((100.0 + 3 * 1.0) / 4)
