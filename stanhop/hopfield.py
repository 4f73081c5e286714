"""Hopfield retrieval layers: state patterns retrieve from stored patterns.

Vocabulary (Ramsauer et al. 2021; STanHop, Wu et al. ICLR 2024): state patterns ξ
(queries), stored patterns Y (keys), pattern projections V (values). One retrieval is

    Z = sep(β · Q Kᵀ) V,   Q = ξ W_Q,  K = Y W_K,  V = Y W_V,  β = 1/√d_head,

per head, heads concatenated, then an output projection; ``sep`` is a separation map
(stanhop.separation), chosen by name. Three levels, as in hopfield-layers:

- ``Hopfield``: given state and stored patterns (self-retrieval when stored is None);
- ``HopfieldPooling``: learned state patterns retrieve from the input (GSHPooling);
- ``HopfieldLayer``: the input retrieves from learned stored patterns.

Axes: b batch, q state patterns, k stored patterns, h heads, e head width, d model width.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from stanhop.dropout import inverted_dropout
from stanhop.errors import UserError, cited
from stanhop.separation import make_separation

__all__ = ["retrieve", "association", "separated", "Hopfield", "HopfieldPooling", "HopfieldLayer"]


def association(state: Tensor, stored: Tensor, separation: nn.Module, *, scale: float | None = None,
                mask: Tensor | None = None) -> Tensor:
    """Association weights sep(β · ξ Yᵀ): (..., q, e), (..., k, e) -> (..., q, k).

    mask (bool, broadcast to (..., q, k)): True = may attend (the opposite of
    nn.MultiheadAttention's key_padding_mask); False scores become -inf. A state pattern that
    may attend to no stored pattern gets weights 0 (it retrieves nothing), for every map.
    """
    scale = 1.0 / math.sqrt(state.shape[-1]) if scale is None else scale
    scores = torch.matmul(state * scale, stored.transpose(-2, -1))  # (..., q, k)
    return separated(scores, separation, mask)


def separated(scores: Tensor, separation: nn.Module, mask: Tensor | None = None) -> Tensor:
    """sep(scores) over the last axis, where ``mask`` (bool, True = may attend) allows: masked
    scores count as -inf, and a row that may attend to nothing gets weights 0 (its scores go
    to the map as 0, so that no map meets a row of -inf: NaN, or an index error in the
    sorting maps)."""
    if mask is None:
        return separation(scores, dim=-1)
    if mask.dtype != torch.bool:
        raise UserError(f"a Hopfield mask must be boolean (True = may attend), got {mask.dtype}")
    empty = ~mask.any(-1, keepdim=True)  # (..., q, 1)
    scores = scores.masked_fill(~mask, float("-inf")).masked_fill(empty, 0.0)
    return separation(scores, dim=-1).masked_fill(empty, 0.0)


def _has_empty_rows(mask: Tensor | None) -> bool:
    return mask is not None and not bool(mask.any(-1).all())


def retrieve(state: Tensor, stored: Tensor, values: Tensor, separation: nn.Module, *,
             scale: float | None = None, mask: Tensor | None = None, dropout: float = 0.0,
             training: bool = False, fused: bool | None = None) -> Tensor:
    """One parameter-free retrieval: dropout(sep(β · ξ Yᵀ)) V.

    (..., q, e), (..., k, e), (..., k, e_v) -> (..., q, e_v); β = ``scale`` (1/√e if None).
    Softmax and Softmax₁ may go through ``scaled_dot_product_attention`` (fused: the weights
    are never stored); Softmax₁ there is softmax over the stored patterns plus one extra
    stored pattern of score 0 whose projection is zero (OutEffHop). ``fused=None`` fuses
    off the CPU only: on CPU, at STanHop's shapes (14 stored patterns, head width 64), the
    explicit path with the closed-form softmax measured 1.5–2.4× faster forward + backward
    than SDPA's CPU kernels (Softmax₁ more, as SDPA needs the padded copies).
    Dropout (rate ``dropout``) acts on the weights, only when ``training``.
    """
    if fused is None:
        fused = state.device.type != "cpu"
    kind = getattr(separation, "sdpa", None) if fused and not _has_empty_rows(mask) else None  # SDPA: NaN rows
    p = dropout if training else 0.0
    if kind is not None:
        if kind == "softmax1":
            stored = F.pad(stored, (0, 0, 0, 1))  # one zero stored pattern: score exactly 0
            values = F.pad(values, (0, 0, 0, 1))  # whose projection is zero
            if mask is not None:
                mask = F.pad(mask, (0, 1), value=True)
        return F.scaled_dot_product_attention(state, stored, values, attn_mask=mask, dropout_p=p, scale=scale)
    weights = association(state, stored, separation, scale=scale, mask=mask)
    weights = inverted_dropout(weights, p)
    return torch.matmul(weights, values)


class Hopfield(nn.Module):
    """Multi-head Hopfield retrieval: state (b, q, d) retrieves from stored (b, k, d_stored).

    Z = W_O concat_h[ g_h ⊙ sep(β Q_h K_hᵀ) V_h ],  β = 1/√(d/n_heads).

    - Projections: q = Linear(d, d) of the state patterns, one Linear(d_stored, 2d) for the
      keys and values of the stored patterns (V = Y W_V directly, not W_V(W_K Y)). The same
      two modules serve self-retrieval (stored = state), so one layer does both without
      unused parameters; a fused Linear(d, 3d) would do the same FLOPs.
    - ``gate`` (Gated Attention, Bondarenko et al. 2023): g_h = sigmoid(w_hᵀ ξ_h + b_h), one
      Linear(d_head -> 1) per head on that head's slice of the state pattern input; bias
      starts at logit(0.25). Without a gate, g_h = 1.
    - ``update_steps`` = T > 0: T Hopfield updates in the associative space before the final
      retrieval, Q ← sep(β Q Kᵀ) K (the retrieved stored pattern becomes the new state
      pattern), then Z from the updated Q. T = 0 is the usual one-step retrieval.
    - ``separation``: a name from stanhop.separation.SEPARATIONS (its α, if learnable, is
      one scalar for this layer).

    A batch of 1 in either state or stored broadcasts against the other (learned patterns
    are projected once, not once per sample, and meet the batch in one matrix product).

    Computation (the same mathematics on every path): each head works on views of the
    projections Q (b, q, d) and [K | V] (b, k, 2d) — no head-split copies forward or
    backward; softmax and Softmax₁ go through scaled_dot_product_attention where
    ``_fuses`` says so and no dropout acts on CPU (there SDPA falls back to an unfused
    path that copies per sample); dropout on the weights uses ``inverted_dropout``.
    """

    def __init__(self, d_model: int, *, n_heads: int = 4, separation: str = "entmax", dropout: float = 0.0,
                 gate: bool = False, update_steps: int = 0, d_stored: int | None = None):
        super().__init__()
        for name, value in (("d_model", d_model), ("n_heads", n_heads), *((("d_stored", d_stored),) if d_stored is not None else ())):
            _positive_whole(name, value)
        if d_model % n_heads:
            raise UserError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        if not isinstance(update_steps, int) or isinstance(update_steps, bool) or update_steps < 0:
            raise UserError(f"update_steps must be a whole number, 0 or more, got {cited(update_steps)}")
        if not isinstance(dropout, numbers.Real) or isinstance(dropout, bool) or not 0.0 <= dropout < 1.0:
            raise UserError(f"dropout is a rate from 0 up to (not including) 1, got {cited(dropout)}")
        if not isinstance(gate, bool):
            raise UserError(f"gate is True or False, got {cited(gate)}")
        self.d_model, self.d_stored = d_model, d_stored or d_model
        self.n_heads, self.dropout, self.update_steps = n_heads, dropout, update_steps
        self.fused: bool | None = None  # softmax / softmax1 through SDPA: None = off the CPU only
        d_head = d_model // n_heads
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_stored or d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.separation = make_separation(separation)
        self.gate = nn.ModuleList(nn.Linear(d_head, 1) for _ in range(n_heads)) if gate else None
        if self.gate is not None:
            for lin in self.gate:
                nn.init.constant_(lin.bias, math.log(0.25 / 0.75))

    def forward(self, state: Tensor, stored: Tensor | None = None, mask: Tensor | None = None, *,
                kv: Tensor | None = None) -> Tensor:
        """state (b, q, d) retrieves from stored (b, k, d_stored), or from itself when stored is
        None -> (b, q, d). mask (q, k) or (b, q, k), boolean, True = may attend (see
        ``association``); a batch of 1 on either side broadcasts against the other."""
        return self.out(self.heads(state, stored, mask, kv=kv))

    def heads(self, state: Tensor, stored: Tensor | None = None, mask: Tensor | None = None, *,
              kv: Tensor | None = None) -> Tensor:
        """concat_h[g_h ⊙ sep(β Q_h K_hᵀ) V_h]: every head's retrieval before W_O, (b, q, d).

        ``kv`` (b, k, 2d): the stored patterns' keys and values [K | V] when the caller has
        them already (``stored`` is then not projected).
        """
        _check_patterns("state", state, self.d_model, self.q.weight)
        if stored is not None:
            _check_patterns("stored", stored, self.d_stored, self.kv.weight)
            if stored.shape[0] != state.shape[0] and 1 not in (stored.shape[0], state.shape[0]):
                raise UserError(f"state and stored patterns have batches of {state.shape[0]} and {stored.shape[0]}; "
                                "give the same batch, or 1 on one side")
        if stored is None and kv is None and self.d_stored != self.d_model:
            raise UserError(f"this layer's stored patterns are {self.d_stored} wide (d_stored), its state patterns "
                            f"{self.d_model}: it cannot retrieve from the state itself; give stored patterns")
        if kv is not None and (not isinstance(kv, Tensor) or kv.dim() != 3 or kv.shape[-1] != 2 * self.d_model):
            shape = tuple(kv.shape) if isinstance(kv, Tensor) else type(kv).__name__
            raise UserError(f"kv must be the stored patterns' keys and values (b, k, 2·d_model = {2 * self.d_model}), "
                            f"got {shape}")
        q = self.q(state)  # (b, q, d)
        if kv is None:
            kv = self.kv(state if stored is None else stored)  # (b, k, 2d)
        if mask is not None:
            _check_mask(mask, state.shape[1], kv.shape[1], max(state.shape[0], kv.shape[0]))
        if mask is not None and mask.dim() == 3:
            mask = rearrange(mask, "b q k -> b 1 q k")
        p = self.dropout if self.training else 0.0
        if self.update_steps or torch.compiler.is_compiling():  # compiled: heads in head-major layout (split heads
            # and the concatenation of their gradients gave wrong key/value gradients after a recompile for new
            # shapes, softmax and Softmax₁, torch 2.13's inductor; the layout below gives the eager gradients)
            z = self._iterated(q, kv, mask)
        elif self._fuses(q) and (p == 0.0 or q.device.type != "cpu") and not _has_empty_rows(mask):
            z = self._sdpa(q, kv, mask, p)
        else:
            z = self._per_head(q, kv, mask, p)
        if self.gate is not None:  # z (b, q, h, e)
            z = z * rearrange(self._gates(state), "b h q 1 -> b q h 1")
        return rearrange(z, "b q h e -> b q (h e)")

    def _fuses(self, q: Tensor) -> bool:
        fused = q.device.type != "cpu" if self.fused is None else self.fused
        return bool(fused) and self.separation.sdpa is not None

    def _per_head(self, q: Tensor, kv: Tensor, mask: Tensor | None, p: float) -> Tensor:
        # q (b, q, d), kv (b, k, 2d) -> (b, q, h, e). Heads are views of the projections, split
        # along the last axis: no copies forward; backward, one concatenation of their gradients
        # along that axis (measured faster than stacking them on a new one, as unbind would).
        h = self.n_heads
        b = max(q.shape[0], kv.shape[0])
        e = q.shape[-1] // h
        qs = q.split(e, dim=-1)  # h × (b, q, e)
        kvs = kv.split(e, dim=-1)  # 2h × (b, k, e): keys, then values
        scale = 1.0 / math.sqrt(e)
        scores = torch.stack([_batched_mm(qi, ki.transpose(1, 2), b) for qi, ki in zip(qs, kvs[:h])],
                             dim=1).mul_(scale)  # (b, h, q, k)
        weights = inverted_dropout(separated(scores, self.separation, mask), p)
        z = torch.cat([_batched_mm(wi, vi, b) for wi, vi in zip(weights.unbind(1), kvs[h:])], dim=-1)  # (b, q, d)
        return z.unflatten(-1, (h, e))

    def _sdpa(self, q: Tensor, kv: Tensor, mask: Tensor | None, p: float) -> Tensor:
        # q (b, q, d), kv (b, k, 2d) -> (b, q, h, e) through scaled_dot_product_attention (softmax,
        # softmax1; on CPU only without dropout: with it SDPA falls back to a slow unfused path)
        if self.separation.sdpa == "softmax1":  # one zero stored pattern: score 0, projection 0
            kv = F.pad(kv, (0, 0, 0, 1))
            if mask is not None:
                mask = F.pad(mask, (0, 1), value=True)
        b = max(q.shape[0], kv.shape[0])
        q = rearrange(q, "b q (h e) -> b h q e", h=self.n_heads).expand(b, -1, -1, -1)
        k, v = rearrange(kv, "b k (two h e) -> two b h k e", two=2, h=self.n_heads).expand(-1, b, -1, -1, -1)
        return rearrange(F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p), "b h q e -> b q h e")

    def _iterated(self, q: Tensor, kv: Tensor, mask: Tensor | None) -> Tensor:
        # q (b, q, d), kv (b, k, 2d) -> (b, q, h, e): update_steps updates, then the retrieval
        q = rearrange(q, "b q (h e) -> b h q e", h=self.n_heads)
        k, v = rearrange(kv, "b k (two h e) -> two b h k e", two=2, h=self.n_heads)
        b = max(q.shape[0], k.shape[0])
        q, k, v = q.expand(b, -1, -1, -1), k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)
        for _ in range(self.update_steps):
            q = retrieve(q, k, k, self.separation, mask=mask, fused=self.fused)
        z = retrieve(q, k, v, self.separation, mask=mask, dropout=self.dropout, training=self.training,
                     fused=self.fused)  # (b, h, q, e)
        return rearrange(z, "b h q e -> b q h e")

    def _gates(self, state: Tensor) -> Tensor:
        # state (b, q, d) -> (b, h, q, 1)
        slices = rearrange(state, "b q (h e) -> h b q e", h=self.n_heads)
        return torch.sigmoid(torch.stack([lin(s) for lin, s in zip(self.gate, slices)], dim=1))


def _positive_whole(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UserError(f"{name} must be a whole number, 1 or more, got {cited(value)}")


def _check_patterns(name: str, x, width: int, weight: Tensor) -> None:
    """A UserError unless ``x`` is a (batch, patterns, width) tensor with at least one pattern,
    of the dtype of the ``weight`` that projects it (autocast casts for itself)."""
    if not isinstance(x, Tensor):
        raise UserError(f"{name} patterns must be a torch tensor (b, n, {width}), got {type(x).__name__}")
    if x.dim() != 3 or x.shape[-1] != width or x.shape[1] == 0:
        raise UserError(f"{name} patterns must have shape (b, n, {width}) with n >= 1, got {tuple(x.shape)}")
    if x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
        layer = f", or layer.to({x.dtype})" if x.dtype.is_floating_point else ""  # a layer holds floating-point weights
        raise UserError(f"{name} patterns are {x.dtype} but the layer's weights are {weight.dtype}; convert "
                        f"{'one' if layer else 'them'} (x.to({weight.dtype}){layer})")


def _check_mask(mask, q: int, k: int, b: int) -> None:
    """A UserError unless ``mask`` is a boolean tensor (q, k), or (b | 1, q, k)."""
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        kind = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
        raise UserError(f"a Hopfield mask must be a boolean tensor (True = may attend), got {kind}")
    if tuple(mask.shape) != (q, k) and not (mask.dim() == 3 and tuple(mask.shape[1:]) == (q, k) and mask.shape[0] in (1, b)):
        raise UserError(f"a Hopfield mask must have shape (q, k) = ({q}, {k}) or (b, q, k) with b = {b} or 1 "
                        f"(state patterns by stored patterns), got {tuple(mask.shape)}")


def _batched_mm(x: Tensor, y: Tensor, b: int) -> Tensor:
    """x @ y for (b | 1, n, k) @ (b | 1, k, m) -> (b, n, m). A batch of 1 (learned patterns)
    is one matrix for the whole batch: one product of the stacked other side with it, not
    b small ones (or broadcast with stride 0 when both are 1 and b > 1: no copy)."""
    if x.shape[0] == 1 and y.shape[0] == b > 1:  # (y_bᵀ x_0ᵀ)ᵀ for every b
        return (y.transpose(1, 2).flatten(0, 1) @ x[0].t()).view(b, y.shape[2], x.shape[1]).transpose(1, 2)
    if y.shape[0] == 1 and x.shape[0] == b > 1:
        return (x.flatten(0, 1) @ y[0]).view(b, x.shape[1], y.shape[2])
    return torch.bmm(x.expand(b, -1, -1), y.expand(b, -1, -1))


class HopfieldPooling(nn.Module):
    """Learned state patterns R (n_patterns, d) retrieve from the input: (b, n, d) -> (b, n_patterns, d).

    The pooling of STanHop (GSHPooling) and hopfield-layers; R starts as N(0, 0.02²).
    """

    def __init__(self, d_model: int, *, n_patterns: int, n_heads: int = 4, separation: str = "entmax",
                 dropout: float = 0.0, gate: bool = False):
        super().__init__()
        _positive_whole("n_patterns", n_patterns)
        self.patterns = nn.Parameter(torch.randn(n_patterns, d_model) * 0.02)
        self.hopfield = Hopfield(d_model, n_heads=n_heads, separation=separation, dropout=dropout, gate=gate)

    def forward(self, x: Tensor) -> Tensor:
        # x (b, n, d) -> (b, n_patterns, d)
        return self.hopfield(self.patterns[None], x)

    def heads(self, x: Tensor) -> Tensor:
        """The pooled patterns before the output projection W_O: (b, n, d) -> (b, n_patterns, d)."""
        return self.hopfield.heads(self.patterns[None], x)


class HopfieldLayer(nn.Module):
    """The input retrieves from learned stored patterns M (n_memories, d): (b, n, d) -> (b, n, d).

    M starts as N(0, 0.02²); its keys and values are projected once per call, not per sample.
    """

    def __init__(self, d_model: int, *, n_memories: int, n_heads: int = 4, separation: str = "entmax",
                 dropout: float = 0.0, gate: bool = False):
        super().__init__()
        _positive_whole("n_memories", n_memories)
        self.memories = nn.Parameter(torch.randn(n_memories, d_model) * 0.02)
        self.hopfield = Hopfield(d_model, n_heads=n_heads, separation=separation, dropout=dropout, gate=gate)

    def forward(self, x: Tensor) -> Tensor:
        # x (b, n, d) -> (b, n, d)
        return self.hopfield(x, self.memories[None])
