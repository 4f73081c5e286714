"""Shared test set-up: data comes from a local folder, never the network."""

import os
from pathlib import Path

import pytest

from stanhop import datasets

# Tests run tiny models, for which one thread is fastest; on a shared machine OpenMP's
# spinning threads can make two 10x slower. Set before torch loads (subprocesses inherit it).
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
_shared = ROOT.parent / "shared" / "data"
if "STANHOP_DATA_DIR" not in os.environ and _shared.is_dir():
    os.environ["STANHOP_DATA_DIR"] = str(_shared)
# ETTh1 where the library finds it without downloading (STANHOP_DATA_DIR, then the cache that
# `make quickstart` fills); the tests never download. Subprocesses get its folder.
ETTH1 = datasets.local_copy("ETTh1")
if ETTH1 is not None:
    os.environ["STANHOP_DATA_DIR"] = str(ETTH1.parent)


def pytest_sessionstart(session) -> None:
    if ETTH1 is None:
        pytest.exit("the tests need ETTh1.csv on this machine and never download it: run `make quickstart` once "
                    "(it downloads and caches it), or set STANHOP_DATA_DIR to a folder holding it", returncode=2)


@pytest.fixture
def etth1_path() -> Path:
    """The real ETTh1 file (CI points STANHOP_DATA_DIR at ../shared/data)."""
    return ETTH1


# smoke.yaml with smaller parts and 4 training batches an epoch: the same kind of run, faster
FAST_SMOKE = ["data.split=0.03/0.01/0.01", "train.limit_train_batches=4", "train.max_epochs=2"]


@pytest.fixture
def fast_smoke_args() -> list[str]:
    """FAST_SMOKE as `stanhop train` options (with --config configs/smoke.yaml)."""
    return [arg for setting in FAST_SMOKE for arg in ("--set", setting)]


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    """One trained smoke run per test session, shared by the forecast and plot tests."""
    from stanhop.config import apply_overrides, load_config
    from stanhop.workflow import train

    out = tmp_path_factory.mktemp("smoke-run")
    train(apply_overrides(load_config(ROOT / "configs" / "smoke.yaml"), FAST_SMOKE), out, force=True, progress=False)
    return out


@pytest.fixture(scope="session")
def run(run_dir):
    import stanhop

    return stanhop.load_run(run_dir)


@pytest.fixture(scope="session")
def etth1():
    from stanhop.csvio import load_series

    return load_series("ETTh1")
