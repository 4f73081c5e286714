"""Separation maps: scores -> association weights of a Hopfield retrieval.

A retrieval computes weights = sep(β · ξ Yᵀ) over the stored patterns Y for each state
pattern ξ. The map ``sep`` decides how sharply the stored patterns are separated:

- ``softmax``: the dense modern Hopfield model (Ramsauer et al. 2021).
- ``softmax1``: Softmax₁ of OutEffHop (Hu et al., ICML 2024), exp(xᵢ) / (1 + Σⱼ exp(xⱼ)); the
  weights may sum to less than 1, so a retrieval can return ≈ 0 ("no association").
- ``entmax``: the generalized sparse Hopfield (GSH) map of STanHop (Wu et al., ICLR 2024),
  α-entmax with a learnable α ∈ (1, 2).
- ``sparsemax`` (α = 2) and ``entmax15`` (α = 1.5): exact, sort-based.
- ``clipped``: Clipped Softmax (Bondarenko et al. 2023), clip((ζ − γ)·softmax(x) + γ, 0, 1).

α-entmax (Peters et al. 2019) solves  p = argmax_{p ∈ Δ} pᵀx + H^T_α(p), Tsallis entropy
H^T_α(p) = Σⱼ (pⱼ − pⱼ^α) / (α(α − 1)); its solution is
    pᵢ = [(α − 1)xᵢ − τ]₊^{1/(α−1)},  τ such that Σᵢ pᵢ = 1.
On the support S (pᵢ > 0), with g = p^{2−α}:
    ∂p/∂x = diag(g) − g gᵀ / Σg,
    ∂pᵢ/∂α = (pᵢ − ĝᵢ)/(α−1)² − (pᵢ log pᵢ − ĝᵢ Σⱼ pⱼ log pⱼ)/(α−1),  ĝ = g / Σg.
(Differentiate log pᵢ = log((α−1)xᵢ − τ)/(α−1) in α and use Σ ∂pᵢ/∂α = 0 to eliminate ∂τ/∂α.)

Every map treats -inf scores as "may not attend" (weight 0); a row of only -inf scores has
no defined weights (NaN), except Softmax₁, which gives all zeros.
"""

from __future__ import annotations

import functools
import math
import numbers

import torch
from torch import Tensor, nn

from stanhop.errors import UserError, cited

__all__ = [
    "softmax",
    "softmax1",
    "sparsemax",
    "entmax15",
    "entmax",
    "clipped_softmax",
    "Separation",
    "Softmax",
    "Softmax1",
    "Entmax",
    "Sparsemax",
    "Entmax15",
    "ClippedSoftmax",
    "SEPARATIONS",
    "make_separation",
]


# ---------------------------------------------------------------- helpers (last axis)


def _shift(scores: Tensor) -> Tensor:
    """x − max x along the last axis (the maps are invariant to it; no gradient needed)."""
    return scores - scores.amax(-1, keepdim=True)


def _entmax_backward(p: Tensor, grad_p: Tensor, g: Tensor) -> Tensor:
    """dx = g⊙dp − g (Σ g⊙dp)/Σ g: the vector-Jacobian product of any α-entmax (last axis)."""
    mean = torch.linalg.vecdot(g, grad_p).unsqueeze(-1) / g.sum(-1, keepdim=True)
    return g * (grad_p - mean)


def _sparsemax_forward(scores: Tensor) -> Tensor:
    """Exact sparsemax: p = [x − τ]₊, τ from the sorted scores (Martins & Astudillo 2016)."""
    # Shifted so max x = 0, hence τ ≥ −1: anything below −1 is outside the support, and
    # clamping it there (which also removes -inf) leaves the solution unchanged.
    x = _shift(scores).clamp_min(-2.0)
    xs = x.sort(-1, descending=True).values
    k = torch.arange(1, x.shape[-1] + 1, device=x.device, dtype=x.dtype)
    csum = xs.cumsum(-1) - 1.0
    # |S| = max{k : 1 + k x₍ₖ₎ > Σ_{i≤k} x₍ᵢ₎}; 0 only for a row with NaN, whose weights are then NaN
    support = (k * xs > csum).sum(-1, keepdim=True).clamp_min(1)
    tau = csum.gather(-1, support - 1) / support.to(x.dtype)
    return (x - tau).clamp_min(0.0)


