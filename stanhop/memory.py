"""External memory plugins of STanHop-Net: Plug-and-Play (train-less) and Tune-and-Play (fine-tuned).

STanHop (Wu et al., ICLR 2024) gives each block an optional external memory that helps the
model respond to sudden events; memories have the input's length. Its code has none; this is
our design (the model issue, adapted where measurements said so, see below).

Memory set: K windows of in_len steps from the training split, each with the out_len steps
that follow it (its future F_k), chosen by a strategy:
    random    K windows drawn without replacement (seeded);
    all       every window, or K evenly spaced ones when there are more;
    extremes  the K windows whose *input* holds the largest change — a sudden event that a
              retrieval can see (a window whose event lies wholly in its future looks
              ordinary, and ordinary inputs would retrieve it). One jump is in every window
              that holds it, so the K may be shifts of a few events: kept so, as an input
              retrieves the memory whose event sits where its own does (one window per event
              lost the plugins' gain on tests/test_memory.py's bursts: Plug-and-Play's burst
              MSE 0.748 against the plain 0.768, where shifts give 0.366);
    csv       the windows of a series the user gives (read and scaled by the caller).
change(w) = max_{t ≥ 1, c} |w[t, c] − w[t−1, c]|, scaled units (`window_change`).

Retrieval, at every encoder block (the hook `Encoder.block_hook` reads each block's input x_i
(b, c, s_i, d) after coarse-graining). Stored patterns M_i (m, c, s_i, d) are the plain model's
own block-i inputs on the memory windows; per series, the state pattern ξ = vec x_i[b, c]
retrieves with block i's own separation (for entmax: that block's learned α), the state
pattern itself competing as "no memory" (`association`):
    p_i = sep_i([−β_i/2 ‖ξ − y_k‖²]_k ⧺ [0]),  β_i = β₀/√(s_i·d).
Pattern projections are the memories' surprises R_k = F_k − f(W_k), the plain model f's error
on each memory's future: the memory brings what the model could not foresee.

Plug-and-Play (no new parameters):  ŷ ← ŷ + λ · mean_i Σ_k p_ik R_k, with (λ, β₀) chosen on the
validation split from small grids; λ = 0 is the plain model, exactly.
Tune-and-Play (backbone frozen): the same retrieval with learned β_i and a learned per-series
gate g_c in place of λ, starting at 0 (the plain model), optionally a learned low-rank
association; fine-tuned by MSE on the training split, where a window never retrieves a memory
whose span overlaps its own.

Why not the issue's first suggestion (mix the retrieved block input into the block input)?
Measured on bursts (tests/test_memory.py's series): the best λ on validation was 0 and burst
MSE moved 0.768 → 0.767 at best — a retrieved *input* pattern cannot tell the decoder what
follows the event. Plain dot-product association ξ·y (with or without ξ·ξ competing) gave
ordinary windows as much memory weight as bursts (the block inputs are layer-normalised and
share a position embedding); the distance form with "no memory" separates them.

Axes: n windows, m memories (K), b batch, c series, s segments, d width, t time steps,
e flattened pattern width (s·d).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn
from torch.nn import functional as F

from stanhop.errors import UserError, cited, notice_to_stderr
from stanhop.runs import MEMORY_SETTINGS, MEMORY_WEIGHTS

LAMBDAS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)  # Plug-and-Play's λ grid
BETAS = (1.0, 4.0, 16.0, 64.0)  # Plug-and-Play's β₀ grid: β_i = β₀/√(s_i·d)
TUNE_BETA = 16.0  # Tune-and-Play's starting β₀
SUDDEN_FRACTION = 0.1  # the sudden-event subset: the top 10% of windows by `sudden_change`
MEMORY_FORMAT = 1


# ------------------------------------------------------------------------ memory set


@dataclass
class MemorySet:
    """K memory windows with their futures, scaled like the model's input."""

    windows: Tensor  # (m, in_len, c)
    futures: Tensor  # (m, out_len, c)
    starts: Tensor  # (m,) series row of each window's first step; -1 when not from the series

    def __len__(self) -> int:
        return len(self.windows)


