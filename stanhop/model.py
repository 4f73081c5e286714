"""STanHop-Net (Wu et al., ICLR 2024): sparse tandem Hopfield networks for forecasting.

Axes used in shape comments and einops patterns:
    b batch   c series (channels)   s segments (patches)   d model width
    l seg_len (steps per patch)     w win_size (patches merged by coarse-graining)   t time steps

Data flow: (b, t_in, c) -> patch embedding (b, c, s, d) -> encoder of STanHop blocks at
coarser and coarser resolutions -> decoder layers, one per encoder scale, each predicting
the whole horizon; the forecast is their sum -> (b, t_out, c).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from stanhop.config import ModelConfig
from stanhop.dropout import Dropout, keep_mask, pack_bits, scaled, unpacked_mask
from stanhop.hopfield import Hopfield, HopfieldLayer, HopfieldPooling


def n_segments(length: int, seg_len: int) -> int:
    return math.ceil(length / seg_len)


class MLP(nn.Sequential):
    """d -> d_ff -> d with GELU, the position-wise feed-forward of every block."""

    def __init__(self, d_model: int, d_ff: int, dropout: float):
        super().__init__(nn.Linear(d_model, d_ff), nn.GELU(), Dropout(dropout), nn.Linear(d_ff, d_model))


def residual(x: Tensor, drop: nn.Dropout, y: Tensor) -> Tensor:
    """x + drop(y). While dropout acts, the sum goes into drop's fresh output (one (…, d)
    buffer fewer; the same values, as addition commutes) — unless y is narrower than the sum
    (under autocast, y = Linear(…) is bf16 while x is float32: the sum stays float32)."""
    if drop.training and drop.p > 0 and y.dtype == torch.promote_types(x.dtype, y.dtype):
        return drop(y).add_(x)
    return x + drop(y)


def norm_mlp(r: Tensor, norm: nn.LayerNorm, mlp: MLP) -> tuple[Tensor, Tensor]:
    """z = LN(r) and MLP(z): (..., d) -> (..., d), (..., d).

    While training, one autograd function that keeps only r, LN's statistics, the hidden
    pre-activation h = W₁z + b₁ and the dropout mask (8 entries per byte), and recomputes
    z and drop(GELU(h)) in the backward pass (elementwise work only; no product is
    recomputed): per row, d + d_ff floats fewer kept than with the modules one by one.
    Hooks on these modules see them called one by one, as do evaluation, autocast (mixed
    precision) and torch.compile (which fuses the elementwise work itself).
    """
    lin1, _, drop, lin2 = mlp
    if (not (torch.is_grad_enabled() and (r.requires_grad or norm.weight.requires_grad))
            or torch.is_autocast_enabled(r.device.type) or torch.compiler.is_compiling() or observed(norm, mlp)):
        z = norm(r)
        return z, mlp(z)
    p = drop.p if drop.training else 0.0
    z, m = _NormMLP.apply(r.reshape(-1, r.shape[-1]), norm.weight, norm.bias, lin1.weight, lin1.bias,
                          lin2.weight, lin2.bias, p, norm.eps)
    return z.view(r.shape), m.view(r.shape)


class _NormMLP(torch.autograd.Function):
    """(z, m) = (LN(r), W₂ drop(GELU(W₁ LN(r) + b₁)) + b₂) for r (n, d); see norm_mlp.

    Past h = W₁z + b₁ (one product, kept), rows go through in blocks of CHUNK_ROWS: the
    (rows, d_ff) temporaries stay small and cache-resident, and no further (n, d_ff) buffer
    is allocated (each fresh one costs page faults when the allocator maps it anew)."""

    CHUNK_ROWS = 4096

    @staticmethod
    def forward(ctx, r, ln_w, ln_b, w1, b1, w2, b2, p: float, eps: float):
        z, mean, rstd = torch.native_layer_norm(r, (r.shape[-1],), ln_w, ln_b, eps)
        h = torch.addmm(b1, z, w1.t())  # (n, d_ff)
        m = torch.empty_like(r)
        bits = torch.empty(-(-h.numel() // 8), dtype=torch.uint8, device=h.device) if p > 0 else None
        for rows, nb in _row_blocks(h):  # nb: the block's bytes of packed mask
            a = F.gelu(h[rows])
            if p > 0:
                keep = keep_mask(a.shape, p, a.device)  # in row order: below the parallel size, h's mask drawn at once
                a.mul_(scaled(keep, p, a.dtype))
                bits[nb] = pack_bits(keep)
            torch.addmm(b2, a, w2.t(), out=m[rows])
        ctx.save_for_backward(r, mean, rstd, ln_w, ln_b, w1, w2, h, bits)
        ctx.p = p
        return z, m

    @staticmethod
    def backward(ctx, dz, dm):
        r, mean, rstd, ln_w, ln_b, w1, w2, h, bits = ctx.saved_tensors
        dm = dm.contiguous()
        dw1, dw2, db1 = torch.zeros_like(w1), torch.zeros_like(w2), torch.zeros_like(w1[:, 0])
        dz_total = torch.empty_like(r)
        for rows, nb in _row_blocks(h):
            hb = h[rows]
            a = F.gelu(hb)  # drop(GELU(h)) again
            mask = None if bits is None else unpacked_mask(bits[nb], hb.shape, ctx.p, hb)
            if mask is not None:
                a.mul_(mask)
            torch.addmm(dw2, dm[rows].t(), a, out=dw2)  # (not addmm_: FlopCounterMode skips it)
            da = dm[rows] @ w2  # (rows, d_ff)
            if mask is not None:
                da.mul_(mask)
            dh = torch.ops.aten.gelu_backward.grad_input(da, hb, grad_input=da)  # in place
            db1 += dh.sum(0)
            z = (r[rows] - mean[rows]).mul_(rstd[rows]).mul_(ln_w).add_(ln_b)  # LN(r) again
            torch.addmm(dw1, dh.t(), z, out=dw1)
            if dz is None:
                torch.mm(dh, w1, out=dz_total[rows])
            else:
                torch.addmm(dz[rows], dh, w1, out=dz_total[rows])
        dr, dln_w, dln_b = torch.ops.aten.native_layer_norm_backward(
            dz_total, r, (r.shape[-1],), mean, rstd, ln_w, ln_b, [True, True, True])
        return dr, dln_w, dln_b, dw1, db1, dw2, dm.sum(0), None, None


def _row_blocks(h: Tensor):
    """(row slice, packed-mask byte slice) per block of _NormMLP.CHUNK_ROWS rows of h (n, d_ff);
    blocks hold a multiple of 8 entries, so each one's mask packs into whole bytes."""
    n, width = h.shape
    step = max(8, _NormMLP.CHUNK_ROWS // 8 * 8)  # 8 rows of any width hold a multiple of 8 entries
    for start in range(0, n, step):
        stop = min(start + step, n)
        yield slice(start, stop), slice(start * width // 8, -(-stop * width // 8))


class PatchEmbedding(nn.Module):
    """Cut each series into patches of seg_len steps, embed each linearly, add a learned
    position embedding per (series, patch), then LayerNorm.

    An input whose length is not a multiple of seg_len is padded at the front by repeating
    its first step (as the STanHop code does).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.seg_len = cfg.seg_len
        self.pad = n_segments(cfg.in_len, cfg.seg_len) * cfg.seg_len - cfg.in_len
        self.proj = nn.Linear(cfg.seg_len, cfg.d_model)
        self.position = nn.Parameter(torch.randn(1, cfg.n_series, n_segments(cfg.in_len, cfg.seg_len), cfg.d_model))
        self.norm = nn.LayerNorm(cfg.d_model)

    def forward(self, x: Tensor) -> Tensor:  # (b, t, c) -> (b, c, s, d)
        if self.pad:
            x = torch.cat([x[:, :1].expand(-1, self.pad, -1), x], dim=1)
        patches = rearrange(x, "b (s l) c -> b c s l", l=self.seg_len)
        return self.norm(self.proj(patches) + self.position)


class STanHopBlock(nn.Module):
    """The STanHop block: temporal then cross-series Hopfield retrieval, in tandem.

    1. Temporal: every series retrieves over its own patches,
       z = LN(x + drop(GSH(x, x))); z = LN(z + drop(MLP(z))).
    2. Cross-series, at every patch position, over the c series; ``cfg.cross_series``:
       - ``router`` (the default; Crossformer's router): `factor` learned state patterns pool
         the series, r = GSHPooling(z) (`factor` rows), and every series retrieves from them,
         u = LN(z + drop(GSH(z, r))); u = LN(u + drop(MLP(u))): c·factor per position.
       - ``stanhop`` (as STanHop's paper and public code have it): every series retrieves from
         the block's `factor` learned stored patterns, h = GSHPooling(z) (c rows), and from
         the series, u = LN(h + drop(GSH(z, z))); u = LN(u + drop(MLP(u))): c² per position,
         and no path for a series' own pattern but through the retrievals.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, kw = cfg.d_model, dict(n_heads=cfg.n_heads, separation=cfg.separation, dropout=cfg.dropout, gate=cfg.gate)
        self.temporal = Hopfield(d, **kw)
        self.router = cfg.cross_series == "router"
        self.pooling = (HopfieldPooling(d, n_patterns=cfg.factor, **kw) if self.router
                        else HopfieldLayer(d, n_memories=cfg.factor, **kw))
        self.cross_series = Hopfield(d, **kw)
        self.mlp_temporal, self.mlp_cross = MLP(d, cfg.d_ff, cfg.dropout), MLP(d, cfg.d_ff, cfg.dropout)
        self.norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(4))
        self.drop = Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:  # (b, c, s, d) -> (b, c, s, d)
        b, c = x.shape[:2]
        z = rearrange(x, "b c s d -> (b c) s d")
        z, m = norm_mlp(residual(z, self.drop, self.temporal(z)), self.norms[0], self.mlp_temporal)
        z = self.norms[1](residual(z, self.drop, m))

        # one copy into the cross-series layout, shared by the pooling's and the retrieval's
        # projections (on a strided view each Linear would copy it for itself, then add its bias
        # in a separate pass)
        z = rearrange(z, "(b c) s d -> (b s) c d", b=b).contiguous()
        if self.router:
            u = residual(z, self.drop, self._routed(z))
        else:
            u = residual(self.pooling(z), self.drop, self.cross_series(z))
        u, m = norm_mlp(u, self.norms[2], self.mlp_cross)
        u = self.norms[3](residual(u, self.drop, m))
        return rearrange(u, "(b s) c d -> b c s d", b=b)

    def _routed(self, z: Tensor) -> Tensor:  # (b s) c d -> (b s) c d
        """GSH(z, GSHPooling(z)). The pooled patterns r = W_O p + b_O (p: the pooling's heads)
        enter only through the keys/values W_kv r + b_kv, so those are computed as one affine
        map of p, (W_kv W_O) p + (W_kv b_O + b_kv): the same values without the d×d projection
        of every pooled pattern. Hooks on these modules (quantization, outlier statistics)
        see the modules called one by one, as written above."""
        pool, kv = self.pooling, self.cross_series.kv
        if observed(pool, kv):
            return self.cross_series(z, pool(z))  # (b s) factor d pooled patterns
        out = pool.hopfield.out
        weight, bias = kv.weight @ out.weight, torch.addmv(kv.bias, kv.weight, out.bias)
        return self.cross_series(z, kv=F.linear(pool.heads(z), weight, bias))


def recomputed(module: nn.Module, on: bool, *args: Tensor):
    """module(*args); with ``on`` while training with gradients, through activation
    checkpointing: only the inputs are kept, and the forward pass runs again in the backward
    pass (the same random draws: torch restores the RNG state), trading time for memory."""
    if on and module.training and torch.is_grad_enabled():
        return checkpoint(module, *args, use_reentrant=False)
    return module(*args)


def observed(*modules: nn.Module) -> bool:
    """Whether forward hooks are registered on any of these modules or their submodules
    (global hooks, as profilers and FlopCounterMode use, do not count)."""
    return any(m._forward_hooks or m._forward_pre_hooks for top in modules for m in top.modules())


class CoarseGrain(nn.Module):
    """Merge win_size neighbouring patches into one: concat -> LayerNorm -> Linear(w·d -> d).

    A segment count that is not a multiple of win_size is padded at the end by repeating
    the last patch.
    """

    def __init__(self, d_model: int, win_size: int):
        super().__init__()
        self.win_size = win_size
        self.norm = nn.LayerNorm(win_size * d_model)
        self.proj = nn.Linear(win_size * d_model, d_model)

    def forward(self, x: Tensor) -> Tensor:  # (b, c, s, d) -> (b, c, ceil(s / w), d)
        pad = -x.shape[2] % self.win_size
        if pad:
            x = torch.cat([x, x[:, :, -1:].expand(-1, -1, pad, -1)], dim=2)
        merged = rearrange(x, "b c (s w) d -> b c s (w d)", w=self.win_size)
        return self.proj(self.norm(merged))


class Encoder(nn.Module):
    """e_layers STanHop blocks; every block after the first coarse-grains its input first.

    Returns the embedding and every block's output: e_layers + 1 scales, finest first.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.merges = nn.ModuleList(
            nn.Identity() if i == 0 or cfg.win_size == 1 else CoarseGrain(cfg.d_model, cfg.win_size)
            for i in range(cfg.e_layers)
        )
        self.blocks = nn.ModuleList(STanHopBlock(cfg) for _ in range(cfg.e_layers))
        self.checkpoint = cfg.checkpoint
        # Hook point of the external memory plugins (stanhop.memory): when set, block i's input
        # (after coarse-graining) x_i is replaced by block_hook(i, x_i). A plain function, not a
        # module, so it never enters the state dict; None (the default) is the plain model.
        self.block_hook: Callable[[int, Tensor], Tensor] | None = None

    def forward(self, x: Tensor) -> list[Tensor]:  # (b, c, s, d) -> [(b, c, s_i, d)] * (e_layers + 1)
        scales = [x]
        for i, (merge, block) in enumerate(zip(self.merges, self.blocks)):
            x = merge(x)
            if self.block_hook is not None:
                x = self.block_hook(i, x)
            x = recomputed(block, self.checkpoint, x)
            scales.append(x)
        return scales


class DecoderLayer(nn.Module):
    """A STanHop block over the decoder state, then retrieval from the encoder output of the
    same scale, then a linear read-out of seg_len steps per output patch."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.d_model
        self.block = STanHopBlock(cfg)
        self.cross = Hopfield(d, n_heads=cfg.n_heads, separation=cfg.separation, dropout=cfg.dropout, gate=cfg.gate)
        self.mlp = MLP(d, cfg.d_ff, cfg.dropout)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.drop = Dropout(cfg.dropout)
        self.readout = nn.Linear(d, cfg.seg_len)

    def forward(self, x: Tensor, memory: Tensor) -> tuple[Tensor, Tensor]:
        # x (b | 1, c, s_out, d), memory (b, c, s_i, d) -> state (b, c, s_out, d), prediction (b, c, s_out, l)
        b = memory.shape[0]
        if (self.training and self.drop.p > 0) or observed(self.block):
            x = x.expand(b, -1, -1, -1)  # dropout (or a hook) makes every sample's block differ
        x = rearrange(self.block(x).expand(b, -1, -1, -1), "b c s d -> (b c) s d")
        memory = rearrange(memory, "b c s d -> (b c) s d")
        x, m = norm_mlp(residual(x, self.drop, self.cross(x, memory)), self.norm1, self.mlp)
        x = self.norm2(residual(x, self.drop, m))
        x = rearrange(x, "(b c) s d -> b c s d", b=b)
        return x, self.readout(x)


class Decoder(nn.Module):
    """e_layers + 1 decoder layers over a learned query per (series, output patch); the
    forecast is the sum of every layer's prediction."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.query = nn.Parameter(torch.randn(1, cfg.n_series, n_segments(cfg.out_len, cfg.seg_len), cfg.d_model))
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.e_layers + 1))
        self.checkpoint = cfg.checkpoint

    def forward(self, scales: list[Tensor]) -> Tensor:  # [(b, c, s_i, d)] -> (b, c, s_out, l)
        x = self.query  # the same for every sample: the first layer's block runs once, not b times,
        prediction = 0  # where nothing random (dropout) acts in it
        for layer, memory in zip(self.layers, scales):
            x, layer_prediction = recomputed(layer, self.checkpoint, x, memory)
            prediction = prediction + layer_prediction
        return prediction


class InstanceNorm(nn.Module):
    """RevIN (Kim et al., ICLR 2022): reversible instance normalisation of each window.

    normalise: x̂ = γ_c · (x − μ) / σ + β_c, μ and σ each window's mean and standard deviation
    of each series over its input steps; restore: y = (ŷ − β_c) / γ_c · σ + μ, the forecast on
    the window's own level and spread. γ, β: learned, one per series.
    """

    def __init__(self, n_series: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n_series))
        self.bias = nn.Parameter(torch.zeros(n_series))
        self.eps = eps

    def normalise(self, x: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:  # (b, t, c) -> (b, t, c), (μ, σ) (b, 1, c)
        mean = x.mean(1, keepdim=True)
        spread = (x.var(1, keepdim=True, unbiased=False) + self.eps).sqrt()
        return (x - mean) / spread * self.weight + self.bias, (mean, spread)

    def restore(self, y: Tensor, stats: tuple[Tensor, Tensor]) -> Tensor:  # (b, t, c) -> (b, t, c)
        mean, spread = stats
        return (y - self.bias) / (self.weight + self.eps**2) * spread + mean


class STanHopNet(nn.Module):
    """STanHop-Net: input window (b, in_len, c) -> forecast (b, out_len, c).

    `cfg.separation` chooses the Hopfield separation map of every retrieval: entmax (GSH,
    learnable α), softmax1 (OutEffHop), softmax, sparsemax, entmax15, clipped; `cfg.gate`
    adds Gated Attention to every retrieval; `cfg.instance_norm` wraps the network in RevIN
    (InstanceNorm); `cfg.checkpoint` recomputes every encoder block
    and decoder layer in the backward pass instead of keeping its activations (measured at the
    horizon-720 setting: peak RSS 7.9 -> 3.8 GB, +30% time per step).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.instance_norm = InstanceNorm(cfg.n_series) if cfg.instance_norm else None
        self.embedding = PatchEmbedding(cfg)
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    def forward(self, x: Tensor) -> Tensor:  # (b, in_len, c) -> (b, out_len, c)
        if self.instance_norm is not None:
            x, stats = self.instance_norm.normalise(x)
        scales = self.encoder(self.embedding(x))
        prediction = self.decoder(scales)  # b c s l
        y = rearrange(prediction, "b c s l -> b (s l) c")[:, : self.cfg.out_len]
        return y if self.instance_norm is None else self.instance_norm.restore(y, stats)
