"""Shared test set-up: data comes from a local folder, never the network."""

import os
from pathlib import Path

import pytest

# Tests run tiny models, for which one thread is fastest; on a shared machine OpenMP's
# spinning threads can make two 10x slower. Set before torch loads (subprocesses inherit it).
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
_shared = ROOT.parent / "shared" / "data"
if "STANHOP_DATA_DIR" not in os.environ and _shared.is_dir():
    os.environ["STANHOP_DATA_DIR"] = str(_shared)


@pytest.fixture
def etth1_path() -> Path:
    """The real ETTh1 file from STANHOP_DATA_DIR (CI points it at ../shared/data)."""
    path = Path(os.environ["STANHOP_DATA_DIR"]) / "ETTh1.csv"
    assert path.is_file(), f"ETTh1.csv not found in STANHOP_DATA_DIR={os.environ['STANHOP_DATA_DIR']}"
    return path
