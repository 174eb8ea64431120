"""Encoders for per-frame vector features (face embeddings, VGGish, MFCC, audio-CNN rows).

Rows of any shape are flattened to vectors first. ``identity`` passes them through,
``linear`` is Linear (+ activation + dropout), ``mlp`` a stack of such layers.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from avemo.fusion.models.base import Encoder, EncoderOutput, zero_invalid
from avemo.fusion.models.dropout import Dropout
from avemo.fusion.registry import ENCODERS

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "none": nn.Identity}


def _flat_dim(row_shape: tuple[int, ...]) -> int:
    return int(math.prod(row_shape)) if row_shape else 1


class _VectorEncoder(Encoder):
    def __init__(
        self,
        row_shape: tuple[int, ...],
        layers: list[int],
        activation: str,
        dropout: float,
        input_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"encoder activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}"
            )
        d = _flat_dim(tuple(row_shape))
        mods: list[nn.Module] = [Dropout(input_dropout)] if input_dropout else []
        for h in layers:
            mods += [nn.Linear(d, int(h)), ACTIVATIONS[activation](), Dropout(dropout)]
            d = int(h)
        self.net = nn.Sequential(*mods)
        self.out_dim = self.cell_dim = d

    def forward(self, x: Tensor, mask: Tensor) -> EncoderOutput:
        x = zero_invalid(x.flatten(2), mask)
        y = zero_invalid(self.net(x), mask)
        return EncoderOutput(y, mask, y, mask)


@ENCODERS.register("identity")
class IdentityEncoder(_VectorEncoder):
    """Pass (flattened) rows through unchanged."""

    def __init__(self, row_shape: tuple[int, ...], input_dropout: float = 0.0) -> None:
        super().__init__(row_shape, [], "none", 0.0, input_dropout)


@ENCODERS.register("linear")
class LinearEncoder(_VectorEncoder):
    """Linear(row -> dim) + activation (default none) + dropout."""

    def __init__(
        self,
        row_shape: tuple[int, ...],
        dim: int = 128,
        activation: str = "none",
        dropout: float = 0.0,
        input_dropout: float = 0.0,
    ) -> None:
        super().__init__(row_shape, [dim], activation, dropout, input_dropout)


@ENCODERS.register("mlp")
class MLPEncoder(_VectorEncoder):
    """Stack of Linear + activation (default relu) + dropout layers."""

    def __init__(
        self,
        row_shape: tuple[int, ...],
        hidden: list[int] | tuple[int, ...] = (256, 128),
        activation: str = "relu",
        dropout: float = 0.1,
        input_dropout: float = 0.0,
    ) -> None:
        super().__init__(row_shape, list(hidden), activation, dropout, input_dropout)
