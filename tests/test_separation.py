"""The mathematics of the separation maps: simplex, shifts, masking, sparsity, references, gradients."""

import entmax as entmax_pkg
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stanhop.errors import UserError
from stanhop.separation import (
    ALPHA_GAP,
    SEPARATIONS,
    Entmax,
    clipped_softmax,
    entmax,
    entmax15,
    make_separation,
    softmax,
    softmax1,
    sparsemax,
)

ALL = list(SEPARATIONS)
NORMALISED = ["softmax", "entmax", "sparsemax", "entmax15"]  # weights sum to exactly 1
SPARSE = ["entmax", "sparsemax", "entmax15", "clipped"]  # can give exact zeros


def scores(*shape, scale=2.0, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*shape, generator=gen, dtype=torch.float64)).to(dtype)


# ------------------------------------------------------------------ the simplex


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dim", [0, 1, 2, -1])
def test_weights_non_negative_and_normalised_along_any_dim(name, dim):
    sep = make_separation(name)
    x = scores(5, 6, 7, 3)
    p = sep(x, dim=dim)
    assert p.shape == x.shape
    assert (p >= 0).all()
    total = p.sum(dim)
    if name in NORMALISED:
        torch.testing.assert_close(total, torch.ones_like(total), atol=1e-6, rtol=0)
    elif name == "softmax1":
        assert (total < 1).all()
    else:  # clipped: each weight in [0, 1]
        assert (p <= 1).all()
    # along `dim` equals moving that axis last
    moved = sep(x.movedim(dim, -1), dim=-1).movedim(-1, dim)
    torch.testing.assert_close(p, moved, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["softmax", "entmax", "sparsemax", "entmax15", "clipped"])
def test_invariant_to_adding_a_constant(name):
    sep = make_separation(name)
    x = scores(50, 9, dtype=torch.float64)  # float64: x + c itself is exact enough
    for c in (-7.0, 3.0, 1000.0):
        torch.testing.assert_close(sep(x + c), sep(x), atol=1e-10, rtol=0)


def test_softmax_agrees_with_torch():
    x = scores(40, 8)
    x[::3, 1] = -float("inf")
    torch.testing.assert_close(softmax(x), torch.softmax(x, -1), atol=1e-7, rtol=1e-6)


def test_softmax1_is_softmax_with_an_extra_zero_score_and_not_shift_invariant():
    x = scores(40, 8, dtype=torch.float64)
    with_zero = torch.softmax(torch.cat([x, torch.zeros(40, 1, dtype=x.dtype)], -1), -1)[:, :-1]
    torch.testing.assert_close(softmax1(x), with_zero, atol=1e-12, rtol=0)
    # adding c rescales the weights by (1 + Σeˣ) / (e^{-c} + Σeˣ): documented lack of invariance
    c = 1.5
    s = x.exp().sum(-1, keepdim=True)
    torch.testing.assert_close(softmax1(x + c), softmax1(x) * (1 + s) / (torch.exp(torch.tensor(-c)) + s))
    assert not torch.allclose(softmax1(x + c), softmax1(x))


def test_softmax1_is_stable_for_huge_and_very_negative_scores():
    p = softmax1(torch.tensor([[1e4, 0.0, -1e4], [-1e4, -2e4, -1e5], [88.0, 89.0, 0.0]]))
    assert torch.isfinite(p).all()
    torch.testing.assert_close(p[0], torch.tensor([1.0, 0.0, 0.0]))
    assert (p[1] == 0).all()  # no association: weights -> 0
    e = torch.tensor([88.0, 89.0, 0.0], dtype=torch.float64).exp()
    torch.testing.assert_close(p[2].double(), e / (1 + e.sum()), atol=1e-7, rtol=1e-6)
    p = softmax1(torch.full((3,), -float("inf")))
    assert (p == 0).all()


@pytest.mark.parametrize("name", ALL)
def test_minus_inf_scores_get_weight_zero_and_the_rest_is_unchanged(name):
    sep = make_separation(name)
    x = scores(30, 10)
    x_masked = x.clone()
    x_masked[:, 3:6] = -float("inf")
    p = sep(x_masked)
    assert torch.isfinite(p).all()
    assert (p[:, 3:6] == 0).all()
    kept = torch.cat([x[:, :3], x[:, 6:]], -1)
    torch.testing.assert_close(torch.cat([p[:, :3], p[:, 6:]], -1), sep(kept), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ALL)
def test_a_nan_score_gives_nan_weights_in_its_row_only(name):
    sep = make_separation(name)
    x = scores(6, 9)
    x[2, 4] = float("nan")
    p = sep(x)
    assert torch.isnan(p[2]).all()
    rest = torch.cat([x[:2], x[3:]])
    torch.testing.assert_close(torch.cat([p[:2], p[3:]]), sep(rest), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ALL)
