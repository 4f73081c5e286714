"""stanhop.allocator: a training process keeps freed memory mapped for reuse (glibc only)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc thresholds")

_PROBE = """
import os, sys, torch
from stanhop.allocator import retain_freed_memory
if sys.argv[1] == "retain":
    assert retain_freed_memory()
def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
base = rss_mib()
buffer = torch.ones(30 * 2**18)  # 30 MiB, every page written
held = rss_mib() - base
del buffer
print(round(held), round(rss_mib() - base))
"""


def _held_and_kept_mib(mode: str) -> tuple[int, int]:
    done = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True)
    held, kept = done.stdout.split()
    return int(held), int(kept)


def test_freed_activations_stay_mapped_for_the_next_step():
    held, kept = _held_and_kept_mib("retain")
    assert held >= 29 and kept >= 29  # freed, but still mapped: the next step reuses it without page faults


def test_by_default_glibc_hands_a_large_freed_block_back():
    held, kept = _held_and_kept_mib("default")  # what retain_freed_memory changes
    assert held >= 29 and kept <= 5
