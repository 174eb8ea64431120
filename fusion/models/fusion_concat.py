"""Concatenation fusion: [a ; v ; ...] -> dropout (the head's Linear follows)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from avemo.fusion.models.dropout import Dropout
from avemo.fusion.registry import FUSION


@FUSION.register("concat")
class ConcatFusion(nn.Module):
    """Concatenate modality vectors on the last axis, then dropout."""

    def __init__(self, dims: list[int], dropout: float = 0.0) -> None:
        super().__init__()
        self.out_dim = int(sum(dims))
        self.drop = Dropout(dropout)

    def forward(self, xs: list[Tensor]) -> Tensor:
        return self.drop(torch.cat(xs, dim=-1))
