"""On a CUDA GPU: the model computes what it computes on the CPU, its dropout and bf16
autocast train, and a run trained on the GPU is evaluated in a process that sees no GPU.

Skipped where torch sees no GPU (CI has none); ``benchmarks/gpu.sh`` runs them on one.
"""

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from stanhop import memory as M
from stanhop.config import SEPARATIONS
from stanhop.dropout import keep_mask, pack_bits, rounded_rate, unpack_bits
from stanhop.model import MLP, STanHopNet, norm_mlp
from test_model import coupled_sines, tiny  # the model tests' tiny config and series
from test_optimiser_step import CLIP, clipped_steps

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

ROOT = Path(__file__).resolve().parents[1]
GPU = torch.device("cuda")


@pytest.fixture(autouse=True)
def strict_float32():
    """Full float32 products on the GPU (no TF32), so that it can be compared with the CPU."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def loss_and_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
    return loss.detach().cpu(), {n: p.grad.cpu().clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("separation", SEPARATIONS)
@pytest.mark.parametrize("gate", [False, True])
def test_a_training_step_on_the_gpu_equals_the_cpu(separation, gate):
    """Loss and every gradient agree (dropout 0; the GPU takes its own paths: SDPA for the
    softmax maps, entmax's convergence checked from the fifth step)."""
    torch.manual_seed(0)
    model = STanHopNet(tiny(separation=separation, gate=gate)).train()
    x, y = torch.randn(6, 24, 3) * 2, torch.randn(6, 8, 3)
    loss_cpu, grads_cpu = loss_and_grads(model, x, y)
    loss_gpu, grads_gpu = loss_and_grads(copy.deepcopy(model).to(GPU), x.to(GPU), y.to(GPU))
    torch.testing.assert_close(loss_gpu, loss_cpu, rtol=1e-5, atol=1e-6)
    assert grads_gpu.keys() == grads_cpu.keys()
    scale = max(g.abs().max().item() for g in grads_cpu.values())
    for name, grad in grads_cpu.items():
        torch.testing.assert_close(grads_gpu[name], grad, rtol=1e-3, atol=1e-5 * scale, msg=name)


def test_dropout_masks_on_the_gpu_keep_one_minus_p_and_pack_as_on_the_cpu():
    torch.manual_seed(0)
    p = 0.3
    keep = keep_mask((1000, 1000), p, GPU)
    assert keep.device.type == "cuda" and keep.dtype == torch.bool
    assert abs(keep.float().mean().item() - (1 - rounded_rate(p))) < 0.003  # 1e6 draws: σ ≈ 0.0005
    flips = keep[:, :-1].ne(keep[:, 1:]).float().mean().item()  # neighbours independent: 2p(1 − p)
    assert abs(flips - 2 * p * (1 - p)) < 0.005
    sample = keep[:37, :29].cpu()
    assert torch.equal(pack_bits(sample.to(GPU)).cpu(), pack_bits(sample))
    assert torch.equal(unpack_bits(pack_bits(sample.to(GPU)), sample.shape).cpu(), sample)


@pytest.mark.parametrize("p", [0.0, 0.3])
def test_fused_norm_mlp_gradcheck_on_the_gpu(p):
    """Forward and backward of the fused LayerNorm + MLP agree in float64, dropout included (the
    same seed before every call: the same mask, which the backward pass must reuse)."""
    torch.manual_seed(0)
    norm, mlp = nn.LayerNorm(6).double().to(GPU), MLP(6, 10, p).double().to(GPU).train()
    r = torch.randn(9, 6, dtype=torch.float64, device=GPU, requires_grad=True)

    def f(x):
        torch.manual_seed(7)
        z, m = norm_mlp(x, norm, mlp)
        return z * 0.5 + m

    assert torch.autograd.gradcheck(f, (r,))


@pytest.mark.parametrize("separation", ["entmax", "softmax1"])
def test_checkpointed_blocks_on_the_gpu_redraw_the_same_dropout(separation):
    x, y = torch.randn(4, 24, 3, device=GPU), torch.randn(4, 8, 3, device=GPU)
    results = []
    for on in (False, True):
        torch.manual_seed(0)
        model = STanHopNet(tiny(separation=separation, dropout=0.3, checkpoint=on)).to(GPU).train()
        torch.manual_seed(1)
        results.append(loss_and_grads(model, x, y))
    (loss_plain, g_plain), (loss_ckpt, g_ckpt) = results
    torch.testing.assert_close(loss_ckpt, loss_plain)
    for name, grad in g_plain.items():
        torch.testing.assert_close(g_ckpt[name], grad, atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("separation, gate", [("entmax", False), ("softmax1", True), ("sparsemax", False)])
def test_bf16_autocast_on_the_gpu_is_close_to_float32_and_trains(separation, gate):
    torch.manual_seed(0)
    model = STanHopNet(tiny(separation=separation, gate=gate, dropout=0.1)).to(GPU)
    series = coupled_sines().to(GPU)
    starts = torch.arange(len(series) - 32 + 1, device=GPU)
    windows = series[starts[:, None] + torch.arange(32, device=GPU)]  # (n, 32, c)
    x, y = windows[:, :24], windows[:, 24:]
    model.eval()
    with torch.no_grad():
        full = model(x[:64])
        with torch.autocast("cuda", dtype=torch.bfloat16):
            half = model(x[:64]).float()
    assert (half - full).norm() / full.norm() < 0.05
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, fused=True)
    g = torch.Generator(device=GPU).manual_seed(0)
    losses = []
    for _ in range(60):
        idx = torch.randint(0, len(x), (32,), generator=g, device=GPU)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = nn.functional.mse_loss(model(x[idx]).float(), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) / 5 < 0.4 * sum(losses[:3]) / 3, losses


def test_plug_and_play_on_the_gpu_with_lambda_zero_is_the_plain_model():
    torch.manual_seed(0)
    model = STanHopNet(tiny()).eval()
    g = torch.Generator().manual_seed(1)
    memory = M.MemorySet(torch.randn(10, 24, 3, generator=g), torch.randn(10, 8, 3, generator=g), torch.arange(10) * 100)
    plugged = M.plug_and_play(model.to(GPU), memory, lam=0.0, beta=4.0).to(GPU)  # memory on the CPU
    x = torch.cat([memory.windows[:4] + 0.1 * torch.randn(4, 24, 3), torch.randn(4, 24, 3) * 3]).to(GPU)
    with torch.no_grad():
        assert torch.equal(plugged(x), model(x))
        plugged.plugin.lam = 0.5
        mixed = plugged(x)
    assert torch.isfinite(mixed).all() and not torch.allclose(mixed, model(x).detach())


def test_a_run_trained_on_the_gpu_in_bf16_is_evaluated_without_a_gpu(tmp_path, fast_smoke_args):
    """Training, Plug-and-Play's choice of λ and β and Tune-and-Play's tuning on the GPU; the run
    then evaluates the same in a process that sees no GPU."""
    run = tmp_path / "gpu-run"
    train = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "train", "--config", str(ROOT / "configs" / "smoke.yaml"),
         "--accelerator", "gpu", "--precision", "bf16-mixed", "--memory", "tune", "--memory-size", "16", "--out", str(run),
         *fast_smoke_args, "--set", "memory.tune_epochs=1"],
        capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stderr[-3000:]
    trained = json.loads((run / "metrics.json").read_text())
    no_gpu = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    evaluate = subprocess.run([sys.executable, str(ROOT / "cli.py"), "evaluate", str(run)],
                              capture_output=True, text=True, timeout=600, env=no_gpu)
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    again = json.loads((run / "metrics.json").read_text())
    assert math.isfinite(trained["test"]["mse"]) and trained["memory"]["kind"] == "tune"
    assert again["test"]["mse"] == pytest.approx(trained["test"]["mse"], rel=1e-5)
    assert again["memory"]["test_mse"] == pytest.approx(trained["memory"]["test_mse"], rel=1e-5)


@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
def test_the_optimiser_steps_with_the_clipped_unscaled_gradient_on_the_gpu(precision):
    """As test_optimiser_step, with Lightning's own GPU precision plugin (and its CUDA scaler)."""
    record = clipped_steps(precision, accelerator="gpu")
    assert record.fused == (precision != "16-mixed")
    assert len(record.norms) >= 2 and record.norms == pytest.approx([CLIP] * len(record.norms), rel=1e-3)
