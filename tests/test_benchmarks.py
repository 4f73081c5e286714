"""The analysis scripts in benchmarks/ run on a real (smoke) run and report sane figures."""

import importlib.util
from pathlib import Path

import pytest

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
