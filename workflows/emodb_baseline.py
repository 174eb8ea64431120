"""Classical baseline for the EmoDB check: opensmile functionals + linear SVM on the same folds.

eGeMAPS v02 / ComParE-2016 functionals per clip (cached as Parquet), standardised, linear
SVM with balanced class weights, C chosen by inner leave-one-speaker-out UAR on the training
speakers only; one row per outer fold. ``opensmile`` is an optional extra (research-only
licence): ``pip install -e '.[smile]'``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

BASELINES = {"egemaps": "eGeMAPSv02", "compare": "ComParE_2016"}
LABELS = {"egemaps_svm": "eGeMAPS v02 functionals (88) -> linear SVM",
          "compare_svm": "ComParE-2016 functionals (6373) -> linear SVM"}
C_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def opensmile_functionals(df: pd.DataFrame, feature_set: str, cache: Path) -> pd.DataFrame:
    """Per-clip functionals (rows in manifest order), cached as Parquet next to the features."""
    import opensmile

    if cache.exists():
        have = pd.read_parquet(cache)
        if set(df["clip_id"]) <= set(have.index):
            return have.loc[df["clip_id"]]
    smile = opensmile.Smile(feature_set=getattr(opensmile.FeatureSet, feature_set),
                            feature_level=opensmile.FeatureLevel.Functionals)
    rows = [smile.process_file(str(p)).to_numpy()[0] for p in df["audio"]]
    out = pd.DataFrame(np.asarray(rows, np.float64), index=pd.Index(df["clip_id"], name="clip_id"),
                       columns=smile.feature_names)
    cache.parent.mkdir(parents=True, exist_ok=True)
    out.to_parquet(cache)
    return out


def svm_fold(x: np.ndarray, y: np.ndarray, groups: np.ndarray, train: np.ndarray, test: np.ndarray,
             c_grid: Sequence[float] = C_GRID) -> tuple[np.ndarray, float]:
    """Standardise + linear-kernel SVM (libsvm, one-vs-one, balanced class weights); C by
    leave-one-speaker-out inside the training speakers (UAR); returns test predictions and C.
    The kernel form is fast here: a few hundred clips, thousands of functionals."""
    from sklearn.model_selection import GridSearchCV, LeaveOneGroupOut
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    pipe = make_pipeline(StandardScaler(), SVC(kernel="linear", class_weight="balanced"))
    inner = LeaveOneGroupOut()
    search = GridSearchCV(pipe, {"svc__C": list(c_grid)}, scoring="balanced_accuracy",
                          cv=inner.split(x[train], y[train], groups[train]), n_jobs=1)
    search.fit(x[train], y[train])
    return search.predict(x[test]), float(search.best_params_["svc__C"])


def _scores(y_true: Sequence[str], y_pred: Sequence[str]) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    return {"accuracy": float(accuracy_score(y_true, y_pred)), "uar": float(balanced_accuracy_score(y_true, y_pred))}


def run_baselines(df: pd.DataFrame, out: Path, which: Sequence[str]) -> pd.DataFrame:
    rows = []
    y = df["label"].astype(str).to_numpy()
    groups = df["subject"].astype(str).to_numpy()
    folds = df["fold"].astype(int).to_numpy()
    for name in which:
        feats = opensmile_functionals(df, BASELINES[name], out / "opensmile" / f"{name}.parquet")
        x = np.nan_to_num(feats.to_numpy(np.float64))
        for f in sorted(set(folds)):
            train, test = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
            assert not set(groups[train]) & set(groups[test]), "speaker in train and test"
            pred, c = svm_fold(x, y, groups, train, test)
            rows.append({"method": f"{name}_svm", "fold": int(f), **_scores(y[test], pred), "C": c,
                         "test_speakers": " ".join(sorted(set(groups[test]))),
                         "train_speakers": " ".join(sorted(set(groups[train])))})
    return pd.DataFrame(rows)
