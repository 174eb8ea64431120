"""The EmoDB studies' one SVM baseline (``experiments/emodb/baseline.py``) recomputed with
scikit-learn, outside the experiments' code path.

On real EmoDB clips (``../shared/data``: skipped without it), the ``models`` study with the egemaps
baseline only: for each speaker fold, every C of the grid is scored here by leave-one-speaker-out
UAR on the training speakers with sklearn's own ``cross_val_score``, the best C (first on ties,
as GridSearchCV) must be the one reported, and the test speakers' accuracy / UAR of
StandardScaler + linear SVC (balanced classes) at that C must equal the row's to 1e-9. Labels and
speakers are read from the corpus' own ``labels.csv``, not from avemo's manifest. The per-speaker
normalised SVM is held to the same pipeline on features z-scored per speaker by pandas.
"""

from __future__ import annotations

import _experiments
import numpy as np
import pandas as pd
import pytest

from experiments.emodb import baseline as bl

assert _experiments.ROOT
C_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # the decades the docs name for the baseline


def _pipe(c: float):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    return make_pipeline(StandardScaler(), SVC(kernel="linear", C=c, class_weight="balanced"))


def _sklearn_fold(
    x: np.ndarray, y: np.ndarray, spk: np.ndarray, test: np.ndarray
) -> tuple[float, np.ndarray]:
    from sklearn.model_selection import LeaveOneGroupOut, cross_val_score

    inner = [
        cross_val_score(
            _pipe(c),
            x[~test],
            y[~test],
            groups=spk[~test],
            cv=LeaveOneGroupOut(),
            scoring="balanced_accuracy",
        ).mean()
        for c in C_GRID
    ]
    best = C_GRID[int(np.argmax(inner))]
    return best, _pipe(best).fit(x[~test], y[~test]).predict(x[test])


def test_egemaps_svm_baseline_equals_sklearn_recomputation(shared_data, tmp_path) -> None:
    pytest.importorskip("opensmile", reason="opensmile is the [smile] extra (`make smile`)")
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    from experiments.emodb.run import run_study

    root = shared_data / "emodb-8spk"
    out = tmp_path / "emodb"
    res = run_study(
        [
            "models",
            "--root",
            str(root),
            "-o",
            str(out),
            "--folds",
            "2",
            "--speakers",
            "03",
            "08",
            "09",
            "10",
            "--limit",
            "12",
            "--models",
            "--baselines",
            "egemaps",
            "--quiet",
        ]
    )
    assert res["results"] is None  # a subset writes no results file unless asked
    rows = res["per_fold"].set_index("fold")
    feats = pd.read_parquet(out / "opensmile" / "egemaps.parquet")  # opensmile's functionals
    truth = (
        pd.read_csv(root / "labels.csv", dtype={"speaker": str})
        .set_index("clip_id")
        .loc[feats.index]
    )
    x = np.nan_to_num(feats.to_numpy(np.float64))
    y, spk = truth["emotion"].to_numpy(), truth["speaker"].to_numpy()
    assert feats.shape[1] == 88 and len(feats) == 4 * 12
    assert sorted(rows.index) == [0, 1]
    for fold, r in rows.iterrows():
        test = np.isin(spk, r["test_speakers"].split())
        assert sorted(set(spk[~test])) == sorted(r["train_speakers"].split())
        best, pred = _sklearn_fold(x, y, spk, test)
        assert r["C"] == pytest.approx(best), fold
        assert r["accuracy"] == pytest.approx(accuracy_score(y[test], pred), abs=1e-9)
        assert r["uar"] == pytest.approx(balanced_accuracy_score(y[test], pred), abs=1e-9)
    assert rows["uar"].max() > 1 / 7  # the baseline does learn: above chance on 7 classes


def test_speaker_normalised_svm_equals_sklearn_on_pandas_zscores() -> None:
    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(0)
    spk = np.repeat(np.array(["a", "b", "c", "d"]), 15)
    y = np.tile(np.array(["x", "y", "z"]), 20)
    x = rng.normal(size=(60, 6)) + 1.5 * (y == "y")[:, None] - 1.5 * (y == "z")[:, None]
    x += np.repeat(rng.normal(0, 4, (4, 6)), 15, axis=0)  # a voice offset per speaker
    z = pd.DataFrame(x).groupby(spk).transform(lambda c: (c - c.mean()) / c.std(ddof=0)).to_numpy()
    df = pd.DataFrame({"label": y, "subject": spk, "fold": np.isin(spk, ["c", "d"]).astype(int)})
    rows = {r["fold"]: r for r in bl.svm_rows(df, x, "t", speaker_norm=True)}
    assert {r["method"] for r in rows.values()} == {"t_svm_spk"}
    for fold, r in rows.items():
        test = df["fold"].to_numpy() == fold
        best, pred = _sklearn_fold(z, y, spk, test)
        assert r["C"] == pytest.approx(best)
        assert r["uar"] == pytest.approx(balanced_accuracy_score(y[test], pred), abs=1e-9)
    with pytest.raises(ValueError, match="in train and test"):
        bl.svm_fold(x, y, spk, np.arange(30), np.arange(20, 40))
