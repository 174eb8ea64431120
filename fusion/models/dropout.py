"""Dropout that costs on a CPU what the rest of the layer costs.

PyTorch's CPU dropout draws its mask with a per-element Bernoulli sampler (~10 ns per element
on this machine): in the FAN models, whose layers are a few multiply-adds per element, it was
75 % of a training run's compute. Here a mask element is a 15-bit lane of a random 64-bit word
(four lanes per generator call) compared with ``round(p * 2**15)``: the drop probability is
``p`` to within 2**-16, kept values are scaled by ``1 / (1 - p)``, and forward + backward cost
a fifth of the native kernel's (``python -m avemo.bench --only layers``). The draws come from
torch's global generator, so a run is reproducible from its seed; they are not the draws
``torch.nn.Dropout`` makes. Other devices use the native fused kernel.

Under ``torch.func.vmap`` (stacked grid cells) each cell needs its own mask: ``per_cell_masks``
switches to ``rand_like`` draws, which vmap batches per cell (``randomness="different"``); the
word path inside vmap without it is refused by vmap itself, never silently shared.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.nn import functional as F

_LANE = 1 << 15  # 15 random bits per int16 lane (the generator's int64 words have 63)
_per_cell = 0


@contextmanager
def per_cell_masks() -> Iterator[None]:
    """Draw masks with ``rand_like`` (vmap-batched: one mask per stacked cell) inside."""
    global _per_cell
    _per_cell += 1
    try:
        yield
    finally:
        _per_cell -= 1


def _keep_mask(x: Tensor, p: float) -> Tensor:
    """Bool mask of ``x``'s shape, True with probability ``1 - p`` (to 2**-16)."""
    if _per_cell:
        return torch.rand_like(x) >= p
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_()  # [0, 2**63): 4 x 15 bits
    lanes = words.view(torch.int16)[:n].view(x.shape).bitwise_and_(_LANE - 1)
    return lanes >= round(p * _LANE)


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """Inverted dropout of ``x`` with drop probability ``p``; the fast mask on a CPU."""
    if not training or p == 0.0:
        return x
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if x.device.type != "cpu" or not x.is_floating_point():
        return F.dropout(x, p, True)
    if p == 1.0:
        return x * 0.0
    return x * _keep_mask(x, p).to(x.dtype).mul_(1.0 / (1.0 - p))


class Dropout(nn.Dropout):
    """``nn.Dropout`` with the fast CPU mask (same options, no state, same checkpoints)."""

    def forward(self, x: Tensor) -> Tensor:
        if self.inplace:  # in-place callers keep the native kernel's semantics
            return super().forward(x)
        return dropout(x, self.p, self.training)


__all__ = ["Dropout", "dropout", "per_cell_masks"]
