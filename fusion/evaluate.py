"""Partition-level evaluation: run a model over device batches, assemble, score.

Metric formulas live in ``avemo.fusion.metrics``; this module only
orchestrates them for a run (clip scores -> accuracy/UAR/F1/confusion, per-frame averaged
predictions -> CCC/PCC/RMSE per target, optional smoothing and clipping).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from avemo.fusion import metrics as M
from avemo.fusion.datamodule import CachedFeatureDataModule


def classification_metrics(scores: np.ndarray, y: np.ndarray, n_classes: int) -> dict[str, Any]:
    """accuracy, uar, macro_f1 (floats) and confusion (rows = true class)."""
    return M.classification_metrics(np.asarray(scores), np.asarray(y), n_classes)


def regression_metrics(pred: np.ndarray, y: np.ndarray, targets: Sequence[str]) -> dict[str, float]:
    """Per target CCC/PCC/RMSE over all labelled frames (NaN labels skipped); ``ccc`` = mean."""
    out: dict[str, float] = {}
    cccs = []
    for j, name in enumerate(targets):
        ok = ~np.isnan(y[:, j])
        if not ok.any():
            continue
        out.update(M.regression_metrics(pred[ok, j], y[ok, j], names=[name]))
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
