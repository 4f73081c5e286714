"""The analysis scripts in benchmarks/ run on a real (smoke) run and report sane figures."""

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from stanhop.config import load_config
from stanhop.model import STanHopNet

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_retrieval_weights_of_a_trained_run(run):
    figures = load_script("retrieval_weights").retrieval_weights(run, batches=2)
    assert any(name.endswith("temporal") for name in figures)
    for name, f in figures.items():
        assert f["uniform"] - 1e-6 <= f["max_weight"] <= 1.0, name  # the largest weight is at least the mean
        assert f["null_mass"] == pytest.approx(0.0, abs=1e-5), name  # the smoke run's map sums to one
        assert f["p_null_over_half"] == 0.0


def test_train_step_measures_a_config_file_in_micro_batches():
    smoke = ROOT / "configs" / "smoke.yaml"  # batch 64, here 8 windows a pass
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_step.py"), "--config", str(smoke),
                           "--separations", "softmax1", "--steps", "1", "--warmup", "1", "--micro-batch", "8"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "batch 64" in done.stdout and "micro-batches of 8" in done.stdout
    figures = json.loads(done.stdout.strip().splitlines()[-1])["softmax1"]
    model = load_config(smoke).model
    model.separation = "softmax1"
    assert figures["params"] == sum(p.numel() for p in STanHopNet(model).parameters())
    assert figures["s_per_step"] > 0 and figures["gflop_per_step"] > 0 and figures["peak_rss_mib"] > 0


def test_the_json_line_keeps_the_fastest_step_against_the_highest_matmul_rate_of_the_run():
    best = load_script("train_step").best
    slow_reference = {"s_per_step": 2.2, "_achieved_gflop_s": 92.0, "_matmul_gflop_s": 110.0, "efficiency": 0.836,
                      "fwd_samples_per_s": 200.0, "peak_rss_mib": 1400}
    fast_reference = {"s_per_step": 2.3, "_achieved_gflop_s": 88.0, "_matmul_gflop_s": 138.0, "efficiency": 0.638,
                      "fwd_samples_per_s": 210.0, "peak_rss_mib": 1450}
    figures = best([slow_reference, fast_reference], top_rate=140.0)
    assert figures["s_per_step"] == 2.2 and figures["efficiency"] == pytest.approx(92.0 / 140.0, abs=1e-3)
    assert figures["fwd_samples_per_s"] == 210.0 and figures["peak_rss_mib"] == 1450
    assert not any(key.startswith("_") for key in figures)


def test_the_step_profile_clock_times_every_operator_once_forward_and_backward(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # step_profile imports train_step as its neighbour
    clock = load_script("step_profile").OperatorClock()
    a = torch.randn(256, 256, requires_grad=True)
    b = torch.randn(256, 256, requires_grad=True)
    start = time.perf_counter()
    with clock:
        (a @ b).relu().sum().backward()
    elapsed = time.perf_counter() - start
    assert clock.calls["mm"] == 3  # a @ b, then the gradients of a and b
    assert clock.calls["relu"] == 1 and clock.calls["sum"] == 1
    assert 0 < sum(clock.seconds.values()) <= elapsed  # each call timed once, none nested in another
