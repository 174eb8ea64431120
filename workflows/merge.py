"""Merging fold models' predictions on one test partition: CCC centering or plain averaging.

Cross-validated continuous models (LFAN's 6 folds) each predict the same test frames; CCC
centering (spec/fusion-models.md) shifts every fold's predictions to an agreement-weighted
common mean before averaging, so one biased fold cannot drag the ensemble. Optional per-clip
smoothing (uniform filter, e.g. 20 frames valence / 50 arousal as JCA) is reported next to raw.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from avemo.errors import UsageError

DEFAULT_SMOOTH = {"valence": 20, "arousal": 50}


def ccc(x: np.ndarray, y: np.ndarray) -> float:
    """Lin's CCC (population moments), the metrics module's definition."""
    from avemo.fusion.metrics import ccc as fusion_ccc

    return float(fusion_ccc(np.array(x, np.float64), np.array(y, np.float64)))


def ccc_centering(preds: np.ndarray | Sequence[np.ndarray], clip: tuple[float, float] | None = (-1.0, 1.0)) -> np.ndarray:
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


def plain_average(preds: np.ndarray | Sequence[np.ndarray], clip: tuple[float, float] | None = (-1.0, 1.0)) -> np.ndarray:
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
    """Merge per-frame predictions of R fold models on the same test frames.

    ``frames[r]`` has the key columns, ``<target>_pred`` and optionally ``<target>_true`` (the
    trainer's ``predictions.parquet`` layout). Returns (merged frame table with ``<t>_pred`` and
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
            raise ValueError(f"fold {r} lacks predictions for {int(missing.sum())} test frames of fold 0")
        aligned.append(m)
    out = base.copy()
    windows = {**DEFAULT_SMOOTH, **dict(smooth_frames or {})}
    rows = []
    for t in targets:
        stack = np.stack([m[f"{t}_pred"].to_numpy(np.float64) for m in aligned])
        merged = METHODS[method](stack)
        out[f"{t}_pred"] = merged
        out[f"{t}_pred_smoothed"] = smooth(merged, out["clip_id"].to_numpy(), int(windows.get(t, 1)))
        truth_col = f"{t}_true"
        if truth_col in aligned[0]:
            y = aligned[0][truth_col].to_numpy(np.float64)
            out[truth_col] = y
            lab = ~np.isnan(y)  # unlabelled frames carry NaN
            for r in range(len(stack)):
                rows.append({"target": t, "what": f"fold {r}", "ccc": ccc(np.clip(stack[r], -1, 1)[lab], y[lab])})
            rows.append({"target": t, "what": f"{method} raw", "ccc": ccc(merged[lab], y[lab])})
            sm = out[f"{t}_pred_smoothed"].to_numpy()
            rows.append({"target": t, "what": f"{method} smoothed", "ccc": ccc(sm[lab], y[lab])})
    return out, pd.DataFrame(rows, columns=["target", "what", "ccc"])


def merge_class_scores(scores: Sequence[np.ndarray]) -> np.ndarray:
    """Categorical folds: average the class probabilities [N, C] of the fold models."""
    return np.asarray(scores, np.float64).mean(axis=0)


# ----------------------------------------------------------------------------- fold runs


def holdout_ids(manifest: pd.DataFrame) -> list[str]:
    """Clips of the manifest's official test partition (kept out of the folds by ``pool: trainval``)."""
    from avemo.fusion.splits import official_partition

    return [str(c) for c, s in zip(manifest["clip_id"], manifest["split"], strict=True)
            if official_partition(s) == "test"]


def predict_run_on(run_dir: Path, clip_ids: Sequence[str] | None = None, feature_cache: dict | None = None,
                   checkpoint: str = "best.pt") -> tuple[dict, Any]:
    """Rebuild a finished run (its resolved config: same split, hence the same normalisation
    statistics) and predict ``clip_ids`` (default: the official test clips) with its weights."""
    import torch

    from avemo.fusion.config import load_config
    from avemo.fusion.evaluate import predict
    from avemo.fusion.train import build_datamodule, build_model

    cfg = load_config(Path(run_dir) / "config.yaml")
    dm = build_datamodule(cfg, "cpu", feature_cache)
    ids = list(clip_ids) if clip_ids is not None else holdout_ids(dm.manifest)
    if not ids:
        raise ValueError(f"{run_dir}: no held-out clips to predict (manifest has no official test split)")
    ckpt = Path(run_dir) / "checkpoints" / checkpoint
    if not ckpt.exists():
        ckpt = Path(run_dir) / "checkpoints" / "last.pt"
    model = build_model(cfg, dm)
    model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True))
    dm.add_partition("holdout", ids)
    return predict(model, dm, "holdout"), dm