def window_change(w: Tensor) -> Tensor:
    """change(w) = max_{t ≥ 1, c} |w[t, c] − w[t−1, c]|: (n, t, c) -> (n,); a step from or to a
    NaN (a target a fill made up) counts as no change."""
    return (w[:, 1:] - w[:, :-1]).abs().nan_to_num(nan=0.0).flatten(1).amax(1)


def sudden_change(x: Tensor, y: Tensor) -> Tensor:
    """The change of a target window: change([x_last, y_1, …, y_out_len]), the largest one-step
    jump of any series from the last input step through the horizon: (n, t_in | 1, c), (n, t_out, c) -> (n,)."""
    return window_change(torch.cat([x[:, -1:], y], dim=1))


def sudden_mask(x: Tensor, y: Tensor, fraction: float = SUDDEN_FRACTION) -> Tensor:
    """The sudden-event subset: the ceil(fraction·n) windows of largest `sudden_change` (ties: earlier first)."""
    change = sudden_change(x, y)
    top = torch.sort(change, descending=True, stable=True).indices[: math.ceil(fraction * len(change))]
    return torch.zeros_like(change, dtype=torch.bool).index_fill_(0, top, True)


def spans(series: Tensor, length: int) -> Tensor:
    """Every window of ``length`` rows, a view: (rows, c) -> (rows − length + 1, length, c)."""
    return rearrange(series.unfold(0, length, 1), "n c t -> n t c")


def select_memory(series: Tensor | list[Tensor], in_len: int, out_len: int, *, size: int, strategy: str, seed: int = 0,
                  first_row: int = 0) -> MemorySet:
    """K = ``size`` memory windows (with futures) of the scaled rows ``series`` (rows, c).

    ``strategy``: random | all | extremes | csv (as all, for a series the user gave; its starts
    are -1), see the module docstring. ``first_row`` is the row of ``series[0]`` in the whole
    series (for `MemorySet.starts`). Fewer than K windows come back when the rows hold fewer.
    A list of series (a CSV's stretches without gaps, strategy csv) gives windows within each.
    """
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise UserError(f"memory.size must be a positive whole number, got {cited(size)}")
    parts = list(series) if isinstance(series, (list, tuple)) else [series]
    usable = [part for part in parts if len(part) >= in_len + out_len]
    if not usable:
        longest = max((len(part) for part in parts), default=0)
        raise UserError(f"the memory series has {longest} rows{' in its longest stretch' if len(parts) > 1 else ''}, "
                        f"too few for one window of {in_len} + {out_len} steps")
    candidates = torch.cat([spans(part, in_len + out_len) for part in usable])  # n (in_len + out_len) c
    n = len(candidates)
    if size > n:
        notice_to_stderr(f"memory.size {size} is more than the {n} windows there are to choose from: the memory "
                         f"holds all {n}")
    if strategy == "random":
        chosen = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:size]
    elif strategy in ("all", "csv"):
        chosen = torch.arange(n) if n <= size else torch.linspace(0, n - 1, size).round().long().unique()
    elif strategy == "extremes":
        chosen = torch.sort(window_change(candidates[:, :in_len]), descending=True, stable=True).indices[:size]
    else:
        raise UserError(f"memory.strategy must be random, all, extremes or csv, got {cited(strategy)}")
    chosen = chosen.sort().values
    picked = candidates[chosen]
    starts = torch.full_like(chosen, -1) if strategy == "csv" else chosen + first_row
    return MemorySet(picked[:, :in_len].contiguous(), picked[:, in_len:].contiguous(), starts)


# ------------------------------------------------------------------------ retrieval