def test_float32_accuracy_for_large_scores(name):
    sep = make_separation(name)
    x = scores(200, 14, scale=300.0)
    p32, p64 = sep(x), sep(x.double())
    assert torch.isfinite(p32).all()
    torch.testing.assert_close(p32.double(), p64, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ALL)
def test_half_precision_inputs(name):
    sep = make_separation(name)
    x = scores(20, 14).to(torch.bfloat16).requires_grad_()
    p = sep(x)
    assert p.dtype == torch.bfloat16 and torch.isfinite(p).all()
    torch.testing.assert_close(p.float(), sep(x.detach().float()), atol=1e-2, rtol=0)
    p.float().square().sum().backward()
    assert x.grad.dtype == torch.bfloat16 and torch.isfinite(x.grad).all()


# ------------------------------------------------------------------ α-entmax


@pytest.mark.parametrize("alpha", [1.1, 1.5, 1.9, 2.0])
@pytest.mark.parametrize("scale", [0.5, 2.0, 20.0])
def test_entmax_agrees_with_the_entmax_package_bisection(alpha, scale):
    x = scores(500, 14, scale=scale)
    ref = entmax_pkg.entmax_bisect(x.double(), alpha=alpha, n_iter=100)
    ours = entmax(x, torch.tensor(alpha))  # tensor α: the Newton path used in training
    torch.testing.assert_close(ours.double(), ref, atol=1e-5, rtol=0)


@settings(max_examples=30, deadline=None)
@given(alpha=st.floats(1.02, 2.0), n=st.integers(1, 40), scale=st.floats(0.01, 100.0), seed=st.integers(0, 10**6))
def test_entmax_agrees_with_bisection_for_any_alpha_length_and_scale(alpha, n, scale, seed):
    x = scores(16, n, scale=scale, seed=seed)
    ref = entmax_pkg.entmax_bisect(x.double(), alpha=alpha, n_iter=100)
    torch.testing.assert_close(entmax(x, torch.tensor(alpha)).double(), ref, atol=1e-5, rtol=0)


def test_exact_maps_agree_with_the_entmax_package():
    x = scores(500, 14)
    x[::7, 2] = -float("inf")
    torch.testing.assert_close(sparsemax(x), entmax_pkg.sparsemax(x), atol=1e-6, rtol=0)
    torch.testing.assert_close(entmax15(x), entmax_pkg.entmax15(x), atol=1e-6, rtol=0)


def test_entmax_at_two_is_sparsemax_and_at_one_and_a_half_is_entmax15():
    x = scores(300, 11)
    torch.testing.assert_close(entmax(x, torch.tensor(2.0)), sparsemax(x), atol=1e-6, rtol=0)
    torch.testing.assert_close(entmax(x, torch.tensor(1.5)), entmax15(x), atol=1e-6, rtol=0)
    torch.testing.assert_close(entmax(x, 2.0), sparsemax(x))


def test_entmax_approaches_softmax_as_alpha_goes_to_one():
    x = scores(200, 12, dtype=torch.float64)
    gaps = [(entmax(x, torch.tensor(a, dtype=x.dtype)) - torch.softmax(x, -1)).abs().max().item()
            for a in (1.1, 1.01, 1.001)]
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[2] < 2e-3
    torch.testing.assert_close(entmax(x, 1.0), torch.softmax(x, -1))


@pytest.mark.parametrize("name", SPARSE)
def test_sparse_maps_give_exact_zeros(name):
    sep = make_separation(name)
    x = torch.tensor([[4.0, 3.5, 0.0, -1.0, -3.0], [0.0, 0.0, 0.0, 0.0, -20.0]])
    p = sep(x)
    assert p[0, 3] == 0 and p[0, 4] == 0 and p[1, 4] == 0
    assert (p[0, :2] > 0).all() and (p[1, :4] > 0).all()


def test_entmax_closed_form_on_its_support():
    """pᵢ = [(α−1)xᵢ − τ]₊^{1/(α−1)} with one τ for all i: check it from the output."""
    x = scores(100, 9, dtype=torch.float64)
    for alpha in (1.2, 1.5, 1.8):
        p = entmax(x, torch.tensor(alpha, dtype=x.dtype))
        on = p > 0
        tau = (alpha - 1) * x - p.pow(alpha - 1)  # the same τ on the support
        tau_row = torch.where(on, tau, torch.nan).nanmean(-1, keepdim=True)
        torch.testing.assert_close(torch.where(on, tau, tau_row), tau_row.expand_as(tau), atol=1e-9, rtol=0)
        assert ((alpha - 1) * x[~on] <= tau_row.expand_as(x)[~on] + 1e-9).all()  # off the support


