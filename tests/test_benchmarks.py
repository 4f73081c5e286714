"""The analysis scripts in benchmarks/ run on a real (smoke) run and report sane figures."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

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