def association(state: Tensor, stored: Tensor, separation: nn.Module, beta: Tensor | float,
                learned: Tensor | None = None) -> Tensor:
    """Weights of state patterns on stored patterns, with "no memory" as a competitor:

        p = sep([−β/2 ‖ξ − y_k‖² + a_k]_k ⧺ [0])  without its last entry,

    (..., b, e), (..., m, e) -> (..., b, m). The appended score 0 is the state pattern itself
    (distance 0), whose pattern projection is zero — Softmax₁'s extra pattern, for any
    separation: a memory gets weight only when it is about as close to ξ as ξ is to itself;
    otherwise Σ_k p_k ≈ 0. ``learned`` (broadcast to (..., b, m)) adds an association a_k
    (Tune-and-Play's; -inf forbids a memory).
    """
    distance = state.square().sum(-1, keepdim=True) - 2 * state @ stored.transpose(-2, -1) + stored.square().sum(-1)[..., None, :]
    scores = -0.5 * beta * distance.clamp_min(0.0)  # ‖ξ − y‖², smooth everywhere (cdist is not, at 0)
    if learned is not None:
        scores = scores + learned
    return separation(F.pad(scores, (0, 1)), dim=-1)[..., :-1]


def _per_series(x: Tensor) -> Tensor:
    return rearrange(x, "b c s d -> c b (s d)")


class PlugAndPlay(nn.Module):
    """Train-less retrieval of the memories' surprises (buffers only, no parameters).

        ŷ ← ŷ + λ · mean_i Σ_k p_ik R_k,  p_i = association(vec x_i[b, c], vec M_i[:, c], sep_i, β₀/√e_i)

    ``patterns``: per block, the stored patterns (c, m, e_i); ``errors`` R (m, t, c).
    λ = 0 returns ŷ untouched.
    """

    def __init__(self, patterns: Sequence[Tensor], errors: Tensor, lam: float = 0.0, beta: float = 4.0):
        super().__init__()
        for i, pattern in enumerate(patterns):
            self.register_buffer(f"pattern_{i}", pattern.detach().clone())
        self.register_buffer("errors", errors.detach().clone())
        self.n_blocks = len(patterns)
        self.lam, self.beta = float(lam), float(beta)

    def stored(self, i: int) -> Tensor:
        return getattr(self, f"pattern_{i}")  # (c, m, e_i)

    def weights(self, inputs: Sequence[Tensor], separations: Sequence[nn.Module], beta: float | None = None) -> Tensor:
        # block inputs [(b, c, s_i, d)] -> association averaged over the blocks (b, c, m)
        beta = self.beta if beta is None else beta
        per_block = [association(_per_series(x), self.stored(i), sep, beta / math.sqrt(self.stored(i).shape[-1]))
                     for i, (x, sep) in enumerate(zip(inputs, separations))]
        return rearrange(torch.stack(per_block).mean(0), "c b m -> b c m")

    def correction(self, weights: Tensor) -> Tensor:
        # (b, c, m) -> Σ_k p_k R_k (b, t, c)
        return torch.einsum("bcm,mtc->btc", weights, self.errors)

    def forward(self, inputs: Sequence[Tensor], forecast: Tensor, separations: Sequence[nn.Module]) -> Tensor:
        # block inputs [(b, c, s_i, d)], forecast (b, t, c) -> (b, t, c)
        if self.lam == 0.0:
            return forecast
        return forecast + self.lam * self.correction(self.weights(inputs, separations))