def test_entmax_with_one_alpha_per_row():
    x = scores(6, 4, 10)
    alpha = torch.linspace(1.1, 1.95, 6).reshape(6, 1, 1)
    p = entmax(x, alpha)
    for i in range(6):
        torch.testing.assert_close(p[i], entmax(x[i], alpha[i, 0, 0]), atol=1e-6, rtol=0)
    p1 = entmax(x.transpose(1, 2), alpha.expand(6, 1, 4), dim=1)  # (6, 10, 4): rows (6, 4) along dim 1
    torch.testing.assert_close(p1, p.transpose(1, 2), atol=1e-6, rtol=0)


def test_entmax_rejects_alpha_outside_one_to_two():
    with pytest.raises(UserError, match=r"\[1, 2\]"):
        entmax(scores(2, 3), 2.5)


# ------------------------------------------------------------------ gradients


def _gradcheck(fn, *inputs):
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("fn", [sparsemax, entmax15], ids=["sparsemax", "entmax15"])
@pytest.mark.parametrize("dim", [0, -1])
def test_gradcheck_exact_maps(fn, dim):
    # well-spread scores: finite differences never cross a support change
    x = scores(4, 6, 5, scale=3.0, dtype=torch.float64).requires_grad_()
    _gradcheck(lambda s: fn(s, dim=dim), x)


@pytest.mark.parametrize("alpha", [1.1, 1.25, 1.5, 1.75, 1.95])
def test_gradcheck_entmax_in_scores_and_alpha(alpha):
    x = scores(3, 5, 7, scale=3.0, dtype=torch.float64, seed=1).requires_grad_()
    a = torch.tensor(alpha, dtype=torch.float64, requires_grad=True)
    _gradcheck(lambda s, a: entmax(s, a, dim=1), x, a)
    rows = (alpha + 0.04 * torch.randn(3, 1, 7, dtype=torch.float64)).clamp(1.05, 1.99).requires_grad_()
    _gradcheck(lambda s, a: entmax(s, a, dim=1), x, rows)


def test_gradcheck_with_minus_inf_scores():
    x = scores(4, 8, scale=3.0, dtype=torch.float64)
    x[:, 1] = -float("inf")
    x.requires_grad_()
    a = torch.tensor(1.6, dtype=torch.float64, requires_grad=True)
    _gradcheck(lambda s, a: entmax(s, a), x, a)
    _gradcheck(sparsemax, x)
    _gradcheck(entmax15, x)
    g = torch.autograd.grad(entmax(x, a).pow(2).sum(), x)[0]
    assert (g[:, 1] == 0).all()


def test_gradcheck_softmax_softmax1_and_clipped():
    x = scores(4, 6, dtype=torch.float64).requires_grad_()
    _gradcheck(softmax, x)
    _gradcheck(lambda s: softmax(s, dim=0), x)
    _gradcheck(softmax1, x)
    _gradcheck(lambda s: softmax1(s, dim=0), x)
    x_inf = x.detach().clone()
    x_inf[:, 2] = -float("inf")
    _gradcheck(softmax1, x_inf.requires_grad_())
    _gradcheck(lambda s: clipped_softmax(s, gamma=-0.05, zeta=1.05), x)


def test_entmax_module_learns_alpha_in_one_to_two():
    sep = make_separation("entmax")
    assert isinstance(sep, Entmax)
    assert sep.alpha.item() == pytest.approx(1.5) and sep.a.item() == 0.0
    assert [n for n, _ in sep.named_parameters()] == ["a"]  # one scalar per layer
    x = scores(8, 10).requires_grad_()
    (sep(x) * scores(8, 10, seed=3)).sum().backward()
    assert sep.a.grad is not None and sep.a.grad.abs() > 0 and x.grad.abs().sum() > 0
    with torch.no_grad():
        for a in (-30.0, 30.0):
            sep.a.fill_(a)
            assert 1.0 <= sep.alpha.item() <= 2.0
            p = sep(x)
            assert torch.isfinite(p).all() and torch.allclose(p.sum(-1), torch.ones(8))
    assert make_separation("entmax", alpha=1.2).alpha.item() == pytest.approx(1.2)
    with pytest.raises(UserError):
        make_separation("entmax", alpha=2.0)


# ------------------------------------------------------------------ clipped, registry


