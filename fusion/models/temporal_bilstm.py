"""Bidirectional LSTM over frames (packed by the last valid row, so padding is never read).

Defaults (hidden 128, 2 layers, dropout 0.4) follow the LSTM baseline options of sucv/ABAW2;
no published system in the spec pins them. Pooled output = masked mean of the outputs.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from avemo.fusion.models.base import (
    TemporalModule,
    TemporalOutput,
    last_valid_length,
    masked_mean,
    zero_invalid,
)
from avemo.fusion.registry import TEMPORAL


@TEMPORAL.register("bilstm")
class BiLSTM(TemporalModule):
    """Bidirectional LSTM; out_dim = 2 * hidden."""

    def __init__(
        self, in_dim: int, hidden: int = 128, layers: int = 2, dropout: float = 0.4
    ) -> None:
        super().__init__(in_dim)
        self.lstm = nn.LSTM(
            self.in_dim,
            int(hidden),
            num_layers=int(layers),
            batch_first=True,
            bidirectional=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.out_dim = 2 * int(hidden)

    def forward(self, x: Tensor, mask: Tensor) -> TemporalOutput:
        t = x.shape[1]
        x = zero_invalid(x, mask)
        lengths = last_valid_length(mask).clamp_min(1).cpu()
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        seq, _ = pad_packed_sequence(out, batch_first=True, total_length=t)
        seq = zero_invalid(seq, mask)
        return TemporalOutput(seq, masked_mean(seq, mask))