def _entmax15_forward(scores: Tensor) -> Tensor:
    """Exact 1.5-entmax: p = [x/2 − τ]₊², τ from the sorted scores (Peters et al. 2019)."""
    # With max x/2 = 0, τ ≥ −1; values below −1 are outside the support (clamping is exact).
    x = (_shift(scores) / 2).clamp_min(-2.0)
    xs = x.sort(-1, descending=True).values
    k = torch.arange(1, x.shape[-1] + 1, device=x.device, dtype=x.dtype)
    mean = xs.cumsum(-1) / k
    mean_sq = (xs * xs).cumsum(-1) / k
    ss = k * (mean_sq - mean * mean)
    delta = (1.0 - ss) / k
    tau_k = mean - delta.clamp_min(0.0).sqrt()  # τ if the support were the top k
    support = (tau_k <= xs).sum(-1, keepdim=True).clamp_min(1)  # 0 only for a NaN row: NaN weights
    tau = tau_k.gather(-1, support - 1)
    return (x - tau).clamp_min(0.0).square()


def _to_columns(t: Tensor) -> Tensor:
    """(..., n) -> (n, R) contiguous: reductions and per-row broadcasts then run along the
    long, contiguous axis R (a 14-wide last axis makes every broadcast op several times slower)."""
    return t.reshape(-1, t.shape[-1]).t().contiguous()


def _from_columns(t: Tensor, shape: torch.Size) -> Tensor:
    """(n, R) -> (..., n), contiguous."""
    return t.t().reshape(shape)


COMPILED_NEWTON_STEPS = 10  # eager calls stop within 7 (h24, h720 at α 1.01–1.99; a trained run)


def _entmax_newton(x: Tensor, alpha: Tensor, *, steps: int | None = None, max_iter: int = 50) -> tuple[Tensor, Tensor]:
    """α-entmax of the columns of x (n, R); returns p and g = p^(2−α) (both (n, R)).

    With x shifted so that max x = 0 and y = [(α−1)x − τ]₊, p = y^q (q = 1/(α−1) ≥ 1), the
    threshold τ solves h(τ) = ‖y‖_q − 1 = 0. h is convex and decreasing in τ, and nearly
    linear (exactly linear while one pattern is in the support), so Newton's method from the
    safe start τ₀ = −1 (h ≥ 0: the largest term is 1) stays left of the root and converges
    monotonically: 2–6 steps for α ∈ [1.01, 2] at 14 stored patterns, ≤ 9 at 5000. It stops
    when |h| ≤ 1e-6 (float32; 1e-13 in float64) in every column (checked from the first step
    on CPU, from the fifth on accelerators, where a check is a host sync), or after exactly
    ``steps`` steps with no check when given (as under torch.compile, where a check is
    data-dependent control flow that breaks the graph; steps past the root move τ by ≈ 0);
    p is then normalised to sum exactly to 1.
    Each step costs one power: g = y^(q−1) (= p^(2−α), reused by the backward pass) gives
    Σ y^q = Σ g y and h' = −Σ g · (Σ y^q)^(1/q − 1).
    """
    am1 = alpha - 1.0
    z = (x - x.amax(0, keepdim=True)) * am1
    q = 1.0 / am1
    on_cpu = x.device.type == "cpu"  # elsewhere every bool() below is a host sync: avoid them
    at_two = steps is not None or not on_cpu or bool((alpha >= 2.0).any())  # q = 1: y^0 would be 1 off the support
    tol = 1e-13 if x.dtype == torch.float64 else 1e-6
    first_check = steps + 1 if steps is not None else 1 if on_cpu else 5
    tau = torch.full_like(z[:1], -1.0)
    for it in range(1, (max_iter if steps is None else steps) + 1):
        y = (z - tau).clamp_min_(0.0)
        g = y.pow(q - 1.0)  # 0 off the support when q > 1
        if at_two:
            g = g * (y > 0)
        s_p = torch.linalg.vecdot(g, y, dim=0).unsqueeze(0)  # Σ y^q
        norm = s_p.pow(am1)  # ‖y‖_q
        if it >= first_check and not bool(((norm - 1.0).abs() > tol).any()):  # NaN columns count as done
            break
        tau = tau + (norm - 1.0) * s_p / (g.sum(0, keepdim=True) * norm)  # τ − h/h'
    inv = 1.0 / s_p
    return (g * y).mul_(inv), g.mul_(inv.pow(2.0 - alpha))


