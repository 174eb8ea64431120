"""The one classical baseline of every EmoDB study: functionals -> speaker-fold linear SVM.

Per outer speaker fold: optionally z-normalise every column per speaker over that speaker's own
clips (``avemo.fusion.speaker_norm.normalise_groups``: no labels, no other speaker), standardise,
linear-kernel SVM with balanced class weights, C chosen by inner leave-one-speaker-out UAR on the
training speakers only. Inputs are any ``[clips, D]`` statistics matrix; ``opensmile_functionals``
gives eGeMAPS v02 / ComParE-2016 functionals (the optional ``[smile]`` extra, research-only
licence), cached as Parquet.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

BASELINES = {"egemaps": "eGeMAPSv02", "compare": "ComParE_2016"}
LABELS = {
    "egemaps_svm": "eGeMAPS v02 functionals (88) -> linear SVM",
    "compare_svm": "ComParE-2016 functionals (6373) -> linear SVM",
    "egemaps_svm_spk": "eGeMAPS v02 functionals, z-normalised per speaker -> linear SVM",
    "compare_svm_spk": "ComParE-2016 functionals, z-normalised per speaker -> linear SVM",
}
C_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def opensmile_functionals(df: pd.DataFrame, feature_set: str, cache: Path) -> pd.DataFrame:
    """Per-clip functionals (rows in manifest order), cached as Parquet; ``feature_set`` is an
    ``opensmile.FeatureSet`` name or a key of ``BASELINES``."""
    import opensmile

    feature_set = BASELINES.get(feature_set, feature_set)
    if cache.exists():
        have = pd.read_parquet(cache)
        if set(df["clip_id"]) <= set(have.index):
            return have.loc[df["clip_id"]]
    smile = opensmile.Smile(
        feature_set=getattr(opensmile.FeatureSet, feature_set),
        feature_level=opensmile.FeatureLevel.Functionals,
    )
    rows = [smile.process_file(str(p)).to_numpy()[0] for p in df["audio"]]
    out = pd.DataFrame(
        np.asarray(rows, np.float64),
        index=pd.Index(df["clip_id"], name="clip_id"),
        columns=smile.feature_names,
    )
    cache.parent.mkdir(parents=True, exist_ok=True)
    out.to_parquet(cache)
    return out


def svm_fold(
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    c_grid: Sequence[float] = C_GRID,
    speaker_norm: bool = False,
) -> tuple[np.ndarray, float]:
    """Test predictions and the chosen C of one outer fold (``train`` / ``test``: row indices,
    speaker-disjoint). The kernel form is fast here: a few hundred clips, thousands of columns."""
    from sklearn.model_selection import GridSearchCV, LeaveOneGroupOut
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    if set(groups[train]) & set(groups[test]):
        raise ValueError(
            f"speakers {sorted(set(groups[train]) & set(groups[test]))} in train and test"
        )
    x = np.nan_to_num(np.asarray(x, np.float64))
    if speaker_norm:  # each speaker by its own clips: the same for train and test rows
        from avemo.fusion.speaker_norm import normalise_groups

        x = normalise_groups(x, np.ones(len(x), bool), groups)
    pipe = make_pipeline(StandardScaler(), SVC(kernel="linear", class_weight="balanced"))
    inner = LeaveOneGroupOut().split(x[train], y[train], groups[train])
    search = GridSearchCV(
        pipe, {"svc__C": list(c_grid)}, scoring="balanced_accuracy", cv=inner, n_jobs=1
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an inner speaker lacking a class (unbalanced beds)
        search.fit(x[train], y[train])
    return search.predict(x[test]), float(search.best_params_["svc__C"])


def scores(y_true: Sequence[Any], y_pred: Sequence[Any]) -> dict[str, float]:
    """Accuracy and UAR (balanced accuracy; a predicted class absent from the fold is ignored)."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "accuracy": float(accuracy_score(y_true, y_pred)),
            "uar": float(balanced_accuracy_score(y_true, y_pred)),
        }


def svm_rows(
    df: pd.DataFrame, x: np.ndarray, name: str, speaker_norm: bool = False
) -> list[dict[str, Any]]:
    """One row per speaker fold of ``df`` (its ``fold`` column): ``<name>_svm[_spk]``."""
    y = df["label"].astype(str).to_numpy()
    groups = df["subject"].astype(str).to_numpy()
    folds = df["fold"].astype(int).to_numpy()
    rows = []
    for f in sorted(set(folds)):
        train, test = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
        pred, c = svm_fold(x, y, groups, train, test, speaker_norm=speaker_norm)
        rows.append(
            {
                "method": f"{name}_svm{'_spk' if speaker_norm else ''}",
                "fold": int(f),
                "seed": 0,
                **scores(y[test], pred),
                "C": c,
                "test_speakers": " ".join(sorted(set(groups[test]))),
                "train_speakers": " ".join(sorted(set(groups[train]))),
            }
        )
    return rows


def run_baselines(
    df: pd.DataFrame, cache: Path, which: Sequence[str], speaker_norm: Sequence[bool] = (False,)
) -> pd.DataFrame:
    """``which`` (keys of ``BASELINES``) on ``df``'s speaker folds, raw and / or per-speaker
    normalised; functionals cached under ``cache``."""
    rows: list[dict[str, Any]] = []
    for name in which:
        x = opensmile_functionals(df, name, cache / f"{name}.parquet").to_numpy(np.float64)
        for sn in speaker_norm:
            rows += svm_rows(df, x, name, sn)
    return pd.DataFrame(rows)
