"""Parameter-free temporal pooling: masked mean and masked max over frames."""

from __future__ import annotations

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
