"""One modality's path: ENCODER (rows -> vectors) then TEMPORAL (vectors -> seq + pooled).

For frame tasks the encoder output is stretched back to the label timeline ``T`` (encoders
such as the audio CNN pool time) before the temporal module runs, so ``seq`` has one row per
label frame.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from avemo.fusion.models.base import EncoderOutput, TemporalOutput, fit_length, sub_cfg
from avemo.fusion.registry import ENCODERS, TEMPORAL


class Branch(nn.Module):
    """Encoder + temporal module for one modality."""

    def __init__(
        self,
        row_shape: tuple[int, ...],
        encoder: Mapping[str, Any] | str | None,
        temporal: Mapping[str, Any] | str | None,
        pooled_only: bool = False,
    ) -> None:
        super().__init__()
        enc_name, enc_kw = sub_cfg(encoder, "identity")
        self.encoder = ENCODERS.build(enc_name, tuple(row_shape), **enc_kw)
        tmp_name, tmp_kw = sub_cfg(temporal, "mean")
        self.temporal = TEMPORAL.build(tmp_name, self.encoder.out_dim, **tmp_kw)
        self.temporal.pooled_only = bool(pooled_only)  # the caller reads ``pooled`` only
        self.out_dim = self.temporal.out_dim

    def encode(self, x: Tensor, mask: Tensor, length: int | None = None) -> EncoderOutput:
        enc = self.encoder(x, mask)
        if length is not None:
            seq, m = fit_length(enc.seq, enc.mask, length)
            enc = EncoderOutput(seq, m, enc.cells, enc.cells_mask)
        return enc

    def forward(
        self, x: Tensor, mask: Tensor, length: int | None = None
    ) -> tuple[TemporalOutput, Tensor]:
        enc = self.encode(x, mask, length)
        return self.temporal(enc.seq, enc.mask), enc.mask
