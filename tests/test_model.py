"""STanHop-Net: shapes, padding, every separation forward and backward, and a shared
harness that trains each variant a few dozen steps on a tiny coupled-sine series."""

import math

import pytest
import torch

from einops import rearrange

from stanhop.config import CROSS_SERIES, SEPARATIONS, ModelConfig
from stanhop.hopfield import HopfieldLayer, HopfieldPooling
from stanhop.model import CoarseGrain, PatchEmbedding, STanHopBlock, STanHopNet


def tiny(**overrides) -> ModelConfig:
    base = dict(in_len=24, out_len=8, seg_len=4, win_size=2, d_model=16, d_ff=32, n_heads=2, e_layers=2, factor=3, dropout=0.0, n_series=3)
    return ModelConfig(**{**base, **overrides})


@pytest.mark.parametrize(
    "c, in_len, out_len, seg_len, win_size, e_layers",
    [(3, 24, 8, 4, 2, 2), (1, 30, 7, 4, 2, 2), (5, 17, 3, 6, 3, 3), (2, 12, 12, 12, 1, 1), (7, 168, 24, 6, 4, 2)],
)
@pytest.mark.parametrize("cross_series", CROSS_SERIES)
def test_output_shape_for_any_lengths_including_padding(c, in_len, out_len, seg_len, win_size, e_layers, cross_series):
    cfg = tiny(n_series=c, in_len=in_len, out_len=out_len, seg_len=seg_len, win_size=win_size, e_layers=e_layers,
               cross_series=cross_series)
    model = STanHopNet(cfg)
    assert model(torch.randn(2, in_len, c)).shape == (2, out_len, c)


def _temporal_stage(block: STanHopBlock, x):  # (b, c, s, d) -> ((b s), c, d), as the block's first stage
    b = x.shape[0]
    z = rearrange(x, "b c s d -> (b c) s d")
    z = block.norms[0](z + block.temporal(z))
    z = block.norms[1](z + block.mlp_temporal(z))
    return rearrange(z, "(b c) s d -> (b s) c d", b=b)


def _closing(block: STanHopBlock, u, b):  # LN(u + MLP(u)), back to (b, c, s, d)
    u = block.norms[2](u)
    return rearrange(block.norms[3](u + block.mlp_cross(u)), "(b s) c d -> b c s d", b=b)


def test_cross_series_stage_as_stanhop_writes_it():
    """PAPERS.md (and STanHop's public code): h = GSHPooling(s), every series retrieving from
    `factor` learned stored patterns; out = LN(h + drop(GSH(s, s))) -> + MLP -> LN."""
    torch.manual_seed(0)
    block = STanHopBlock(tiny(n_series=5, factor=3, cross_series="stanhop")).eval()
    assert isinstance(block.pooling, HopfieldLayer) and block.pooling.memories.shape == (3, 16)
    x = torch.randn(2, 5, 4, 16)
    s = _temporal_stage(block, x)  # (8, 5, 16)
    h = block.pooling.hopfield(s, block.pooling.memories[None])  # c rows: each series' retrieval
    assert h.shape == s.shape
    expected = _closing(block, h + block.cross_series(s, s), 2)
    torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=1e-5)
    # series talk to each other: changing series 0 changes the others' outputs
    x2 = x.clone()
    x2[:, 0] += 1.0
    assert (block(x2)[:, 1:] - block(x)[:, 1:]).abs().max() > 1e-3


def test_cross_series_stage_as_a_router():
    """Crossformer's router: `factor` learned state patterns pool the series (factor rows), which
    retrieve from them; out = LN(s + drop(GSH(s, Pool(s)))) -> + MLP -> LN."""
    torch.manual_seed(0)
    block = STanHopBlock(tiny(n_series=5, factor=3, cross_series="router")).eval()
    assert isinstance(block.pooling, HopfieldPooling)
    x = torch.randn(2, 5, 4, 16)
    s = _temporal_stage(block, x)
    pooled = block.pooling(s)
    assert pooled.shape == (8, 3, 16)
    expected = _closing(block, s + block.cross_series(s, pooled), 2)
    torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=1e-5)