# ------------------------------------------------------------- autograd functions


def _first_order(backward):
    """A backward pass that is not itself differentiable: under create_graph (a gradient penalty,
    a Hessian-vector product) it raises, where its result would silently drop the second-order
    terms (torch's once_differentiable raises only when the incoming gradient has a graph)."""

    @functools.wraps(backward)
    def run(ctx, *grads):
        if torch.is_grad_enabled() and not torch.compiler.is_compiling():
            raise RuntimeError("entmax's backward pass is not differentiable: second derivatives (create_graph=True) "
                               "through entmax and 1.5-entmax are not supported; use softmax, softmax1 or sparsemax")
        with torch.no_grad():
            return backward(ctx, *grads)

    return run


def _autocast_off(method):
    """An autograd Function's forward or backward run with autocast off. The maps compute in
    float32 (``_along`` upcasts half precision); under autocast, reductions such as vecdot would
    otherwise run in bf16, and entmax's normaliser could then never meet its 1e-6 tolerance."""

    @functools.wraps(method)
    def run(ctx, first: Tensor, *rest):
        with torch.autocast(first.device.type, enabled=False):
            return method(ctx, first, *rest)

    return run


class _SoftmaxFunction(torch.autograd.Function):
    """softmax, or Softmax₁ with ``extra_zero`` (one more score 0 in the denominator).

    Both have ∂p/∂x = diag(p) − p pᵀ, so dx = p ⊙ (dp − Σ p dp). Written out because
    torch.softmax is slow on CPU for a short last axis (≈ 10× at 14 stored patterns).
    """

    @staticmethod
    @_autocast_off
    def forward(ctx, scores: Tensor, extra_zero: bool) -> Tensor:
        m = scores.amax(-1, keepdim=True)
        if extra_zero:  # m = max(0, max x): exp(−m) is the extra term, no overflow either way
            m = m.clamp_min(0.0)
        e = torch.exp(scores - m)
        denom = e.sum(-1, keepdim=True)
        if extra_zero:
            denom = denom + torch.exp(-m)
        p = e.div_(denom)
        ctx.save_for_backward(p)
        return p

    @staticmethod
    @_autocast_off
    def backward(ctx, grad_p: Tensor):
        (p,) = ctx.saved_tensors
        return p * (grad_p - torch.linalg.vecdot(p, grad_p).unsqueeze(-1)), None


class _SparsemaxFunction(torch.autograd.Function):
    @staticmethod
    @_autocast_off
    def forward(ctx, scores: Tensor) -> Tensor:
        p = _sparsemax_forward(scores)
        ctx.save_for_backward(p)
        return p

    @staticmethod
    @_autocast_off
    def backward(ctx, grad_p: Tensor) -> Tensor:
        (p,) = ctx.saved_tensors
        return _entmax_backward(p, grad_p, (p > 0).to(p.dtype))


class _Entmax15Function(torch.autograd.Function):
    @staticmethod
    @_autocast_off
    def forward(ctx, scores: Tensor) -> Tensor:
        p = _entmax15_forward(scores)
        ctx.save_for_backward(p)
        return p

    @staticmethod
    @_first_order  # its backward is not written to be differentiated again (NaN where p = 0)
    @_autocast_off
    def backward(ctx, grad_p: Tensor) -> Tensor:
        (p,) = ctx.saved_tensors
        return _entmax_backward(p, grad_p, p.sqrt())


