"""External memory plugins: memory sets, the retrieval's mathematics, the encoder hook,
Plug-and-Play (λ = 0 is the plain model, exactly), Tune-and-Play (starts as the plain model,
trains only the plugin), saving, and a trained tiny model on a series with rare repeated
bursts, where both plugins must lower the burst error by a clear margin."""

import math

import pytest
import torch
from torch.nn import functional as F

from stanhop import memory as M
from stanhop.config import ModelConfig
from stanhop.errors import UserError
from stanhop.model import STanHopNet
from stanhop.separation import Entmax, Softmax, Sparsemax

IN, OUT = 24, 8


def tiny(**overrides) -> ModelConfig:
    base = dict(in_len=IN, out_len=OUT, seg_len=4, win_size=2, d_model=16, d_ff=32, n_heads=2, e_layers=2, factor=3,
                dropout=0.0, n_series=3)
    return ModelConfig(**{**base, **overrides})




def random_model(seed: int = 0, **overrides) -> STanHopNet:
    torch.manual_seed(seed)
    return STanHopNet(tiny(**overrides)).eval()


def random_memory(n: int = 10, seed: int = 1) -> M.MemorySet:
    g = torch.Generator().manual_seed(seed)
    return M.MemorySet(torch.randn(n, IN, 3, generator=g), torch.randn(n, OUT, 3, generator=g), torch.arange(n) * 100)


# ------------------------------------------------------------------------ memory sets


def test_window_change_and_the_sudden_subset():
    w = torch.zeros(4, 5, 2)
    w[1, 3, 1] = 2.0  # jumps of 2 up and 2 down
    w[2, 4, 0] = -5.0
    w[3] = torch.arange(5.0)[:, None]  # steady ramp: change 1
    torch.testing.assert_close(M.window_change(w), torch.tensor([0.0, 2.0, 5.0, 1.0]))
    # the jump from the last input step into the target counts; steps inside the input do not
    x, y = torch.zeros(20, 6, 1), torch.zeros(20, 3, 1)
    x[:, :-1] = 9.0  # big jump inside every input: ignored
    x[4, -1], y[7, 0] = 3.0, 4.0  # window 4: |0 − 3|; window 7: |4 − 0|
    torch.testing.assert_close(M.sudden_change(x, y)[[4, 7, 0]], torch.tensor([3.0, 4.0, 0.0]))
    mask = M.sudden_mask(x, y)
    assert mask.sum() == 2 and mask[4] and mask[7]  # ceil(10% of 20) = 2


