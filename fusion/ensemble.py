"""Merging several models' predictions of the same clips or frames (fold models, seeds).

CCC centering (spec/fusion-models.md, LFAN) shifts every model's predictions to an
agreement-weighted common mean before averaging, so one biased fold cannot drag the ensemble;
plain averaging is the baseline. Categorical models average class probabilities. Optional
per-clip smoothing (uniform filter, e.g. 20 frames valence / 50 arousal as JCA) is reported
next to the raw merge. Used by the tasks' ``merge`` and ``avemo merge``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

DEFAULT_SMOOTH = {"valence": 20, "arousal": 50}


def ccc(x: np.ndarray, y: np.ndarray) -> float:
    """Lin's CCC (population moments), the metrics module's definition."""
    from avemo.fusion.metrics import ccc as fusion_ccc

    return float(fusion_ccc(np.array(x, np.float64), np.array(y, np.float64)))


def ccc_centering(
    preds: np.ndarray | Sequence[np.ndarray], clip: tuple[float, float] | None = (-1.0, 1.0)
) -> np.ndarray:
    """Merge ``preds [R folds, N frames]``: g_r = mean CCC of fold r with the others,
    w = sum mu_r g_r / sum g_r, final = mean_r (x_r - mu_r + w), clipped.

    One implementation: ``avemo.fusion.metrics.ccc_centering``; this adds the shape check and
    a configurable clipping range.
    """
    from avemo.fusion.metrics import ccc_centering as fusion_centering

    p = np.asarray(preds, np.float64)
    if p.ndim != 2:
        raise ValueError(f"ccc_centering needs predictions shaped [folds, frames], got {p.shape}")
    out = np.asarray(fusion_centering(list(p), clip=False), np.float64)
    return np.clip(out, *clip) if clip else out


def plain_average(
    preds: np.ndarray | Sequence[np.ndarray], clip: tuple[float, float] | None = (-1.0, 1.0)
) -> np.ndarray:
    out = np.asarray(preds, np.float64).mean(axis=0)
    return np.clip(out, *clip) if clip else out


METHODS = {"ccc_centering": ccc_centering, "mean": plain_average}


def smooth(values: np.ndarray, groups: np.ndarray, window: int) -> np.ndarray:
    """Uniform filter of ``window`` frames inside each clip (never across clip boundaries)."""
    from scipy.ndimage import uniform_filter1d

    if window <= 1:
        return values.copy()
    out = np.empty_like(values, dtype=np.float64)
    for g in pd.unique(groups):
        idx = np.flatnonzero(groups == g)
        out[idx] = uniform_filter1d(values[idx].astype(np.float64), size=window, mode="nearest")
    return out


def merge_frame_predictions(
    frames: Sequence[pd.DataFrame],
    targets: Sequence[str],
    method: str = "ccc_centering",
    smooth_frames: Mapping[str, int] | None = None,
    key: Sequence[str] = ("clip_id", "time"),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Merge per-frame (or, with ``key=("clip_id",)``, per-clip: one-item smoothing is a no-op)
    predictions of R models on the same test items.

    ``frames[r]`` has the key columns, ``<target>_pred`` and optionally ``<target>_true`` (the
    trainer's prediction table layout). Returns (merged table with ``<t>_pred`` and
    ``<t>_pred_smoothed``, score table with CCC per target for every fold, the merge raw and
    the merge smoothed when labels exist).
    """
    if method not in METHODS:
        raise ValueError(f"unknown merge method {method!r}; choose one of {sorted(METHODS)}")
    if not frames:
        raise ValueError("no fold predictions to merge")
    key = list(key)
    base = frames[0][key].sort_values(key, kind="stable").reset_index(drop=True)
    aligned = []
    for r, df in enumerate(frames):
        m = base.merge(df, on=key, how="left", validate="one_to_one")
        missing = m[[f"{t}_pred" for t in targets]].isna().any(axis=1)
        if missing.any():
            raise ValueError(
                f"fold {r} lacks predictions for {int(missing.sum())} test frames of fold 0"
            )
        aligned.append(m)
    out = base.copy()
    windows = {**DEFAULT_SMOOTH, **dict(smooth_frames or {})}
    rows = []
    for t in targets:
        stack = np.stack([m[f"{t}_pred"].to_numpy(np.float64) for m in aligned])
        merged = METHODS[method](stack)
        out[f"{t}_pred"] = merged
        out[f"{t}_pred_smoothed"] = smooth(
            merged, out["clip_id"].to_numpy(), int(windows.get(t, 1))
        )
        truth_col = f"{t}_true"
        if truth_col in aligned[0]:
            y = aligned[0][truth_col].to_numpy(np.float64)
            out[truth_col] = y
            lab = ~np.isnan(y)  # unlabelled frames carry NaN
            for r in range(len(stack)):
                rows.append(
                    {
                        "target": t,
                        "what": f"fold {r}",
                        "ccc": ccc(np.clip(stack[r], -1, 1)[lab], y[lab]),
                    }
                )
            rows.append({"target": t, "what": f"{method} raw", "ccc": ccc(merged[lab], y[lab])})
            sm = out[f"{t}_pred_smoothed"].to_numpy()
            rows.append({"target": t, "what": f"{method} smoothed", "ccc": ccc(sm[lab], y[lab])})
    return out, pd.DataFrame(rows, columns=["target", "what", "ccc"])


def merge_class_scores(scores: Sequence[np.ndarray]) -> np.ndarray:
    """Categorical folds: average the class probabilities [N, C] of the fold models."""
    return np.asarray(scores, np.float64).mean(axis=0)