class TuneAndPlay(nn.Module):
    """Plug-and-Play's retrieval with learned parts, fine-tuned while the backbone is frozen.

        ŷ ← ŷ + g_c · mean_i Σ_k p_ik R_k,
        p_i = association(ξ, Y, sep_i, β_i, a),  a_k = (W_q ξ)·(W_k y_k)/√r  (rank r > 0 only),

    with β_i (learned, from β₀/√e_i), the per-series gate g (c,) starting at 0 (the plugin
    starts as the plain model) and, when ``rank`` > 0, each block's own projections W_q, W_k
    (W_k starting at 0, so a starts at 0). Rank 0 is the default: on the burst series of the
    tests a learned association (rank 4 or 16) made burst MSE worse (0.49–0.67 vs 0.39–0.40).
    """

    def __init__(self, patterns: Sequence[Tensor], errors: Tensor, *, beta: float = TUNE_BETA, rank: int = 0):
        super().__init__()
        self.plug = PlugAndPlay(patterns, errors, lam=1.0, beta=beta)
        widths = [p.shape[-1] for p in patterns]
        self.log_beta = nn.Parameter(torch.tensor([math.log(beta / math.sqrt(e)) for e in widths]))
        self.gate = nn.Parameter(torch.zeros(errors.shape[-1]))
        self.rank = rank
        self.q = nn.ModuleList(nn.Linear(e, rank, bias=False) for e in widths) if rank else None
        self.k = nn.ModuleList(nn.Linear(e, rank, bias=False) for e in widths) if rank else None
        for k in self.k or ():
            nn.init.zeros_(k.weight)

    def forward(self, inputs: Sequence[Tensor], forecast: Tensor, separations: Sequence[nn.Module],
                mask: Tensor | None = None) -> Tensor:
        # block inputs [(b, c, s_i, d)], forecast (b, t, c), mask (b, m) True = may retrieve -> (b, t, c)
        per_block = []
        for i, (x, separation) in enumerate(zip(inputs, separations)):
            state, stored = _per_series(x), self.plug.stored(i)  # c b e, c m e
            learned = self.q[i](state) @ self.k[i](stored).transpose(1, 2) / math.sqrt(self.rank) if self.rank else None
            if mask is not None:
                learned = torch.where(mask, 0.0 if learned is None else learned, float("-inf"))
            per_block.append(association(state, stored, separation, self.log_beta[i].exp(), learned))
        weights = rearrange(torch.stack(per_block).mean(0), "c b m -> b c m")
        return forecast + self.gate * self.plug.correction(weights)


class MemoryForecaster(nn.Module):
    """A trained STanHopNet with a memory plugin: (b, in_len, c) -> (b, out_len, c).

    ``model`` is the backbone, ``plugin`` a PlugAndPlay or TuneAndPlay, ``memory`` the memory
    set they were built from. ``plain(x)`` is the backbone alone; ``both(x)`` gives both
    forecasts from one backbone pass.
    """

    def __init__(self, model: nn.Module, plugin: PlugAndPlay | TuneAndPlay, memory: MemorySet):
        super().__init__()
        self.model, self.plugin, self.cfg = model, plugin, model.cfg
        self.register_buffer("windows", memory.windows.detach().clone())
        self.register_buffer("futures", memory.futures.detach().clone())
        self.register_buffer("starts", memory.starts.detach().clone())

    @property
    def kind(self) -> str:
        return "plug" if isinstance(self.plugin, PlugAndPlay) else "tune"

    @property
    def memory(self) -> MemorySet:
        return MemorySet(self.windows, self.futures, self.starts)

    @property
    def separations(self) -> list[nn.Module]:
        """Each encoder block's temporal separation (for entmax: its learned α)."""
        return [block.temporal.separation for block in self.model.encoder.blocks]

    def plain(self, x: Tensor) -> Tensor:
        return self.model(x)

    def forward(self, x: Tensor, starts: Tensor | None = None) -> Tensor:
        # x (b, in_len, c), starts (b,): the inputs' rows when they come from the memory's own series
        return self.both(x, starts)[0]

    def both(self, x: Tensor, starts: Tensor | None = None) -> tuple[Tensor, Tensor]:
        # x (b, in_len, c) -> forecasts with and without the plugin, (b, out_len, c) each
        forecast, inputs = block_inputs_and_forecast(self.model, x)
        return self.apply_plugin(inputs, forecast, starts), forecast

    def apply_plugin(self, inputs: Sequence[Tensor], forecast: Tensor, starts: Tensor | None = None) -> Tensor:
        if isinstance(self.plugin, PlugAndPlay):
            return self.plugin(inputs, forecast, self.separations)
        return self.plugin(inputs, forecast, self.separations, self.no_overlap(starts))

    def no_overlap(self, starts: Tensor | None) -> Tensor | None:
        """(b, m) True where memory k's span (input + future) does not overlap window b's."""
        if starts is None:
            return None
        span = self.windows.shape[1] + self.futures.shape[1]
        return ((starts[:, None] - self.starts[None, :]).abs() >= span) | (self.starts[None, :] < 0)