def series_with_spike(rows: int = 200, c: int = 2) -> torch.Tensor:
    t = torch.arange(rows, dtype=torch.float32)
    s = torch.stack([torch.sin(t / 5 + k) for k in range(c)], 1)
    s[rows * 3 // 5, 1] += 6.0  # row 120 of 200
    return s


@pytest.mark.parametrize("strategy", ["random", "all", "extremes", "csv"])
def test_memory_windows_are_the_series_rows_with_their_futures(strategy):
    s = series_with_spike()
    mem = M.select_memory(s, IN, OUT, size=16, strategy=strategy, first_row=1000, seed=3)
    assert mem.windows.shape == (16, IN, 3 - 1) and mem.futures.shape == (16, OUT, 2) and len(mem) == 16
    if strategy == "csv":
        assert (mem.starts == -1).all()
        return
    assert len(set(mem.starts.tolist())) == 16 and (mem.starts.diff() > 0).all()
    for k, start in enumerate(mem.starts.tolist()):
        t = start - 1000
        torch.testing.assert_close(mem.windows[k], s[t : t + IN])
        torch.testing.assert_close(mem.futures[k], s[t + IN : t + IN + OUT])


def test_extremes_are_the_windows_that_show_the_event_in_their_input():
    s = series_with_spike()
    mem = M.select_memory(s, IN, OUT, size=IN, strategy="extremes")
    # the spike at row 120 makes jumps at 119->120 and 120->121: an input shows one iff it holds row 120
    # and one neighbour; exactly IN windows (starts 97..120) hold it, minus none
    expected = torch.arange(120 - IN + 1, 121)
    assert mem.starts.tolist() == expected.tolist()


def test_random_is_seeded_and_all_spreads_evenly():
    s = series_with_spike()
    a = M.select_memory(s, IN, OUT, size=8, strategy="random", seed=5)
    b = M.select_memory(s, IN, OUT, size=8, strategy="random", seed=5)
    c = M.select_memory(s, IN, OUT, size=8, strategy="random", seed=6)
    assert a.starts.tolist() == b.starts.tolist() != c.starts.tolist()
    n = 200 - IN - OUT + 1
    spread = M.select_memory(s, IN, OUT, size=5, strategy="all").starts
    assert spread[0] == 0 and spread[-1] == n - 1 and len(spread) == 5
    assert len(M.select_memory(s, IN, OUT, size=10_000, strategy="all")) == n  # all of them, no more


def test_bad_memory_requests_are_user_errors():
    s = series_with_spike()
    with pytest.raises(UserError, match="memory.size"):
        M.select_memory(s, IN, OUT, size=0, strategy="all")
    with pytest.raises(UserError, match="memory.strategy"):
        M.select_memory(s, IN, OUT, size=4, strategy="biggest")
    with pytest.raises(UserError, match="too few"):
        M.select_memory(s[:IN + OUT - 1], IN, OUT, size=4, strategy="all")


# ------------------------------------------------------------------------ association


@pytest.mark.parametrize("separation", [Softmax(), Entmax(1.5), Sparsemax()])
def test_association_weights_are_a_sub_distribution(separation):
    g = torch.Generator().manual_seed(0)
    state, stored = torch.randn(3, 5, 8, generator=g), torch.randn(3, 7, 8, generator=g)
    p = M.association(state, stored, separation, beta=0.5)
    assert p.shape == (3, 5, 7) and (p >= 0).all() and (p.sum(-1) <= 1 + 1e-6).all()


def test_association_is_softmax_of_distances_against_no_memory():
    g = torch.Generator().manual_seed(0)
    state, stored = torch.randn(2, 4, 6, generator=g, dtype=torch.float64), torch.randn(2, 5, 6, generator=g, dtype=torch.float64)
    beta = 0.3
    scores = -beta / 2 * torch.cdist(state, stored).square()
    expected = scores.exp() / (1 + scores.exp().sum(-1, keepdim=True))  # "no memory" scores exp(0) = 1
    torch.testing.assert_close(M.association(state, stored, Softmax(), beta), expected)


def test_a_memory_equal_to_the_state_ties_with_no_memory_and_far_ones_get_nothing():
    state = torch.randn(1, 1, 10)
    stored = torch.cat([state[0] + 100.0, state[0], state[0] - 100.0])[None]  # far, equal, far
    for separation in (Softmax(), Entmax(1.3), Sparsemax()):
        p = M.association(state, stored, separation, beta=1.0)
        torch.testing.assert_close(p, torch.tensor([[[0.0, 0.5, 0.0]]]))


def test_a_forbidden_memory_gets_no_weight():
    state, stored = torch.zeros(1, 2, 4), torch.zeros(1, 3, 4)
    learned = torch.tensor([[0.0, float("-inf"), 0.0], [float("-inf")] * 3])
    p = M.association(state, stored, Entmax(1.5), 1.0, learned)
    assert p[0, 0, 1] == 0 and p[0, 0, 0] > 0 and (p[0, 1] == 0).all()


# ------------------------------------------------------------------------ the hook


def test_hook_sees_every_block_input_and_leaves_the_model_as_it_was():
    model = random_model()
    keys = set(model.state_dict())
    x = torch.randn(5, IN, 3)
    forecast, inputs = M.block_inputs_and_forecast(model, x)
    assert [h.shape for h in inputs] == [(5, 3, 6, 16), (5, 3, 3, 16)]  # 6 patches, then coarse-grained by 2
    assert torch.equal(forecast, model(x)) and model.encoder.block_hook is None
    torch.testing.assert_close(inputs[0], model.embedding(x))
    # a hook that replaces a block input changes the forecast; the state dict never sees it
    model.encoder.block_hook = lambda i, h: h + 1.0 if i == 1 else h
    assert not torch.allclose(model(x), forecast)
    assert set(model.state_dict()) == keys
    model.encoder.block_hook = None


# ------------------------------------------------------------------------ Plug-and-Play


def test_plug_and_play_with_lambda_zero_is_the_plain_model_exactly():
    model = random_model()
    memory = random_memory()
    plugged = M.plug_and_play(model, memory, lam=0.0, beta=4.0)
    x = torch.cat([memory.windows[:4] + 0.1 * torch.randn(4, IN, 3), torch.randn(4, IN, 3) * 3])  # near memories, and not
    assert torch.equal(plugged(x), model(x))
    plugged.plugin.lam = 0.5
    assert not torch.allclose(plugged(x), model(x))  # the comparison above could fail


def test_plug_and_play_adds_no_parameters_and_keeps_the_model():
    model = random_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plugged = M.plug_and_play(model, random_memory(), lam=1.0)
    assert list(plugged.plugin.parameters()) == []
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("separation", ["entmax", "softmax", "sparsemax"])
def test_a_memory_window_retrieves_its_own_future(separation):
    """With a sharp β every other memory is far; the memory itself ties with "no memory" (p = ½),
    so λ = 2 adds its whole surprise R_k = F_k − f(W_k): the forecast becomes F_k."""
    model = random_model(separation=separation)
    memory = random_memory()
    plugged = M.plug_and_play(model, memory, lam=2.0, beta=100.0)  # not sharper: float32 distances are exact to ~1e-4
    torch.testing.assert_close(plugged(memory.windows), memory.futures, atol=2e-3, rtol=2e-3)
    assert not torch.allclose(model(memory.windows), memory.futures, atol=0.1)


def test_the_stored_patterns_are_the_plain_models_block_inputs_and_surprises():
    model = random_model()
    memory = random_memory()
    patterns, errors = M.memory_patterns(model, memory)
    forecast, inputs = M.block_inputs_and_forecast(model, memory.windows)
    torch.testing.assert_close(patterns[1][2], inputs[1][:, 2].flatten(1))  # series 2, block 1: (m, s·d)
    torch.testing.assert_close(errors, memory.futures - forecast)


def test_choose_plug_takes_the_pair_of_least_validation_mse():
    model = random_model()
    plugged = M.plug_and_play(model, random_memory(seed=2))
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(20, IN, 3, generator=g), torch.randn(20, OUT, 3, generator=g)
    lam, beta, scores = M.choose_plug(plugged, [(x[:7], y[:7]), (x[7:], y[7:])], lambdas=(0.0, 0.5, 1.0), betas=(1.0, 4.0))
    assert (plugged.plugin.lam, plugged.plugin.beta) == (lam, beta)
    assert scores[f"{lam:g}/{beta:g}"] == min(scores.values()) and len(scores) == 6
    for key in ("0/1", "1/4"):  # each score is the MSE of the plugged model at that pair
        plugged.plugin.lam, plugged.plugin.beta = map(float, key.split("/"))
        assert scores[key] == pytest.approx(F.mse_loss(plugged(x), y).item(), rel=1e-5)
    assert scores["0/1"] == scores["0/4"]  # λ = 0: β does not matter


# ------------------------------------------------------------------------ Tune-and-Play


def test_tune_and_play_starts_as_the_plain_model_and_trains_only_the_plugin():
    model = random_model()
    plain = {k: v.clone() for k, v in model.state_dict().items()}
    s = series_with_spike(rows=150, c=3)
    memory = M.select_memory(s, IN, OUT, size=6, strategy="all")
    x = torch.cat([memory.windows[:4] + 0.1 * torch.randn(4, IN, 3), torch.randn(4, IN, 3)])
    tuned = M.tune_and_play(model, memory)
    assert torch.equal(tuned(x), model(x))  # (after freezing: autograd-free kernels may differ by 1e-7)
    losses = M.tune(tuned, s, 0, 150 - IN - OUT + 1, epochs=2, batch_size=16)
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    assert all(torch.equal(plain[k], v) for k, v in model.state_dict().items())  # the backbone is frozen
    assert tuned.plugin.gate.abs().sum() > 0 and not torch.allclose(tuned(x), model(x))  # the plugin moved


def test_a_training_window_never_retrieves_a_memory_that_overlaps_it():
    tuned = M.tune_and_play(random_model(), random_memory())  # memory starts 0, 100, ..., 900
    span = IN + OUT
    ok = tuned.no_overlap(torch.tensor([0, span - 1, span, 450, 100 - span]))
    assert ok.shape == (5, 10)
    assert not ok[0, 0] and not ok[1, 0] and ok[2, 0] and ok[3].all() and ok[4, 0] and ok[4, 1]
    tuned.starts[:] = -1  # memories from a CSV overlap nothing
    assert tuned.no_overlap(torch.tensor([0])).all()


def test_tune_refuses_a_plug_and_play_memory_and_bad_epochs():
    model = random_model()
    s = series_with_spike(rows=100, c=3)
    with pytest.raises(UserError, match="Tune-and-Play"):
        M.tune(M.plug_and_play(model, random_memory()), s, 0, 10, epochs=1)
    with pytest.raises(UserError, match="tune_epochs"):
        M.tune(M.tune_and_play(model, random_memory()), s, 0, 10, epochs=0)


def test_tune_gives_the_same_result_with_and_without_the_cache():
    s = series_with_spike(rows=120, c=3)
    results = []
    for cache_bytes in (0, 2**30):
        tuned = M.tune_and_play(random_model(), random_memory())
        losses = M.tune(tuned, s, 0, 60, epochs=2, batch_size=16, cache_bytes=cache_bytes)
        results.append((losses, tuned.plugin.gate.detach().clone()))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    torch.testing.assert_close(results[0][1], results[1][1])


# ------------------------------------------------------------------------ saving


@pytest.mark.parametrize("kind", ["plug", "tune"])
def test_a_saved_plugin_reattaches_with_identical_forecasts(tmp_path, kind):
    model = random_model()
    if kind == "plug":
        forecaster = M.plug_and_play(model, random_memory(), lam=0.5, beta=16.0)
    else:
        forecaster = M.tune_and_play(model, random_memory())
        M.tune(forecaster, series_with_spike(rows=120, c=3), 0, 60, epochs=1, batch_size=16)
    M.save_memory(forecaster, tmp_path, {"strategy": "random", "size": 10})
    assert {p.name for p in tmp_path.iterdir()} == {M.MEMORY_WEIGHTS, M.MEMORY_SETTINGS}
    fresh = random_model()
    fresh.load_state_dict(model.state_dict())
    loaded = M.load_memory(fresh, tmp_path)
    assert isinstance(loaded, M.MemoryForecaster) and loaded.kind == kind
    x = torch.randn(5, IN, 3)
    assert torch.equal(loaded(x), forecaster(x))


def test_load_memory_without_one_is_the_model_and_a_damaged_one_is_a_user_error(tmp_path):
    model = random_model()
    assert M.load_memory(model, tmp_path) is model
    M.save_memory(M.plug_and_play(model, random_memory(), lam=1.0), tmp_path)
    (tmp_path / M.MEMORY_WEIGHTS).write_bytes(b"not safetensors")
    with pytest.raises(UserError, match="memory plugin"):
        M.load_memory(model, tmp_path)


# ------------------------------------------------------------------------ bursts

BURST = torch.tensor([0, 1.5, 3, 3.5, 3, 1, -1, -2.5, -3, -2, -0.5, 0.5, 1, 0.5, 0, 0])
TRAIN, VAL, TEST = (0, 1080), (1080, 1440), (1440, 1800)
BURSTS = {"train": (150, 400, 650, 900), "val": (1200,), "test": (1500, 1680)}


def burst_series() -> torch.Tensor:
    """Three sines (periods 12, 17, 24) with noise, plus one burst shape (scaled 1, 0.7, −0.5 per
    series) four times in training, once in validation, twice in test."""
    g = torch.Generator().manual_seed(0)
    t = torch.arange(1800, dtype=torch.float32)
    s = torch.stack([torch.sin(2 * math.pi * t / p) for p in (12, 17, 24)], 1) + 0.1 * torch.randn(1800, 3, generator=g)
    for p in sum(BURSTS.values(), ()):
        s[p : p + len(BURST)] += BURST[:, None] * torch.tensor([1.0, 0.7, -0.5])
    return s


def part_windows(s, part, bounds):
    first = bounds[0] if part == "train" else bounds[0] - IN  # val/test inputs reach back into the previous part
    w = M.spans(s[first : bounds[1]], IN + OUT)
    return w[:, :IN], w[:, IN:], torch.arange(len(w)) + first


@pytest.fixture(scope="module")
def burst_setup():
    s = burst_series()
    x, y, _ = part_windows(s, "train", TRAIN)
    torch.manual_seed(0)
    model = STanHopNet(tiny())
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        idx = torch.randint(0, len(x), (32,), generator=g)
        loss = F.mse_loss(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return s, model.eval()


def burst_windows(starts: torch.Tensor) -> torch.Tensor:
    """Test windows whose target runs through a burst that has already begun in the input."""
    first_target = starts + IN
    return torch.stack([(first_target > p + 1) & (first_target < p + len(BURST)) for p in BURSTS["test"]]).any(0)


@pytest.mark.parametrize("kind", ["plug", "tune"])
def test_both_plugins_lower_the_error_on_bursts(burst_setup, kind):
    s, model = burst_setup
    memory = M.select_memory(s[: TRAIN[1]], IN, OUT, size=64, strategy="extremes")
    if kind == "plug":
        forecaster = M.plug_and_play(model, memory)
        M.choose_plug(forecaster, [part_windows(s, "val", VAL)[:2]])
    else:
        forecaster = M.tune_and_play(model, memory)
        M.tune(forecaster, s, 0, TRAIN[1] - IN - OUT + 1, epochs=10)
    x, y, starts = part_windows(s, "test", TEST)
    with torch.no_grad():
        plugged, plain = forecaster.both(x)
    burst = burst_windows(starts)
    mse = lambda f, m: (f[m] - y[m]).square().mean().item()  # noqa: E731
    assert burst.sum() == 28
    # measured: plain 0.768; plug 0.366 (λ 2, β₀ 16), tune 0.396
    assert mse(plugged, burst) < 0.6 * mse(plain, burst), kind
    assert mse(plugged, torch.ones_like(burst)) < mse(plain, torch.ones_like(burst))  # and no worse overall
    report = M.memory_report(forecaster, [(x[:200], y[:200]), (x[200:], y[200:])])
    assert report["sudden_windows"] == math.ceil(0.1 * len(x))
    assert report["test_mse_plain"] == pytest.approx(mse(plain, torch.ones_like(burst)), rel=1e-5)
    # measured sudden-event MSE: plain 1.49; plug 1.19, tune 1.22
    assert report["sudden_mse"] < 0.9 * report["sudden_mse_plain"]


def test_a_memory_larger_than_the_windows_there_are_holds_them_all_and_says_so(capsys):
    from stanhop.memory import select_memory

    series = torch.randn(40, 2)  # 40 - (8 + 4) + 1 = 29 windows
    memory = select_memory(series, 8, 4, size=1000, strategy="random")
    assert len(memory) == 29
    assert "memory.size 1000 is more than the 29 windows there are to choose from" in capsys.readouterr().err
