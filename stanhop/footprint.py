"""How much memory a training step holds, and how much this machine has free.

A training step keeps every window's activations for the backward pass, so its memory grows
with the windows in one forward/backward pass (``train.micro_batch_size``, else the batch)
and with the number of series: the default config trains on ETTh1's 7 series in ≈ 3 GiB,
but on Electricity's 321 the same micro-batch would hold over 100 GiB, and the machine would
swap or kill the process. ``fit_micro_batch`` measures the activations the model keeps per
window, by a forward pass of one and of two windows with a hook on every saved tensor, and
lowers the micro-batch to what fits in the free memory. Micro-batches give the whole batch's
gradients (stanhop.optimisation.accumulate_gradients), but for dropout, whose masks are drawn
micro-batch by micro-batch: other draws, as another seed's.

Free memory is Linux's MemAvailable, within the process's cgroup limit (a container's) if
it has one; elsewhere (macOS) the physical memory stands for it; where neither is known
(Windows) nothing is changed.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from stanhop.errors import UserError

__all__ = ["Activations", "Memory", "activations", "free_memory", "fit_micro_batch"]

GiB = 2**30
INFERENCE_SERIES_WINDOWS = 16384  # series-windows a forward pass without gradients takes at once


def inference_windows(n_series: int, most: int = 256) -> int:
    """Windows a forward pass without gradients (evaluation, forecasts) takes at once: ``most``,
    fewer for many series (a window of Electricity's 321 holds 46 times the activations of one
    of ETTh1's 7). It keeps no activations for a backward pass, so it takes far more windows than
    a training step of the same memory."""
    return max(1, min(most, INFERENCE_SERIES_WINDOWS // max(1, n_series)))
PEAK_OVER_SAVED = 1.25  # a step's live peak over its saved tensors: 441.6 vs 363.6 MiB at h24 (torch's memory timeline)
USABLE = 0.7  # of the free memory, the share a step may take (the data, the optimiser and other processes need some)


@dataclass(frozen=True)
class Activations:
    """Bytes of the tensors a training forward pass keeps for the backward pass."""

    fixed: int  # whatever the number of windows (the decoder's learned queries, parameters' copies)
    per_window: int

    def step_peak(self, windows: int) -> float:
        """Estimated live peak of a forward/backward pass of ``windows`` windows, in bytes."""
        return PEAK_OVER_SAVED * (self.fixed + windows * self.per_window)


def activations(model: nn.Module, in_len: int, n_series: int, *, bf16: bool = False) -> Activations:
    """Measured on ``model`` in training mode: forward passes of 1 and 2 random windows, every
    tensor saved for backward counted once (by storage); the random state is left as it was."""
    def saved_bytes(windows: int) -> int:
        storages: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            storage = t.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
            return t

        x = torch.randn(windows, in_len, n_series)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
                torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            model(x)
        return sum(storages.values())

    was_training = model.training
    model.train()
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        one, two = saved_bytes(1), saved_bytes(2)
    model.train(was_training)
    return Activations(fixed=max(one - (two - one), 0), per_window=max(two - one, 1))


class Memory(NamedTuple):
    """What this machine has for a training step: ``bytes``, and how they were found (``kind``:
    "free", or "in all" where only the physical memory is known)."""

    bytes: int
    kind: str


MEMINFO = Path("/proc/meminfo")


def free_memory() -> Memory | None:
    """Linux: MemAvailable, capped by a cgroup (v2 or v1) limit less its usage ("free").
    Elsewhere the physical memory, as ``os.sysconf`` gives it (macOS; "in all"); None where
    neither is known (Windows)."""
    try:
        meminfo = MEMINFO.read_text()
    except OSError:
        return _physical_memory()
    free = next((int(line.split()[1]) * 1024 for line in meminfo.splitlines() if line.startswith("MemAvailable:")), None)
    if free is None:
        return _physical_memory()
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            cap, used = Path(limit).read_text().strip(), int(Path(usage).read_text())
        except (OSError, ValueError):
            continue
        if cap.isdigit() and int(cap) < 2**60:  # "max" or a huge number: no limit
            free = min(free, int(cap) - used)
        break
    return Memory(free, "free")


def _physical_memory() -> Memory | None:
    try:
        return Memory(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "in all")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows), or no such name
        return None


def fit_micro_batch(planned: int, measured: Activations, memory: Memory, n_series: int) -> int:
    """``planned`` windows per pass if their step fits in USABLE × the memory, else the most
    that do; a UserError when not even one window fits."""
    budget = USABLE * memory.bytes
    if measured.step_peak(planned) <= budget:
        return planned
    fitting = math.floor((budget / PEAK_OVER_SAVED - measured.fixed) / measured.per_window)
    if fitting < 1:
        raise UserError(
            f"one window of {n_series} series holds ≈ {measured.step_peak(1) / GiB:.1f} GiB of activations in training, "
            f"more than this machine has ({memory.bytes / GiB:.1f} GiB {memory.kind}): choose fewer series (--columns), a shorter "
            "--in-len, or a smaller model (--set model.d_model=...), or free memory")
    return fitting