def test_front_padding_repeats_the_first_step():
    cfg = tiny(in_len=10, seg_len=4)  # 2 steps of padding -> 3 patches
    embed = PatchEmbedding(cfg)
    x = torch.randn(1, 10, 3)
    padded = torch.cat([x[:, :1], x[:, :1], x], dim=1)
    unpadded = PatchEmbedding(tiny(in_len=12, seg_len=4))
    unpadded.load_state_dict(embed.state_dict())
    torch.testing.assert_close(embed(x), unpadded(padded))


def test_coarse_grain_merges_neighbouring_patches():
    merge = CoarseGrain(d_model=4, win_size=2)
    x = torch.randn(2, 3, 5, 4)  # 5 patches -> padded to 6 -> 3
    out = merge(x)
    assert out.shape == (2, 3, 3, 4)
    # the first merged patch depends only on patches 0 and 1
    x2 = x.clone()
    x2[:, :, 2:] += 1.0
    torch.testing.assert_close(merge(x2)[:, :, 0], out[:, :, 0])


@pytest.mark.parametrize("separation", SEPARATIONS)
@pytest.mark.parametrize("gate", [False, True])
def test_every_separation_and_gate_runs_forward_and_backward(separation, gate):
    torch.manual_seed(0)
    model = STanHopNet(tiny(separation=separation, gate=gate, dropout=0.1))
    x = torch.randn(4, 24, 3) * 10
    loss = model(x).square().mean()
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_instance_norm_forecasts_each_window_on_its_own_level_and_spread():
    """RevIN: a series moved and stretched in the input comes out moved and stretched the same
    way, f(a·x + b) = a·f(x) + b per series (a > 0, where a²σ² ≫ its ε); the learned affine map is trained too."""
    torch.manual_seed(0)
    model = STanHopNet(tiny(instance_norm=True)).eval()
    x = torch.randn(4, 24, 3, dtype=torch.float64)
    model = model.double()
    a, b = torch.tensor([1.0, 50.0, 3.0], dtype=torch.float64), torch.tensor([0.0, -300.0, 7.0], dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model(a * x + b), a * model(x) + b, rtol=1e-4, atol=1e-4)  # (σ² + 1e-5: not exact)
        plain = STanHopNet(tiny())
        plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("instance_norm.")})
        assert not torch.allclose(plain.double()(x + 100.0), plain.double()(x) + 100.0, atol=1.0)  # without it: no
    model.train()
    model(x).square().mean().backward()
    assert model.instance_norm.weight.grad.abs().sum() > 0 and model.instance_norm.bias.grad.abs().sum() > 0


def test_all_parameters_initialised_for_several_seeds():
    for seed in range(5):
        torch.manual_seed(seed)
        model = STanHopNet(tiny())
        assert all(torch.isfinite(p).all() and p.abs().max() < 100 for p in model.parameters())


def coupled_sines(n_steps: int = 600, c: int = 3, seed: int = 0) -> torch.Tensor:
    """Sine waves with different periods; each series also carries a lagged copy of the previous one."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n_steps, dtype=torch.float32)
    base = torch.stack([torch.sin(2 * math.pi * t / p) for p in (12, 17, 24)[:c]], dim=1)
    coupled = base + 0.5 * torch.roll(base, shifts=(3, 1), dims=(0, 1))
    return coupled + 0.05 * torch.randn(n_steps, c, generator=g)


def windows(series: torch.Tensor, in_len: int, out_len: int):
    idx = torch.arange(0, len(series) - in_len - out_len + 1)
    x = torch.stack([series[i : i + in_len] for i in idx])
    y = torch.stack([series[i + in_len : i + in_len + out_len] for i in idx])
    return x, y


@pytest.mark.parametrize("separation, gate, cross_series",
                         [(s, False, "router") for s in SEPARATIONS] + [("softmax1", True, "router"),
                                                                         ("entmax", False, "stanhop")])
def test_training_harness_loss_falls(separation, gate, cross_series):
    torch.manual_seed(0)
    cfg = tiny(separation=separation, gate=gate, cross_series=cross_series)
    model = STanHopNet(cfg)
    x, y = windows(coupled_sines(), cfg.in_len, cfg.out_len)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(60):
        idx = torch.randint(0, len(x), (32,), generator=g)
        loss = torch.nn.functional.mse_loss(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    start, end = sum(losses[:3]) / 3, sum(losses[-5:]) / 5
    assert end < 0.35 * start, (separation, start, end)
