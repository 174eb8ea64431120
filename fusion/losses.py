"""Training losses (registered in ``LOSSES``): cross-entropy, 1 - CCC, MSE.

Call convention: ``loss(pred, target, mask=None)``.
* clip classification: pred ``[B, C]`` logits, target ``[B]`` class indices.
* frame regression: pred ``[B, T, K]``, target ``[B, T, K]`` (or ``[B, T]`` when K = 1),
  mask ``[B, T]`` (True = labelled frame). Clip regression: pred/target ``[B, K]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from avemo.fusion.registry import LOSSES


def _align(pred: Tensor, target: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """-> pred, target as [N, K] rows and a bool row mask [N]."""
    target = target.to(pred.dtype)
    if target.dim() == pred.dim() - 1:
        target = target.unsqueeze(-1)
    if pred.shape != target.shape:
        raise ValueError(
            f"prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}"
        )
    if mask is None:
        mask = torch.ones(pred.shape[:-1], dtype=torch.bool, device=pred.device)
    k = pred.shape[-1]
    m = mask.reshape(-1).to(torch.bool)
    zero = torch.zeros((), dtype=pred.dtype, device=pred.device)
    # unlabelled frames may hold NaN targets: select, never multiply, so NaN cannot leak
    p = torch.where(m[:, None], pred.reshape(-1, k), zero)
    y = torch.where(m[:, None], target.reshape(-1, k), zero)
    return p, y, m


def ccc_torch(x: Tensor, y: Tensor, w: Tensor) -> Tensor:
    """Differentiable CCC per column of x, y [N, K] over rows with weight w [N] (0/1).

    Population moments; both sides the same constant -> 1 (gradient-safe: no 0/0 branch).
    """
    n = w.sum().clamp_min(1.0)
    w = w.unsqueeze(-1)
    mx, my = (w * x).sum(0) / n, (w * y).sum(0) / n
    vx = (w * (x - mx) ** 2).sum(0) / n
    vy = (w * (y - my) ** 2).sum(0) / n
    cov = (w * (x - mx) * (y - my)).sum(0) / n
    denom = vx + vy + (mx - my) ** 2
    safe = torch.where(denom > 0, denom, torch.ones_like(denom))
    return torch.where(denom > 0, 2 * cov / safe, torch.ones_like(denom))


@LOSSES.register("cross_entropy")
class CrossEntropy(nn.Module):
    """Cross-entropy with optional label smoothing and per-class weights."""

    class_weights: Tensor | None  # a buffer (moves with the module), None when unweighted

    def __init__(
        self, label_smoothing: float = 0.0, class_weights: Sequence[float] | None = None
    ) -> None:
        super().__init__()
        self.label_smoothing = float(label_smoothing)
        w = (
            torch.as_tensor(class_weights, dtype=torch.float32)
            if class_weights is not None
            else None
        )
        self.register_buffer("class_weights", w)

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        if pred.dim() == 3:  # per-frame classification [B, T, C]
            keep = mask.reshape(-1) if mask is not None else slice(None)
            pred, target = pred.reshape(-1, pred.shape[-1])[keep], target.reshape(-1)[keep]
        elif mask is not None:
            pred, target = pred[mask], target[mask]
        w = (
            self.class_weights.to(device=pred.device, dtype=pred.dtype)
            if self.class_weights is not None
            else None
        )
        return nn.functional.cross_entropy(
            pred, target.long(), weight=w, label_smoothing=self.label_smoothing
        )


@LOSSES.register("ccc")
class CCCLoss(nn.Module):
    """1 - CCC per target, summed (JCA: sum over valence and arousal) or averaged over targets.

    ``per_sequence=False`` (default): one CCC over all valid frames of the batch, as the
    metric is defined. ``per_sequence=True``: one CCC per window, averaged over windows
    (the LFAN reference's "1 - CCC per window").
    """

    def __init__(self, reduction: str = "sum", per_sequence: bool = False) -> None:
        super().__init__()
        if reduction not in ("sum", "mean"):
            raise ValueError(f"ccc loss reduction must be 'sum' or 'mean', got {reduction!r}")
        self.reduction, self.per_sequence = reduction, per_sequence

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        if self.per_sequence and pred.dim() == 3:
            losses = [
                self._one(pred[i], target[i], None if mask is None else mask[i])
                for i in range(pred.shape[0])
                if mask is None or bool(mask[i].any())
            ]
            return torch.stack(losses).mean() if losses else pred.sum() * 0.0
        return self._one(pred, target, mask)

    def _one(self, pred: Tensor, target: Tensor, mask: Tensor | None) -> Tensor:
        p, y, m = _align(pred, target, mask)
        per_target = 1.0 - ccc_torch(p, y, m.to(p.dtype))
        return per_target.sum() if self.reduction == "sum" else per_target.mean()


@LOSSES.register("mse")
class MSELoss(nn.Module):
    """Mean squared error over valid frames and all targets."""

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        p, y, m = _align(pred, target, mask)
        sq = ((p - y) ** 2).mean(-1)
        w = m.to(p.dtype)
        return (sq * w).sum() / w.sum().clamp_min(1.0)