def test_clipped_softmax_formula_and_settable_gamma_zeta():
    x = scores(20, 7)
    sep = make_separation("clipped", gamma=-0.025, zeta=1.0)
    expected = (1.025 * torch.softmax(x, -1) - 0.025).clamp(0, 1)
    torch.testing.assert_close(sep(x), expected)
    default = make_separation("clipped")
    assert (default.gamma, default.zeta) == (-0.1, 1.1)
    big = torch.tensor([[20.0, 0.0, 0.0]])
    assert default(big)[0, 0] == 1.0 and (default(big)[0, 1:] == 0).all()  # clipped at both ends


def test_make_separation_by_name_and_unknown_name():
    for name in ALL:
        assert isinstance(make_separation(name), torch.nn.Module)
    with pytest.raises(UserError) as err:
        make_separation("hardmax")
    message = str(err.value)
    assert "hardmax" in message and all(name in message for name in ALL) and "\n" not in message


@pytest.mark.parametrize("name", ["entmax", "softmax", "softmax1", "sparsemax", "entmax15", "clipped"])
def test_maps_compute_in_float32_under_bf16_autocast(name):
    """Autocast does not reach inside the maps, forward or backward (under it, vecdot runs in bf16,
    and entmax's normaliser then never meets its tolerance): the same weights and gradients as
    without autocast, to the bit."""
    torch.manual_seed(0)
    x, weights_grad = torch.randn(64, 14) * 3, torch.randn(64, 14)

    def run(autocast: bool):
        sep = make_separation(name)
        scores = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            weights = sep(scores)
            (weights * weights_grad).sum().backward()  # inside autocast, as Lightning's manual_backward is
        return [weights, scores.grad] + [p.grad for p in sep.parameters()]

    for under, plain in zip(run(True), run(False)):
        assert under.dtype == torch.float32
        assert torch.equal(under, plain)


def test_entmax_at_alpha_one_is_near_softmax_with_finite_gradients_and_out_of_range_is_refused():
    scores = torch.randn(4, 9, generator=torch.Generator().manual_seed(0)) * 3
    near_one = Entmax(1.5)
    with torch.no_grad():
        near_one.a.fill_(-30.0)  # sigmoid(a) underflows: α is exactly 1.0 in float32 (uniform weights, NaN gradient before)
    assert near_one.alpha.item() == 1.0
    p = near_one(scores)
    p.square().sum().backward()
    torch.testing.assert_close(p, torch.softmax(scores, -1), atol=2e-3, rtol=0)
    assert torch.isfinite(near_one.a.grad) and (p.sum(-1) - 1).abs().max() < 1e-5
    as_bf16 = Entmax(1.003).to(torch.bfloat16)  # α on bfloat16's grid: 1.0
    torch.testing.assert_close(as_bf16(scores.bfloat16()).float(), torch.softmax(scores, -1), atol=2e-2, rtol=0)
    for bad in (0.5, 2.5):
        with pytest.raises(UserError, match="entmax alpha must be in \\[1, 2\\]"):
            entmax(scores, torch.tensor(bad))


def test_second_derivatives_of_entmax_are_refused_not_wrong():
    """Their backward passes are not written to be differentiated again: entmax gave 0 and
    1.5-entmax NaN for second derivatives, and a gradient penalty through them trained on a
    gradient without its second-order terms (torch's once_differentiable did not catch it)."""
    x = torch.randn(1, 6, dtype=torch.float64, requires_grad=True)
    for f in (lambda s: entmax(s, torch.tensor(1.3, dtype=torch.float64)), entmax15):
        with pytest.raises(RuntimeError, match="entmax's backward pass is not differentiable"):
            torch.autograd.grad((f(x) * torch.arange(6.0)).sum(), x, create_graph=True)  # a gradient penalty's call
        (first,) = torch.autograd.grad((f(x) * torch.arange(6.0)).sum(), x)  # first derivatives as before
        assert torch.isfinite(first).all()


def test_a_learned_alpha_below_the_floor_still_gets_a_gradient_and_can_rise():
    """α = 1 + sigmoid(a) under 1 + ALPHA_GAP is computed at the floor; its gradient passes on,
    so a layer whose α sank there (a < −6.9) can learn its way back (clamping gave 0 for good)."""
    sep = Entmax(1.5)
    with torch.no_grad():
        sep.a.fill_(-8.0)
    x = scores(6, 10, seed=1)
    target = entmax(x, torch.tensor(1.6))  # sparser weights than softmax: α should rise
    opt = torch.optim.Adam(sep.parameters(), lr=0.5)  # as training does: steps of the sign, not of the tiny size
    for _ in range(20):
        opt.zero_grad()
        (sep(x) - target).square().sum().backward()
        assert sep.a.grad.abs() > 0
        opt.step()
    assert sep.alpha.item() > 1.0 + ALPHA_GAP
