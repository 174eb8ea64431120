"""Transformer-attention pooling (Zhou et al.; exact form UNVERIFIED).

Default, per the spec: one layer of single-head scaled dot-product self-attention over frames
(Q, K, V linear maps, softmax(Q K^T / sqrt(d)) V, residual), then masked mean pool. ``heads``,
``residual``, ``dim`` and ``dropout`` are options because the paper does not pin them down.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from avemo.fusion.models.base import (
    TemporalModule,
    TemporalOutput,
    masked_mean,
    masked_softmax,
    zero_invalid,
)
from avemo.fusion.models.dropout import Dropout
from avemo.fusion.registry import TEMPORAL


@TEMPORAL.register("transformer")
class TransformerAttention(TemporalModule):
    """One scaled dot-product self-attention layer over frames + residual + mean pool."""

    def __init__(
        self, in_dim: int, heads: int = 1, residual: bool = True, dropout: float = 0.0
    ) -> None:
        super().__init__(in_dim)
        if self.in_dim % heads:
            raise ValueError(f"transformer: in_dim {self.in_dim} not divisible by heads {heads}")
        self.heads = int(heads)
        self.residual = residual
        self.q = nn.Linear(self.in_dim, self.in_dim)
        self.k = nn.Linear(self.in_dim, self.in_dim)
        self.v = nn.Linear(self.in_dim, self.in_dim)
        self.drop = Dropout(dropout)
        self.out_dim = self.in_dim
        #: project valid rows only on a CPU; ``fit_stacked`` turns it off (vmap needs fixed shapes)
        self.pack_rows = True

    def _qkv(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Q, K and V in one GEMM; on a CPU, of the valid rows only (padding is a third of an
        AFEW batch's rows, and these GEMMs are most of the layer's time). Padded rows then hold
        0 instead of the bias: they are masked as keys and zeroed as queries either way."""
        b, t, d = x.shape
        w = torch.cat([self.q.weight, self.k.weight, self.v.weight])
        bias = torch.cat([self.q.bias, self.k.bias, self.v.bias])
        if self.pack_rows and x.device.type == "cpu" and not bool(mask.all()):
            idx = mask.reshape(-1).nonzero().squeeze(1)
            rows = F.linear(x.reshape(b * t, d).index_select(0, idx), w, bias)
            y = rows.new_zeros(b * t, 3 * d).index_copy(0, idx, rows).view(b, t, 3 * d)
        else:
            y = F.linear(x, w, bias)
        q, k, v = y.split(d, dim=-1)
        return q, k, v

    def forward(self, x: Tensor, mask: Tensor) -> TemporalOutput:
        b, t, d = x.shape
        x = zero_invalid(x, mask)
        h, dh = self.heads, d // self.heads

        def split(y: Tensor) -> Tensor:
            return y.view(b, t, h, dh).transpose(1, 2)  # [B, h, T, dh]

        q, k, v = (split(y) for y in self._qkv(x, mask))
        scores = q @ k.transpose(-1, -2) / math.sqrt(dh)  # [B, h, T, T]
        key_mask = mask[:, None, None, :].expand_as(scores)
        att = self.drop(masked_softmax(scores, key_mask))
        y = (att @ v).transpose(1, 2).reshape(b, t, d)
        if self.residual:
            y = y + x
        y = zero_invalid(y, mask)
        # Attention received per frame, averaged over heads and valid queries (for reports).
        qm = mask.to(x.dtype)[:, None, :, None]
        received = (att * qm).sum((1, 2)) / (qm.sum((1, 2)) * h).clamp_min(1.0)
        return TemporalOutput(y, masked_mean(y, mask), received)
