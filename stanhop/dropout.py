"""Dropout for CPU training: the same distribution as torch's, drawn and stored cheaper.

``inverted_dropout(x, p)`` is F.dropout's x ⊙ m / (1 − p), mᵢ ~ Bernoulli(1 − p), with

- the uniforms behind m drawn in parallel parts on CPU (``uniforms``): torch fills a CPU
  tensor's bernoulli_/uniform_ in one thread, a tenth of a 2-thread training step;
- the mask kept for the backward pass as bits, 8 entries per byte (``pack_bits``), not as
  a float or bool tensor of the activation's size.

``Dropout`` is nn.Dropout through it; the fused blocks of stanhop.model use the pieces
(``scaled_mask``, ``pack_bits``, ``unpacked_mask``) directly.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["inverted_dropout", "Dropout", "scaled_mask", "unpacked_mask", "uniforms", "pack_bits", "unpack_bits"]


def inverted_dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """Inverted dropout x ⊙ m / (1 − p), mᵢ ~ Bernoulli(1 − p) independently — as F.dropout.

    The mask is mᵢ = [uᵢ ≥ p], uᵢ ~ U[0, 1) (``uniforms``): the same distribution as
    F.dropout's bernoulli_, which draws its uniforms one at a time in one thread and is
    several times slower on CPU. The backward pass keeps only the mask, 8 entries per byte.
    """
    if not training or p == 0.0:
        return x
    if p >= 1.0:
        return x * 0.0
    return _Dropout.apply(x, p)


class _Dropout(torch.autograd.Function):
    """x ⊙ m / (1 − p); the backward pass keeps m packed, 8 entries per byte."""

    @staticmethod
    def forward(ctx, x: Tensor, p: float) -> Tensor:
        mask = scaled_mask(x.shape, p, x)
        ctx.p, ctx.shape = p, mask.shape
        ctx.save_for_backward(pack_bits(mask != 0) if ctx.needs_input_grad[0] else None)
        return x * mask

    @staticmethod
    def backward(ctx, grad: Tensor):
        return unpacked_mask(ctx.saved_tensors[0], ctx.shape, ctx.p, grad).mul_(grad), None


def scaled_mask(shape: torch.Size, p: float, like: Tensor) -> Tensor:
    """m / (1 − p) with mᵢ = [uᵢ ≥ p], uᵢ ~ U[0, 1), built in place in the uniforms' buffer
    (float, like ``like``: multiplying by a bool mask would first copy it to float)."""
    return uniforms(shape, like).ge_(p).mul_(1.0 / (1.0 - p))


_PARALLEL_RNG_MIN = 1 << 18
_rng_pool: tuple[int, ThreadPoolExecutor] | None = None  # (workers, pool)


def uniforms(shape: torch.Size, like: Tensor) -> Tensor:
    """U[0, 1) samples of ``shape`` (dtype and device of ``like``), as torch.rand.

    torch.rand fills a CPU tensor in one thread (a tenth of a 2-thread training step); a
    large one is filled here in torch.get_num_threads() parts at once, each by its own
    generator seeded from the global one (so torch.manual_seed still reproduces a run).
    """
    out = torch.empty(shape, dtype=like.dtype, device=like.device)
    n = torch.get_num_threads()
    if out.device.type != "cpu" or n < 2 or out.numel() < _PARALLEL_RNG_MIN:
        return out.uniform_()
    global _rng_pool
    if _rng_pool is None or _rng_pool[0] != n:
        if _rng_pool is not None:
            _rng_pool[1].shutdown(wait=False)
        _rng_pool = (n, ThreadPoolExecutor(n, thread_name_prefix="stanhop-rng"))
    parts = out.view(-1).chunk(n)
    seeds = torch.randint(0, 2**62, (len(parts),)).tolist()
    list(_rng_pool[1].map(_fill_uniform, parts, seeds))
    return out


def _fill_uniform(part: Tensor, seed: int) -> None:
    part.uniform_(generator=torch.Generator().manual_seed(seed))


def _forget_rng_pool() -> None:  # a forked child has none of the parent's threads
    global _rng_pool
    _rng_pool = None


os.register_at_fork(after_in_child=_forget_rng_pool)


def unpacked_mask(bits: Tensor, shape: torch.Size, p: float, like: Tensor) -> Tensor:
    """scaled_mask's values again, from pack_bits(mask != 0)."""
    return unpack_bits(bits, shape).to(like.dtype).mul_(1.0 / (1.0 - p))


_SPREAD, _BIT_OF_BYTE = 0x0101010101010101, 0x8040201008040201 - 2**64  # int64 bit patterns


def pack_bits(mask: Tensor) -> Tensor:
    """bool (...) -> uint8 (⌈n/8⌉,): entry 8i + j becomes bit j of byte i.

    Each group of 8 bytes (0 or 1), read as one little-endian int64 x, packs to the top byte
    of x · 0x0102040810204080 (the partial products never overlap, so nothing carries).
    """
    flat = mask.reshape(-1).view(torch.uint8)
    if flat.numel() % 8:
        flat = F.pad(flat, (0, -flat.numel() % 8))
    words = flat.view(-1, 8).view(torch.int64).view(-1)
    return words.mul(0x0102040810204080).bitwise_right_shift_(56).to(torch.uint8)


def unpack_bits(bits: Tensor, shape: torch.Size) -> Tensor:
    """The inverse of pack_bits: uint8 (⌈n/8⌉,) -> bool ``shape``.

    Byte b spreads to all 8 bytes of an int64 (b · 0x0101…01), byte j keeps bit j
    (& 0x8040…01), and adding 0x7F to every byte carries a set bit into bit 7 (no byte
    overflows), which the shift by 7 and & 0x0101…01 turn into 0 or 1.
    """
    x = bits.to(torch.int64).mul_(_SPREAD).bitwise_and_(_BIT_OF_BYTE).add_(0x7F7F7F7F7F7F7F7F)
    x = x.bitwise_right_shift_(7).bitwise_and_(_SPREAD)
    return x.view(torch.uint8)[: math.prod(shape)].view(torch.bool).view(shape)


class Dropout(nn.Dropout):
    """nn.Dropout computed by ``inverted_dropout`` (same distribution, faster on CPU)."""

    def forward(self, x: Tensor) -> Tensor:
        return inverted_dropout(x, self.p, self.training)