class _EntmaxFunction(torch.autograd.Function):
    """α-entmax along the last axis; alpha is 0-d or broadcasts as (..., 1)."""

    @staticmethod
    @_autocast_off
    def forward(ctx, scores: Tensor, alpha: Tensor) -> Tensor:
        alpha_c = alpha.to(scores.dtype)
        if alpha_c.dim() > 0:  # one α per row -> (1, R)
            alpha_c = _to_columns(alpha_c.expand(*scores.shape[:-1], 1))
        steps = COMPILED_NEWTON_STEPS if torch.compiler.is_compiling() else None
        p, g = _entmax_newton(_to_columns(scores), alpha_c, steps=steps)
        ctx.save_for_backward(p, g, alpha_c)
        ctx.alpha_shape = alpha.shape
        return _from_columns(p, scores.shape)

    @staticmethod
    @_first_order  # its backward is not written to be differentiated again (it gave 0 for second derivatives)
    @_autocast_off
    def backward(ctx, grad_out: Tensor):
        p, g, alpha = ctx.saved_tensors
        dp = _to_columns(grad_out)
        b = torch.linalg.vecdot(g, dp, dim=0).unsqueeze(0) / g.sum(0, keepdim=True)  # Σ ĝ dp
        grad_scores = grad_alpha = None
        if ctx.needs_input_grad[0]:  # g ⊙ dp − g (Σ g dp)/Σ g
            grad_scores = _from_columns((dp - b).mul_(g), grad_out.shape)
        if ctx.needs_input_grad[1]:
            # Σᵢ dpᵢ ∂pᵢ/∂α = (Σ dp p − Σ ĝ dp)/(α−1)² − (Σ dp p log p − Σ p log p · Σ ĝ dp)/(α−1)
            am1 = alpha - 1.0
            plogp = p * torch.log(p.clamp_min(torch.finfo(p.dtype).tiny))  # 0 log 0 = 0, no log(0)
            ent = plogp.sum(0, keepdim=True)
            dp_p = torch.linalg.vecdot(dp, p, dim=0).unsqueeze(0)
            dp_plogp = torch.linalg.vecdot(dp, plogp, dim=0).unsqueeze(0)
            grad_alpha = (dp_p - b) / am1.square() - (dp_plogp - ent * b) / am1  # (1, R)
            if len(ctx.alpha_shape) == 0:
                grad_alpha = grad_alpha.sum()
            else:
                grad_alpha = _from_columns(grad_alpha, (*grad_out.shape[:-1], 1)).sum_to_size(ctx.alpha_shape)
        return grad_scores, grad_alpha


# ------------------------------------------------------------------ public functions


def _along(fn, scores: Tensor, dim: int, *args) -> Tensor:
    """Apply a last-axis map along ``dim``; half precision is computed in float32."""
    if scores.dtype in (torch.float16, torch.bfloat16):
        return _along(fn, scores.float(), dim, *args).to(scores.dtype)
    if dim in (-1, scores.dim() - 1):
        return fn(scores, *args)
    return fn(scores.movedim(dim, -1), *args).movedim(-1, dim)


def softmax(scores: Tensor, dim: int = -1) -> Tensor:
    """softmax(x)ᵢ = exp(xᵢ) / Σⱼ exp(xⱼ): the dense modern Hopfield model (closed-form backward)."""
    return _along(_SoftmaxFunction.apply, scores, dim, False)


def softmax1(scores: Tensor, dim: int = -1) -> Tensor:
    """Softmax₁ (OutEffHop): pᵢ = exp(xᵢ) / (1 + Σⱼ exp(xⱼ)); Σ p < 1, → 0 when all xⱼ ≪ 0.

    Computed as exp(xᵢ − m) / (exp(−m) + Σⱼ exp(xⱼ − m)) with m = max(0, maxⱼ xⱼ): no
    overflow for large scores, and xᵢ − m is exact near the top, so float32 keeps its accuracy.
    Not invariant to adding a constant c: weights scale by (1 + Σe^x)/(e^{-c} + Σe^x).
    """
    return _along(_SoftmaxFunction.apply, scores, dim, True)


