"""The process's random generators (Python's, NumPy's, torch's on CPU and CUDA): their states
taken and put back, for a training that seeds them all; and torch's determinism settings,
which Lightning's Trainer sets for the whole process, put back likewise.

``random_states()`` holds only what a checkpoint loads safely (``weights_only``): tensors and
plain numbers, NumPy's state words as a tensor. NumPy and torch are imported when a state is
taken, so that importing this module (stanhop.workflow does) stays cheap.
"""

from __future__ import annotations

import os
import random
from contextlib import contextmanager
from typing import Any

LIGHTNING_SEED_VARIABLES = ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")  # what L.seed_everything sets
CUBLAS_VARIABLE = "CUBLAS_WORKSPACE_CONFIG"  # what Trainer(deterministic=True) sets


def random_states() -> dict[str, Any]:
    """The generators' states now."""
    import numpy as np
    import torch

    kind, words, position, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(words.astype(np.int64)), position, has_gauss, gauss),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
    }


def restore_random_states(states: dict[str, Any]) -> None:
    """Put back what :func:`random_states` took (CUDA's where this machine has as many GPUs)."""
    import numpy as np
    import torch

    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, words, position, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, words.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


@contextmanager
def kept_random_state():
    """Within the block the generators may be seeded and drawn from; on the way out they, and
    Lightning's seed variables, are as they were on the way in (a caller's draws go on)."""
    states = random_states()
    with _kept_variables(LIGHTNING_SEED_VARIABLES):
        try:
            yield
        finally:
            restore_random_states(states)


@contextmanager
def kept_determinism():
    """Within the block torch's deterministic-algorithms setting (and its warn_only), cuDNN's
    benchmark flag and CUBLAS_WORKSPACE_CONFIG may change, as Lightning's
    Trainer(deterministic=True) changes them; on the way out they are as they were on the way in."""
    import torch

    enabled, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    with _kept_variables((CUBLAS_VARIABLE,)):
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
            torch.backends.cudnn.benchmark = benchmark


@contextmanager
def _kept_variables(names):
    """The environment variables ``names`` as they were on the way in, on the way out."""
    env = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
