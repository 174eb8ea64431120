"""Partition-level evaluation: run a model over device batches, assemble, score.

Metric formulas live in ``avemo.fusion.metrics`` (model-zoo engineer); this module only
orchestrates them for a run (clip scores -> accuracy/UAR/F1/confusion, per-frame averaged
predictions -> CCC/PCC/RMSE per target, optional smoothing and clipping).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from avemo.fusion.datamodule import CachedFeatureDataModule


def _metric_fns() -> dict[str, Any]:
    try:
        from avemo.fusion import metrics as M

        return {
            "accuracy": M.accuracy, "uar": M.uar, "macro_f1": M.macro_f1,
            "confusion": M.confusion_matrix, "ccc": M.ccc, "pcc": M.pcc, "rmse": M.rmse,
        }
    except (ImportError, AttributeError):
        return _LOCAL


def _confusion(y: np.ndarray, p: np.ndarray, n: int) -> np.ndarray:
    cm = np.zeros((n, n), np.int64)
    np.add.at(cm, (y, p), 1)
    return cm


def _uar(y: np.ndarray, p: np.ndarray, n: int) -> float:
    cm = _confusion(y, p, n)
    rec = [cm[i, i] / cm[i].sum() for i in range(n) if cm[i].sum() > 0]
    return float(np.mean(rec)) if rec else 0.0


def _f1(y: np.ndarray, p: np.ndarray, n: int) -> float:
    cm = _confusion(y, p, n)
    f1 = []
    for i in range(n):
        tp, fp, fn = cm[i, i], cm[:, i].sum() - cm[i, i], cm[i].sum() - cm[i, i]
        if tp + fp + fn > 0:
            f1.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1)) if f1 else 0.0


def _ccc(x: np.ndarray, y: np.ndarray) -> float:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    mx, my = x.mean(), y.mean()
    vx, vy = x.var(), y.var()
    den = vx + vy + (mx - my) ** 2
    if den == 0:
        return 1.0
    return float(2 * ((x - mx) * (y - my)).mean() / den)


def _pcc(x: np.ndarray, y: np.ndarray) -> float:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    sx, sy = x.std(), y.std()
    if sx == 0 or sy == 0:
        return 0.0
    return float(((x - x.mean()) * (y - y.mean())).mean() / (sx * sy))


_LOCAL: dict[str, Any] = {
    "accuracy": lambda y, p, n=None: float((np.asarray(y) == np.asarray(p)).mean()),
    "uar": lambda y, p, n: _uar(np.asarray(y), np.asarray(p), n),
    "macro_f1": lambda y, p, n: _f1(np.asarray(y), np.asarray(p), n),
    "confusion": lambda y, p, n: _confusion(np.asarray(y), np.asarray(p), n),
    "ccc": _ccc,
    "pcc": _pcc,
    "rmse": lambda x, y: float(np.sqrt(np.mean((np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2))),
}


def _call(fn: Any, *args: Any) -> Any:
    out = fn(*args)
    if isinstance(out, torch.Tensor):
        out = out.detach().cpu().numpy()
    return out.item() if isinstance(out, np.ndarray) and out.ndim == 0 else out


def classification_metrics(scores: np.ndarray, y: np.ndarray, n_classes: int) -> dict[str, Any]:
    """acc, uar, macro_f1 (floats) and confusion (rows = true class)."""
    f = _metric_fns()
    pred = np.asarray(scores).argmax(1)
    y = np.asarray(y)
    local = f is _LOCAL
    acc = _call(f["accuracy"], y, pred) if not local else _LOCAL["accuracy"](y, pred)
    return {
        "acc": float(acc),
        "uar": float(_call(f["uar"], y, pred, n_classes)),
        "macro_f1": float(_call(f["macro_f1"], y, pred, n_classes)),
        "confusion": np.asarray(_call(f["confusion"], y, pred, n_classes)),
    }


def regression_metrics(pred: np.ndarray, y: np.ndarray, targets: Sequence[str]) -> dict[str, float]:
    """Per target CCC/PCC/RMSE over all labelled frames (NaN labels skipped); ``ccc`` = mean."""
    f = _metric_fns()
    out: dict[str, float] = {}
    cccs = []
    for j, name in enumerate(targets):
        ok = ~np.isnan(y[:, j])
        if not ok.any():
            continue
        p, t = pred[ok, j].astype(np.float64), y[ok, j].astype(np.float64)
        out[f"ccc_{name}"] = float(_call(f["ccc"], p, t))
        out[f"pcc_{name}"] = float(_call(f["pcc"], p, t))
        out[f"rmse_{name}"] = float(_call(f["rmse"], p, t))
        cccs.append(out[f"ccc_{name}"])
    if cccs:
        out["ccc"] = float(np.mean(cccs))
    return out


@torch.no_grad()
def predict(model: torch.nn.Module, dm: CachedFeatureDataModule, partition: str,
            missing: Sequence[str] = ()) -> dict[str, Any]:
    """Run ``model`` over a partition and assemble per-clip / per-frame outputs (numpy)."""
    was_training = model.training
    model.eval()
    seqs, outs = [], []
    for batch in dm.batches(partition, missing=missing):
        outs.append(model({k: batch[k] for k in batch if _is_input(k, dm.modalities)}).float())
        seqs.append(batch["index"])
    model.train(was_training)
    if not seqs:
        return {}
    res = dm.assemble(torch.cat(seqs), torch.cat(outs))
    return {k: (v.cpu().numpy() if isinstance(v, torch.Tensor) else v) for k, v in res.items()}


def _is_input(key: str, modalities: Sequence[str]) -> bool:
    return key in modalities or (key.endswith("_mask") and key[:-5] in modalities)


def smooth_per_clip(pred: np.ndarray, clip_pos: np.ndarray, widths: Mapping[int, int]) -> np.ndarray:
    """Uniform filter per clip and target column (JCA's optional post-processing)."""
    from scipy.ndimage import uniform_filter1d

    out = pred.copy()
    bounds = np.flatnonzero(np.diff(clip_pos)) + 1
    for seg in np.split(np.arange(len(pred)), bounds):
        for j, w in widths.items():
            if w and w > 1 and len(seg):
                out[seg, j] = uniform_filter1d(pred[seg, j], size=int(w), mode="nearest")
    return out


def score(res: Mapping[str, Any], dm: CachedFeatureDataModule, eval_cfg: Mapping[str, Any] | None = None
          ) -> dict[str, Any]:
    """Metrics of one assembled partition (see ``predict``)."""
    if not res:
        return {}
    if dm.task_type == "clip":
        return classification_metrics(res["scores"], res["y"], dm.n_out)
    eval_cfg = eval_cfg or {}
    pred = res["pred"]
    rng = eval_cfg.get("clip_range")
    if rng:
        pred = np.clip(pred, float(rng[0]), float(rng[1]))
    out = regression_metrics(pred, res["y"], dm.targets)
    widths = {dm.targets.index(k): int(v) for k, v in (eval_cfg.get("smooth") or {}).items()
              if k in dm.targets}
    if widths:
        sm = regression_metrics(smooth_per_clip(pred, res["clip_pos"], widths), res["y"], dm.targets)
        names = {dm.targets[j] for j in widths}
        out.update({f"{k}_smoothed": v for k, v in sm.items()
                    if k == "ccc" or k.rsplit("_", 1)[-1] in names})
    return out
