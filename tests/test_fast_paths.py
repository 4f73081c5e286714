"""The speed and memory shortcuts compute what the plain modules compute.

Each shortcut of stanhop.dropout and stanhop.model is checked against the plain path it
replaces: the bit-packed dropout mask, the parallel random words, the fused LayerNorm + MLP
(with dropout, same random draws), the composed projection of the pooled patterns, the
decoder's first block run once for the whole batch, and learned patterns met as one matrix.
A forward hook on a module makes the model take the plain path (hooks must see every module
called), which is how the plain path is reached here.
"""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from stanhop.config import ModelConfig
from stanhop.dropout import (Dropout, inverted_dropout, keep_mask, pack_bits, random_words, rounded_rate, scaled,
                             unpack_bits, unpacked_mask)
from stanhop.hopfield import _batched_mm
from stanhop.model import MLP, STanHopBlock, STanHopNet, norm_mlp, observed, residual

# ------------------------------------------------------------------ bits


@settings(max_examples=60, deadline=None)
@given(shape=st.lists(st.integers(1, 13), min_size=1, max_size=3), seed=st.integers(0, 2**16))
def test_pack_bits_round_trips_any_shape(shape, seed):
    mask = torch.rand(shape, generator=torch.Generator().manual_seed(seed)) > 0.5
    bits = pack_bits(mask)
    assert bits.dtype == torch.uint8 and bits.numel() == math.ceil(mask.numel() / 8)
    assert torch.equal(unpack_bits(bits, mask.shape), mask)


def test_bits_pack_and_unpack_the_same_under_torch_compile(monkeypatch):
    """Under torch.compile the bool <-> uint8 reinterpretations become casts (inductor cannot
    lower a bitcast from bool): the same bytes and the same mask."""
    mask = torch.rand(37, 29, generator=torch.Generator().manual_seed(0)) < 0.3
    bits = pack_bits(mask)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert torch.equal(pack_bits(mask), bits)
    assert torch.equal(unpack_bits(bits, mask.shape), mask)


def test_pack_bits_puts_entry_8i_plus_j_in_bit_j_of_byte_i():
    mask = torch.zeros(20, dtype=torch.bool)
    mask[[0, 3, 9, 17]] = True
    assert pack_bits(mask).tolist() == [0b1001, 0b10, 0b10]


# ------------------------------------------------------------------ dropout


def test_parallel_random_words_are_uniform_and_reproducible(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)  # the parallel fill, whatever the machine
    torch.manual_seed(4)
    words = random_words(1 << 17)  # above the size where the fill goes parallel
    torch.manual_seed(4)
    assert torch.equal(words, random_words(1 << 17))
    bits = torch.stack([words.bitwise_right_shift(i).bitwise_and(1) for i in range(64)], dim=1).double()
    assert bits.mean(0).sub(0.5).abs().max().item() < 0.01  # every one of the 64 bits is a fair coin
    lanes = words.view(torch.int16).double()  # the 16-bit lanes keep_mask compares: uniform on -2^15 .. 2^15 - 1
    sigma_of_mean = 2**16 / 12**0.5 / lanes.numel() ** 0.5
    assert lanes.mean().item() == pytest.approx(-0.5, abs=5 * sigma_of_mean)
    assert lanes.var().item() == pytest.approx((2**32 - 1) / 12, rel=0.01)
    parts = words.chunk(3)  # each part its own generator: no two parts alike
    assert not torch.equal(parts[0][:100], parts[1][:100])


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.9])
def test_keep_mask_keeps_one_minus_the_rounded_rate(p):
    assert rounded_rate(p) == round(p * 2**16) / 2**16
    assert abs(rounded_rate(p) - p) <= 2**-17
    torch.manual_seed(3)
    n = 1 << 22
    kept = keep_mask((n,), p).double().mean().item()
    sigma = (p * (1 - p) / n) ** 0.5
    assert abs(kept - (1 - rounded_rate(p))) < 5 * sigma


