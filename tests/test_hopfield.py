"""Hopfield retrieval: fixed points, masks, gates, update steps, fused vs explicit paths, robustness."""

import math

import pytest
import torch
from einops import rearrange

from stanhop.errors import UserError
from stanhop.hopfield import Hopfield, HopfieldLayer, HopfieldPooling, association, retrieve
from stanhop.separation import SEPARATIONS, make_separation

ALL = list(SEPARATIONS)


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ retrieval


def _stored_patterns(n=8, d=32, seed=0):
    """Well-separated stored patterns: random unit vectors (pairwise overlaps ≈ ±0.2)."""
    y = randn(n, d, seed=seed)
    return y / y.norm(dim=-1, keepdim=True)


@pytest.mark.parametrize("name", ALL)
def test_stored_pattern_is_a_fixed_point_and_retrieved_from_a_noisy_state(name):
    sep = make_separation(name)
    stored = _stored_patterns()
    beta = 60.0  # large β: the separation picks the closest stored pattern
    # a stored pattern is (numerically) a fixed point of the update ξ <- sep(β ξ Yᵀ) Y
    fixed = retrieve(stored, stored, stored, sep, scale=beta)
    torch.testing.assert_close(fixed, stored, atol=1e-4, rtol=0)
    # a state near pattern i (30% noise) retrieves pattern i in one update
    noisy = stored + 0.3 * randn(*stored.shape, seed=1) / math.sqrt(stored.shape[1])
    out = retrieve(noisy, stored, stored, sep, scale=beta)
    torch.testing.assert_close(out, stored, atol=1e-3, rtol=0)


def test_small_beta_mixes_patterns_and_softmax1_can_retrieve_nothing():
    stored = _stored_patterns()
    out = retrieve(stored, stored, stored, make_separation("softmax"), scale=1.0)
    assert (out - stored).abs().max() > 0.1  # metastable mixture, not a fixed point
    # Softmax₁: a state with a very negative score for every stored pattern retrieves ≈ 0
    basis = torch.eye(8, 32)  # stored patterns e_1 … e_8
    state = -basis.sum(0, keepdim=True)  # score −β with every one of them
    out = retrieve(state, basis, basis, make_separation("softmax1"), scale=100.0)
    assert out.abs().max() < 1e-30
    assert retrieve(state, basis, basis, make_separation("softmax"), scale=100.0).abs().max() > 0.1


@pytest.mark.parametrize("name", ALL)
def test_association_weights_match_the_separation_of_scaled_scores(name):
    sep = make_separation(name)
    q, k = randn(2, 3, 5, 8), randn(2, 3, 7, 8, seed=1)
    w = association(q, k, sep)
    torch.testing.assert_close(w, sep(q @ k.transpose(-2, -1) / math.sqrt(8)), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["softmax", "softmax1"])
@pytest.mark.parametrize("mask_shape", [None, (5, 7), (2, 1, 5, 7)])
def test_fused_sdpa_path_equals_explicit_weights_path(name, mask_shape):
    sep = make_separation(name)
    q, k, v = randn(2, 3, 5, 8), randn(2, 3, 7, 8, seed=1), randn(2, 3, 7, 6, seed=2)
    mask = None
    if mask_shape is not None:
        mask = torch.rand(mask_shape, generator=torch.Generator().manual_seed(3)) > 0.4
        mask[..., 0] = True  # every state pattern may attend somewhere
    fused = retrieve(q, k, v, sep, mask=mask, scale=0.7, fused=True)
    explicit = retrieve(q, k, v, sep, mask=mask, scale=0.7, fused=False)
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)
    by_hand = association(q, k, sep, scale=0.7, mask=mask) @ v
    torch.testing.assert_close(explicit, by_hand)


# ------------------------------------------------------------------ modules: shapes


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("b,q,k,d,h", [(2, 5, 5, 16, 4), (1, 3, 9, 24, 3), (4, 1, 2, 8, 1)])
def test_module_shapes(name, b, q, k, d, h):
    x, y = randn(b, q, d), randn(b, k, d, seed=1)
    assert Hopfield(d, n_heads=h, separation=name)(x).shape == (b, q, d)
    assert Hopfield(d, n_heads=h, separation=name)(x, y).shape == (b, q, d)
    cross = Hopfield(d, n_heads=h, separation=name, d_stored=5)
    assert cross(x, randn(b, k, 5)).shape == (b, q, d)
    assert HopfieldPooling(d, n_patterns=3, n_heads=h, separation=name)(y).shape == (b, 3, d)
    assert HopfieldLayer(d, n_memories=6, n_heads=h, separation=name)(x).shape == (b, q, d)


