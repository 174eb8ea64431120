"""Parameter-free temporal pooling: masked mean, masked max, mean+std statistics over frames."""

from __future__ import annotations

import torch
from torch import Tensor

from avemo.fusion.models.base import (
    TemporalModule,
    TemporalOutput,
    masked_max,
    masked_mean,
    zero_invalid,
)
from avemo.fusion.registry import TEMPORAL


@TEMPORAL.register("mean")
class MeanPool(TemporalModule):
    """Masked mean over valid frames (frames pass through unchanged for frame tasks)."""

    def __init__(self, in_dim: int) -> None:
        super().__init__(in_dim)
        self.out_dim = self.in_dim

    def forward(self, x: Tensor, mask: Tensor) -> TemporalOutput:
        return TemporalOutput(zero_invalid(x, mask), masked_mean(x, mask))


@TEMPORAL.register("max")
class MaxPool(TemporalModule):
    """Masked max over valid frames (frames pass through unchanged for frame tasks)."""

    def __init__(self, in_dim: int) -> None:
        super().__init__(in_dim)
        self.out_dim = self.in_dim

    def forward(self, x: Tensor, mask: Tensor) -> TemporalOutput:
        return TemporalOutput(zero_invalid(x, mask), masked_max(x, mask))


@TEMPORAL.register("stats")
class StatsPool(TemporalModule):
    """Masked mean and standard deviation over valid frames, concatenated (x-vector style
    statistics pooling): utterance-level paralinguistic cues live in the spread of a frame
    feature as much as in its average (cf. ComParE/eGeMAPS functionals). Frame outputs are
    ``[frame, clip std]`` so ``seq`` has ``out_dim`` too (frame tasks); a sequence with no
    valid frame pools to zeros."""

    def __init__(self, in_dim: int, eps: float = 1e-5) -> None:
        super().__init__(in_dim)
        self.eps = float(eps)
        self.out_dim = 2 * self.in_dim

    def forward(self, x: Tensor, mask: Tensor) -> TemporalOutput:
        mean = masked_mean(x, mask)
        var = masked_mean((zero_invalid(x, mask) - mean[:, None]) ** 2, mask)
        std = torch.where(mask.any(1, keepdim=True), (var + self.eps).sqrt(), torch.zeros_like(var))
        seq = zero_invalid(torch.cat([x, std[:, None].expand_as(x)], -1), mask)
        return TemporalOutput(seq, torch.cat([mean, std], -1))
