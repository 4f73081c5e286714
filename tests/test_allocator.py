"""stanhop.allocator: a training process keeps freed memory mapped for reuse (glibc only): the CLI's
training commands set it; the Python API leaves the caller's process as it is."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import cli
from stanhop.errors import UserError

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc thresholds")
SMOKE = str(Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml")

_PROBE = """
import os, sys, torch
from stanhop.allocator import retain_freed_memory
if sys.argv[1] == "retain":
    assert retain_freed_memory()
elif sys.argv[1] == "train":  # a training from Python, in the process of the caller's own work
    from stanhop.config import apply_overrides, load_config
    from stanhop.workflow import train
    one_step = ["data.split=0.03/0.01/0.01", "train.limit_train_batches=1", "train.max_epochs=1"]
    train(apply_overrides(load_config(sys.argv[2]), one_step), sys.argv[3], progress=False)
def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
base = rss_mib()
buffer = torch.ones(30 * 2**18)  # 30 MiB, every page written
held = rss_mib() - base
del buffer
print(round(held), round(rss_mib() - base))
"""


def _held_and_kept_mib(*args: str) -> tuple[int, int]:
    done = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, check=True)
    held, kept = done.stdout.split()
    return int(held), int(kept)


@glibc
def test_freed_activations_stay_mapped_for_the_next_step():
    held, kept = _held_and_kept_mib("retain")
    assert held >= 29 and kept >= 29  # freed, but still mapped: the next step reuses it without page faults


@glibc
def test_by_default_glibc_hands_a_large_freed_block_back():
    held, kept = _held_and_kept_mib("default")  # what retain_freed_memory changes
    assert held >= 29 and kept <= 5


@glibc
def test_training_from_python_leaves_the_callers_allocator_as_it_was(tmp_path):
    # workflow.train set the thresholds for the caller's whole process, for good
    held, kept = _held_and_kept_mib("train", SMOKE, str(tmp_path / "run"))
    assert held >= 29 and kept <= 5


@pytest.mark.parametrize("command, library", [("train", "stanhop.workflow.train"),
                                              ("tune", "stanhop.memory_runs.add_memory"),
                                              ("compare", "stanhop.study.run_study")])
def test_the_cli_commands_that_train_keep_freed_memory_before_training(monkeypatch, tmp_path, command, library):
    calls = []

    def training(*args, **kwargs):
        calls.append("train")
        raise UserError("stopped before any work")

    monkeypatch.setattr(cli, "retain_freed_memory", lambda: calls.append("retain"))
    monkeypatch.setattr(library, training)
    args = {"train": ["--config", SMOKE, "--out", tmp_path / "run"], "tune": [tmp_path / "run"],
            "compare": ["--config", SMOKE, "--out", tmp_path / "study"]}[command]
    result = CliRunner().invoke(cli.cli, [command, *map(str, args)])
    assert calls == ["retain", "train"], result.output