def test_projections_are_linear_modules_and_cross_keys_values_share_one_projection():
    m = Hopfield(16, n_heads=4, separation="softmax", d_stored=6)
    linears = {n: mod for n, mod in m.named_modules() if isinstance(mod, torch.nn.Linear)}
    assert set(linears) == {"q", "kv", "out"}
    assert linears["kv"].in_features == 6 and linears["kv"].out_features == 32


def test_self_retrieval_equals_retrieval_from_itself():
    m = Hopfield(16, n_heads=2, separation="entmax").eval()
    x = randn(3, 6, 16)
    torch.testing.assert_close(m(x), m(x, x))


def test_module_equals_the_written_out_equation():
    """Z = W_O concat_h[sep(β Q_h K_hᵀ) V_h] with β = 1/√d_head."""
    d, h = 12, 3
    m = Hopfield(d, n_heads=h, separation="sparsemax").eval()
    x, y = randn(2, 4, d), randn(2, 5, d, seed=1)
    q = m.q(x).reshape(2, 4, h, 4).transpose(1, 2)
    k, v = m.kv(y).reshape(2, 5, 2, h, 4).permute(2, 0, 3, 1, 4)
    w = make_separation("sparsemax")(q @ k.transpose(-2, -1) / 2.0)  # √4 = 2
    z = (w @ v).transpose(1, 2).reshape(2, 4, d)
    torch.testing.assert_close(m(x, y), m.out(z), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["softmax", "softmax1"])
def test_module_fused_path_equals_explicit_path(name):
    m = Hopfield(16, n_heads=4, separation=name, gate=True, update_steps=1).eval()
    x, y = randn(3, 5, 16), randn(3, 7, 16, seed=1)
    mask = torch.ones(3, 5, 7, dtype=torch.bool)
    mask[:, :, 4:] = False
    m.fused = True
    fused = m(x, y, mask)
    m.fused = False
    torch.testing.assert_close(fused, m(x, y, mask), atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------ masks, gate, steps


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("batched", [False, True])
def test_masked_stored_patterns_have_no_influence(name, batched):
    m = Hopfield(16, n_heads=4, separation=name).eval()
    x, y = randn(2, 5, 16), randn(2, 7, 16, seed=1)
    mask = torch.ones(5, 7, dtype=torch.bool)
    mask[:, 2] = False
    mask[0, 5:] = False
    if batched:
        mask = mask.expand(2, 5, 7).clone()
        mask[1, 3, 0] = False
    y2 = y.clone()
    y2[:, 2] += 100.0  # changes only a pattern nobody may attend to
    out = m(x, y, mask)
    torch.testing.assert_close(out, m(x, y2, mask), atol=1e-5, rtol=0)
    assert torch.isfinite(out).all()
    assert not torch.allclose(out, m(x, y))  # the mask does something


def test_gate_multiplies_each_head_by_sigmoid_of_its_own_input_slice():
    d, h = 16, 4
    gated = Hopfield(d, n_heads=h, separation="entmax15", gate=True).eval()
    plain = Hopfield(d, n_heads=h, separation="entmax15").eval()
    plain.load_state_dict(gated.state_dict(), strict=False)
    assert len(gated.gate) == h and all(g.in_features == d // h and g.out_features == 1 for g in gated.gate)
    for g in gated.gate:
        assert g.bias.item() == pytest.approx(math.log(0.25 / 0.75))
    x, y = randn(2, 5, d), randn(2, 6, d, seed=1)
    with torch.no_grad():
        for g in gated.gate:
            g.weight.zero_()
    # gate = 0.25 everywhere; the output projection is affine: out(0.25 z) − b = 0.25 (out(z) − b)
    bias = gated.out.bias
    torch.testing.assert_close(gated(x, y) - bias, 0.25 * (plain(x, y) - bias), atol=1e-6, rtol=0)
    # head j's gate reads only the slice j of the state input
    with torch.no_grad():
        gated.gate[1].weight.fill_(1.0)
    x2 = x.clone()
    x2[..., 4:8] += 1.0  # slice of head 1 only
    g1, g2 = gated._gates(x), gated._gates(x2)
    assert torch.equal(g1[:, [0, 2, 3]], g2[:, [0, 2, 3]]) and not torch.equal(g1[:, 1], g2[:, 1])


@pytest.mark.parametrize("name", ["softmax", "entmax", "sparsemax"])
def test_update_steps_iterate_in_the_associative_space(name):
    m = Hopfield(8, n_heads=2, separation=name, update_steps=2).eval()
    x, y = randn(2, 3, 8), randn(2, 4, 8, seed=1)
    q = rearrange(m.q(x), "b q (h e) -> b h q e", h=2)
    k, v = rearrange(m.kv(y), "b k (two h e) -> two b h k e", two=2, h=2)
    for _ in range(2):
        q = association(q, k, m.separation) @ k  # ξ <- sep(β ξ Kᵀ) K
    z = association(q, k, m.separation) @ v
    torch.testing.assert_close(m(x, y), m.out(rearrange(z, "b h q e -> b q (h e)")), atol=1e-6, rtol=0)
    one_step = m(x, y)
    m.update_steps = 0
    assert not torch.allclose(m(x, y), one_step)


# ------------------------------------------------------------------ robustness, training


@pytest.mark.parametrize("name", ALL)
def test_no_nan_on_huge_inputs_forward_and_backward(name):
    torch.manual_seed(0)
    m = Hopfield(16, n_heads=4, separation=name, gate=True, update_steps=1)
    x, y = 1e4 * randn(2, 5, 16), 1e4 * randn(2, 7, 16, seed=1)
    out = m(x, y)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
    for mod in (HopfieldPooling(16, n_patterns=3, separation=name), HopfieldLayer(16, n_memories=4, separation=name)):
        assert torch.isfinite(mod(x)).all()


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 12345])
def test_all_parameters_finite_after_construction(seed):
    torch.manual_seed(seed)
    for name in ALL:
        for mod in (Hopfield(16, separation=name, gate=True), HopfieldPooling(16, n_patterns=10, separation=name, gate=True),
                    HopfieldLayer(16, n_memories=5, separation=name)):
            for pname, p in mod.named_parameters():
                assert torch.isfinite(p).all(), (name, pname)
    pool = HopfieldPooling(256, n_patterns=10)
    assert 0.01 < pool.patterns.std().item() < 0.03  # N(0, 0.02²), never torch.empty


