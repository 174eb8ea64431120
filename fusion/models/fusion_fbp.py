"""Factorized bilinear pooling (MFB, Yu et al. 2017) of two modality vectors.

x = Linear(da -> k*o)(a), y = Linear(dv -> k*o)(v); z = Dropout(p)(x * y); sum-pool groups of
k consecutive elements -> o; power normalisation sqrt(relu z) - sqrt(relu -z); L2
normalisation (zero vector guarded). Defaults k = 5, o = 1000, p = 0.1 are MFB's; the values
used by the two EmotiW papers are UNVERIFIED, hence options. Works on ``[..., d]`` so the
same module fuses clip vectors and per-frame vectors.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from avemo.fusion.models.dropout import Dropout
from avemo.fusion.registry import FUSION


def power_normalise(z: Tensor, eps: float = 1e-12) -> Tensor:
    """sign(z) sqrt(|z|): exact for |z| >= eps, finite gradient everywhere (0 at z = 0)."""
    return torch.sign(z) * torch.sqrt(z.abs().clamp_min(eps))


def l2_normalise(z: Tensor, eps: float = 1e-12) -> Tensor:
    """z / ||z||_2 over the last axis; the zero vector stays zero."""
    return nn.functional.normalize(z, p=2.0, dim=-1, eps=eps)


@FUSION.register("fbp")
class FBP(nn.Module):
    """MFB factorized bilinear pooling of exactly two vectors (k, o, dropout, power, L2)."""

    def __init__(
        self,
        dims: list[int],
        k: int = 5,
        o: int = 1000,
        dropout: float = 0.1,
        power: bool = True,
        l2: bool = True,
    ) -> None:
        super().__init__()
        if len(dims) != 2:
            raise ValueError(
                f"fbp fuses exactly two vectors, got {len(dims)} (dims {dims}); "
                "group extra streams into one role first"
            )
        self.k, self.o = int(k), int(o)
        self.proj_a = nn.Linear(int(dims[0]), self.k * self.o)
        self.proj_b = nn.Linear(int(dims[1]), self.k * self.o)
        self.drop = Dropout(dropout)
        self.power, self.l2 = power, l2
        self.out_dim = self.o

    def forward(self, xs: list[Tensor]) -> Tensor:
        a, b = xs
        z = self.drop(self.proj_a(a) * self.proj_b(b))
        z = z.unflatten(-1, (self.o, self.k)).sum(-1)
        if self.power:
            z = power_normalise(z)
        if self.l2:
            z = l2_normalise(z)
        return z
