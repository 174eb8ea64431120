"""Partition-level evaluation: run a model over device batches, assemble, score.

Metric formulas live in ``avemo.fusion.metrics``; which ones a run reports is its task's
choice (``fusion.tasks``); this module holds the shared helpers (per-target regression
metrics, per-clip smoothing) and runs a model over a partition.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from avemo.fusion import metrics as M

if TYPE_CHECKING:  # annotations only: the datamodule's tasks use the metric helpers below
    from avemo.fusion.config import EvalConfig
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
def predict_partition(
    model: torch.nn.Module, dm: CachedFeatureDataModule, partition: str, missing: Sequence[str] = ()
) -> dict[str, Any]:
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
    return dm.assemble(torch.cat(seqs), torch.cat(outs))


def _is_input(key: str, modalities: Sequence[str]) -> bool:
    return key in modalities or (key.endswith("_mask") and key[:-5] in modalities)


def smooth_per_clip(
    pred: np.ndarray, clip_pos: np.ndarray, widths: Mapping[int, int]
) -> np.ndarray:
    """Uniform filter per clip and target column (JCA's optional post-processing)."""
    from scipy.ndimage import uniform_filter1d

    out = pred.copy()
    bounds = np.flatnonzero(np.diff(clip_pos)) + 1
    for seg in np.split(np.arange(len(pred)), bounds):
        for j, w in widths.items():
            if w and w > 1 and len(seg):
                out[seg, j] = uniform_filter1d(pred[seg, j], size=int(w), mode="nearest")
    return out


def score(
    res: Mapping[str, Any], dm: CachedFeatureDataModule, ev: EvalConfig | None = None
) -> dict[str, Any]:
    """Metrics of one assembled partition (see ``predict_partition``), by the run's task;
    ``ev``: the run's ``eval`` section."""
    return dm.task.score(res, ev)
