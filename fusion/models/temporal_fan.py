"""Frame attention network (FAN) pooling as used by Zhou et al.: self- and relation-attention.

Self-attention:   alpha_i = sigmoid(w^T Dropout(p_in)(f_i) + b);  f' = sum a_i f_i / sum a_i.
Relation-attention: beta_i = sigmoid(w2^T Dropout(p_in)([f_i ; f']) + b2);
f'' = sum a_i b_i [f_i ; f'] / sum a_i b_i (2d), then Dropout(p_out).
Defaults p_in = 0.5, p_out = 0.6 as in the spec. The papers pool whole clips; for frame tasks
(our extension) each frame is gated by its own weight: alpha_i f_i (self) or
Dropout(alpha_i beta_i [f_i ; f']) (relation).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from avemo.fusion.models.base import TemporalModule, TemporalOutput, zero_invalid
from avemo.fusion.models.dropout import Dropout
from avemo.fusion.registry import TEMPORAL


def _weighted_pool(x: Tensor, w: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """sum_i w_i x_i / sum_i w_i over valid frames (w already zero at invalid frames)."""
    total = w.sum(1, keepdim=True)
    norm = w / total.clamp_min(eps)
    return (norm.unsqueeze(-1) * x).sum(1), norm


class _SelfAttention(nn.Module):
    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.drop = Dropout(dropout)
        self.score = nn.Linear(dim, 1)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        alpha = torch.sigmoid(self.score(self.drop(x))).squeeze(-1)
        return alpha * mask.to(x.dtype)


@TEMPORAL.register("fan_self")
class FANSelfAttention(TemporalModule):
    """FAN self-attention pooling (sigmoid frame weights, weighted mean)."""

    def __init__(self, in_dim: int, dropout: float = 0.5, eps: float = 1e-8) -> None:
        super().__init__(in_dim)
        self.out_dim = self.in_dim
        self.att = _SelfAttention(self.in_dim, dropout)
        self.eps = eps

    def forward(self, x: Tensor, mask: Tensor) -> TemporalOutput:
        x = zero_invalid(x, mask)
        alpha = self.att(x, mask)
        pooled, weights = _weighted_pool(x, alpha, self.eps)
        return TemporalOutput(alpha.unsqueeze(-1) * x, pooled, weights)


@TEMPORAL.register("fan_relation")
class FANRelationAttention(TemporalModule):
    """FAN relation-attention: self-attention, then frame-vs-clip relation weights (2d out)."""

    def __init__(
        self, in_dim: int, dropout: float = 0.5, out_dropout: float = 0.6, eps: float = 1e-8
    ) -> None:
        super().__init__(in_dim)
        self.out_dim = 2 * self.in_dim
        self.att = _SelfAttention(self.in_dim, dropout)
        self.rel_drop = Dropout(dropout)
        self.rel = nn.Linear(2 * self.in_dim, 1)
        self.out_drop = Dropout(out_dropout)
        self.eps = eps

    def forward(self, x: Tensor, mask: Tensor) -> TemporalOutput:
        x = zero_invalid(x, mask)
        alpha = self.att(x, mask)
        clip, _ = _weighted_pool(x, alpha, self.eps)
        pair = torch.cat([x, clip.unsqueeze(1).expand_as(x)], dim=-1)
        beta = torch.sigmoid(self.rel(self.rel_drop(pair))).squeeze(-1)
        pooled, weights = _weighted_pool(pair, alpha * beta, self.eps)
        seq = (alpha * beta).unsqueeze(
            -1
        ) * pair  # zero at invalid rows: alpha is masked, pair finite
        if not self.pooled_only:  # a clip model reads pooled only: skip dropout on [B, T, 2d]
            seq = self.out_drop(seq)
        return TemporalOutput(seq, self.out_drop(pooled), weights)