def test_every_parameter_gets_a_gradient_including_alpha():
    m = HopfieldPooling(16, n_patterns=3, separation="entmax", gate=True)
    layer = HopfieldLayer(16, n_memories=4, separation="entmax")
    x = randn(2, 6, 16)
    (m(x).square().sum() + layer(x).square().sum()).backward()
    for mod in (m, layer):
        for name, p in mod.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_learned_patterns_broadcast_over_the_batch():
    pool = HopfieldPooling(16, n_patterns=3, separation="entmax").eval()
    layer = HopfieldLayer(16, n_memories=4, separation="softmax1").eval()
    x = randn(3, 6, 16)
    for mod in (pool, layer):
        whole = mod(x)
        for i in range(3):
            torch.testing.assert_close(whole[i : i + 1], mod(x[i : i + 1]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name,fused", [("softmax", True), ("softmax", False), ("entmax", None)])
def test_dropout_only_in_training(name, fused):
    torch.manual_seed(0)
    m = Hopfield(16, n_heads=4, separation=name, dropout=0.5)
    m.fused = fused
    x = randn(2, 8, 16)
    m.eval()
    torch.testing.assert_close(m(x), m(x))
    m.train()
    assert not torch.allclose(m(x), m(x))


def test_bad_head_count_is_a_user_error():
    with pytest.raises(UserError, match="divisible"):
        Hopfield(10, n_heads=4)
    with pytest.raises(UserError, match="separation"):
        Hopfield(8, separation="hardmax")


@pytest.mark.parametrize("separation", ALL)
@pytest.mark.parametrize("fused", [False, True])
def test_a_state_pattern_that_may_attend_to_nothing_retrieves_nothing(separation, fused):
    """A fully masked query row: weights 0 and output W_O's bias alone, for every map (the sorting
    maps raised an index error, softmax gave NaN), finite gradients; other rows as without it."""
    torch.manual_seed(0)
    layer = Hopfield(16, n_heads=2, separation=separation)
    layer.fused = fused
    state, stored = torch.randn(2, 5, 16, requires_grad=True), torch.randn(2, 7, 16)
    mask = torch.ones(2, 5, 7, dtype=torch.bool)
    mask[1, 3] = False  # sample 1, query 3: nothing allowed
    mask[0, :, 4:] = False  # and a partial mask elsewhere
    out = layer(state, stored, mask=mask)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(state.grad).all()
    torch.testing.assert_close(out[1, 3], layer.out.bias)  # the zero retrieval, projected
    partial = layer(state[:1], stored[:1], mask=mask[:1])
    torch.testing.assert_close(out[:1], partial)
    weights = association(torch.randn(5, 8), torch.randn(7, 8), make_separation(separation), mask=mask[1])
    assert (weights[3] == 0).all() and torch.isfinite(weights).all() and (weights[[0, 1, 2, 4]].sum(-1) > 0).all()


def test_bad_layer_settings_and_inputs_are_one_line_errors():
    for kwargs, message in (({"n_heads": 0}, "n_heads must be a whole number"), ({"dropout": 1.5}, "dropout is a rate"),
                            ({"dropout": -0.1}, "dropout is a rate"), ({"n_heads": 3}, "divisible by n_heads")):
        with pytest.raises(UserError, match=message):
            Hopfield(16, **kwargs)
    for bad in (0, -4, 16.0):
        with pytest.raises(UserError, match="d_model must be a whole number"):
            Hopfield(bad)
    with pytest.raises(UserError, match="n_patterns must be a whole number"):
        HopfieldPooling(16, n_patterns=0)
    with pytest.raises(UserError, match="n_memories must be a whole number"):
        HopfieldLayer(16, n_memories=0)
    layer = Hopfield(16)
    for state, stored, message in ((torch.randn(5, 16), None, r"state patterns must have shape \(b, n, 16\)"),
                                   (torch.randn(2, 5, 8), None, r"got \(2, 5, 8\)"),
                                   (torch.randn(2, 5, 16), torch.randn(2, 0, 16), "with n >= 1"),
                                   (torch.randn(2, 5, 16), torch.randn(3, 7, 16), "batches of 2 and 3"),
                                   ([[1.0] * 16], None, "must be a torch tensor")):
        with pytest.raises(UserError, match=message):
            layer(state, stored)
    with pytest.raises(UserError, match="mask must be a boolean tensor"):
        layer(torch.randn(2, 5, 16), mask=torch.ones(5, 5))
    for shape in ((5, 6), (3, 5, 7), (5,)):  # k is 7 here, the batch 2
        with pytest.raises(UserError, match=rf"mask must have shape \(q, k\) = \(5, 7\) or \(b, q, k\) with b = 2 "):
            layer(torch.randn(2, 5, 16), torch.randn(2, 7, 16), mask=torch.ones(shape, dtype=torch.bool))
    assert layer(torch.randn(2, 5, 16), torch.randn(2, 7, 16), mask=torch.ones(1, 5, 7, dtype=torch.bool)).shape == (2, 5, 16)
    with pytest.raises(UserError, match=r"state patterns are torch.float64 but the layer's weights are torch.float32"):
        layer(torch.randn(2, 5, 16, dtype=torch.float64))  # numpy's default dtype, through torch.from_numpy


@pytest.mark.parametrize("separation", ["softmax", "softmax1"])
def test_a_compiled_layer_keeps_its_gradients_through_recompiles_for_new_shapes(separation):
    """Compiled with torch's automatic dynamic shapes, softmax and Softmax₁ layers gave wrong
    key/value gradients once recompiled for new shapes (split heads, torch 2.13's inductor)."""
    torch.manual_seed(0)
    layer = Hopfield(8, n_heads=2, separation=separation)
    compiled = torch.compile(layer, fullgraph=True)
    for state_shape, stored_shape in (((2, 3, 8), (2, 4, 8)), ((1, 5, 8), (3, 7, 8)), ((4, 2, 8), (4, 6, 8))):
        state, stored = torch.randn(state_shape), torch.randn(stored_shape)
        layer.zero_grad()
        layer(state, stored).sum().backward()
        eager = {name: p.grad.clone() for name, p in layer.named_parameters()}
        layer.zero_grad()
        compiled(state, stored).sum().backward()
        for name, p in layer.named_parameters():
            torch.testing.assert_close(p.grad, eager[name], rtol=1e-4, atol=1e-5, msg=f"{name} at {state_shape}")


def test_layer_arguments_of_the_wrong_kind_are_one_line_errors():
    from stanhop.errors import UserError
    from stanhop.separation import Entmax, entmax

    cases = [
        (lambda: Hopfield(8, d_stored=5)(torch.randn(2, 3, 8)), "cannot retrieve from the state itself; give stored"),
        (lambda: Hopfield(8)(torch.randn(2, 3, 8), kv=torch.randn(2, 3, 5)), "kv must be the stored patterns' keys and values"),
        (lambda: Hopfield(8, dropout="0.1"), "dropout is a rate"),
        (lambda: Hopfield(8, gate="yes"), "gate is True or False"),
        (lambda: Hopfield(8, update_steps=True), "update_steps must be a whole number"),
        (lambda: Hopfield(8, d_stored=0), "d_stored must be a whole number, 1 or more"),
        (lambda: Entmax("1.5"), "initial entmax alpha must be a number"),
        (lambda: entmax(torch.randn(2, 3), "1.5"), "entmax alpha must be a number in \\[1, 2\\] or a tensor"),
        (lambda: Hopfield(8)(torch.ones(2, 3, 8, dtype=torch.int64)), "convert them \\(x.to\\(torch.float32\\)\\)$"),
    ]
    for make, message in cases:
        with pytest.raises(UserError, match=message):
            make()
