"""Metrics for categorical and continuous emotion: torch (device-resident) with numpy input OK.

Every function accepts tensors or array-likes and returns a 0-d float64 tensor on the input's
device (``float(...)`` it for logs). Conventions:

* CCC (Lin 1989): 2 cov(x, y) / (var x + var y + (mean x - mean y)^2) with population
  moments, over all given frames concatenated (pass every frame of a partition). Constant
  case: the denominator is 0 only when both sequences are the same constant -> CCC = 1;
  one constant sequence against a varying one gives cov = 0 -> CCC = 0.
* PCC: cov / (std x std y); defined as 0 when either sequence is constant.
* UAR: mean recall over the classes present in the targets.
* Macro-F1: mean F1 over the classes present in targets or predictions (scikit-learn's
  default label set), F1 = 2 TP / (2 TP + FP + FN).
* Confusion matrix: rows = true class, columns = predicted class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor


def _t(x: Any, dtype: torch.dtype | None = torch.float64) -> Tensor:
    t = x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
    return t.to(dtype) if dtype is not None else t


def _select(pred: Any, target: Any, mask: Any | None) -> tuple[Tensor, Tensor]:
    p, y = _t(pred), _t(target)
    if p.shape != y.shape:
        raise ValueError(f"prediction shape {tuple(p.shape)} != target shape {tuple(y.shape)}")
    if mask is not None:
        m = _t(mask, torch.bool).to(p.device)
        m = m.reshape(m.shape + (1,) * (p.dim() - m.dim())).expand_as(p)
        return p[m], y[m]
    return p.reshape(-1), y.reshape(-1)


def ccc(pred: Any, target: Any, mask: Any | None = None) -> Tensor:
    """Lin's concordance correlation coefficient over all (valid) values, population moments."""
    x, y = _select(pred, target, mask)
    if x.numel() == 0:
        raise ValueError("ccc of an empty sequence")
    mx, my = x.mean(), y.mean()
    vx, vy = ((x - mx) ** 2).mean(), ((y - my) ** 2).mean()
    cov = ((x - mx) * (y - my)).mean()
    denom = vx + vy + (mx - my) ** 2
    return torch.where(denom > 0, 2 * cov / torch.where(denom > 0, denom, 1.0), 1.0)


def pcc(pred: Any, target: Any, mask: Any | None = None) -> Tensor:
    """Pearson correlation; 0 when either side is constant."""
    x, y = _select(pred, target, mask)
    if x.numel() == 0:
        raise ValueError("pcc of an empty sequence")
    xc, yc = x - x.mean(), y - y.mean()
    denom = torch.sqrt((xc**2).sum() * (yc**2).sum())
    return torch.where(denom > 0, (xc * yc).sum() / torch.where(denom > 0, denom, 1.0), 0.0)


def rmse(pred: Any, target: Any, mask: Any | None = None) -> Tensor:
    """Root mean squared error over all (valid) values."""
    x, y = _select(pred, target, mask)
    return torch.sqrt(((x - y) ** 2).mean())


def _labels(pred: Any) -> Tensor:
    """Class labels from labels [N] or scores/logits [N, C]."""
    p = _t(pred, None)
    return p.argmax(-1) if p.dim() == 2 else p.long()