def merge_fold_runs(run_dirs: Sequence[Path], method: str = "ccc_centering",
                    smooth_frames: Mapping[str, int] | None = None,
                    feature_cache: dict | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Predict the held-out (official test) clips with every fold model and merge them.

    Frame tasks: CCC centering (or plain mean) per target, raw and smoothed CCC. Clip tasks:
    mean of the class probabilities, accuracy / UAR of every fold and of the merge.
    """
    cache = {} if feature_cache is None else feature_cache
    tables, clip_res, dm = [], [], None
    for rd in run_dirs:
        res, dm = predict_run_on(Path(rd), feature_cache=cache)
        if dm.task_type == "frame":
            df = pd.DataFrame({"clip_id": res["clip_ids"], "time": res["time"]})
            for j, t in enumerate(dm.targets):
                df[f"{t}_pred"] = res["pred"][:, j]
                df[f"{t}_true"] = res["y"][:, j]
            tables.append(df)
        else:
            clip_res.append(res)
    if tables:
        return merge_frame_predictions(tables, list(dm.targets), method, smooth_frames)
    from avemo.fusion.metrics import accuracy, uar

    probs = [np.exp(r["scores"] - r["scores"].max(1, keepdims=True)) for r in clip_res]
    probs = [p / p.sum(1, keepdims=True) for p in probs]
    y = np.asarray(clip_res[0]["y"])
    merged = merge_class_scores(probs)
    rows = [{"what": f"fold {i}", "accuracy": float(accuracy(p, y)), "uar": float(uar(p, y, p.shape[1]))}
            for i, p in enumerate(probs)]
    rows.append({"what": "mean of probabilities", "accuracy": float(accuracy(merged, y)),
                 "uar": float(uar(merged, y, merged.shape[1]))})
    out = pd.DataFrame({"clip_id": clip_res[0]["clip_ids"], "label": [dm.classes[i] for i in y],
                        "pred": [dm.classes[i] for i in merged.argmax(1)]})
    return out, pd.DataFrame(rows)


def merge_grid(out_dir: str | os.PathLike[str], method: str = "ccc_centering") -> pd.DataFrame:
    """Merge the fold models of every config of a finished cross-validation grid (and every
    seed separately); writes ``merged/<config>/predictions.parquet`` and ``merged/scores.csv``."""
    out = Path(out_dir)
    table = pd.read_csv(out / "results.csv", dtype=str)
    if "fold" not in table.columns:
        raise UsageError(f"{out} is not a cross-validation grid (no fold axis): nothing to merge")
    done = table[table["status"] == "done"]
    group_cols = ["config_id"] + (["seed"] if "seed" in done.columns else [])
    all_scores = []
    cache: dict = {}
    for key, grp in done.groupby(group_cols, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        name = "__".join(str(k) for k in key)
        merged, scores = merge_fold_runs([Path(d) for d in grp["run_dir"]], method, feature_cache=cache)
        dest = out / "merged" / name
        dest.mkdir(parents=True, exist_ok=True)
        merged.to_parquet(dest / "predictions.parquet", index=False)
        scores.insert(0, "config", name)
        all_scores.append(scores)
    result = pd.concat(all_scores, ignore_index=True) if all_scores else pd.DataFrame()
    (out / "merged").mkdir(exist_ok=True)
    result.to_csv(out / "merged" / "scores.csv", index=False)
    return result


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``avemo merge`` (also ``python -m avemo.workflows.merge``)."""
    p.add_argument("out_dir", metavar="GRID_OUT", help="a cross-validated grid results folder")
    p.add_argument("--method", default="ccc_centering", choices=sorted(METHODS),
                   help="how fold models are merged (default: ccc_centering)")


def run(a: argparse.Namespace) -> int:
    if not (Path(a.out_dir) / "results.csv").is_file():
        raise UsageError(f"{a.out_dir} is not a grid results folder (no results.csv): "
                         "give the -o folder of a cross-validated `avemo ablate`")
    print(merge_grid(a.out_dir, a.method).to_string(index=False))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m avemo.workflows.merge GRID_OUT [--method mean]``."""
    p = argparse.ArgumentParser(prog="python -m avemo.workflows.merge")
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