def test_keep_mask_drawn_in_blocks_equals_drawn_at_once():
    torch.manual_seed(5)
    whole = keep_mask((12, 10), 0.3)
    torch.manual_seed(5)
    blocks = torch.cat([keep_mask((4, 10), 0.3), keep_mask((8, 10), 0.3)])  # multiples of 4 entries
    assert torch.equal(whole, blocks)


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_inverted_dropout_keeps_one_minus_p_scaled_and_backward_uses_the_same_mask(p):
    torch.manual_seed(0)
    x = torch.randn(300, 257, requires_grad=True)  # a size that is not a multiple of 8
    y = inverted_dropout(x, p)
    kept = y != 0
    assert kept.float().mean().item() == pytest.approx(1 - p, abs=0.01)
    torch.testing.assert_close(y[kept], x[kept] / (1 - rounded_rate(p)))
    grad = torch.randn_like(y)
    y.backward(grad)
    torch.testing.assert_close(x.grad, grad * kept / (1 - rounded_rate(p)))


def test_dropout_module_is_identity_in_eval_and_matches_f_dropout_in_distribution():
    drop = Dropout(0.3).eval()
    x = torch.randn(64, 64)
    assert drop(x) is x
    torch.manual_seed(1)
    ours = (Dropout(0.3).train()(torch.ones(400, 400)) != 0).float().mean().item()
    theirs = (nn.functional.dropout(torch.ones(400, 400), 0.3) != 0).float().mean().item()
    assert ours == pytest.approx(theirs, abs=0.01)


