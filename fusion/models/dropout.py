"""Dropout that costs on a CPU what the rest of the layer costs.

PyTorch's CPU dropout draws its mask with a per-element Bernoulli sampler (~10 ns per element
on this machine): in the FAN models, whose layers are a few multiply-adds per element, it was
75 % of a training run's compute. Drawing ``u ~ U[0, 1)`` in bulk and keeping ``u >= p`` is
the same distribution (keep probability ``1 - p`` to float resolution, kept values scaled by
``1 / (1 - p)``) at 2-3.5x less time, forward and backward (the table in ``tests/test_fusion_fast_paths.py``'s
docstring says where it was measured). On other devices the native fused kernel is used.
The draws come from the global generator, so runs stay reproducible from their seed; they are
not the draws ``torch.nn.Dropout`` would make.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """Inverted dropout of ``x`` with drop probability ``p``; the bulk-uniform mask on CPU."""
    if not training or p == 0.0:
        return x
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if x.device.type != "cpu" or not x.is_floating_point():
        return F.dropout(x, p, True)
    if p == 1.0:
        return x * 0.0
    # 1/(1-p) where kept, 0 where dropped; out-of-place ``>=`` (vmap has no batching rule for ge_)
    keep = (torch.rand_like(x) >= p).to(x.dtype).mul_(1.0 / (1.0 - p))
    return x * keep


class Dropout(nn.Dropout):
    """``nn.Dropout`` with the fast CPU mask (same options, no state, same checkpoints)."""

    def forward(self, x: Tensor) -> Tensor:
        if self.inplace:  # in-place callers keep the native kernel's semantics
            return super().forward(x)
        return dropout(x, self.p, self.training)


__all__ = ["Dropout", "dropout"]
