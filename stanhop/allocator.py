"""Keep freed memory mapped in a training process (glibc's malloc).

A training step allocates and frees the same large activation buffers every step. By
default glibc hands large freed blocks back to the kernel (it unmaps a block it mapped on
its own, and trims the top of its heap), so the next step maps them again and every 4 KiB
page of them is faulted in and zeroed once more: at the ETTh1 horizon-24 setting, 35,000 to
100,000 page faults per training step.

``retain_freed_memory()`` raises glibc's mmap threshold to its ceiling (32 MiB: blocks up
to that size come from the heap) and its trim threshold to 2 GiB (freed heap memory stays
mapped and is reused): past the first steps a step faults in a few pages at most. Freed
blocks are reused, so peak RSS stays near where it was (h24: within the runs' spread;
configs/etth1.yaml: 6 % higher, as kept blocks fragment), and the process keeps its peak until
it exits, which suits a process that trains. A no-op where the C library is not glibc (macOS,
Windows, musl).

It is a setting of the whole process, for good, so it is the process's to choose: the CLI's
training commands (``stanhop train``, ``tune``, ``compare``) and the benchmarks call it first;
the Python API (``stanhop.workflow.train``) does not, and a program that trains from Python
gets the same speed by calling ``retain_freed_memory()`` once itself.
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["retain_freed_memory"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's ceiling on 64-bit systems
_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int


def retain_freed_memory() -> bool:
    """Set glibc's thresholds as the module docstring says; True where they were set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version"):  # not glibc: no such thresholds
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
