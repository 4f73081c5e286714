"""Shared test set-up: data comes from a local folder, never the network."""

import os
from pathlib import Path

import pytest

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
