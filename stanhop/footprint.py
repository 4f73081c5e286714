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

The parameters take memory too, whatever the windows: in training each has its gradient and
Adam's two moments beside it (``training_state``: 4 × their bytes), counted on the model made on
torch's meta device (no storage) before the real one, so that a model too large for the machine
(``--set model.d_model=100000``: 2.7 TiB) is refused before it is allocated.

Free memory is Linux's MemAvailable, within the process's cgroup limit (a container's) if
it has one; elsewhere (macOS) the physical memory stands for it; where neither is known
(Windows) nothing is changed. Where the address space is limited (``ulimit -v``, RLIMIT_AS, as
shared servers set it) and what is left of it is less, that is the memory there is.
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

__all__ = ["Activations", "Memory", "activations", "free_memory", "fit_micro_batch", "most_windows",
           "refuse_oversized_model", "training_state"]

GiB = 2**30
INFERENCE_SERIES_WINDOWS = 16384  # series-windows a forward pass without gradients takes at once


def inference_windows(n_series: int, most: int = 256) -> int:
    """Windows a forward pass without gradients (evaluation, forecasts) takes at once: ``most``,
    fewer for many series (a window of Electricity's 321 holds 46 times the activations of one
    of ETTh1's 7). It keeps no activations for a backward pass, so it takes far more windows than
    a training step of the same memory."""
    return max(1, min(most, INFERENCE_SERIES_WINDOWS // max(1, n_series)))
ADAM_COPIES = 4  # in training, each parameter, its gradient and Adam's two moments (exp_avg, exp_avg_sq)
# of the address space left under ulimit -v, the share that holds data: freed blocks malloc keeps mapped, their
# fragments and threads' arenas take address space too (a training of 10,000 series grew its address space by
# 1.6 × the estimate of its step, and ran out of it under ulimit -v 4000000 with the whole of it counted)
ADDRESS_SPACE_SHARE = 0.6
PEAK_OVER_SAVED = 1.25  # a step's live peak over its saved tensors: 441.6 vs 363.6 MiB at h24 (torch's memory timeline)
USABLE = 0.7  # of the free memory, the share a step may take (the data, the optimiser and other processes need some)


@dataclass(frozen=True)
class Activations:
    """Bytes of the tensors a training forward pass keeps for the backward pass."""

    fixed: int  # whatever the number of windows (the decoder's learned queries; not the parameters: training_state)
    per_window: int

    def step_peak(self, windows: int) -> float:
        """Estimated live peak of a forward/backward pass of ``windows`` windows, in bytes."""
        return PEAK_OVER_SAVED * (self.fixed + windows * self.per_window)


def activations(model: nn.Module, in_len: int, n_series: int, *, bf16: bool = False) -> Activations:
    """Measured on ``model`` in training mode: forward passes of 1 and 2 random windows, every
    tensor saved for backward counted once (by storage), the parameters themselves not (they are
    held anyway: training_state); the random state is left as it was."""
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def saved_bytes(windows: int) -> int:
        storages: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            storage = t.untyped_storage()
            if storage.data_ptr() not in parameters:
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


def training_state(model: nn.Module) -> int:
    """Bytes the parameters hold in training, whatever the windows: themselves, their gradients
    and Adam's two moments (ADAM_COPIES × their bytes); of a model on the meta device too."""
    return ADAM_COPIES * sum(p.numel() * p.element_size() for p in model.parameters())


def usable(memory: Memory) -> str:
    """The memory a training or forecast may take, in words: "the 15.9 GiB (70 % of the 22.7
    GiB free) that may be taken"."""
    return f"the {USABLE * memory.bytes / GiB:.1f} GiB ({USABLE:.0%} of the {memory.bytes / GiB:.1f} GiB {memory.kind}) that may be taken"


def refuse_oversized_model(model: nn.Module, memory: Memory) -> None:
    """A UserError, saying what to shrink, when ``model``'s training_state takes more than
    USABLE × the memory."""
    if (state := training_state(model)) > USABLE * memory.bytes:
        count = sum(p.numel() for p in model.parameters())
        raise UserError(
            f"the model's {count:,} parameters hold ≈ {state / GiB:.1f} GiB in training (with their gradients and Adam's "
            f"moments), more than {usable(memory)}: choose a smaller model (--set model.d_model=..., model.d_ff=..., "
            "model.e_layers=...), or free memory")


def free_memory() -> Memory | None:
    """The memory this process may take: what the machine has (_machine_memory), or the
    ADDRESS_SPACE_SHARE of its address space left under ``ulimit -v`` where that is less."""
    memory, left = _machine_memory(), _address_space_left()
    if left is not None and (memory is None or ADDRESS_SPACE_SHARE * left < memory.bytes):
        return Memory(int(ADDRESS_SPACE_SHARE * left), "usable under ulimit -v")
    return memory


def _address_space_left() -> int | None:
    """RLIMIT_AS (``ulimit -v``) less the address space this process maps already (Linux's
    VmSize: ≈ 0.9 GiB once torch is imported); None without such a limit (or on Windows)."""
    try:
        import resource
    except ImportError:
        return None
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if limit == resource.RLIM_INFINITY:
        return None
    try:
        status = Path("/proc/self/status").read_text()
        mapped = next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmSize:"))
    except (OSError, StopIteration, ValueError):  # not Linux: the limit as it is
        mapped = 0
    return max(limit - mapped, 0)


def _machine_memory() -> Memory | None:
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


def most_windows(measured: Activations, memory: Memory, state: int = 0) -> int:
    """The most windows whose training step fits in USABLE × the memory beside the parameters'
    ``state`` (training_state); 0 when not even one does."""
    budget = USABLE * memory.bytes - state
    return max(math.floor((budget / PEAK_OVER_SAVED - measured.fixed) / measured.per_window), 0)


def fit_micro_batch(planned: int, measured: Activations, memory: Memory, n_series: int, state: int = 0) -> int:
    """``planned`` windows per pass if their step fits in USABLE × the memory beside the
    parameters' ``state`` (training_state), else the most that do; a UserError when not even
    one window fits."""
    fitting = most_windows(measured, memory, state)
    if fitting >= planned:
        return planned
    if fitting < 1:
        beside = f", ≈ {state / GiB:.1f} GiB of it for the parameters" if state >= 0.05 * GiB else ""
        raise UserError(
            f"one window of {n_series} series holds ≈ {measured.step_peak(1) / GiB:.1f} GiB of activations in training, "
            f"more than {usable(memory)}{beside}: choose fewer series "
            "(--columns), a shorter --in-len, or a smaller model (--set model.d_model=...), or free memory")
    return fitting