def block_inputs_and_forecast(model: nn.Module, x: Tensor) -> tuple[Tensor, list[Tensor]]:
    """The model's forecast (b, out_len, c) and its input to every encoder block [(b, c, s_i, d)]."""
    inputs: list[Tensor] = []

    def record(i: int, h: Tensor) -> Tensor:
        inputs.append(h)
        return h

    encoder = model.encoder
    encoder.block_hook = record
    try:
        forecast = model(x)
    finally:
        encoder.block_hook = None
    return forecast, inputs


def backbone(model: nn.Module) -> nn.Module:
    """The STanHop-Net of a run's model, with or without a memory plugin around it."""
    return model.model if isinstance(model, MemoryForecaster) else model


@torch.no_grad()
def backbone_outputs(model: nn.Module, x: Tensor, batch_size: int = 256) -> tuple[Tensor, list[Tensor]]:
    """`block_inputs_and_forecast` of the model in eval mode, in batches: (n, out_len, c), [(n, c, s_i, d)].
    Each batch runs where the model is (e.g. a GPU); the results come back to x's device."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    parts = [block_inputs_and_forecast(model, chunk.to(device)) for chunk in x.split(batch_size)]
    model.train(was_training)
    forecast, inputs = torch.cat([f for f, _ in parts]), [torch.cat(h) for h in zip(*(h for _, h in parts))]
    return forecast.to(x.device), [h.to(x.device) for h in inputs]


def memory_patterns(model: nn.Module, memory: MemorySet) -> tuple[list[Tensor], Tensor]:
    """Stored patterns per block (c, m, s_i·d) and surprises R = F − f(W) (m, out_len, c) of a memory set."""
    forecast, inputs = backbone_outputs(model, memory.windows)
    return [rearrange(h, "m c s d -> c m (s d)") for h in inputs], memory.futures - forecast


def plug_and_play(model: nn.Module, memory: MemorySet, *, lam: float = 0.0, beta: float = 4.0) -> MemoryForecaster:
    """Plug-and-Play on a trained model (λ = 0 until `choose_plug` picks it)."""
    patterns, errors = memory_patterns(model, memory)
    return MemoryForecaster(model, PlugAndPlay(patterns, errors, lam, beta), memory)


def tune_and_play(model: nn.Module, memory: MemorySet, *, beta: float = TUNE_BETA, rank: int = 0,
                  seed: int = 0) -> MemoryForecaster:
    """Tune-and-Play on a trained model, not yet tuned (see `tune`); freezes the backbone."""
    model.requires_grad_(False).eval()
    patterns, errors = memory_patterns(model, memory)
    torch.manual_seed(seed)
    return MemoryForecaster(model, TuneAndPlay(patterns, errors, beta=beta, rank=rank), memory)


# ------------------------------------------------------------------------ fitting


@torch.no_grad()
def choose_plug(forecaster: MemoryForecaster, batches: Iterable[tuple[Tensor, Tensor]], lambdas: Sequence[float] = LAMBDAS,
                betas: Sequence[float] = BETAS) -> tuple[float, float, dict[str, float]]:
    """Plug-and-Play's λ and β₀: the grid pair of least validation MSE (ties: smaller λ, then β₀).

    Returns (λ, β₀, {"λ/β₀": validation MSE}) and sets them on the plugin. The backbone runs
    once per batch; every pair reuses its forecast and block inputs.
    """
    plug = forecaster.plugin
    if not isinstance(plug, PlugAndPlay):
        raise UserError("λ is chosen for a Plug-and-Play memory only; a Tune-and-Play memory is tuned instead")
    forecaster.eval()
    sums = torch.zeros(len(betas), len(lambdas), dtype=torch.float64)
    n = 0
    device = forecaster.windows.device
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        forecast, inputs = block_inputs_and_forecast(forecaster.model, x)
        for j, beta in enumerate(betas):
            correction = plug.correction(plug.weights(inputs, forecaster.separations, beta))
            for i, lam in enumerate(lambdas):
                sums[j, i] += (forecast + lam * correction - y).double().square().nansum().item()  # NaN: made up
        n += int((~y.isnan()).sum())
    scores = {(float(lam), float(beta)): sums[j, i].item() / max(n, 1) for j, beta in enumerate(betas) for i, lam in enumerate(lambdas)}
    plug.lam, plug.beta = min(scores, key=lambda pair: (scores[pair], pair))  # (λ, β₀)
    return plug.lam, plug.beta, {f"{lam:g}/{beta:g}": mse for (lam, beta), mse in scores.items()}


def tune(forecaster: MemoryForecaster, series: Tensor, first: int, count: int, *, epochs: int,
         batch_size: int = 32, lr: float = 1e-2, seed: int = 0, cache_bytes: int = 2**29) -> list[float]:
    """Fine-tune a Tune-and-Play plugin (backbone frozen) by MSE on the ``count`` windows of
    the scaled ``series`` (rows, c) whose inputs start at rows first, first + 1, …; a window
    never retrieves a memory overlapping it. Returns each epoch's mean training loss.

    The frozen backbone's forecasts and block inputs are computed once and reused by every
    epoch when they take at most ``cache_bytes``; otherwise the backbone runs on every batch.
    """
    if not isinstance(forecaster.plugin, TuneAndPlay):
        raise UserError("only a Tune-and-Play memory can be tuned; build it with memory kind 'tune'")
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise UserError(f"memory.tune_epochs must be a positive whole number, got {cited(epochs)}")
    in_len, out_len = forecaster.windows.shape[1], forecaster.futures.shape[1]
    data = spans(series[first : first + count + in_len + out_len - 1], in_len + out_len)
    device = forecaster.windows.device
    forecaster.eval()  # the backbone's dropout stays off; the plugin has none
    per_window = 4 * (out_len * series.shape[1] + sum(p.shape[0] * p.shape[2] for p in map(forecaster.plugin.plug.stored, range(forecaster.plugin.plug.n_blocks))))
    cached = backbone_outputs(forecaster.model, data[:, :in_len].to(device)) if per_window * len(data) <= cache_bytes else None
    optimizer = torch.optim.Adam([p for p in forecaster.plugin.parameters() if p.requires_grad], lr=lr)
    g = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(epochs):
        total = 0.0
        for idx in torch.randperm(len(data), generator=g).split(batch_size):
            window = data[idx].to(device)
            if cached is None:
                with torch.no_grad():
                    forecast, inputs = block_inputs_and_forecast(forecaster.model, window[:, :in_len])
            else:
                forecast, inputs = cached[0][idx], [h[idx] for h in cached[1]]
            prediction = forecaster.apply_plugin(inputs, forecast, (idx + first).to(device))
            loss = F.mse_loss(prediction, window[:, in_len:])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        losses.append(total / len(data))
    return losses


# ------------------------------------------------------------------------ evaluation


@torch.no_grad()
def memory_report(forecaster: MemoryForecaster, batches: Iterable[tuple[Tensor, Tensor]]) -> dict[str, Any]:
    """MSE (scaled units) with and without the plugin, on all windows and on the sudden-event subset.

    Sudden events: the top 10% of windows by `sudden_change` — the largest one-step jump
    |y_t − y_{t−1}| of any series from the last input step through the horizon.
    """
    was_training = forecaster.training
    forecaster.eval()
    errors, plain_errors, lasts, targets = [], [], [], []  # per window: sums of squared errors
    for x, y in batches:
        with_plugin, plain = (f.cpu() for f in forecaster.both(x.to(forecaster.windows.device)))
        errors.append((with_plugin - y).double().square().nansum((1, 2)))  # NaN targets: made up by a fill
        plain_errors.append((plain - y).double().square().nansum((1, 2)))
        lasts.append(x[:, -1:])
        targets.append(y)
    forecaster.train(was_training)
    errors, plain_errors, last, y = torch.cat(errors), torch.cat(plain_errors), torch.cat(lasts), torch.cat(targets)
    scored = (~y.isnan()).sum((1, 2))  # (n,) each window's scored targets
    sudden = sudden_mask(last, y)

    def mse(sums: Tensor, windows: Tensor | slice = slice(None)) -> float:
        return (sums[windows].sum() / scored[windows].sum().clamp(min=1)).item()

    return {
        "test_mse": mse(errors),
        "test_mse_plain": mse(plain_errors),
        "sudden_mse": mse(errors, sudden),
        "sudden_mse_plain": mse(plain_errors, sudden),
        "sudden_windows": int(sudden.sum()),
        "sudden_min_change": sudden_change(last, y)[sudden].min().item(),
        "sudden_rule": f"top {SUDDEN_FRACTION:.0%} of test windows by max |Δ| of any series over [last input step, target]",
    }


# ------------------------------------------------------------------------ saving


def save_memory(forecaster: MemoryForecaster, run_dir: str | Path, settings: dict[str, Any] | None = None) -> None:
    """Write memory.safetensors (memory set and plugin tensors) and memory.json (kind, λ, β₀, settings)."""
    from stanhop.runs import save_tensors, write_json

    run_dir = Path(run_dir)
    plugin_state = {k: v for k, v in forecaster.state_dict().items() if not k.startswith("model.")}
    save_tensors(plugin_state, run_dir / MEMORY_WEIGHTS, {"kind": forecaster.kind})
    plugin = forecaster.plugin
    shape = {"lambda": plugin.lam, "beta": plugin.beta} if isinstance(plugin, PlugAndPlay) else {"rank": plugin.rank}
    write_json(run_dir / MEMORY_SETTINGS, {**(settings or {}), "format": MEMORY_FORMAT, "kind": forecaster.kind, **shape})


def load_memory(model: nn.Module, run_dir: str | Path) -> nn.Module:
    """The run's model with its saved memory plugin reattached; the model itself when it has none."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from stanhop.runs import read_json

    run_dir = Path(run_dir)
    if not (run_dir / MEMORY_SETTINGS).is_file():
        return model
    settings = read_json(run_dir / MEMORY_SETTINGS)
    hint = f"delete {MEMORY_SETTINGS} and {MEMORY_WEIGHTS} in {run_dir} to use the run without its memory"
    try:
        state = load_file(str(run_dir / MEMORY_WEIGHTS))
        prefix = "plugin." if settings.get("kind") == "plug" else "plugin.plug."
        patterns = [state[f"{prefix}pattern_{i}"] for i in range(len(model.encoder.blocks))]
        errors, memory = state[f"{prefix}errors"], MemorySet(state["windows"], state["futures"], state["starts"])
        if settings.get("kind") == "plug":
            plugin = PlugAndPlay(patterns, errors, float(settings["lambda"]), float(settings["beta"]))
        elif settings.get("kind") == "tune":
            model.requires_grad_(False)
            plugin = TuneAndPlay(patterns, errors, rank=int(settings.get("rank", 0)))
        else:
            raise UserError(f"{run_dir / MEMORY_SETTINGS} names an unknown memory kind {cited(settings.get('kind'))}; {hint}")
        forecaster = MemoryForecaster(model, plugin, memory)
        forecaster.load_state_dict({**{f"model.{k}": v for k, v in model.state_dict().items()}, **state})
    except KeyError as err:
        raise UserError(f"cannot reattach the memory plugin of {run_dir}: {MEMORY_WEIGHTS} lacks the tensor {err}; "
                        f"{hint}") from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise UserError(f"cannot reattach the memory plugin of {run_dir}: {str(err).splitlines()[0]}; {hint}") from None
    return forecaster.eval()