def sparsemax(scores: Tensor, dim: int = -1) -> Tensor:
    """Sparsemax (α = 2): p = argmin_{p ∈ Δ} ‖p − x‖² = [x − τ]₊; exact, sort-based."""
    return _along(_SparsemaxFunction.apply, scores, dim)


def entmax15(scores: Tensor, dim: int = -1) -> Tensor:
    """1.5-entmax: p = [x/2 − τ]₊², Σ p = 1; exact, sort-based (Peters et al. 2019)."""
    return _along(_Entmax15Function.apply, scores, dim)


ALPHA_GAP = 1e-3  # entmax takes α ≥ 1 + this: nearer 1, float32 entmax is no closer to the exact map than softmax is


def entmax(scores: Tensor, alpha: Tensor | float, dim: int = -1) -> Tensor:
    """α-entmax: pᵢ = [(α−1)xᵢ − τ]₊^{1/(α−1)}, Σ p = 1, for α ∈ (1, 2] (α → 1: softmax).

    ``alpha`` is a float or a tensor that broadcasts against ``scores`` with size 1 along
    ``dim`` (e.g. a 0-d learnable α). Differentiable in ``scores`` and in ``alpha`` (closed
    form backward, see the module docstring). τ is found by Newton's method from a safe
    start (see ``_entmax_newton``); float α = 1 is softmax, and 1.5 and 2 use the exact
    sort-based maps. α below 1 + ALPHA_GAP is taken as 1 + ALPHA_GAP (within 1.3·10⁻³ of
    softmax): in float32, at α = 1 + 10⁻⁴ the map was 8·10⁻⁵ off the exact one (float64), as far
    as softmax is, and at α = 1 exactly (a learned α whose sigmoid underflows, or a bfloat16
    one) it was uniform, with a NaN gradient.
    """
    if not isinstance(alpha, Tensor):
        if not isinstance(alpha, numbers.Real) or isinstance(alpha, bool):
            raise UserError(f"entmax alpha must be a number in [1, 2] or a tensor, got {cited(alpha)}")
        alpha = float(alpha)
        if not 1.0 <= alpha <= 2.0:
            raise UserError(f"entmax alpha must be in [1, 2], got {alpha}")
        if alpha == 1.0:
            return softmax(scores, dim)
        if alpha == 1.5:
            return entmax15(scores, dim)
        if alpha == 2.0:
            return sparsemax(scores, dim)
        alpha = torch.tensor(alpha, dtype=scores.dtype, device=scores.device)
    elif not torch.compiler.is_compiling() and bool(((alpha < 1.0) | (alpha > 2.0)).any()):
        raise UserError(f"entmax alpha must be in [1, 2], got values from {alpha.min().item():g} to {alpha.max().item():g}")
    return _entmax(scores, alpha, dim)


def _entmax(scores: Tensor, alpha: Tensor, dim: int) -> Tensor:
    """entmax with a tensor α already known to lie in [1, 2] (the Entmax layer's 1 + sigmoid(a)):
    no range check, which reads α back from the device on every call."""
    if alpha.dtype in (torch.float16, torch.bfloat16):  # as the map computes (``_along``): 1.001 is 1.0 in bfloat16
        alpha = alpha.float()
    # the map at 1 + ALPHA_GAP, its gradient passed on as if unclamped (straight through): a
    # learned α that sank below can rise again (clamp_min's own gradient there is 0 for good)
    alpha = alpha + (alpha.clamp_min(1.0 + ALPHA_GAP) - alpha).detach()
    if alpha.dim() > 0 and dim not in (-1, scores.dim() - 1):
        alpha = alpha.movedim(dim, -1)
    return _along(_EntmaxFunction.apply, scores, dim, alpha)