def confusion_matrix(pred: Any, target: Any, n_classes: int) -> Tensor:
    """[n_classes, n_classes] counts; rows = true class, columns = predicted class."""
    p, y = _labels(pred), _t(target, None).long().to(_labels(pred).device)
    if p.shape != y.shape:
        raise ValueError(f"{p.numel()} predictions for {y.numel()} targets")
    idx = y * n_classes + p
    return torch.bincount(idx, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def accuracy(pred: Any, target: Any) -> Tensor:
    """Fraction of correct predictions (labels or logits)."""
    p = _labels(pred)
    y = _t(target, None).long().to(p.device)
    return (p == y).to(torch.float64).mean()


def uar(pred: Any, target: Any, n_classes: int | None = None) -> Tensor:
    """Unweighted average recall over the classes present in the targets."""
    p, y = _labels(pred), _t(target, None).long()
    n = n_classes or int(max(p.max().item(), y.max().item())) + 1
    cm = confusion_matrix(p, y, n).to(torch.float64)
    support = cm.sum(1)
    present = support > 0
    return (cm.diagonal()[present] / support[present]).mean()


def macro_f1(pred: Any, target: Any, n_classes: int | None = None) -> Tensor:
    """Mean F1 over classes present in targets or predictions."""
    p, y = _labels(pred), _t(target, None).long()
    n = n_classes or int(max(p.max().item(), y.max().item())) + 1
    cm = confusion_matrix(p, y, n).to(torch.float64)
    tp = cm.diagonal()
    fn, fp = cm.sum(1) - tp, cm.sum(0) - tp
    present = (cm.sum(1) + cm.sum(0)) > 0
    return (2 * tp / (2 * tp + fp + fn).clamp_min(1.0))[present].mean()


def classification_metrics(pred: Any, target: Any, n_classes: int) -> dict[str, Any]:
    """accuracy, uar, macro_f1 (floats) and the confusion matrix (nested list)."""
    return {
        "accuracy": float(accuracy(pred, target)),
        "uar": float(uar(pred, target, n_classes)),
        "macro_f1": float(macro_f1(pred, target, n_classes)),
        "confusion": confusion_matrix(pred, target, n_classes).cpu().tolist(),
    }


def regression_metrics(
    pred: Any, target: Any, mask: Any | None = None, names: Sequence[str] | None = None
) -> dict[str, float]:
    """ccc/pcc/rmse per target column of ``[..., K]`` arrays, keys like ``ccc_valence``."""
    p, y = _t(pred), _t(target)
    if p.dim() == 1:
        p, y = p[:, None], y[:, None]
    k = p.shape[-1]
    names = list(names) if names is not None else ([""] if k == 1 else [str(i) for i in range(k)])
    out: dict[str, float] = {}
    for i, name in enumerate(names):
        sfx = f"_{name}" if name else ""
        for fn in (ccc, pcc, rmse):
            out[f"{fn.__name__}{sfx}"] = float(fn(p[..., i], y[..., i], mask))
    return out


def ccc_centering(preds: Sequence[Any], clip: bool = True) -> np.ndarray:
    """Merge R fold models' predictions of the same frames (LFAN's "CCC centering").

    Pairwise CCCs between folds; agreement g_r = mean CCC of fold r with the others;
    w = sum_r mu_r g_r / sum_r g_r; merged = mean_r (x_r - mu_r + w), clipped to [-1, 1].
    If the agreements sum to <= 0 (folds disagree), w falls back to the plain mean of mu_r.
    One fold: its predictions (clipped). Inputs: R arrays of equal shape ``[N]``.
    """
    xs = [
        np.asarray(p.detach().cpu() if isinstance(p, Tensor) else p, dtype=np.float64)
        for p in preds
    ]
    if not xs:
        raise ValueError("ccc_centering needs at least one fold's predictions")
    if any(x.shape != xs[0].shape for x in xs):
        raise ValueError(f"fold predictions differ in shape: {[x.shape for x in xs]}")
    r = len(xs)
    mu = np.array([x.mean() for x in xs])
    if r == 1:
        merged = xs[0]
    else:
        pair = np.ones((r, r))
        for i in range(r):
            for j in range(i + 1, r):
                pair[i, j] = pair[j, i] = float(ccc(xs[i], xs[j]))
        g = (pair.sum(1) - 1.0) / (r - 1)
        w = float((mu * g).sum() / g.sum()) if g.sum() > 0 else float(mu.mean())
        merged = np.mean([x - m + w for x, m in zip(xs, mu, strict=True)], axis=0)
    return np.clip(merged, -1.0, 1.0) if clip else merged