def test_packed_mask_unpacks_to_the_scaled_mask():
    torch.manual_seed(2)
    keep = keep_mask((33, 17), 0.4)
    like = torch.empty(0)
    assert torch.equal(unpacked_mask(pack_bits(keep), keep.shape, 0.4, like), scaled(keep, 0.4, like.dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_scaled_mask_is_the_kept_entries_factor_and_zero_elsewhere(dtype):
    torch.manual_seed(4)
    keep = keep_mask((33, 17), 0.4)
    factor = torch.tensor(1.0 / (1.0 - rounded_rate(0.4)), dtype=dtype)
    assert torch.equal(scaled(keep, 0.4, dtype), torch.where(keep, factor, torch.zeros((), dtype=dtype)))


def test_residual_sum_stays_float32_under_bf16_autocast_while_dropout_acts():
    """Under autocast a Linear's output y is bf16 and the residual stream x float32: x + drop(y)
    is float32, in training (dropout acting) as in evaluation, and equals the sum of the same
    dropped values."""
    drop = Dropout(0.3).train()
    x = torch.randn(64, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = nn.Linear(32, 32)(torch.randn(64, 32))
        assert y.dtype == torch.bfloat16
        torch.manual_seed(3)
        summed = residual(x, drop, y)
        torch.manual_seed(3)
        dropped = drop(y)
    assert summed.dtype == torch.float32
    assert torch.equal(summed, x + dropped.float())
    assert residual(x, drop.eval(), y).dtype == torch.float32


# ------------------------------------------------------------------ fused LayerNorm + MLP


def _plain(module: nn.Module):
    """A no-op forward hook: the model then calls this module (and its parts) one by one."""
    return module.register_forward_hook(lambda m, i, o: None)


@pytest.mark.parametrize("p", [0.0, 0.3])
def test_fused_norm_mlp_equals_the_modules_forward_and_backward(p, monkeypatch):
    monkeypatch.setattr("stanhop.model._NormMLP.CHUNK_ROWS", 16)  # several row blocks, a ragged last one
    torch.manual_seed(0)
    norm, mlp = nn.LayerNorm(12), MLP(12, 20, p).train()
    r = torch.randn(5, 11, 12)

    def run(plain: bool):
        handle = _plain(norm) if plain else None
        x = r.clone().requires_grad_()
        torch.manual_seed(7)  # the same random words, drawn in the same (row) order on both paths
        z, m = norm_mlp(x, norm, mlp)
        (z.square().sum() + (m * torch.linspace(-1, 1, 12)).sum()).backward()
        grads = [x.grad] + [t.grad.clone() for t in (*norm.parameters(), *mlp.parameters())]
        for t in (*norm.parameters(), *mlp.parameters()):
            t.grad = None
        if handle:
            handle.remove()
        return z, m, grads

    z_fused, m_fused, g_fused = run(plain=False)
    z_plain, m_plain, g_plain = run(plain=True)
    torch.testing.assert_close(z_fused, z_plain)
    torch.testing.assert_close(m_fused, m_plain, atol=1e-5, rtol=1e-5)
    for a, b in zip(g_fused, g_plain):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_fused_norm_mlp_gradcheck_in_float64():
    torch.manual_seed(0)
    norm, mlp = nn.LayerNorm(6).double(), MLP(6, 10, 0.0).double()
    r = torch.randn(9, 6, dtype=torch.float64, requires_grad=True)

    def f(x):
        z, m = norm_mlp(x, norm, mlp)
        return z * 0.5 + m

    assert torch.autograd.gradcheck(f, (r,))


# ------------------------------------------------------------------ the network's shortcuts


def _cfg(**kw) -> ModelConfig:
    base = dict(in_len=24, out_len=12, seg_len=6, win_size=2, d_model=16, d_ff=32, n_heads=2, e_layers=2,
                factor=3, dropout=0.0, n_series=3, separation="entmax")
    return ModelConfig(**{**base, **kw})


@pytest.mark.parametrize("separation", ["entmax", "softmax1"])
def test_composed_pooling_projection_equals_pooling_then_keys_values(separation):
    torch.manual_seed(0)
    block = STanHopBlock(_cfg(separation=separation, cross_series="router")).train()
    x = torch.randn(4, 3, 5, 16)

    def run(plain: bool):
        handle = _plain(block.pooling) if plain else None
        assert observed(block.pooling, block.cross_series.kv) == plain
        out = block(x)
        out.square().sum().backward()
        grads = {n: p.grad.clone() for n, p in block.named_parameters()}
        block.zero_grad(set_to_none=True)
        if handle:
            handle.remove()
        return out, grads

    fast, g_fast = run(plain=False)
    plain, g_plain = run(plain=True)
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)
    for name in g_plain:
        torch.testing.assert_close(g_fast[name], g_plain[name], atol=1e-5, rtol=1e-4, msg=name)


def test_decoder_first_block_once_for_the_batch_equals_once_per_sample():
    torch.manual_seed(0)
    model = STanHopNet(_cfg(e_layers=2)).eval()  # no dropout: every sample's first block is the same
    x = torch.randn(5, 24, 3)
    fast = model(x)
    handle = _plain(model.decoder.layers[0].block)  # the block then runs once per sample
    plain = model(x)
    handle.remove()
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)
    single = torch.cat([model(x[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(fast, single, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("x_b,y_b", [(1, 4), (4, 1), (4, 4), (1, 1)])
def test_batched_mm_broadcasts_a_batch_of_one(x_b, y_b):
    torch.manual_seed(0)
    x, y = torch.randn(x_b, 3, 5), torch.randn(y_b, 5, 2)
    b = max(x_b, y_b, 4)
    torch.testing.assert_close(_batched_mm(x, y, b), (x @ y).expand(b, -1, -1))


@pytest.mark.parametrize("separation", ["entmax", "softmax1"])
def test_checkpointed_training_step_equals_the_plain_one_with_dropout(separation):
    """model.checkpoint recomputes blocks in the backward pass with the same dropout draws."""
    x, y = torch.randn(4, 24, 3), torch.randn(4, 12, 3)
    results = []
    for on in (False, True):
        torch.manual_seed(0)
        model = STanHopNet(_cfg(separation=separation, dropout=0.3, checkpoint=on)).train()
        torch.manual_seed(1)
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (loss_plain, g_plain), (loss_ckpt, g_ckpt) = results
    torch.testing.assert_close(loss_ckpt, loss_plain)
    for name, grad in g_plain.items():
        torch.testing.assert_close(g_ckpt[name], grad, atol=1e-6, rtol=1e-5, msg=name)