def clipped_softmax(scores: Tensor, gamma: float = -0.1, zeta: float = 1.1, dim: int = -1) -> Tensor:
    """Clipped Softmax (Bondarenko et al. 2023): clip((ζ − γ)·softmax(x) + γ, 0, 1).

    With γ < 0 a weight can be exactly 0 without infinite scores; weights need not sum to 1.
    Defaults γ = −0.1, ζ = 1.1 are those of OutEffHop's STanHop code.
    """
    return ((zeta - gamma) * softmax(scores, dim) + gamma).clamp(0.0, 1.0)


# --------------------------------------------------------------------------- modules


class Separation(nn.Module):
    """A separation map as a module: ``forward(scores, dim=-1)`` -> association weights.

    ``sdpa`` names the fused kernel path a retrieval may take instead of forming the
    weights ("softmax", "softmax1"), or is None when the weights must be formed.
    """

    sdpa: str | None = None

    def forward(self, scores: Tensor, dim: int = -1) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class Softmax(Separation):
    """softmax(x): the dense modern Hopfield model."""

    sdpa = "softmax"

    def forward(self, scores: Tensor, dim: int = -1) -> Tensor:
        return softmax(scores, dim)


class Softmax1(Separation):
    """Softmax₁ (OutEffHop): exp(xᵢ) / (1 + Σⱼ exp(xⱼ))."""

    sdpa = "softmax1"

    def forward(self, scores: Tensor, dim: int = -1) -> Tensor:
        return softmax1(scores, dim)


class Sparsemax(Separation):
    """Sparsemax (α = 2), exact."""

    def forward(self, scores: Tensor, dim: int = -1) -> Tensor:
        return sparsemax(scores, dim)


class Entmax15(Separation):
    """1.5-entmax, exact."""

    def forward(self, scores: Tensor, dim: int = -1) -> Tensor:
        return entmax15(scores, dim)


class Entmax(Separation):
    """GSH map of STanHop: α-entmax with one learnable scalar α per layer (per module).

    α = 1 + sigmoid(a) keeps α in (1, 2) smoothly; a = logit(alpha − 1) at construction
    (default alpha = 1.5, i.e. a = 0). Gradients reach both the scores and a.
    """

    def __init__(self, alpha: float = 1.5):
        super().__init__()
        if not isinstance(alpha, numbers.Real) or isinstance(alpha, bool) or not 1.0 + ALPHA_GAP <= alpha < 2.0:
            raise UserError(f"initial entmax alpha must be a number from {1.0 + ALPHA_GAP} up to (not including) 2, got "
                            f"{cited(alpha)}")
        self.a = nn.Parameter(torch.tensor(math.log((alpha - 1.0) / (2.0 - alpha))))

    @property
    def alpha(self) -> Tensor:
        return 1.0 + torch.sigmoid(self.a)

    def forward(self, scores: Tensor, dim: int = -1) -> Tensor:
        return _entmax(scores, self.alpha, dim)  # 1 + sigmoid(a) lies in [1, 2]: no range check (a sync per call)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha.item():.4f}"


class ClippedSoftmax(Separation):
    """Clipped Softmax: clip((ζ − γ)·softmax(x) + γ, 0, 1)."""

    def __init__(self, gamma: float = -0.1, zeta: float = 1.1):
        super().__init__()
        self.gamma, self.zeta = float(gamma), float(zeta)

    def forward(self, scores: Tensor, dim: int = -1) -> Tensor:
        return clipped_softmax(scores, self.gamma, self.zeta, dim)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, zeta={self.zeta}"


SEPARATIONS: dict[str, type[Separation]] = {
    "softmax": Softmax,
    "softmax1": Softmax1,
    "entmax": Entmax,
    "sparsemax": Sparsemax,
    "entmax15": Entmax15,
    "clipped": ClippedSoftmax,
}


def make_separation(name: str, **kwargs) -> nn.Module:
    """The separation module called ``name`` (one of SEPARATIONS), built with ``kwargs``."""
    if name not in SEPARATIONS:
        raise UserError(f"unknown separation '{name}'; choose one of {', '.join(SEPARATIONS)}")
    return SEPARATIONS[name](**kwargs)
